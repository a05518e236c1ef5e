// Integrity end to end: with checksums on (the default), a 1 GiB upload
// from a disk-backed File keeps the package's code off the main thread for
// long (the checksum worker hashes) and stores exactly the file's bytes
// (first, on a quiet machine: other pages closing would compete for the
// cores); the checksum module gives the known answers in the browser; the
// checksum workers end once idle, releasing the Blobs they were handed; a
// page that cannot start a Worker loads it and hashes itself. Flipped bits per strategy are in
// reliability.test.mjs; the store-level checks in multipart.test.mjs.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
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

  test("a 1 GiB upload with checksums runs no long task of the package's on the main thread and stores the file's bytes", async () => {
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
      // their collection is not counted against the upload, and give the
      // browser's other processes a second to finish with the write.
      globalThis.gc();
      await new Promise((resolve) => setTimeout(resolve, 1000));

      // Each frame of 50 ms or more, with the scripts that ran in it.
      const longFrames = [];
      const observer = new PerformanceObserver((list) => longFrames.push(...list.getEntries().map((frame) => ({
        duration: Math.round(frame.duration),
        scripts: frame.scripts.map((script) => ({ url: script.sourceURL, invoker: script.invoker, duration: Math.round(script.duration) })),
      }))));
      observer.observe({ type: "long-animation-frame" });
      const upload = new Uploader({ endpoint }).upload(file, { strategy: "multipart", concurrency: 4, checksum: "crc32c" });
      const { asset } = await upload.done;
      await new Promise((resolve) => setTimeout(resolve, 0));
      observer.disconnect();
      await root.removeEntry("integrity.bin");
      return { longFrames, asset };
    }, { endpoint: `${suite.broker.url}/api/uploads`, size: SIZE, blockSize: BLOCK, blockSource: block.toString() });

    // The package's scripts (its glue, module and snippets, all under /pkg/)
    // never hold the main thread for 50 ms. A long frame in which they ran
    // only briefly is the machine's doing (two cores, shared with the store
    // and the hashing worker), not the package's.
    const packageTime = (frame) => frame.scripts.filter((s) => s.url.includes("/pkg/")).reduce((sum, s) => sum + s.duration, 0);
    assert.deepEqual(
      run.longFrames.filter((frame) => packageTime(frame) >= 50), [],
      `no frame in which the package ran for 50 ms or more; frames of 50 ms or more: ${JSON.stringify(run.longFrames)}`,
    );
    assert.ok(workers.some((url) => url.endsWith("/pkg/checksum-worker.js")), "the checksum worker did the hashing");
    const expected = createHash("sha256");
    for (let index = 0; index * BLOCK < SIZE; index++) expected.update(block(index));
    assert.deepEqual([run.asset.byte_size, run.asset.sha256], [SIZE, expected.digest("hex")], "the stored bytes are the file's");
  });

  test("the checksum module gives the known answers, over many stream windows too", async () => {
    const big = randomBytes(3 * MiB + 12_345);
    const page = await suite.browser.newPage();
    await page.goto(suite.page.url());
    const digests = await page.evaluate(async (bigBase64) => {
      const { digestBlob } = await import("/pkg/checksum-stream.js");
      const hex = (digest) => [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
      const blob = (bytes) => new Blob([bytes]);
      const abc = blob(new TextEncoder().encode("abc"));
      const ascending = blob(Uint8Array.from({ length: 32 }, (_, i) => i));
      const bigBlob = blob(Uint8Array.from(atob(bigBase64), (c) => c.charCodeAt(0)));
      const each = (items, digest) => Promise.all(items.map(async (item) => hex(await digest(item))));
      const zeros = blob(new Uint8Array(32));
      const ones = blob(new Uint8Array(32).fill(0xff));
      const algorithms = ["sha256", "sha1", "md5"];
      return {
        crc32c: await each([zeros, ones, ascending], (b) => digestBlob(b, 0, 32, "crc32c")),
        abc: await each(algorithms, (algorithm) => digestBlob(abc, 0, 3, algorithm)),
        big: await each(algorithms, (algorithm) => digestBlob(bigBlob, 7, bigBlob.size - 11, algorithm)),
      };
    }, big.toString("base64"));
    await page.close();
    // RFC 3720 appendix B.4; FIPS 180-4 and RFC 1321 ("abc").
    assert.deepEqual(digests.crc32c, ["8a9136aa", "62a8ab43", "46dd794e"]);
    assert.deepEqual(digests.abc, [
      "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
      "a9993e364706816aba3e25717850c26c9cd0d89d",
      "900150983cd24fb0d6963f7d28e17f72",
    ]);
    const range = big.subarray(7, big.length - 11);
    assert.deepEqual(digests.big, ["sha256", "sha1", "md5"].map((algorithm) => createHash(algorithm).update(range).digest("hex")));
  });

  test("the checksum workers end once idle, letting go of the files they hashed", async () => {
    // A worker holds every Blob it was handed until its own garbage
    // collection: with 200 MiB files one after another, Chromium's Blob
    // storage filled and the next file's reads failed (the Garage multipart
    // suite's cancel test, every run, before the workers ended when idle).
    const page = await suite.browser.newPage();
    const workers = { started: 0, ended: 0 };
    page.on("worker", (worker) => {
      workers.started++;
      worker.on("close", () => workers.ended++);
    });
    await page.goto(suite.page.url());
    const files = [0, 1, 2].map((i) => randomBytes(4 * MiB + i).toString("base64"));
    const run = await page.evaluate(async ({ endpoint, files }) => {
      const { default: init, Uploader } = await import("/pkg/index.js");
      await init();
      const uploader = new Uploader({ endpoint });
      const stored = [];
      for (const [i, base64] of files.entries()) {
        const file = new File([Uint8Array.from(atob(base64), (c) => c.charCodeAt(0))], `file-${i}.bin`);
        stored.push((await uploader.upload(file, { strategy: "multipart", checksum: "crc32c" }).done).asset.sha256);
        await new Promise((resolve) => setTimeout(resolve, 1500));
      }
      return stored;
    }, { endpoint: `${suite.broker.url}/api/uploads`, files });
    const seen = { ...workers };
    await page.close();
    assert.deepEqual(run, files.map((base64) => createHash("sha256").update(Buffer.from(base64, "base64")).digest("hex")));
    assert.deepEqual(seen, { started: 6, ended: 6 }, "two workers per file, each ended a while after its last job");
  });

  test("the checksum workers start with the upload, before the broker opened its session", async () => {
    const page = await suite.browser.newPage();
    await page.addInitScript(() => {
      const Native = globalThis.Worker;
      globalThis.workerStarts = [];
      globalThis.Worker = class extends Native {
        constructor(...args) {
          super(...args);
          globalThis.workerStarts.push(performance.now());
        }
      };
    });
    await page.goto(suite.page.url());
    const content = randomBytes(2 * MiB);
    const run = await page.evaluate(async ({ endpoint, base64 }) => {
      const { default: init, Uploader } = await import("/pkg/index.js");
      await init();
      const file = new File([Uint8Array.from(atob(base64), (c) => c.charCodeAt(0))], "warm.bin");
      let initializedAt = null;
      const upload = new Uploader({ endpoint }).upload(file, {
        strategy: "presigned_put",
        onStateChange: ({ to }) => { if (to === "initialized") initializedAt = performance.now(); },
      });
      const { asset } = await upload.done;
      return { sha256: asset.sha256, initializedAt, workerStarts: globalThis.workerStarts };
    }, { endpoint: `${suite.broker.url}/api/uploads`, base64: content.toString("base64") });
    await page.close();
    assert.equal(run.sha256, createHash("sha256").update(content).digest("hex"));
    assert.equal(run.workerStarts.length, 2, "the two checksum workers, started once");
    assert.ok(
      run.workerStarts.every((at) => at < run.initializedAt),
      `workers started at ${run.workerStarts} ms, the session initialized at ${run.initializedAt} ms`,
    );
  });

  test("a page that cannot start a Worker loads the checksum module and hashes itself; the store verifies", async () => {
    const page = await suite.browser.newPage();
    const workers = [];
    page.on("worker", (worker) => workers.push(worker.url()));
    await page.addInitScript(() => { globalThis.Worker = undefined; });
    await page.goto(suite.page.url());
    const content = randomBytes(6 * MiB);
    const run = await page.evaluate(async ({ endpoint, base64 }) => {
      const { default: init, Uploader } = await import("/pkg/index.js");
      await init();
      const file = new File([Uint8Array.from(atob(base64), (c) => c.charCodeAt(0))], "no-worker.bin");
      const uploader = new Uploader({ endpoint });
      const results = [];
      for (const strategy of ["presigned_put", "multipart"]) {
        const { asset } = await uploader.upload(file, { strategy, checksum: "crc32c" }).done;
        results.push(asset.sha256);
      }
      return { results, loaded: performance.getEntriesByType("resource").map((e) => new URL(e.name).pathname) };
    }, { endpoint: `${suite.broker.url}/api/uploads`, base64: content.toString("base64") });
    await page.close();
    const sha256 = createHash("sha256").update(content).digest("hex");
    assert.deepEqual(run.results, [sha256, sha256]);
    assert.deepEqual(workers, [], "no worker ran");
    assert.ok(run.loaded.includes("/pkg/checksum_bg.wasm"), "the page loaded the checksum module");
  });
});
