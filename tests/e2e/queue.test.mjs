// The uploader's queue (maxUploads) and its total progress, in Chromium
// against the reference broker and its embedded store.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { brokerAndPage } from "./support.mjs";

describe("Uploader queue (reference broker, embedded store)", () => {
  const suite = brokerAndPage();

  // The page has no owner cookie yet: the first calls also prove that an
  // uploader waits for the broker's first answer (and its cookie).
  test("maxUploads: 2 of 5 transfer at once, the rest wait in call order, all byte-identical; the totals add up and never go back", async () => {
    const seen = await suite.page.evaluate(async (endpoint) => {
      const { default: init, Uploader } = await import("/pkg/index.js");
      await init();
      const totals = [];
      const uploader = new Uploader({ endpoint, maxUploads: 2, onProgress: (p) => totals.push(p) });
      const holding = new Set();
      let most = 0;
      const started = [];
      const events = [];
      const files = [0, 1, 2, 3, 4].map((i) => {
        const bytes = new Uint8Array((3 << 20) + i);
        for (let j = 0; j < bytes.length; j += 65536) crypto.getRandomValues(bytes.subarray(j, j + 65536));
        return new File([bytes], `f${i}.bin`);
      });
      // From the session's creation until its bytes are stored, an upload holds a turn.
      const uploads = files.map((file, i) => uploader.upload(file, {
        strategy: "presigned_put",
        onStateChange: ({ to }) => {
          events.push(`${i} ${to}`);
          if (to === "initialized") { started.push(i); holding.add(i); most = Math.max(most, holding.size); }
          if (to === "uploaded") holding.delete(i);
        },
      }));
      const atCall = uploads.map((u) => ({ queued: u.queued, state: u.state }));
      const results = await Promise.all(uploads.map((u) => u.done));
      const hex = async (f) => [...new Uint8Array(await crypto.subtle.digest("SHA-256", await f.arrayBuffer()))]
        .map((x) => x.toString(16).padStart(2, "0")).join("");
      return {
        stored: results.map((r) => r.asset.sha256), sent: await Promise.all(files.map(hex)),
        ackedNeverBack: totals.every((t, i) => i === 0 || t.bytesAcked >= totals[i - 1].bytesAcked),
        atCall, started, most, events, queuedAtEnd: uploads.map((u) => u.queued),
        sizes: results.map((r) => r.asset.byte_size),
        last: uploader.progress, everActive: Math.max(...totals.map((t) => t.active)),
        sums: totals.slice(4).map((t) => t.active + t.queued + t.paused + t.done + t.failed),
        total: files.reduce((sum, f) => sum + f.size, 0),
      };
    }, `${suite.broker.url}/api/uploads`);
    assert.deepEqual(seen.atCall, [
      { queued: false, state: null }, { queued: false, state: null },
      { queued: true, state: null }, { queued: true, state: null }, { queued: true, state: null },
    ]);
    assert.deepEqual(seen.started, [0, 1, 2, 3, 4], "turns come in call order");
    assert.deepEqual(seen.stored, seen.sent, "every file stored byte-identical");
    assert.equal(seen.ackedNeverBack, true, "the total stored never goes back");
    assert.equal(seen.most, 2, `never more than maxUploads at once: ${seen.events}`);
    assert.ok(seen.everActive >= 2, "active counts uploads verifying too");
    assert.ok(seen.sums.every((n) => n === 5), "every upload is counted once in every report");
    assert.deepEqual(seen.queuedAtEnd, [false, false, false, false, false]);
    assert.deepEqual(seen.sizes, [0, 1, 2, 3, 4].map((i) => (3 << 20) + i));
    assert.deepEqual(seen.last, {
      bytesSent: seen.total, bytesAcked: seen.total, bytesTotal: seen.total,
      active: 0, queued: 0, paused: 0, done: 5, failed: 0,
    });
  });

  test("a pause frees the turn for the next upload; resumed, it queues again and finishes byte-identical", async () => {
    const seen = await suite.page.evaluate(async (endpoint) => {
      const { default: init, Uploader } = await import("/pkg/index.js");
      await init();
      const uploader = new Uploader({ endpoint, maxUploads: 1 });
      const file = (name, size) => {
        const bytes = new Uint8Array(size);
        for (let i = 0; i < bytes.length; i += 65536) crypto.getRandomValues(bytes.subarray(i, i + 65536));
        return new File([bytes], name);
      };
      const [a, b] = [file("a.bin", 12 << 20), file("b.bin", 32 << 20)];
      const log = [];
      const seen = {};
      let pausedOnce = false;
      const first = uploader.upload(a, {
        strategy: "multipart", partSize: 5 << 20, concurrency: 1,
        onPart: () => { if (!pausedOnce) { pausedOnce = true; first.pause(); } },
        onStateChange: ({ to }) => log.push(`a ${to}`),
      });
      const second = uploader.upload(b, {
        strategy: "presigned_put",
        onStateChange: ({ to }) => {
          log.push(`b ${to}`);
          if (to === "uploading") {
            seen.whileBStarts = { ...uploader.progress, firstPaused: first.paused, firstQueued: first.queued };
            first.resume();
          }
        },
        onProgress: ({ bytesSent }) => {
          if (bytesSent > 8 << 20 && !seen.resumedWhileB) seen.resumedWhileB = { paused: first.paused, queued: first.queued };
        },
      });
      const [ra, rb] = await Promise.all([first.done, second.done]);
      const hex = async (f) => [...new Uint8Array(await crypto.subtle.digest("SHA-256", await f.arrayBuffer()))]
        .map((x) => x.toString(16).padStart(2, "0")).join("");
      return { ...seen, log, stored: [ra.asset.sha256, rb.asset.sha256], sent: [await hex(a), await hex(b)] };
    }, `${suite.broker.url}/api/uploads`);
    const { whileBStarts: now } = seen;
    assert.deepEqual([now.paused, now.active, now.queued, now.firstPaused, now.firstQueued], [1, 1, 0, true, false], JSON.stringify(now));
    assert.deepEqual(seen.resumedWhileB, { paused: false, queued: true }, "resumed, a waits for b's turn");
    assert.ok(seen.log.indexOf("b initialized") > seen.log.indexOf("a uploading"), seen.log.join(", "));
    assert.ok(seen.log.indexOf("a uploaded") > seen.log.indexOf("b uploaded"), `a went on after b: ${seen.log.join(", ")}`);
    assert.deepEqual(seen.stored, seen.sent);
  });
});
