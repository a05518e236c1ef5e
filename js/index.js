// The package's entry: wasm-bindgen's glue, plus what the glue alone cannot
// give: the UploadError class (wasm-bindgen copies its module under a
// hashed snippets/ path; scripts/build.sh writes that path in), and a clear
// error for an Uploader made before init() finished.
import initWasm, { initSync as initWasmSync, Uploader as WasmUploader } from "./rindle_upload.js";
import { UploadError } from "./UPLOAD_ERROR_MODULE";

export * from "./rindle_upload.js";
export { UploadError };

let ready = false;

/** Loads the WebAssembly (from beside this module unless told where); await it before anything else. */
export default async function init(options) {
  const exports = await initWasm(options);
  ready = true;
  return exports;
}

/** `init` for a module or bytes already at hand (a worker, a test, a bundler's inlined wasm). */
export function initSync(options) {
  const exports = initWasmSync(options);
  ready = true;
  return exports;
}

export class Uploader extends WasmUploader {
  constructor(options) {
    if (!ready) {
      throw new UploadError(
        "invalid_request",
        "rindle-upload is not loaded yet: call and await init() (or initSync) before new Uploader()",
        false,
        null,
      );
    }
    super(options);
  }
}
