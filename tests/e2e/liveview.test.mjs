// rindle-upload/liveview end to end: the uploaders LiveView calls, fed
// entries of the shape phoenix_live_view's client hands them (its
// assets/js/phoenix_live_view/upload_entry.js: `file`, `meta`,
// `progress(percent)`, `error(reason)`, `onCancel(callback)`) and the exact
// meta Rindle.LiveView builds (lib/rindle/live_view.ex: `allow_upload` →
// uploader "Rindle" with url, method (an atom: "put"), headers, session_id,
// asset_id; `allow_tus_upload` → "RindleTus" with endpoint, upload_url,
// session_id, asset_id), made here from the reference broker's own
// sessions. The server's part (consume → verify_completion) is the
// broker's `complete`, called as Rindle would after the entry is done.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { brokerAndPage, MiB, sha256OfUrl } from "./support.mjs";

/** Runs one entry through `uploaders()[name]` in the page; reports what LiveView would see. */
async function runEntry(page, { name, size, strategy, viewErrorAt, cancelAt }) {
  return page.evaluate(async ({ name, size, strategy, viewErrorAt, cancelAt }) => {
    const { uploaders } = await import("/pkg/liveview.js");
    const bytes = new Uint8Array(size);
    for (let i = 0; i < size; i += 65536) crypto.getRandomValues(bytes.subarray(i, Math.min(size, i + 65536)));
    const file = new File([bytes], "photo.bin", { type: "application/octet-stream" });
    const hex = (b) => [...new Uint8Array(b)].map((x) => x.toString(16).padStart(2, "0")).join("");
    const post = (path, body) =>
      fetch(`/api/uploads${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) })
        .then((r) => r.json());
    // What Rindle.LiveView's allow_upload / allow_tus_upload put in the meta.
    const { session } = await post("", {
      filename: file.name, content_type: file.type, byte_size: size, upload_strategy: strategy,
      ...(name === "RindleTus" ? { resumable_protocol: "tus" } : {}),
    });
    const signed = await post(`/${session.id}/sign`, { session_id: session.id });
    const meta = name === "Rindle"
      ? { uploader: "Rindle", url: signed.upload.url, method: "put", headers: signed.upload.headers ?? {}, session_id: session.id, asset_id: session.asset_id }
      : (() => {
          // TusPlug's Location is a path under its mounted endpoint.
          const uri = new URL(signed.session.session_uri);
          return { uploader: "RindleTus", endpoint: "/tus", upload_url: uri.pathname, session_id: session.id, asset_id: session.asset_id };
        })();

    const chunkSize = 1 << 20;
    const seen = { progress: [], errors: [] };
    let viewError = null;
    let cancel = null;
    const finished = new Promise((resolve) => {
      const entry = {
        file,
        meta,
        progress: (percent) => {
          seen.progress.push(percent);
          if (percent >= 100) resolve("done");
          if (viewErrorAt !== undefined && percent >= viewErrorAt && viewError) {
            const stop = viewError;
            viewError = null;
            stop();
            setTimeout(() => resolve("stopped"), 1500);
          }
          if (cancelAt !== undefined && percent >= cancelAt && cancel) {
            const stop = cancel;
            cancel = null;
            stop();
            setTimeout(() => resolve("cancelled"), 1500);
          }
        },
        error: (reason) => {
          seen.errors.push(reason);
          resolve("error");
        },
        onCancel: (callback) => { cancel = callback; },
      };
      uploaders({ chunkSize, retryDelays: [50] })[name]([entry], (callback) => { viewError = callback; });
    });
    const ended = await finished;
    const progressAtEnd = seen.progress.length;
    await new Promise((r) => setTimeout(r, 500));
    // Rindle's consume_uploaded_entries → verify_completion.
    const verified = await post(`/${session.id}/complete`, { session_id: session.id });
    return {
      ended, ...seen, progressAfterEnd: seen.progress.length - progressAtEnd, sha256: hex(await crypto.subtle.digest("SHA-256", bytes)),
      verified: { state: verified.session?.state, asset: verified.asset, error: verified.error?.code },
    };
  }, { name, size, strategy, viewErrorAt, cancelAt });
}

function assertProgressRules(progress) {
  assert.ok(progress.every((p) => Number.isInteger(p) && p >= 0 && p <= 100), JSON.stringify(progress));
  for (let i = 1; i < progress.length; i++) assert.ok(progress[i] > progress[i - 1], `never back: ${progress}`);
}

describe("rindle-upload/liveview (reference broker, embedded store)", () => {
  const suite = brokerAndPage();

  for (const [name, strategy] of [["Rindle", "presigned_put"], ["RindleTus", "resumable"]]) {
    test(`${name}: the meta Rindle emits uploads the file byte-identical, progress whole percents to 100`, async () => {
      const run = await runEntry(suite.page, { name, size: 6 * MiB + 123, strategy });
      assert.equal(run.ended, "done", JSON.stringify(run.errors));
      assert.deepEqual(run.errors, []);
      assertProgressRules(run.progress);
      assert.equal(run.progress.at(-1), 100);
      assert.equal(run.progress.filter((p) => p === 100).length, 1);
      assert.equal(run.verified.state, "completed", JSON.stringify(run.verified));
      assert.equal(run.verified.asset.sha256, run.sha256);
      assert.equal((await sha256OfUrl(`${suite.broker.url}${new URL(run.verified.asset.url, suite.broker.url).pathname}`)).sha256, run.sha256);
    });
  }

  test("RindleTus: onViewError stops the transfer; the store keeps what it had and progress stops below 100", async () => {
    const run = await runEntry(suite.page, { name: "RindleTus", size: 12 * MiB, strategy: "resumable", viewErrorAt: 20 });
    assert.equal(run.ended, "stopped");
    assert.deepEqual(run.errors, [], "a view error is LiveView's, not an upload error");
    assertProgressRules(run.progress);
    assert.ok(run.progress.at(-1) < 100, JSON.stringify(run.progress));
    assert.equal(run.progressAfterEnd, 0, "no progress once stopped");
    assert.notEqual(run.verified.state, "completed", "the server does not hold the whole file");
  });

  test("RindleTus: an entry LiveView cancels stops, reports no error and is not completed", async () => {
    const run = await runEntry(suite.page, { name: "RindleTus", size: 12 * MiB, strategy: "resumable", cancelAt: 10 });
    assert.equal(run.ended, "cancelled");
    assert.deepEqual(run.errors, []);
    assert.ok(run.progress.at(-1) < 100);
    assert.notEqual(run.verified.state, "completed");
  });

  test("RindleTus: a reload mid-upload resumes: the meta names the same session again and only the rest is sent", async () => {
    const size = 16 * MiB;
    const page = suite.page;
    // The same bytes on both sides of the reload (a File does not survive it).
    const setup = () => {
      window.sameBytes = (size) => {
        const words = new Uint32Array(size / 4);
        let x = 0x9e3779b9;
        for (let i = 0; i < words.length; i++) words[i] = x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
        return new File([words], "movie.bin", { type: "application/octet-stream" });
      };
      // What an app's allow_tus_upload external function hands out for this
      // session: its tus URL (a path under the mounted endpoint), session and asset.
      window.metaFor = (session) => ({
        uploader: "RindleTus", endpoint: "/tus", upload_url: new URL(session.session_uri).pathname,
        session_id: session.id, asset_id: session.asset_id,
      });
      window.entryFor = (file, meta, progress, onError) => ({ file, meta, progress, error: onError, onCancel: () => {} });
    };
    await page.evaluate(setup);
    const { sessionId, before } = await page.evaluate(async (size) => {
      const { uploaders } = await import("/pkg/liveview.js");
      const post = (path, body) =>
        fetch(`/api/uploads${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) }).then((r) => r.json());
      const file = sameBytes(size);
      const { session } = await post("", { filename: file.name, content_type: file.type, byte_size: size, upload_strategy: "resumable", resumable_protocol: "tus" });
      const signed = await post(`/${session.id}/sign`, { session_id: session.id });
      const before = [];
      await new Promise((resolve, reject) => {
        uploaders({ chunkSize: 1 << 20 }).RindleTus(
          [entryFor(file, metaFor(signed.session), (p) => { before.push(p); if (p >= 25) resolve(); }, reject)],
          () => {},
        );
      });
      return { sessionId: session.id, before };
    }, size);
    await page.reload();
    await page.evaluate(setup);
    // The exact tus writes after the reload: each PATCH's Upload-Offset.
    const patches = [];
    const onRequest = (request) => {
      if (request.method() === "PATCH") patches.push(Number(request.headers()["upload-offset"]));
    };
    page.on("request", onRequest);
    const after = await page.evaluate(async ({ size, sessionId }) => {
      const { uploaders } = await import("/pkg/liveview.js");
      const { session } = await fetch(`/api/uploads/${sessionId}`).then((r) => r.json());
      // What the tus server holds now, as the test sees it (not the uploader).
      const head = await fetch(new URL(session.session_uri).pathname, { method: "HEAD", headers: { "Tus-Resumable": "1.0.0" } });
      const offset = Number(head.headers.get("Upload-Offset"));
      const file = sameBytes(size);
      const progress = [];
      const errors = [];
      await new Promise((resolve) => {
        uploaders({ chunkSize: 1 << 20 }).RindleTus(
          [entryFor(file, metaFor(session), (p) => { progress.push(p); if (p >= 100) resolve(); }, (e) => { errors.push(e); resolve(); })],
          () => {},
        );
      });
      const verified = await fetch(`/api/uploads/${sessionId}/complete`, {
        method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ session_id: sessionId }),
      }).then((r) => r.json());
      const hex = (b) => [...new Uint8Array(b)].map((x) => x.toString(16).padStart(2, "0")).join("");
      return { offset, progress, errors, state: verified.session?.state, stored: verified.asset?.sha256, sent: hex(await crypto.subtle.digest("SHA-256", await file.arrayBuffer())) };
    }, { size, sessionId });
    page.off("request", onRequest);
    assert.ok(before.at(-1) >= 25 && before.at(-1) < 100, JSON.stringify(before));
    assert.ok(after.offset > 0 && after.offset < size, `the store held part of the file at the reload: ${after.offset}`);
    assert.deepEqual(after.errors, []);
    const chunks = Array.from({ length: Math.ceil((size - after.offset) / MiB) }, (_, i) => after.offset + i * MiB);
    assert.deepEqual(patches, chunks, "the first write starts at the store's offset and only the rest is sent");
    assertProgressRules(after.progress);
    assert.ok(after.progress[0] >= Math.floor((after.offset * 100) / size), `progress starts where the store is: ${after.progress}`);
    assert.equal(after.progress.at(-1), 100);
    assert.equal(after.state, "completed");
    assert.equal(after.stored, after.sent, "the stored bytes are the file's");
  });

  test("a typed error reaches entry.error with its code", async () => {
    const failed = await suite.page.evaluate(async () => {
      const { Rindle } = await import("/pkg/liveview.js");
      const file = new File([new Uint8Array(1000)], "a.bin");
      return new Promise((resolve) => {
        Rindle([{
          file,
          meta: { uploader: "Rindle", url: "javascript:alert(1)", method: "put", headers: {}, session_id: "s1", asset_id: "a1" },
          progress: () => {},
          error: resolve,
          onCancel: () => {},
        }], () => {});
      });
    });
    assert.equal(failed, "broker_malformed_response");
  });
});
