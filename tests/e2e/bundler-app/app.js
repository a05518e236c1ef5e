// An app as a front end writes it, built by Vite and by webpack in
// tests/e2e/bundlers.test.mjs: the main module and every drop-in, imported
// by package name. Each `window.app` entry uploads one file and resolves
// with the asset the broker reports.
import init, { Uploader } from "rindle-upload";
import "rindle-upload/element";
import { rindleServer } from "rindle-upload/filepond";
import { uploaders } from "rindle-upload/liveview";
import RindleUpload from "rindle-upload/uppy";
import Uppy from "@uppy/core";
import * as FilePond from "filepond";

const endpoint = "/api/uploads";
const post = (path, body) =>
  fetch(`${endpoint}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) })
    .then((r) => r.json());

window.app = {
  async main(file) {
    await init();
    return (await new Uploader({ endpoint }).upload(file).done).asset;
  },

  element(file) {
    const element = document.createElement("rindle-upload");
    element.setAttribute("endpoint", endpoint);
    document.body.append(element);
    return new Promise((resolve, reject) => {
      element.addEventListener("rindle-upload:complete", (event) => resolve(event.detail.asset));
      element.addEventListener("rindle-upload:error", (event) => reject(event.detail));
      element.add([file]);
    });
  },

  async uppy(file) {
    const uppy = new Uppy().use(RindleUpload, { endpoint });
    uppy.addFile({ name: file.name, data: file });
    let asset = null;
    uppy.on("upload-success", (_file, response) => (asset = response.body.asset));
    await uppy.upload();
    return asset;
  },

  filepond(file) {
    const input = document.createElement("input");
    input.type = "file";
    document.body.append(input);
    let sessionId = null;
    const pond = FilePond.create(input, {
      server: rindleServer({ endpoint, onStateChange: ({ session }) => (sessionId = session.id) }),
    });
    return new Promise((resolve, reject) => {
      pond.on("processfile", async (error, item) => {
        if (error) return reject(error);
        // A retried `complete` answers the completed session with its asset.
        const { asset } = await post(`/${sessionId}/complete`, { session_id: sessionId });
        resolve(asset.id === item.serverId ? asset : null);
      });
      pond.addFile(file);
    });
  },

  // LiveView hands the uploader a session Rindle opened: here, the broker's.
  async liveview(file) {
    const { session } = await post("", { filename: file.name, content_type: "application/octet-stream", byte_size: file.size, upload_strategy: "presigned_put" });
    const signed = await post(`/${session.id}/sign`, { session_id: session.id });
    const meta = { uploader: "Rindle", url: signed.upload.url, method: "put", headers: signed.upload.headers ?? {}, session_id: session.id, asset_id: session.asset_id };
    await new Promise((resolve, reject) => {
      uploaders().Rindle([{ file, meta, progress: (p) => p === 100 && resolve(), error: reject, onCancel: () => {} }], () => {});
    });
    return (await post(`/${session.id}/complete`, { session_id: session.id })).asset;
  },
};
