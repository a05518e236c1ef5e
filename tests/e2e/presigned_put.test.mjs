// End to end: the public API (and the demo page) in headless Chromium,
// served by the real reference broker with its embedded store.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { launchBrowser, sha256OfUrl, startBroker, startServer } from "./support.mjs";

const MiB = 1 << 20;
const FULL_SEQUENCE = [
  [null, "initialized"],
  ["initialized", "signed"],
  ["signed", "uploading"],
  ["uploading", "uploaded"],
  ["uploaded", "verifying"],
  ["verifying", "completed"],
];

/**
 * Runs one upload inside the page through the package's public API and
 * reports what a program using it would see.
 */
async function uploadInPage(page, scenario) {
  return page.evaluate(async ({ size, random, endpoint, strategy, brokerMode, cancelOnFirstProgress }) => {
    const { default: init, Uploader } = await import("/pkg/rindle_upload.js");
    await init();
    const bytes = new Uint8Array(size);
    if (random) {
      for (let i = 0; i < size; i += 65536) crypto.getRandomValues(bytes.subarray(i, Math.min(i + 65536, size)));
    }
    const hex = (buffer) => [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, "0")).join("");
    const sha256 = hex(await crypto.subtle.digest("SHA-256", bytes));
    const blob = new Blob([bytes], { type: "application/octet-stream" });

    const post = (path, body) =>
      fetch(endpoint + path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) })
        .then((r) => r.json());
    const brokers = {
      // Every call through JavaScript callbacks that forward to the broker.
      callbacks: {
        initiate: (request) => post("", request),
        sign: (request) => post(`/${request.session_id}/sign`, request),
        complete: (request) => post(`/${request.session_id}/complete`, request),
        cancel: (request) => post(`/${request.session_id}/cancel`, request),
      },
      // Hands over a URL only after its real expiry, claiming it is fresh,
      // so the store itself must refuse it.
      lateSign: {
        sign: async (request) => {
          const reply = await post(`/${request.session_id}/sign`, request);
          await new Promise((resolve) => setTimeout(resolve, 2100));
          return { ...reply, upload: { ...reply.upload, expires_in: 900 } };
        },
      },
    };

    const states = [];
    const progress = [];
    const errorsSeen = [];
    const uploader = new Uploader({ endpoint, broker: brokers[brokerMode] });
    const started = performance.now();
    let cancelled = null;
    const upload = uploader.upload(blob, {
      strategy,
      filename: "random.bin",
      onStateChange: ({ from, to, session }) => states.push([from, to, session.state === to]),
      onProgress: (p) => {
        progress.push(p);
        if (cancelOnFirstProgress && !cancelled && p.bytesSent > 0) cancelled = upload.cancel();
      },
      onError: (error) => errorsSeen.push(error.code),
    });
    const report = (extra) => ({
      sha256,
      states: states.map(([from, to]) => [from, to]),
      recordsMatchedStates: states.every(([, , matched]) => matched),
      progress,
      errorsSeen,
      finalState: upload.state,
      session: upload.session,
      ms: performance.now() - started,
      ...extra,
    });
    try {
      const { session, asset } = await upload.done;
      return report({ ok: true, result: { session, asset } });
    } catch (e) {
      const cancelResult = cancelled ? await cancelled : undefined;
      return report({
        ok: false,
        cancelResult,
        error: { name: e.name, code: e.code, message: e.message, retryable: e.retryable, state: e.state, isError: e instanceof Error },
      });
    }
  }, { strategy: "presigned_put", random: true, ...scenario });
}

function assertProgressSound(progress, total) {
  for (let i = 1; i < progress.length; i++) {
    assert.ok(progress[i].bytesSent >= progress[i - 1].bytesSent, `bytesSent went back at ${i}`);
    assert.ok(progress[i].bytesAcked >= progress[i - 1].bytesAcked, `bytesAcked went back at ${i}`);
  }
  for (const p of progress) {
    assert.equal(p.bytesTotal, total);
    assert.ok(p.bytesAcked <= p.bytesSent && p.bytesSent <= total);
  }
  assert.deepEqual(progress.at(-1), { bytesSent: total, bytesAcked: total, bytesTotal: total });
}

function assertNoCredentials(message) {
  assert.doesNotMatch(message, /sig=|\/store\/|expires=/, `a presigned URL leaked into: ${message}`);
}

