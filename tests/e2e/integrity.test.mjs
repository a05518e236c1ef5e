// Integrity end to end: with checksums on (the default), a 1 GiB upload
// from a disk-backed File keeps the main thread free (the checksum worker
// hashes) and stores exactly the file's bytes. Flipped bits per strategy are
// in reliability.test.mjs; the store-level checks in multipart.test.mjs.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { brokerAndPage, MiB } from "./support.mjs";

const SIZE = 1024 * MiB;
const BLOCK = 8 * MiB;

/** Block `index` of the file (8 MiB): xorshift32 bytes, the same in the page and here. */
function block(index) {
  const words = new Uint32Array((8 << 20) / 4);
  let x = (index + 1) * 2654435761 >>> 0;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    words[i] = x;
  }
  return new Uint8Array(words.buffer);
}

describe("integrity end to end (embedded store)", () => {
  const suite = brokerAndPage({ MAX_BYTES: String(2 * SIZE) });

  test("a 1 GiB upload with checksums causes no long task on the main thread and stores the file's bytes", async () => {
    const workers = [];
    suite.page.on("worker", (worker) => workers.push(worker.url()));
    const run = await suite.page.evaluate(async ({ endpoint, size, blockSize, blockSource }) => {
      const block = new Function(`return ${blockSource}`)();
      const { default: init, Uploader } = await import("/pkg/index.js");
      await init();
      // A disk-backed File: in-memory Blobs this large exceed Chromium's quota.
      const root = await navigator.storage.getDirectory();
      const handle = await root.getFileHandle("integrity.bin", { create: true });
      const writable = await handle.createWritable();
      for (let index = 0; index * blockSize < size; index++) await writable.write(block(index));
      await writable.close();
      const file = await handle.getFile();
      // Writing the file left 1 GiB of buffers behind: collect them now, so
      // their collection is not counted against the upload.
      globalThis.gc();
      await new Promise((resolve) => setTimeout(resolve, 200));

      const longTasks = [];
      const observer = new PerformanceObserver((list) => longTasks.push(...list.getEntries().map((e) => Math.round(e.duration))));
      observer.observe({ type: "longtask" });
      const upload = new Uploader({ endpoint }).upload(file, { strategy: "multipart", concurrency: 4, checksum: "crc32c" });
      const { asset } = await upload.done;
      await new Promise((resolve) => setTimeout(resolve, 0));
      observer.disconnect();
      await root.removeEntry("integrity.bin");
      return { longTasks, asset };
    }, { endpoint: `${suite.broker.url}/api/uploads`, size: SIZE, blockSize: BLOCK, blockSource: block.toString() });

    assert.deepEqual(run.longTasks, [], "no task of 50 ms or more on the main thread during the upload");
    assert.ok(workers.some((url) => url.endsWith("/pkg/checksum-worker.js")), "the checksum worker did the hashing");
    const expected = createHash("sha256");
    for (let index = 0; index * BLOCK < SIZE; index++) expected.update(block(index));
    assert.deepEqual([run.asset.byte_size, run.asset.sha256], [SIZE, expected.digest("hex")], "the stored bytes are the file's");
  });
});
