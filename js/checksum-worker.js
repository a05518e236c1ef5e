// rindle-upload's checksum worker: hashes Blob ranges off the main thread
// with the package's own WebAssembly (streamed in 1 MiB windows). The
// package starts it on its own (src/web/checksums.rs); nothing to set up.
import init, { digestBlob } from "./rindle_upload.js";

const ready = init();

self.onmessage = async ({ data: { id, blob, start, end, algorithm } }) => {
  try {
    await ready;
    const digest = await digestBlob(blob, start, end, algorithm);
    self.postMessage({ id, digest }, [digest.buffer]);
  } catch (error) {
    self.postMessage({ id, error: { name: error?.name ?? "Error", message: String(error?.message ?? error) } });
  }
};
