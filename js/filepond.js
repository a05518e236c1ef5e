// rindle-upload/filepond: a FilePond `server` that uploads through this
// package.
//
//   import * as FilePond from "filepond";
//   import { rindleServer } from "rindle-upload/filepond";
//   FilePond.create(input, { server: rindleServer({ endpoint: "/api/uploads" }) });
//
// Options: the Uploader's (`endpoint`, `headers`, `credentials`, `broker`,
// `maxUploads`), any `upload()` option, and `onRevert(result)`.
//
// `process` uploads the file: FilePond's progress gets the stored bytes,
// `load` the asset id (the value FilePond's field submits), `error` the
// error's message; FilePond's abort (a file removed while it uploads)
// cancels the upload: the store and the broker discard it. `revert`
// (FilePond's undo, on an upload that completed) calls `onRevert(result)`
// to remove the asset your app's way; without it, it sends the protocol's
// cancel for the session, which Rindle and the reference broker refuse for
// a completed one (their state table ends there): pass onRevert.
import init, { Uploader } from "./index.js";

let loaded = null;

const UPLOADER_OPTIONS = ["endpoint", "headers", "credentials", "broker", "maxUploads", "onRevert"];

export function rindleServer(options) {
  let uploader = null;
  // asset id → the completed upload's `{ session, asset }`, for revert.
  const completed = new Map();
  const uploadOptions = Object.fromEntries(Object.entries(options).filter(([key]) => !UPLOADER_OPTIONS.includes(key)));
  const ready = async () => {
    await (loaded ??= init());
    uploader ??= new Uploader(
      Object.fromEntries(Object.entries(options).filter(([key]) => UPLOADER_OPTIONS.includes(key) && key !== "onRevert")),
    );
    return uploader;
  };

  return {
    process: (_fieldName, file, _metadata, load, error, progress, abort) => {
      let upload = null;
      let aborted = false;
      ready().then(async (uploader) => {
        if (aborted) return;
        upload = uploader.upload(file, {
          ...uploadOptions,
          onProgress: (p) => {
            uploadOptions.onProgress?.(p);
            progress(true, p.bytesAcked, p.bytesTotal);
          },
        });
        try {
          const result = await upload.done;
          completed.set(result.asset.id, result);
          load(result.asset.id);
        } catch (failure) {
          // FilePond's own abort has already been answered.
          if (!aborted) error(failure?.message ?? String(failure));
        }
      }, (failure) => error(failure?.message ?? String(failure)));
      return {
        abort: () => {
          aborted = true;
          upload?.cancel();
          abort();
        },
      };
    },

    revert: (assetId, load, error) => {
      const result = completed.get(assetId);
      if (!result) return error("no upload of this page has that asset id");
      const reverted = options.onRevert ? Promise.resolve(options.onRevert(result)) : cancelSession(result.session.id);
      reverted.then(() => {
        completed.delete(assetId);
        load();
      }, (e) => error(e?.message ?? String(e)));
    },
  };

  // The protocol's cancel, as the Uploader's broker would send it.
  async function cancelSession(sessionId) {
    if (options.broker?.cancel) return options.broker.cancel({ session_id: sessionId });
    const response = await fetch(`${options.endpoint.replace(/\/$/, "")}/${encodeURIComponent(sessionId)}/cancel`, {
      method: "POST",
      credentials: options.credentials ?? "same-origin",
      headers: { ...options.headers, "content-type": "application/json", "rindle-broker-protocol": "1" },
      body: JSON.stringify({ session_id: sessionId }),
    });
    if (!response.ok) throw new Error(`cancel: the broker answered ${response.status}`);
  }
}
