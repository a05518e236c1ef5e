// End to end: reliability in headless Chromium against the reference
// broker's embedded store, every strategy: a page reloaded at ~50 % picks
// the upload up again through its IndexedDB record, pause for 5 s then
// resume, offline then online, a request that stalls, a file replaced on
// disk mid-upload, URLs that expire mid-upload, and the demo page's
// timeline and piece map. The store is reached
// through a proxy that slows the bytes down (so each moment can be caught)
// and counts the requests that carry them.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { createHash, randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  assertProgressSound,
  launchBrowser,
  MiB,
  sha256OfUrl,
  showInPage,
  startBroker,
  startProxy,
  storedObjectExists,
  uploadInPage,
  waitInPage,
} from "./support.mjs";

const RATE = 24 * MiB;

// `inFlight`: the most bytes one moment can have in flight (one piece).
const STRATEGIES = [
  { strategy: "presigned_put", size: 24 * MiB, pieces: 1, inFlight: 24 * MiB },
  { strategy: "multipart", size: 40 * MiB, pieces: 8, inFlight: 5 * MiB, partSize: 5 * MiB, concurrency: 1 },
  { strategy: "resumable", size: 24 * MiB, pieces: 6, inFlight: 4 * MiB, options: { chunkSize: 4 * MiB } },
  { strategy: "tus", size: 24 * MiB, pieces: 6, inFlight: 4 * MiB, options: { chunkSize: 4 * MiB } },
];

/** A broker whose store URLs point at a throttling, counting proxy. */
async function startProxiedBroker(env = {}) {
  const proxy = await startProxy("http://127.0.0.1:1");
  const broker = await startBroker({ PUBLIC_URL: proxy.url, MAX_BYTES: String(64 * MiB), ...env });
  proxy.retarget(broker.url);
  proxy.throttle(RATE);
  return { broker, proxy, endpoint: `${broker.url}/api/uploads` };
}