describe("presigned_put end to end (reference broker, embedded store)", () => {
  let broker;
  let shortUrlBroker;
  let browser;
  let page;
  let endpoint;

  before(async () => {
    const profile = { MAX_BYTES: String(80 * MiB) };
    [broker, shortUrlBroker, browser] = await Promise.all([
      startBroker(profile),
      startBroker({ ...profile, URL_TTL_SECS: "1" }),
      launchBrowser(),
    ]);
    endpoint = `${broker.url}/api/uploads`;
    page = await browser.newPage();
    await page.goto(`${broker.url}/`);
  });

  after(async () => {
    await browser?.close();
    await Promise.all([broker?.stop(), shortUrlBroker?.stop()]);
  });

  test("a 64 MiB random file is stored byte-identical, through every state", async (t) => {
    const size = 64 * MiB;
    const run = await uploadInPage(page, { size, endpoint });
    assert.equal(run.ok, true, JSON.stringify(run.error));
    assert.deepEqual(run.states, FULL_SEQUENCE);
    assert.ok(run.recordsMatchedStates, "each onStateChange session carried the new state");
    assert.equal(run.finalState, "completed");
    assertProgressSound(run.progress, size);

    const { asset, session } = run.result;
    assert.equal(session.state, "completed");
    assert.equal(asset.byte_size, size);
    assert.equal(asset.sha256, run.sha256);
    const stored = await sha256OfUrl(asset.url);
    assert.deepEqual(stored, { sha256: run.sha256, length: size });
    t.diagnostic(`64 MiB presigned_put: ${run.ms.toFixed(0)} ms (${(64 / (run.ms / 1000)).toFixed(0)} MiB/s)`);
  });

  test("a 0-byte file completes", async () => {
    const run = await uploadInPage(page, { size: 0, endpoint });
    assert.equal(run.ok, true, JSON.stringify(run.error));
    assert.deepEqual(run.states, FULL_SEQUENCE);
    const stored = await sha256OfUrl(run.result.asset.url);
    assert.deepEqual(stored, { sha256: createHash("sha256").digest("hex"), length: 0 });
  });

  test("every broker call can be a JavaScript callback", async () => {
    const run = await uploadInPage(page, { size: MiB, endpoint: `${broker.url}/api/uploads`, brokerMode: "callbacks" });
    assert.equal(run.ok, true, JSON.stringify(run.error));
    assert.deepEqual(run.states, FULL_SEQUENCE);
    assert.equal((await sha256OfUrl(run.result.asset.url)).sha256, run.sha256);
  });

  test("a file over the profile's maximum fails before any byte is sent", async () => {
    const run = await uploadInPage(page, { size: 81 * MiB, random: false, endpoint });
    assert.equal(run.ok, false);
    assert.equal(run.error.code, "file_too_large");
    assert.equal(run.error.retryable, false);
    assert.equal(run.error.state, null, "no session was created");
    assert.equal(run.error.isError, true);
    assert.equal(run.error.name, "RindleUploadError");
    assert.match(run.error.message, /at most 83886080/);
    assert.deepEqual(run.states, []);
    assert.deepEqual(run.progress, [], "no bytes were sent");
    assert.deepEqual(run.errorsSeen, ["file_too_large"], "onError saw the same error");
  });

  test("an unreachable broker, an expired URL and a malformed answer fail with distinct codes", async () => {
    const malformed = await startServer((req, res) => {
      res.writeHead(201, { "content-type": "application/json" });
      res.end(JSON.stringify({ session: { id: "s1", state: "half-done", upload_strategy: "presigned_put" } }));
    });
    try {
      const unreachable = await uploadInPage(page, { size: 1024, endpoint: "http://127.0.0.1:9/api/uploads" });
      const expired = await uploadInPage(page, { size: 1024, endpoint: `${shortUrlBroker.url}/api/uploads`, brokerMode: "lateSign" });
      const garbled = await uploadInPage(page, { size: 1024, endpoint: `${malformed.url}/api/uploads` });

      assert.deepEqual(
        [unreachable, expired, garbled].map((r) => [r.ok, r.error.code, r.error.retryable, r.error.state]),
        [
          [false, "broker_unreachable", true, null],
          [false, "url_expired", true, "uploading"],
          [false, "broker_malformed_response", false, null],
        ],
      );
      assert.equal(expired.error.message, "store answered 403: AccessDenied: Request has expired");
      for (const run of [unreachable, expired, garbled]) assertNoCredentials(run.error.message);
    } finally {
      await malformed.stop();
    }
  });

  test("cancel aborts the upload, tells the broker and leaves no object", async () => {
    const run = await uploadInPage(page, { size: 64 * MiB, endpoint, cancelOnFirstProgress: true });
    assert.equal(run.ok, false);
    assert.deepEqual([run.error.code, run.error.state, run.error.retryable], ["aborted", "aborted", false]);
    assert.equal(run.cancelResult, "aborted", "cancel() resolves with the final state");
    assert.deepEqual(run.states.at(-1), ["uploading", "aborted"]);
    assert.equal(run.finalState, "aborted");

    const shown = await (await fetch(`${endpoint}/${run.session.id}`)).json();
    assert.equal(shown.session.state, "aborted");
    const object = await fetch(`${broker.url}/objects/${run.session.upload_key}`);
    assert.equal(object.status, 404);
  });

  test("the demo page uploads a picked file and links the stored object", async () => {
    const demo = await browser.newPage();
    await demo.goto(`${broker.url}/`);
    const content = Buffer.from("hello from the demo page\n".repeat(1000));
    await demo.setInputFiles("#files", { name: "hello.txt", mimeType: "text/plain", buffer: content });
    await demo.waitForSelector('.state[data-state="completed"]', { timeout: 30_000 });
    const href = await demo.getAttribute(".detail a", "href");
    const stored = await sha256OfUrl(href);
    assert.equal(stored.sha256, createHash("sha256").update(content).digest("hex"));
    assert.equal(await demo.locator("progress").evaluate((bar) => bar.value), 1);
    await demo.close();
  });
});
