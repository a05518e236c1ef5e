// rindle-upload's checksum worker: hashes Blob ranges off the main thread
// with the package's checksum module, streamed (checksum-stream.js). The
// package starts it on its own (src/web/checksums.rs); nothing to set up.
// One range at a time: Chromium fails Blob streams ("network error") when
// many run at once.
import { digestBlob, load } from "./checksum-stream.js";

// A module that cannot load here answers every job as a worker failure,
// so the page hashes in its own thread instead.
const ready = load().then(() => true, () => false);
let queue = Promise.resolve();

self.onmessage = ({ data: { id, blob, start, end, algorithm } }) => {
  queue = queue.then(async () => {
    try {
      if (!(await ready)) throw { name: "WorkerError", message: "the package could not load in the worker" };
      const digest = await digestBlob(blob, start, end, algorithm);
      self.postMessage({ id, digest }, [digest.buffer]);
    } catch (error) {
      self.postMessage({ id, error: { name: error?.name ?? "Error", message: String(error?.message ?? error) } });
    }
  });
};
