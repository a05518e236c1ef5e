// End to end: multipart uploads from headless Chromium through the
// reference broker, against Garage (a real S3-compatible store; the S3_*
// variables of scripts/garage.sh) and against the embedded local store.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { ListMultipartUploadsCommand } from "@aws-sdk/client-s3";
import { bucket, s3 } from "../../scripts/s3.mjs";
import {
  assertProgressSound,
  launchBrowser,
  MiB,
  sha256OfUrl,
  showInPage,
  startBroker,
  uploadInPage,
  waitInPage,
} from "./support.mjs";

const SIZE = 200 * MiB;
const PART = 8 * MiB;
const PARTS = Math.ceil(SIZE / PART);
const MULTIPART_SEQUENCE = [
  [null, "initialized"],
  ["initialized", "signed"],
  ["signed", "uploading"],
  ["uploading", "uploaded"],
  ["uploaded", "verifying"],
  ["verifying", "completed"],
];

/** CRC32C (Castagnoli), base64 of the big-endian value, as S3 headers carry it. */
const CRC32C_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32c(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC32C_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  const out = Buffer.alloc(4);
  out.writeUInt32BE((c ^ 0xffffffff) >>> 0);
  return out.toString("base64");
}
// RFC 3720, appendix B.4: 32 bytes of zeros.
assert.equal(crc32c(Buffer.alloc(32)), Buffer.from("8a9136aa", "hex").toString("base64"));

