// rindle-upload/uppy: an Uppy uploader plugin that sends Uppy's files
// through this package.
//
//   import Uppy from "@uppy/core";
//   import RindleUpload from "rindle-upload/uppy";
//   new Uppy().use(RindleUpload, { endpoint: "/api/uploads", limit: 3 });
//
// Options: `endpoint`, `headers`, `credentials`, `broker` (the Uploader's),
// `limit` (uploads at once; 0 for no limit; default 3), `id`, and any
// `upload()` option (strategy, checksum, retryDelays, onStateChange…).
//
// Progress goes into Uppy's state (`upload-progress`), a completed upload
// emits `upload-success` with `{ status: 200, body: { session, asset },
// uploadURL: asset.url }`, a failed one `upload-error` with the
// UploadError; the file's session id is kept in its state
// (`uppy.getFile(id).rindleUpload.sessionId`). Uppy's pause/resume (per file and all), cancel-all and
// file removal pause, resume or cancel the upload.
//
// The plugin implements Uppy's plugin interface itself rather than
// extending @uppy/core's BasePlugin, so this module imports nothing but
// the package and loads without a bundler.
import init, { Uploader } from "./index.js";

let loaded = null;

const UPLOADER_OPTIONS = ["endpoint", "headers", "credentials", "broker", "limit", "id"];

export default class RindleUpload {
  static VERSION = "0.1.0";

  constructor(uppy, opts = {}) {
    this.uppy = uppy;
    this.type = "uploader";
    this.id = opts.id ?? "RindleUpload";
    this.opts = { limit: 3, ...opts };
    this.uploader = null;
    this.uploads = new Map();
  }

  setOptions(opts) {
    this.opts = { ...this.opts, ...opts };
    this.uploader = null;
  }

  // Uppy calls it on every state change; nothing here renders.
  update() {}

  install() {
    this.#capabilities(true);
    this.uppy.addUploader(this.#handleUpload);
    const each = (action) => () => this.uploads.forEach(action);
    this.listeners = [
      ["upload-pause", (file, paused) => {
        const upload = file && this.uploads.get(file.id);
        if (upload) paused ? upload.pause() : upload.resume();
      }],
      ["pause-all", each((upload) => upload.pause())],
      ["resume-all", each((upload) => upload.resume())],
      ["cancel-all", each((upload) => upload.cancel())],
      ["file-removed", (file) => this.uploads.get(file.id)?.cancel()],
    ];
    for (const [event, listener] of this.listeners) this.uppy.on(event, listener);
  }

  uninstall() {
    this.#capabilities(false);
    this.uppy.removeUploader(this.#handleUpload);
    for (const [event, listener] of this.listeners ?? []) this.uppy.off(event, listener);
  }

  #capabilities(resumableUploads) {
    this.uppy.setState({ capabilities: { ...this.uppy.getState().capabilities, resumableUploads } });
  }

  #handleUpload = async (fileIDs) => {
    const files = this.uppy.getFilesByIds(fileIDs).filter((file) => !file.isRemote);
    if (files.length === 0) return;
    this.uppy.emit("upload-start", files);
    await (loaded ??= init());
    this.uploader ??= new Uploader({
      endpoint: this.opts.endpoint,
      headers: this.opts.headers,
      credentials: this.opts.credentials,
      broker: this.opts.broker,
      maxUploads: this.opts.limit === 0 ? Number.MAX_SAFE_INTEGER : this.opts.limit,
    });
    await Promise.allSettled(files.map((file) => this.#upload(file)));
  };

  async #upload(file) {
    const options = Object.fromEntries(Object.entries(this.opts).filter(([key]) => !UPLOADER_OPTIONS.includes(key)));
    // A retried file continues the session the store already holds part of.
    const [previous] = file.data instanceof File ? await this.uploader.findPreviousUploads(file.data) : [];
    const upload = this.uploader.upload(file.data, {
      ...options,
      filename: file.name,
      contentType: file.type || undefined,
      resumeFrom: previous,
      // Kept on Uppy's file, as @uppy/tus keeps its upload URL: the app's
      // server may want the session (a session id is no credential).
      onStateChange: (change) => {
        options.onStateChange?.(change);
        if (change.from === null && this.uppy.getFile(file.id)) {
          this.uppy.setFileState(file.id, { rindleUpload: { sessionId: change.session.id } });
        }
      },
      onProgress: (progress) => {
        options.onProgress?.(progress);
        const latest = this.uppy.getFile(file.id);
        if (!latest) return;
        this.uppy.emit("upload-progress", latest, {
          uploadStarted: latest.progress.uploadStarted ?? Date.now(),
          bytesUploaded: progress.bytesAcked,
          bytesTotal: progress.bytesTotal,
        });
      },
    });
    this.uploads.set(file.id, upload);
    try {
      const result = await upload.done;
      const latest = this.uppy.getFile(file.id);
      if (latest) this.uppy.emit("upload-success", latest, { status: 200, body: result, uploadURL: result.asset.url });
    } catch (error) {
      // A file removed (or every upload cancelled) is Uppy's own doing, not a failure.
      const latest = this.uppy.getFile(file.id);
      if (latest && error?.code !== "aborted") this.uppy.emit("upload-error", latest, error);
    } finally {
      this.uploads.delete(file.id);
    }
  }
}
