// The package's entry (js/index.js): the glue's declarations, UploadError's
// class among them.
export * from "./rindle_upload.js";
export { default } from "./rindle_upload.js";
