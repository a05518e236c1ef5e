// End to end: the public API (and the demo page) in headless Chromium,
// served by the real reference broker with its embedded store.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  assertNoCredentials,
  assertProgressSound,
  FULL_SEQUENCE,
  launchBrowser,
  MiB,
  sha256OfUrl,
  showInPage,
  startBroker,
  startServer,
  storedObjectExists,
  uploadInPage,
} from "./support.mjs";

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
    assertProgressSound(run.progress, size, size);

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
    const run = await uploadInPage(page, { size: 81 * MiB, fill: "zero", endpoint });
    assert.equal(run.ok, false);
    assert.equal(run.error.code, "file_too_large");
    assert.equal(run.error.retryable, false);
    assert.equal(run.error.state, null, "no session was created");
    assert.equal(run.error.isError, true);
    assert.equal(run.error.isUploadError, true, "an instance of the package's UploadError");
    assert.equal(run.error.name, "UploadError");
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
      const unreachable = await uploadInPage(page, {
        size: 1024,
        endpoint: "http://127.0.0.1:9/api/uploads",
        options: { retryDelays: [10, 10] },
      });
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

  test("retryDelays and retryBudget bound the retries of a failing broker call", async () => {
    const calls = await page.evaluate(async (endpoint) => {
      const { default: init, Uploader } = await import("/pkg/index.js");
      await init();
      const attempts = async (options) => {
        let count = 0;
        const failing = {
          initiate: () => {
            count += 1;
            throw Object.assign(new Error("busy"), { code: "broker_server_error" });
          },
        };
        const upload = new Uploader({ endpoint, broker: failing }).upload(new Blob(["x"]), options);
        const code = await upload.done.then(() => "completed", (e) => e.code);
        return [code, count];
      };
      return [
        await attempts({ retryDelays: [0, 0] }),
        await attempts({ retryDelays: [0, 0], retryBudget: 1 }),
        await attempts({ retryDelays: [] }),
      ];
    }, endpoint);
    assert.deepEqual(calls, [["broker_server_error", 3], ["broker_server_error", 2], ["broker_server_error", 1]]);
  });

  test("a page on another origin uploads with its owner cookie, or with a bearer token", async () => {
    const token = "e2e-bearer-token-0123456789";
    const [cookieBroker, bearerBroker] = await Promise.all([
      startBroker({ ALLOWED_ORIGINS: broker.url }),
      startBroker({ AUTH_MODE: "bearer", AUTH_TOKENS: token }),
    ]);
    try {
      // The page is on `broker`'s origin; both brokers are on others.
      const withCookie = await uploadInPage(page, { size: MiB, seed: 61, endpoint: `${cookieBroker.url}/api/uploads` });
      assert.equal(withCookie.ok, true, JSON.stringify(withCookie.error));
      assert.equal((await sha256OfUrl(withCookie.result.asset.url)).sha256, withCookie.sha256);
      const withToken = await uploadInPage(page, {
        size: MiB, seed: 62, endpoint: `${bearerBroker.url}/api/uploads`,
        uploaderHeaders: { authorization: `Bearer ${token}` },
      });
      assert.equal(withToken.ok, true, JSON.stringify(withToken.error));
      assert.equal((await sha256OfUrl(withToken.result.asset.url)).sha256, withToken.sha256);
      const without = await uploadInPage(page, { size: MiB, seed: 63, endpoint: `${bearerBroker.url}/api/uploads` });
      assert.deepEqual([without.ok, without.error.code, without.error.retryable], [false, "unauthorized", false]);
    } finally {
      await Promise.all([cookieBroker.stop(), bearerBroker.stop()]);
    }
  });

  test("cancel aborts the upload, tells the broker and leaves no object", async () => {
    const run = await uploadInPage(page, { size: 64 * MiB, endpoint, cancelAtFraction: 0 });
    assert.equal(run.ok, false);
    assert.deepEqual([run.error.code, run.error.state, run.error.retryable], ["aborted", "aborted", false]);
    assert.equal(run.cancelResult, "aborted", "cancel() resolves with the final state");
    assert.deepEqual(run.states.at(-1), ["uploading", "aborted"]);
    assert.equal(run.finalState, "aborted");

    const shown = await showInPage(page, endpoint, run.session.id);
    assert.equal(shown.session.state, "aborted");
    assert.equal(storedObjectExists(broker, run.session.upload_key), false);
    // An unaborted PUT would still be on its way: look again later.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    assert.equal(storedObjectExists(broker, run.session.upload_key), false, "no object appeared after the cancel either");
  });

  test("an event callback that throws is reported on the console, and the upload goes on", async () => {
    const logged = [];
    const listen = (message) => message.type() === "error" && logged.push(message.text());
    page.on("console", listen);
    try {
      const outcome = await page.evaluate(async (endpoint) => {
        const { default: init, Uploader } = await import("/pkg/index.js");
        await init();
        const file = new File([new Uint8Array(4096).fill(1)], "thrower.txt", { type: "text/plain" });
        const upload = new Uploader({ endpoint }).upload(file, {
          resume: false,
          onStateChange: () => { throw new Error("a listener's own bug"); },
        });
        return (await upload.done).session.state;
      }, endpoint);
      assert.equal(outcome, "completed");
      assert.ok(
        logged.some((text) => text.includes("rindle-upload: an event callback threw") && text.includes("a listener's own bug")),
        `reported on the console: ${JSON.stringify(logged)}`,
      );
    } finally {
      page.off("console", listen);
    }
  });

  test("the demo page uploads a picked file and links the stored object", async () => {
    const demo = await browser.newPage();
    await demo.goto(`${broker.url}/`);
    const content = Buffer.from("hello from the demo page\n".repeat(1000));
    await demo.setInputFiles("rindle-upload input[type=file]", { name: "hello.txt", mimeType: "text/plain", buffer: content });
    await demo.waitForSelector('.timeline li.current[data-state="completed"]', { timeout: 30_000 });
    const href = await demo.getAttribute(".card .detail a", "href");
    const stored = await sha256OfUrl(href);
    assert.equal(stored.sha256, createHash("sha256").update(content).digest("hex"));
    assert.equal(await demo.getByRole("progressbar", { name: "Upload of hello.txt" }).getAttribute("aria-valuenow"), "100");
    const drawn = await demo.evaluate(() => ({
      timeline: [...document.querySelectorAll(".card .timeline li")].map((li) => li.dataset.state),
      strategy: document.querySelector(".card .strategy-used").textContent,
      pieces: [...document.querySelectorAll(".card .piece")].map((bar) => [bar.dataset.offset, bar.dataset.state, bar.style.width]),
    }));
    assert.deepEqual(drawn, {
      timeline: ["initialized", "signed", "uploading", "uploaded", "verifying", "completed"],
      strategy: "presigned_put",
      pieces: [["0", "stored", "100%"]],
    }, "auto sends a small file in one piece");
    await demo.close();
  });

  test("the demo page works from the keyboard and names every control for screen readers", async () => {
    const demo = await browser.newPage();
    const failedLoads = [];
    demo.on("response", (response) => response.status() >= 400 && failedLoads.push(`${response.status()} ${response.url()}`));
    // Listening before the page loads turns Playwright's file chooser
    // interception on in time (waitForEvent turns it on late and races).
    const choosers = [];
    demo.on("filechooser", (chooser) => choosers.push(chooser));
    const chooserCount = async (n) => {
      for (let i = 0; i < 300 && choosers.length < n; i++) await new Promise((r) => setTimeout(r, 100));
      assert.equal(choosers.length, n, "the file picker opened");
    };
    await demo.goto(`${broker.url}/`);
    const drop = demo.getByRole("button", { name: "Choose files, or drop them here" });
    await drop.focus();
    await demo.keyboard.press("Enter");
    await chooserCount(1);
    await choosers[0].setFiles({ name: "keyboard.txt", mimeType: "text/plain", buffer: Buffer.from("typed, not clicked\n") });
    await demo.waitForSelector('.timeline li.current[data-state="completed"]', { timeout: 30_000 });
    assert.equal(await demo.getByRole("progressbar", { name: "Upload of keyboard.txt" }).count(), 1);
    assert.equal(await demo.getByRole("button", { name: "Pause keyboard.txt" }).count(), 1);
    assert.equal(await demo.getByRole("button", { name: "Cancel keyboard.txt" }).count(), 1);
    assert.equal(await demo.locator('[aria-live="polite"]').textContent(), "keyboard.txt uploaded");
    await drop.click();
    await chooserCount(2); // a click opens the picker too
    assert.deepEqual(failedLoads, [], "nothing the page loads is missing (the favicon included)");
    await demo.close();
  });
});
