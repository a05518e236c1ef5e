// An app as a TypeScript user writes it, type-checked by `npm test`
// (tsconfig.json: strict, lib es2022 + dom, skipLibCheck off) against the
// package's own declarations.
import init, { UploadError, Uploader, type BrokerCallbacks, type UploadResult } from "rindle-upload";
import { uploaders } from "rindle-upload/liveview";
import "rindle-upload/element";
import { rindleServer } from "rindle-upload/filepond";
import RindleUpload from "rindle-upload/uppy";

// A broker callback may answer a session without its optional fields.
const broker: BrokerCallbacks = {
  cancel: ({ session_id }) => ({ session: { id: session_id, state: "aborted", upload_strategy: "multipart" } }),
};

export async function send(file: File): Promise<UploadResult | null> {
  await init();
  const uploader = new Uploader({
    endpoint: "/api/uploads",
    credentials: "same-origin",
    broker,
    maxUploads: 2,
    onProgress: ({ bytesAcked, bytesTotal, queued }) => console.log(bytesAcked / bytesTotal, queued),
  });
  const [previous] = await uploader.findPreviousUploads(file);
  const upload = previous ? uploader.upload(file, { resumeFrom: previous }) : uploader.upload(file);
  if (upload.queued) console.log("waiting for a turn", uploader.progress.active);
  try {
    return await upload.done;
  } catch (error: unknown) {
    if (error instanceof UploadError) {
      console.log(error.code, error.retryable, error.state, error.message);
      return null;
    }
    throw error;
  }
}

export function withEveryCallback(uploader: Uploader, file: Blob) {
  return uploader.upload(file, {
    strategy: "multipart",
    checksum: "sha256",
    onProgress: ({ bytesSent, bytesTotal }) => console.log(bytesSent / bytesTotal),
    onStateChange: ({ from, to }) => console.log(from, to),
    onPart: ({ partNumber, etag }) => console.log(partNumber, etag),
    onPiece: ({ offset, size, state }) => console.log(offset, size, state === "stored"),
    onError: (error) => console.log(error instanceof UploadError && error.code),
  });
}

// Phoenix LiveView: `new LiveSocket("/live", Socket, { uploaders: liveUploaders })`.
export const liveUploaders = uploaders({ chunkSize: 4 * 1024 * 1024, checksum: "crc32c" });

// <rindle-upload>: its events are typed on every element.
export function watch(element: HTMLElementTagNameMap["rindle-upload"]) {
  element.addEventListener("rindle-upload:complete", (event) => console.log(event.file.name, event.detail.asset.id));
  element.addEventListener("rindle-upload:error", (event) => console.log(event.detail.code));
  element.addEventListener("rindle-upload:piece", (event) => console.log(event.detail.offset, event.detail.state));
  return element.value;
}

// FilePond's `server` and Uppy's plugin class, as each widget takes them.
export const pondServer = rindleServer({ endpoint: "/api/uploads", onRevert: ({ asset }) => console.log(asset.id) });
export const uppyPlugin: typeof RindleUpload = RindleUpload;