function garageEnv() {
  const names = ["S3_ENDPOINT", "S3_REGION", "S3_BUCKET", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY", "S3_PATH_STYLE"];
  for (const name of names) assert.ok(process.env[name], `${name} is not set: start scripts/garage.sh (npm test does)`);
  return Object.fromEntries(names.map((name) => [name, process.env[name]]));
}

/** Multipart uploads Garage still holds (none may be left at any time
 * between tests: every upload here completes or is aborted). */
async function garageUploads() {
  const listed = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
  return (listed.Uploads ?? []).map((upload) => upload.Key);
}

/** The same suite against each store. */
function multipartSuite(name, { brokerEnv, openUploadsFor }) {
  describe(`multipart end to end (${name})`, () => {
    let broker;
    let browser;
    let page;
    let endpoint;

    before(async () => {
      [broker, browser] = await Promise.all([startBroker({ MAX_BYTES: String(256 * MiB), ...brokerEnv() }), launchBrowser()]);
      endpoint = `${broker.url}/api/uploads`;
      page = await browser.newPage();
      await page.goto(`${broker.url}/`);
    });

    after(async () => {
      await browser?.close();
      await broker?.stop();
    });

    test("200 MiB in 8 MiB parts, 4 in flight, is stored byte-identical", async (t) => {
      const run = await uploadInPage(page, { size: SIZE, seed: 7, endpoint, strategy: "multipart", partSize: PART, concurrency: 4 });
      assert.equal(run.ok, true, JSON.stringify(run.error));
      assert.deepEqual(run.states, MULTIPART_SEQUENCE);
      assertProgressSound(run.progress, SIZE, 4 * PART);
      assert.deepEqual(run.parts.map((p) => p.partNumber).sort((a, b) => a - b), [...Array(PARTS).keys()].map((i) => i + 1));
      assert.ok(run.parts.every((p) => p.etag.length > 2 && p.size === (p.partNumber < PARTS ? PART : SIZE - (PARTS - 1) * PART)));

      const { asset, session } = run.result;
      assert.equal(session.multipart_parts.length, PARTS);
      // Garage keeps the parts' CRC32Cs and the object's of them: the broker
      // verifies from those and reads nothing back (no SHA-256 of its own);
      // the embedded store's object is read back and hashed.
      assert.equal(asset.sha256, name === "Garage" ? null : run.sha256);
      assert.deepEqual(await sha256OfUrl(asset.url), { sha256: run.sha256, length: SIZE }, "read back from the store");
      const grown = run.wasmBytesAfter - run.wasmBytesBefore;
      assert.ok(grown < MiB, `WASM memory grew by ${grown} B for 200 MiB: no part's bytes entered it`);
      t.diagnostic(`200 MiB multipart (${name}): ${run.ms.toFixed(0)} ms (${(200 / (run.ms / 1000)).toFixed(0)} MiB/s)`);
    });

    test("presigned PUT and part URLs hold only for their planned sizes", async () => {
      // As a backend calls the broker: with an owner cookie of its own.
      const headers = { cookie: `rindle_owner=${"c".repeat(64)}`, "content-type": "application/json" };
      const post = async (path, body) =>
        (await fetch(`${endpoint}${path}`, { method: "POST", headers, body: JSON.stringify(body) })).json();
      const put = async (url, bytes, type) =>
        (await fetch(url, { method: "PUT", body: bytes, headers: type ? { "content-type": type } : {} })).status;

      const parts = await post("", {
        filename: "sized.bin", content_type: "application/octet-stream", byte_size: 6 * MiB,
        upload_strategy: "multipart", part_size: 5 * MiB,
      });
      const signed = await post(`/${parts.session.id}/parts/sign`, { part_numbers: [2] });
      const partUrl = signed.parts[0].upload.url;
      const tooLong = await put(partUrl, randomBytes(MiB + 1));
      assert.ok(tooLong >= 400 && tooLong < 500, `a longer part is refused: ${tooLong}`);
      assert.equal(await put(partUrl, randomBytes(MiB)), 200, "the planned size passes");

      const single = await post("", {
        filename: "sized.txt", content_type: "text/plain", byte_size: 5, upload_strategy: "presigned_put",
      });
      const putUrl = (await post(`/${single.session.id}/sign`, {})).upload.url;
      const longer = await put(putUrl, Buffer.from("hello!"), "text/plain");
      assert.ok(longer >= 400 && longer < 500, `a longer object is refused: ${longer}`);
      assert.equal(await put(putUrl, Buffer.from("hello"), "text/plain"), 200);
      for (const session of [parts.session, single.session]) await post(`/${session.id}/cancel`, {});
    });

    test("URLs signed with a checksum take only bytes that have it; complete compares the whole file's", async () => {
      const headers = { cookie: `rindle_owner=${"d".repeat(64)}`, "content-type": "application/json" };
      const post = async (path, body) =>
        (await fetch(`${endpoint}${path}`, { method: "POST", headers, body: JSON.stringify(body) })).json();
      const crc = (bytes) => ({ algorithm: "crc32c", value: crc32c(bytes) });
      const flipped = (bytes) => { const copy = Buffer.from(bytes); copy[3] ^= 0x01; return copy; };
      const put = (upload, body) => fetch(upload.url, { method: "PUT", headers: upload.headers, body });

      const file = randomBytes(6 * MiB);
      const [one, two] = [file.subarray(0, 5 * MiB), file.subarray(5 * MiB)];
      const created = await post("", {
        filename: "checked.bin", content_type: "application/octet-stream", byte_size: file.length,
        upload_strategy: "multipart", part_size: 5 * MiB,
      });
      const id = created.session.id;
      const signed = await post(`/${id}/parts/sign`, { part_numbers: [1, 2], checksums: { 1: crc(one), 2: crc(two) } });
      assert.equal(signed.parts[1].upload.headers["x-amz-checksum-crc32c"], crc32c(two), "the client is told the header");
      const corrupted = await put(signed.parts[1].upload, flipped(two));
      assert.equal(corrupted.status, 400, "the store refuses a part with a flipped bit");
      assert.match(await corrupted.text(), /<Code>(BadDigest|InvalidDigest)<\/Code>/);
      const stored = [await put(signed.parts[0].upload, one), await put(signed.parts[1].upload, two)];
      assert.deepEqual(stored.map((r) => r.status), [200, 200], "sent again intact, they are stored");
      const parts = stored.map((r, i) => ({ part_number: i + 1, etag: r.headers.get("etag") }));
      const wrong = await post(`/${id}/multipart/complete`, { parts, checksum: crc(flipped(file)) });
      assert.equal(wrong.session.state, "failed", "the whole file's checksum is compared at completion");
      assert.equal(wrong.session.failure_reason, "the stored object's CRC32C does not match the one the client computed of the file");

      const single = await post("", { filename: "checked.txt", content_type: "text/plain", byte_size: 5, upload_strategy: "presigned_put" });
      const upload = (await post(`/${single.session.id}/sign`, { checksum: crc(Buffer.from("hello")) })).upload;
      assert.equal((await put(upload, Buffer.from("hellm"))).status, 400);
      assert.equal((await put(upload, Buffer.from("hello"))).status, 200);
      const done = await post(`/${single.session.id}/complete`, { checksum: crc(Buffer.from("hello")) });
      assert.equal(done.session.state, "completed");
    });

    test("cancel at ~30 % aborts the multipart upload in the store", async () => {
      const run = await uploadInPage(page, {
        size: SIZE, seed: 8, endpoint, strategy: "multipart", partSize: PART, concurrency: 4, cancelAtFraction: 0.3,
      });
      assert.equal(run.ok, false);
      assert.deepEqual([run.error.code, run.error.state, run.cancelResult], ["aborted", "aborted", "aborted"]);
      assert.ok(run.parts.length < PARTS, "cancelled before the end");
      const shown = await showInPage(page, endpoint, run.session.id);
      assert.equal(shown.session.state, "aborted");
      assert.deepEqual(await openUploadsFor(broker, run.session), [], "no multipart upload or part is left");
      // A part PUT not aborted would still be on its way: look again later.
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      assert.deepEqual(await openUploadsFor(broker, run.session), [], "none appeared after the cancel either");
    });

    test("a page closed at ~50 % resumes from a new page and re-sends only unstored parts", async () => {
      const scenario = { size: SIZE, seed: 9, endpoint, strategy: "multipart", partSize: PART, concurrency: 4 };
      // One browser profile: the reload keeps its cookies (the broker binds
      // the session to the owner cookie).
      const profile = await browser.newContext();
      const first = await profile.newPage();
      await first.goto(`${broker.url}/`);
      await uploadInPage(first, { ...scenario, background: true });
      await waitInPage(first, (half) => { const reached = (window.__upload.progress.at(-1)?.bytesAcked ?? 0) >= half; if (reached) window.__uploadHandle.pause(); return reached; }, SIZE / 2);
      const before = await first.evaluate(() => ({ sessionId: window.__upload.sessionId, parts: window.__upload.parts }));
      await first.close();

      const second = await profile.newPage();
      await second.goto(`${broker.url}/`);
      const run = await uploadInPage(second, { ...scenario, sessionId: before.sessionId });
      await profile.close();

      assert.equal(run.ok, true, JSON.stringify(run.error));
      assert.deepEqual(run.states, [
        [null, "signed"], ["signed", "resuming"], ["resuming", "uploading"],
        ["uploading", "uploaded"], ["uploaded", "verifying"], ["verifying", "completed"],
      ]);
      const storedBefore = new Set(before.parts.map((p) => p.partNumber));
      const sentAfter = run.parts.map((p) => p.partNumber);
      assert.ok(storedBefore.size >= PARTS / 2 - 1, `half the parts were stored first (${storedBefore.size})`);
      assert.deepEqual(sentAfter.filter((n) => storedBefore.has(n)), [], "no part stored before the reload is sent again");
      const unseen = PARTS - storedBefore.size - sentAfter.length;
      assert.ok(unseen >= 0 && unseen <= 4, `at most the ${4} parts in flight at the reload landed unseen (${unseen})`);
      const bytesSeenStored = before.parts.reduce((sum, p) => sum + p.size, 0);
      assert.ok(run.progress[0].bytesAcked >= bytesSeenStored, "the resumed upload starts from the server's truth");
      assertProgressSound(run.progress, SIZE, 4 * PART);
      assert.deepEqual(await sha256OfUrl(run.result.asset.url), { sha256: run.sha256, length: SIZE });
    });

    test("part URLs the store refuses as expired are signed again, once per part", async () => {
      // URLs living 2 s, the first batch handed over after 3.2 s as if
      // fresh: the store itself must refuse them. (With 1 s, Garage's
      // whole-second dates left a URL signed again as little as a few ms.)
      const short = await startBroker({ URL_TTL_SECS: "2", MAX_BYTES: String(256 * MiB), ...brokerEnv() });
      try {
        const shortEndpoint = `${short.url}/api/uploads`;
        const size = 10 * MiB;
        const run = await uploadInPage(page, {
          size, seed: 10, endpoint: shortEndpoint, strategy: "multipart", partSize: 5 * MiB, concurrency: 1,
          brokerMode: "lateFirstParts",
        });
        assert.equal(run.ok, true, JSON.stringify(run.error));
        // [1, 2] late; part 1 refused → [1]; part 2 (still claimed fresh) refused → [2].
        assert.deepEqual(run.brokerCalls, ["signParts", "signParts", "signParts"]);
        assert.deepEqual(run.errorsSeen, []);
        assert.deepEqual(await sha256OfUrl(run.result.asset.url), { sha256: run.sha256, length: size });
      } finally {
        await short.stop();
      }
    });
  });
}

multipartSuite("Garage", {
  brokerEnv: garageEnv,
  openUploadsFor: async () => garageUploads(),
});

multipartSuite("embedded store", {
  brokerEnv: () => ({}),
  openUploadsFor: async (broker) => readdirSync(join(broker.dataDir, "store", "multipart")),
});