describe("reliability end to end (embedded store, every strategy)", () => {
  let browser;
  let context;
  let broker;
  let proxy;
  let endpoint;

  before(async () => {
    [browser, { broker, proxy, endpoint }] = await Promise.all([launchBrowser(), startProxiedBroker()]);
    context = await browser.newContext();
  });

  after(async () => {
    await browser?.close();
    await broker?.stop();
    await proxy?.stop();
  });

  async function openPage() {
    const page = await context.newPage();
    await page.goto(`${broker.url}/`);
    return page;
  }

  for (const [index, { strategy, size, pieces, inFlight, ...rest }] of STRATEGIES.entries()) {
    const scenario = { endpoint, size, strategy, seed: 100 + index, ...rest };

    test(`${strategy}: a page reloaded at ~50 % resumes from its IndexedDB record, re-sending at most one piece`, async () => {
      scenario.endpoint = endpoint;
      const before = proxy.dataRequests().length;
      const first = await openPage();
      await uploadInPage(first, { ...scenario, background: true });
      await waitInPage(first, (half) => (window.__upload.progress.at(-1)?.bytesSent ?? 0) >= half, size / 2);
      const sessionId = await first.evaluate(() => window.__upload.sessionId);
      await first.close();

      const second = await openPage();
      const run = await uploadInPage(second, { ...scenario, resumePrevious: true });
      assert.equal(run.ok, true, JSON.stringify(run.error));
      assert.equal(run.previous.length, 1, "findPreviousUploads found the upload");
      assert.equal(run.previous[0].sessionId, sessionId);
      assert.equal(run.previous[0].strategy, strategy);
      assert.deepEqual(run.states[0], [null, "signed"], "the session was shown again, not started anew");
      assert.equal(run.result.session.id, sessionId);
      assert.equal(run.result.asset.sha256, run.sha256);
      assert.deepEqual(await sha256OfUrl(run.result.asset.url), { sha256: run.sha256, length: size });
      assertProgressSound(run.progress, size, inFlight);
      const sent = proxy.dataRequests().length - before;
      assert.ok(sent <= pieces + 1, `${sent} requests carried bytes for ${pieces} pieces: at most one was sent again`);

      // A completed upload's record is gone.
      await second.waitForFunction(
        async ({ endpoint, size, seed }) => {
          const { Uploader } = await import("/pkg/index.js");
          const file = new File([new Uint8Array(size)], "random.bin", {
            type: "application/octet-stream", lastModified: 1_700_000_000_000 + seed,
          });
          return (await new Uploader({ endpoint }).findPreviousUploads(file)).length === 0;
        },
        scenario,
        { polling: 50, timeout: 5_000 },
      );
      await second.close();
    });

    test(`${strategy}: a bit flipped on the way is refused by the store, sent again, and the stored bytes are the file's`, async () => {
      // One piece, so the flip hits the one a GCS session checks (its last).
      const flipScenario = strategy === "resumable" ? { ...scenario, options: { chunkSize: size } } : scenario;
      const before = proxy.log.length;
      proxy.flipNext(1);
      const page = await openPage();
      const workers = [];
      page.on("worker", (worker) => workers.push(worker.url()));
      const run = await uploadInPage(page, { ...flipScenario, endpoint, seed: 700 + index });
      await page.close();
      assert.equal(run.ok, true, JSON.stringify(run.error));
      const sent = proxy.log.slice(before).filter((entry) => entry.bytes > 0 && entry.method !== "POST");
      const flipped = sent.findIndex((entry) => entry.flipped);
      assert.ok(flipped >= 0, "a bit was flipped");
      assert.ok([400, 460].includes(sent[flipped].status), `the store refused the corrupted piece: ${sent[flipped].status}`);
      const again = (entry) => [entry.path, entry.contentRange, entry.bytes];
      assert.deepEqual(again(sent[flipped + 1]), again(sent[flipped]), "the same piece went again, to the same URL");
      assert.deepEqual(await sha256OfUrl(run.result.asset.url), { sha256: run.sha256, length: size });
      assert.ok(workers.some((url) => url.endsWith("/pkg/checksum-worker.js")), `hashed in the checksum worker: ${workers}`);
    });

    test(`${strategy}: pause for 5 s sends nothing, resume completes from the store's truth`, async () => {
      scenario.endpoint = endpoint;
      const before = proxy.dataRequests().length;
      const page = await openPage();
      const run = await uploadInPage(page, { ...scenario, seed: 200 + index, pauseAtFraction: 0.3, pauseMs: 5_000 });
      await page.close();
      assert.equal(run.ok, true, JSON.stringify(run.error));
      assert.deepEqual(run.pausedChanges, [[true, true], [false, false]]);
      assert.ok(run.progressAtResume - run.progressAtPause <= 1, "no progress while paused");
      assert.ok(run.ms >= 5_000);
      const startedWhilePaused = proxy.log.filter((e) => e.at > run.pausedAtMs && e.at < run.resumedAtMs);
      assert.deepEqual(startedWhilePaused, [], "no request reached the store while paused");
      assert.ok(run.states.every(([, to]) => to !== "aborted"), "pause discards nothing");
      assert.deepEqual(await sha256OfUrl(run.result.asset.url), { sha256: run.sha256, length: size });
      assertProgressSound(run.progress, size, inFlight);
      const sent = proxy.dataRequests().length - before;
      assert.ok(sent <= pieces + 1, `${sent} requests carried bytes for ${pieces} pieces`);
    });
  }

  test("the resume record holds no URL but the broker's, and an expired one is skipped and deleted", async () => {
    const size = 20 * MiB;
    const page = await openPage();
    await uploadInPage(page, {
      endpoint, size, seed: 600, strategy: "multipart", partSize: 5 * MiB, concurrency: 1, background: true,
    });
    await waitInPage(page, (part) => (window.__upload.progress.at(-1)?.bytesAcked ?? 0) >= part, 5 * MiB);
    const readRecords = () => page.evaluate(() => new Promise((resolve, reject) => {
      const opening = indexedDB.open("rindle-upload", 1);
      opening.onerror = () => reject(opening.error);
      opening.onsuccess = () => {
        const all = opening.result.transaction("uploads").objectStore("uploads").getAll();
        all.onsuccess = () => resolve(all.result);
        all.onerror = () => reject(all.error);
      };
    }));
    const records = await readRecords();
    const sessionId = await page.evaluate(() => window.__upload.sessionId);
    await page.evaluate(() => window.__uploadHandle.cancel());
    await page.evaluate(() => window.__finished);
    const mine = records.filter((r) => r.sessionId === sessionId);
    assert.equal(mine.length, 1, JSON.stringify(records));
    const text = JSON.stringify(mine[0]);
    assert.ok(!text.includes(proxy.url) && !/sig=|x-amz|upload_id|session_uri/i.test(text), `no store URL or credential: ${text}`);
    const urls = text.match(/https?:\/\/[^"]*/g) ?? [];
    assert.deepEqual(urls, [endpoint], "the only URL is the broker's endpoint");

    // A record past its expiry is neither offered nor kept.
    const expired = await page.evaluate(async (endpoint) => {
      const { Uploader } = await import("/pkg/index.js");
      const file = new File([new Uint8Array(16)], "old.bin", { type: "application/octet-stream", lastModified: 1_600_000_000_000 });
      const key = `rindle-upload:${endpoint}|${file.name}|${file.size}|${file.lastModified}|${file.type}`;
      const db = await new Promise((resolve, reject) => {
        const opening = indexedDB.open("rindle-upload", 1);
        opening.onsuccess = () => resolve(opening.result);
        opening.onerror = () => reject(opening.error);
      });
      const request = (store, op) => new Promise((resolve, reject) => {
        const r = op(db.transaction("uploads", store === "w" ? "readwrite" : "readonly").objectStore("uploads"));
        r.onsuccess = () => resolve(r.result);
        r.onerror = () => reject(r.error);
      });
      await request("w", (s) => s.put({ sessionId: "gone", strategy: "multipart", expiresAt: Date.now() - 1_000 }, key));
      const found = await new Uploader({ endpoint }).findPreviousUploads(file);
      const left = await request("r", (s) => s.get(key));
      return { found: found.length, left: left ?? null };
    }, endpoint);
    await page.close();
    assert.deepEqual(expired, { found: 0, left: null });
  });

  test("offline then online: the upload waits without spending a retry, then completes", async () => {
    const size = 40 * MiB;
    const page = await openPage();
    await uploadInPage(page, {
      endpoint, size, seed: 300, strategy: "multipart", partSize: 5 * MiB, concurrency: 1,
      options: { retryDelays: [] }, background: true,
    });
    await waitInPage(page, (part) => (window.__upload.progress.at(-1)?.bytesAcked ?? 0) >= part, 10 * MiB);
    await context.setOffline(true);
    const ackedAtOffline = await page.evaluate(() => window.__upload.progress.at(-1).bytesAcked);
    const sentBefore = proxy.dataRequests().length;
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    const whileOffline = await page.evaluate(() => ({ online: navigator.onLine, errors: window.__upload.errorsSeen }));
    const sentWhileOffline = proxy.dataRequests().length - sentBefore;
    await context.setOffline(false);
    const run = await page.evaluate(() => window.__finished);
    await page.close();

    assert.ok(ackedAtOffline < size, `the upload was unfinished when the network went (${ackedAtOffline} of ${size})`);
    assert.deepEqual(whileOffline, { online: false, errors: [] });
    assert.ok(sentWhileOffline <= 1, "at most the request in flight when the network went reached the store");
    const sentAfter = proxy.dataRequests().length - sentBefore - sentWhileOffline;
    assert.ok(sentAfter >= 1, "data requests went on once the network was back");
    assert.equal(run.ok, true, JSON.stringify(run.error));
    assert.deepEqual(await sha256OfUrl(run.result.asset.url), { sha256: run.sha256, length: size });
  });

  test("a request that stalls is given up after stallTimeout and sent again", async () => {
    const size = 20 * MiB;
    const before = proxy.log.length;
    proxy.holdNext();
    const page = await openPage();
    const run = await uploadInPage(page, {
      endpoint, size, seed: 500, strategy: "multipart", partSize: 5 * MiB, concurrency: 1,
      options: { stallTimeout: 1_000, retryDelays: [0] },
    });
    await page.close();
    assert.equal(run.ok, true, JSON.stringify(run.error));
    const parts = proxy.log.slice(before).filter((e) => e.method === "PUT" && e.bytes > 0);
    assert.equal(parts[0].held, true);
    assert.equal(parts.length, 5, "four parts, the held one sent twice");
    assert.deepEqual(await sha256OfUrl(run.result.asset.url), { sha256: run.sha256, length: size });
    assertProgressSound(run.progress, size, 5 * MiB);
  });

  // The demo page here: a corrupted piece to mark retried needs the proxy.
  test("the demo page draws the states as a timeline and a live piece map (a corrupted part marked retried); the file picked again after a reload continues", async () => {
    const directory = mkdtempSync(join(tmpdir(), "rindle-demo-"));
    const path = join(directory, "demo.bin");
    const content = randomBytes(60 * MiB);
    writeFileSync(path, content);
    const drawn = (page) => page.evaluate(() => ({
      timeline: [...document.querySelectorAll(".card .timeline li")].map((li) => [li.dataset.state, li.className]),
      pieces: [...document.querySelectorAll(".card .piece")].map((bar) => ({
        offset: Number(bar.dataset.offset), state: bar.dataset.state, retried: bar.dataset.retried === "true", width: parseFloat(bar.style.width),
      })),
      label: document.querySelector(".card .pieces").getAttribute("aria-label"),
    }));
    proxy.throttle(4 * MiB);
    try {
      const demo = await openPage();
      await demo.selectOption("#strategy", "multipart");
      proxy.flipNext(1);
      await demo.setInputFiles("rindle-upload input[type=file]", path);
      await demo.waitForFunction(() => document.querySelector('.piece[data-retried][data-state="stored"]')
        && document.querySelectorAll('.piece[data-state="stored"]').length >= 2, null, { timeout: 60_000 });
      const midway = await drawn(demo);
      assert.deepEqual(midway.timeline, [
        ["initialized", "reached"], ["signed", "reached"], ["uploading", "current"],
        ["uploaded", "ahead"], ["verifying", "ahead"], ["completed", "ahead"],
      ]);
      assert.equal(midway.pieces.filter((p) => p.retried).length, 1, "the one corrupted part");
      assert.ok(midway.pieces.some((p) => p.state === "sending"), "parts in flight are drawn as they go");
      assert.match(midway.label, /^Pieces of demo\.bin: \d+ stored, \d+ in flight, 1 retried$/);

      await demo.reload();
      await demo.setInputFiles("rindle-upload input[type=file]", path);
      await demo.waitForSelector('.timeline li.current[data-state="completed"]', { timeout: 60_000 });
      const resumed = await drawn(demo);
      assert.deepEqual(resumed.timeline, [
        ["signed", "reached"], ["resuming", "reached"], ["uploading", "reached"],
        ["uploaded", "reached"], ["verifying", "reached"], ["completed", "current"],
      ], "the session picked up again, not started anew");
      const storedBefore = new Set(midway.pieces.filter((p) => p.state === "stored").map((p) => p.offset));
      assert.deepEqual(resumed.pieces.filter((p) => storedBefore.has(p.offset)), [], "no part stored before the reload was sent again");
      assert.ok(resumed.pieces.every((p) => p.state === "stored"));
      const href = await demo.getAttribute(".card .detail a", "href");
      assert.deepEqual(await sha256OfUrl(href), { sha256: createHash("sha256").update(content).digest("hex"), length: content.length });
      await demo.close();
    } finally {
      proxy.throttle(RATE);
      rmSync(directory, { recursive: true, force: true });
    }
  });

  test("a file replaced on disk mid-upload ends file_changed, and no mixed object is stored", async () => {
    const directory = mkdtempSync(join(tmpdir(), "rindle-changed-"));
    const path = join(directory, "picked.bin");
    const size = 30 * MiB;
    writeFileSync(path, randomBytes(size));
    try {
      const page = await openPage();
      await page.evaluate(() => document.body.insertAdjacentHTML("beforeend", '<input type="file" id="picked">'));
      await page.setInputFiles("#picked", path);
      await uploadInPage(page, {
        endpoint, size, strategy: "multipart", partSize: 5 * MiB, concurrency: 1, fromInput: "#picked", background: true,
      });
      await waitInPage(page, (part) => (window.__upload.progress.at(-1)?.bytesAcked ?? 0) >= part, 5 * MiB);
      const rewrittenAt = Date.now();
      // Another size and a later mtime, as an editor saving the file leaves it.
      writeFileSync(path, randomBytes(size + MiB));
      utimesSync(path, new Date(), new Date(Date.now() + 60_000));
      const run = await page.evaluate(() => window.__finished);
      const shown = await showInPage(page, endpoint, run.session.id);
      await page.close();

      assert.equal(run.ok, false);
      assert.deepEqual([run.error.code, run.error.state, run.error.retryable], ["file_changed", "uploading", false]);
      const startedAfter = proxy.dataRequests().filter((e) => e.at > rewrittenAt);
      assert.ok(startedAfter.length <= 1, `at most the part in flight went on after the rewrite: ${JSON.stringify(startedAfter)}`);
      assert.notEqual(shown.session.state, "completed");
      assert.equal(storedObjectExists(broker, run.session.upload_key), false, "nothing was stored");
    } finally {
      rmSync(directory, { recursive: true, force: true });
    }
  });

  test("URLs that expire mid-upload are signed again, never reported", async () => {
    const short = await startProxiedBroker({ URL_TTL_SECS: "1" });
    short.proxy.throttle(8 * MiB);
    try {
      const page = await context.newPage();
      await page.goto(`${short.broker.url}/`);
      const size = 24 * MiB;
      const run = await uploadInPage(page, {
        endpoint: short.endpoint, size, seed: 400, strategy: "multipart", partSize: 5 * MiB, concurrency: 1,
        brokerMode: "counted",
      });
      await page.close();
      assert.equal(run.ok, true, JSON.stringify(run.error));
      assert.ok(run.ms > 2_000, "the upload outlived its first URLs");
      const signings = run.brokerCalls.filter((name) => name === "signParts").length;
      assert.ok(signings >= 3, `part URLs were signed ${signings} times for 5 parts`);
      assert.deepEqual(run.errorsSeen, []);
      assert.deepEqual(await sha256OfUrl(run.result.asset.url), { sha256: run.sha256, length: size });
    } finally {
      await short.broker.stop();
      await short.proxy.stop();
    }
  });

  test("a store that refuses every attempt's bytes ends checksum_mismatch, and a GCS session corrupted before its last chunk never completes", async () => {
    const page = await openPage();
    proxy.flipNext(Infinity);
    const always = await uploadInPage(page, { endpoint, size: 2 * MiB, seed: 800, strategy: "presigned_put" });
    proxy.flipNext(0);
    assert.deepEqual([always.ok, always.error.code, always.error.state], [false, "checksum_mismatch", "uploading"]);
    assert.equal(storedObjectExists(broker, always.session.upload_key), false, "nothing was stored");

    proxy.flipNext(1);
    const early = await uploadInPage(page, {
      endpoint, size: 8 * MiB, seed: 801, strategy: "resumable", options: { chunkSize: 4 * MiB },
    });
    await page.close();
    assert.equal(early.ok, false, "a corrupted chunk the store committed is never reported as completed");
    assert.equal(early.error.code, "checksum_mismatch");
    assert.notEqual(early.finalState, "completed");
  });
});
