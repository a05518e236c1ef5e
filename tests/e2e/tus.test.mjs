// End to end: tus uploads from headless Chromium through the reference
// broker, to @tus/server (the tus project's own server), to @tus/server
// behind a checksum-verifying wrapper, and to the broker's embedded tus
// server.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import {
  assertProgressSound,
  launchBrowser,
  MiB,
  sha256OfUrl,
  showInPage,
  startBroker,
  startTusChecksumProxy,
  startTusServer,
  uploadInPage,
  waitInPage,
} from "./support.mjs";

const SIZE = 100 * MiB;
const scenario = (endpoint, seed) => ({ size: SIZE, seed, endpoint, strategy: "tus", chunkSize: 8 * MiB });
const sha256OfFile = (path) => createHash("sha256").update(readFileSync(path)).digest("hex");
const idOf = (url) => url.split("/").pop();
/** The file @tus/server stored for a session (its upload URL, as the owner sees the session). */
const storedFile = async (directory, page, endpoint, run) =>
  join(directory, idOf((await showInPage(page, endpoint, run.session.id)).session.session_uri));

describe("tus end to end", () => {
  let tusServer;
  let verifying;
  let embeddedFront;
  let plainBroker;
  let checkingBroker;
  let embeddedBroker;
  let browser;
  let page;

  before(async () => {
    [tusServer, browser] = await Promise.all([startTusServer(), launchBrowser()]);
    verifying = await startTusChecksumProxy(tusServer.url);
    // The embedded server checks checksums itself; its front proxy only
    // corrupts on request.
    embeddedFront = await startTusChecksumProxy("http://127.0.0.1:1", { verify: false });
    const profile = { MAX_BYTES: String(128 * MiB) };
    [plainBroker, checkingBroker, embeddedBroker] = await Promise.all([
      startBroker({ ...profile, TUS_ENDPOINT: `${tusServer.url}/files` }),
      startBroker({ ...profile, TUS_ENDPOINT: `${verifying.url}/files` }),
      startBroker({ ...profile, PUBLIC_URL: embeddedFront.url }),
    ]);
    embeddedFront.retarget(embeddedBroker.url);
    page = await browser.newPage();
    await page.goto(`${plainBroker.url}/`);
  });

  after(async () => {
    await browser?.close();
    await Promise.all([plainBroker?.stop(), checkingBroker?.stop(), embeddedBroker?.stop()]);
    await Promise.all([verifying?.stop(), embeddedFront?.stop()]);
    await tusServer?.stop();
  });

  test("100 MiB to @tus/server is stored byte-identical", async (t) => {
    const run = await uploadInPage(page, scenario(`${plainBroker.url}/api/uploads`, 31));
    assert.equal(run.ok, true, JSON.stringify(run.error));
    assert.deepEqual(run.states.map(([, to]) => to), ["initialized", "signed", "uploading", "uploaded", "verifying", "completed"]);
    assertProgressSound(run.progress, SIZE, 8 * MiB);
    const endpoint = `${plainBroker.url}/api/uploads`;
    const assetUrl = run.result.asset.url;
    assert.ok(assetUrl.startsWith(`${plainBroker.url}/objects/`), `a read URL, not the tus upload URL: ${assetUrl}`);
    assert.equal(sha256OfFile(await storedFile(tusServer.directory, page, endpoint, run)), run.sha256, "the file @tus/server stored");
    assert.deepEqual(await sha256OfUrl(assetUrl), { sha256: run.sha256, length: SIZE }, "read back through the broker");
    assert.equal(run.result.asset.sha256, run.sha256);
    t.diagnostic(`100 MiB tus (@tus/server): ${run.ms.toFixed(0)} ms (${(100 / (run.ms / 1000)).toFixed(0)} MiB/s)`);
  });

  test("with checksums, a chunk corrupted on the way is refused (460) and sent again", async () => {
    verifying.log.length = 0;
    verifying.corruptNextPatch();
    const run = await uploadInPage(page, scenario(`${checkingBroker.url}/api/uploads`, 32));
    assert.equal(run.ok, true, JSON.stringify(run.error));
    const patches = verifying.log.filter((entry) => entry.method === "PATCH");
    assert.ok(patches.every((entry) => /^sha256 [A-Za-z0-9+/]+=*$/.test(entry.checksum)), "sha256 on every PATCH");
    assert.deepEqual(patches.filter((entry) => entry.status === 460).length, 1);
    const refused = patches.findIndex((entry) => entry.status === 460);
    assert.equal(patches[refused + 1].offset, patches[refused].offset, "the same chunk again");
    assert.equal(patches[refused + 1].checksum, patches[refused].checksum);
    assertProgressSound(run.progress, SIZE, 8 * MiB);
    assert.equal(sha256OfFile(await storedFile(tusServer.directory, page, `${checkingBroker.url}/api/uploads`, run)), run.sha256);
  });

  test("deferLength creates the upload without its length and sends it with the first PATCH", async () => {
    verifying.log.length = 0;
    const size = 16 * MiB;
    const run = await uploadInPage(page, {
      size, seed: 36, endpoint: `${checkingBroker.url}/api/uploads`, strategy: "tus", options: { deferLength: true },
    });
    assert.equal(run.ok, true, JSON.stringify(run.error));
    const [creation] = verifying.log.filter((entry) => entry.method === "POST");
    assert.deepEqual([creation.deferLength, creation.length], ["1", null]);
    const patches = verifying.log.filter((entry) => entry.method === "PATCH");
    assert.deepEqual(patches.map((entry) => entry.length), [String(size), null], "the length goes with the first PATCH only");
    assert.equal(sha256OfFile(await storedFile(tusServer.directory, page, `${checkingBroker.url}/api/uploads`, run)), run.sha256);
  });

  test("the embedded tus server refuses a corrupted chunk and the upload completes", async () => {
    embeddedFront.log.length = 0;
    embeddedFront.corruptNextPatch();
    const run = await uploadInPage(page, scenario(`${embeddedBroker.url}/api/uploads`, 33));
    assert.equal(run.ok, true, JSON.stringify(run.error));
    const patches = embeddedFront.log.filter((entry) => entry.method === "PATCH");
    assert.equal(patches.filter((entry) => entry.status === 460).length, 1, "the embedded server checked");
    assert.deepEqual(await sha256OfUrl(run.result.asset.url), { sha256: run.sha256, length: SIZE });
  });

  test("cancel terminates the upload: HEAD then answers 404", async () => {
    const run = await uploadInPage(page, { ...scenario(`${plainBroker.url}/api/uploads`, 34), cancelAtFraction: 0.3 });
    assert.equal(run.ok, false);
    assert.deepEqual([run.error.code, run.error.state], ["aborted", "aborted"]);
    const uploadUrl = run.session.session_uri;
    assert.equal(uploadUrl, "[redacted]", "page code never sees the upload URL");
    const shown = await showInPage(page, `${plainBroker.url}/api/uploads`, run.session.id);
    const head = await fetch(shown.session.session_uri, { method: "HEAD", headers: { "Tus-Resumable": "1.0.0" } });
    assert.equal(head.status, 404);
  });

  test("a page closed at ~50 % resumes from a new page at the server's offset", async () => {
    const endpoint = `${plainBroker.url}/api/uploads`;
    // One browser profile: the reload keeps its cookies (the broker binds
    // the session to the owner cookie).
    const profile = await browser.newContext();
    const first = await profile.newPage();
    await first.goto(`${plainBroker.url}/`);
    await uploadInPage(first, { ...scenario(endpoint, 35), background: true });
    await waitInPage(first, (half) => { const reached = (window.__upload.progress.at(-1)?.bytesAcked ?? 0) >= half; if (reached) window.__uploadHandle.pause(); return reached; }, SIZE / 2);
    const before = await first.evaluate(() => ({
      sessionId: window.__upload.sessionId,
      acked: window.__upload.progress.at(-1).bytesAcked,
    }));
    await first.close();

    const second = await profile.newPage();
    await second.goto(`${plainBroker.url}/`);
    const run = await uploadInPage(second, { ...scenario(endpoint, 35), sessionId: before.sessionId });
    const file = run.ok ? await storedFile(tusServer.directory, second, endpoint, run) : null;
    await profile.close();
    assert.equal(run.ok, true, JSON.stringify(run.error));
    assert.deepEqual(run.states.slice(0, 3), [[null, "signed"], ["signed", "resuming"], ["resuming", "uploading"]]);
    assert.ok(run.progress[0].bytesAcked >= before.acked, `continues from the server offset: ${JSON.stringify(run.progress.slice(0, 3))} ${before.acked}`);
    assert.ok(run.progress[0].bytesAcked < SIZE);
    assertProgressSound(run.progress, SIZE, 8 * MiB);
    assert.equal(sha256OfFile(file), run.sha256);
  });
});
