// End to end: GCS resumable uploads from headless Chromium through the
// reference broker, against gcp-storage-emulator (behind the project's CORS
// proxy) and against the embedded local store (behind the same proxy, so
// the same faults can be injected).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  assertProgressSound,
  launchBrowser,
  MiB,
  sha256OfUrl,
  startBroker,
  startGcsEmulator,
  startProxy,
  uploadInPage,
  waitInPage,
} from "./support.mjs";

const SIZE = 100 * MiB;
const CHUNK = 8 * MiB;

/** The requests the proxy saw, as "METHOD Content-Range". */
const described = (log) => log.map((entry) => `${entry.method} ${entry.contentRange ?? "-"}`);

function resumableSuite(name, startStore) {
  describe(`resumable end to end (${name})`, () => {
    let store;
    let broker;
    let proxy;
    let browser;
    let page;
    let endpoint;

    before(async () => {
      [store, browser] = await Promise.all([startStore(), launchBrowser()]);
      ({ broker, proxy } = store);
      endpoint = `${broker.url}/api/uploads`;
      page = await browser.newPage();
      await page.goto(`${broker.url}/`);
    });

    after(async () => {
      await browser?.close();
      await store?.stop();
    });

    const scenario = (seed) => ({ size: SIZE, seed, endpoint, strategy: "resumable", chunkSize: CHUNK });

    test("100 MiB in 8 MiB chunks is stored byte-identical", async (t) => {
      proxy.log.length = 0;
      const run = await uploadInPage(page, scenario(21));
      assert.equal(run.ok, true, JSON.stringify(run.error));
      assert.deepEqual(run.states.map(([, to]) => to), ["initialized", "signed", "uploading", "uploaded", "verifying", "completed"]);
      assertProgressSound(run.progress, SIZE, CHUNK);
      const chunks = described(proxy.log).filter((line) => line.startsWith("PUT"));
      const count = Math.ceil(SIZE / CHUNK);
      assert.equal(chunks.length, count);
      assert.equal(chunks[0], `PUT bytes 0-${CHUNK - 1}/${SIZE}`);
      assert.equal(chunks.at(-1), `PUT bytes ${(count - 1) * CHUNK}-${SIZE - 1}/${SIZE}`);
      // GCS keeps the CRC32C it computed: the broker compares the client's
      // with it and reads nothing back (so it has no SHA-256 of its own);
      // the embedded store's object is read back and hashed.
      assert.equal(run.result.asset.sha256, name === "embedded store" ? run.sha256 : null);
      assert.deepEqual(await sha256OfUrl(run.result.asset.url), { sha256: run.sha256, length: SIZE });
      t.diagnostic(`100 MiB resumable (${name}): ${run.ms.toFixed(0)} ms (${(100 / (run.ms / 1000)).toFixed(0)} MiB/s)`);
    });

    if (name === "gcp-storage-emulator") {
      test("auto on a store with only resumable sessions: small and large files go resumable, no error", async () => {
        for (const size of [MiB, 20 * MiB]) {
          const run = await uploadInPage(page, { size, seed: 5, endpoint, strategy: "auto", chunkSize: CHUNK });
          assert.equal(run.ok, true, JSON.stringify(run.error));
          assert.equal(run.result.session.upload_strategy, "resumable");
          assert.deepEqual(run.states.map(([, to]) => to), ["initialized", "signed", "uploading", "uploaded", "verifying", "completed"]);
          assert.deepEqual(await sha256OfUrl(run.result.asset.url), { sha256: run.sha256, length: size });
        }
      });
    }

    test("a chunk cut mid-body is followed by a status query and the upload resumes", async () => {
      proxy.log.length = 0;
      proxy.cutNextChunk(3 * MiB);
      const run = await uploadInPage(page, scenario(22));
      assert.equal(run.ok, true, JSON.stringify(run.error) + JSON.stringify(proxy.log.slice(0, 6)));
      const puts = proxy.log.filter((entry) => entry.method === "PUT");
      const shown = JSON.stringify(puts.slice(0, 5));
      assert.ok(puts[0].cut, `the first chunk was cut: ${shown}`);
      // The client notices, asks the store for its offset (the broker then
      // asks too), and goes on from exactly there.
      const query = puts.findIndex((entry) => entry.contentRange === `bytes */${SIZE}`);
      assert.ok(query > 0 && puts.slice(1, query).every((entry) => entry.cut), `a status query follows: ${shown}`);
      assert.equal(puts[query].status, 308);
      const committed = puts[query].range ? Number(puts[query].range.split("-")[1]) + 1 : 0;
      const next = puts.slice(query).find((entry) => !entry.contentRange.includes("*"));
      assert.match(next.contentRange, new RegExp(`^bytes ${committed}-`), `resent from the committed offset: ${shown}`);
      assertProgressSound(run.progress, SIZE, CHUNK);
      assert.deepEqual(await sha256OfUrl(run.result.asset.url), { sha256: run.sha256, length: SIZE });
    });

    test("a page closed at ~50 % resumes from a new page at the store's offset", async () => {
      // One browser profile: the reload keeps its cookies (the broker binds
      // the session to the owner cookie).
      const profile = await browser.newContext();
      const first = await profile.newPage();
      await first.goto(`${broker.url}/`);
      await uploadInPage(first, { ...scenario(23), background: true });
      await waitInPage(first, (half) => { const reached = (window.__upload.progress.at(-1)?.bytesAcked ?? 0) >= half; if (reached) window.__uploadHandle.pause(); return reached; }, SIZE / 2);
      const before = await first.evaluate(() => ({
        sessionId: window.__upload.sessionId,
        acked: window.__upload.progress.at(-1).bytesAcked,
      }));
      await first.close();

      proxy.log.length = 0;
      const second = await profile.newPage();
      await second.goto(`${broker.url}/`);
      const run = await uploadInPage(second, { ...scenario(23), sessionId: before.sessionId });
      await profile.close();
      assert.equal(run.ok, true, JSON.stringify(run.error));
      assert.deepEqual(run.states.slice(0, 3), [[null, "signed"], ["signed", "resuming"], ["resuming", "uploading"]]);
      const lines = described(proxy.log).filter((line) => line.startsWith("PUT"));
      assert.equal(lines[0], `PUT bytes */${SIZE}`, "the new page first asks the store");
      const firstChunk = lines.find((line) => !line.includes("*"));
      const resumedAt = Number(firstChunk.match(/^PUT bytes (\d+)-/)[1]);
      assert.ok(resumedAt >= before.acked, `resumed at ${resumedAt}, at or after the ${before.acked} bytes acknowledged`);
      assert.equal(run.progress[0].bytesAcked, resumedAt, "progress starts from the server's offset");
      assertProgressSound(run.progress, SIZE, CHUNK);
      assert.deepEqual(await sha256OfUrl(run.result.asset.url), { sha256: run.sha256, length: SIZE });
    });
  });
}

resumableSuite("gcp-storage-emulator", async () => {
  const emulator = await startGcsEmulator("rindle-test");
  const proxy = await startProxy(emulator.url);
  const broker = await startBroker({ GCS_BUCKET: "rindle-test", GCS_BASE_URL: proxy.url, MAX_BYTES: String(128 * MiB) });
  return { broker, proxy, stop: async () => { await broker.stop(); await proxy.stop(); await emulator.stop(); } };
});

resumableSuite("embedded store", async () => {
  // The broker hands out session URIs on the proxy, which forwards to it.
  const proxy = await startProxy("http://127.0.0.1:1");
  const broker = await startBroker({ PUBLIC_URL: proxy.url, MAX_BYTES: String(128 * MiB) });
  proxy.retarget(broker.url);
  return { broker, proxy, stop: async () => { await broker.stop(); await proxy.stop(); } };
});
