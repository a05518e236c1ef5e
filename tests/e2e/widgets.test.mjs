// The widget adapters with the real widgets in Chromium, against the
// reference broker and its embedded store: rindle-upload/uppy with
// @uppy/core and @uppy/dashboard, rindle-upload/filepond with filepond.
// The widgets are bundled by esbuild into a page the broker serves.
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { build } from "esbuild";
import { brokerAndPage, root } from "./support.mjs";

const www = mkdtempSync(join(tmpdir(), "rindle-widgets-"));
await build({
  stdin: {
    contents: `
      export { default as Uppy } from "@uppy/core";
      export { default as Dashboard } from "@uppy/dashboard";
      export * as FilePond from "filepond";`,
    resolveDir: root, loader: "js",
  },
  bundle: true, format: "esm", outfile: join(www, "widgets.js"), logLevel: "silent",
});
writeFileSync(join(www, "index.html"), '<!doctype html><meta charset="utf-8"><title>widgets</title><div id="widget"></div>');
after(() => rmSync(www, { recursive: true, force: true }));

/** Random bytes in the page, with their SHA-256. */
const IN_PAGE_HELPERS = () => {
  window.randomFile = (name, size) => {
    const bytes = new Uint8Array(size);
    for (let i = 0; i < size; i += 65536) crypto.getRandomValues(bytes.subarray(i, Math.min(size, i + 65536)));
    return new File([bytes], name, { type: "application/octet-stream" });
  };
  window.sha256 = async (file) => [...new Uint8Array(await crypto.subtle.digest("SHA-256", await file.arrayBuffer()))]
    .map((x) => x.toString(16).padStart(2, "0")).join("");
  window.session = (id) => fetch(`/api/uploads/${id}`).then((r) => r.json()).then((r) => r.session);
};

describe("rindle-upload/uppy with @uppy/core and @uppy/dashboard", () => {
  const suite = brokerAndPage({ WWW_DIR: www });

  test("three files through the Dashboard: byte-identical, progress into Uppy, upload-success with the asset, limit honoured", async () => {
    await suite.page.evaluate(IN_PAGE_HELPERS);
    const seen = await suite.page.evaluate(async () => {
      const { Uppy, Dashboard } = await import("/widgets.js");
      const { default: RindleUpload } = await import("/pkg/uppy.js");
      const holding = new Set();
      let most = 0;
      const uppy = new Uppy()
        .use(Dashboard, { inline: true, target: "#widget" })
        .use(RindleUpload, {
          endpoint: "/api/uploads", limit: 2, strategy: "multipart", partSize: 5 << 20,
          onStateChange: ({ to, session }) => {
            if (to === "initialized") { holding.add(session.id); most = Math.max(most, holding.size); }
            if (to === "uploaded") holding.delete(session.id);
          },
        });
      const files = [0, 1, 2].map((i) => randomFile(`u${i}.bin`, (6 << 20) + i));
      const ids = files.map((file) => uppy.addFile({ name: file.name, type: file.type, data: file }));
      const progress = {};
      const successes = {};
      uppy.on("upload-progress", (file, p) => (progress[file.name] ??= []).push(p.bytesUploaded));
      uppy.on("upload-success", (file, response) => (successes[file.name] = response));
      const result = await uppy.upload();
      const sent = await Promise.all(files.map(sha256));
      return {
        successful: result.successful.map((f) => f.name), failed: result.failed.length, most, sent,
        stored: files.map((f) => successes[f.name].body.asset.sha256),
        statuses: files.map((f) => successes[f.name].status),
        uploadURLs: files.map((f) => successes[f.name].uploadURL === successes[f.name].body.asset.url),
        percents: ids.map((id) => uppy.getFile(id).progress.percentage),
        monotonic: Object.values(progress).every((list) => list.every((n, i) => i === 0 || n >= list[i - 1])),
        complete: document.querySelectorAll(".uppy-Dashboard-Item.is-complete").length,
      };
    });
    assert.deepEqual(seen.successful.sort(), ["u0.bin", "u1.bin", "u2.bin"]);
    assert.equal(seen.failed, 0);
    assert.deepEqual(seen.stored, seen.sent, "each stored object is the file");
    assert.deepEqual(seen.statuses, [200, 200, 200]);
    assert.deepEqual(seen.uploadURLs, [true, true, true]);
    assert.deepEqual(seen.percents, [100, 100, 100]);
    assert.equal(seen.monotonic, true);
    assert.equal(seen.most, 2, "Uppy's limit: at most 2 transfer at once");
    assert.equal(seen.complete, 3, "the Dashboard shows three completed files");
  });

  test("pause and resume from Uppy, a file removed mid-upload is cancelled, a typed error reaches upload-error", async () => {
    await suite.page.evaluate(IN_PAGE_HELPERS);
    const seen = await suite.page.evaluate(async () => {
      const { Uppy } = await import("/widgets.js");
      const { default: RindleUpload } = await import("/pkg/uppy.js");
      const uppy = new Uppy().use(RindleUpload, { endpoint: "/api/uploads", strategy: "multipart", partSize: 5 << 20, concurrency: 1 });
      const paused = randomFile("paused.bin", 24 << 20);
      const removed = randomFile("removed.bin", 24 << 20);
      const pausedId = uppy.addFile({ name: paused.name, data: paused });
      const removedId = uppy.addFile({ name: removed.name, data: removed });
      const bytes = { [pausedId]: [], [removedId]: [] };
      const log = { pausedProgressWhilePaused: 0 };
      let isPaused = false;
      let acted = false;
      const successes = {};
      uppy.on("upload-success", (file, response) => (successes[file.name] = response.body.asset.sha256));
      uppy.on("upload-progress", (file, p) => {
        bytes[file.id]?.push(p.bytesUploaded);
        if (isPaused && file.id === pausedId) log.pausedProgressWhilePaused++;
        if (!acted && p.bytesUploaded >= 5 << 20) {
          acted = true;
          uppy.pauseResume(pausedId);
          isPaused = true;
          log.removedSession = uppy.getFile(removedId).rindleUpload.sessionId;
          uppy.removeFile(removedId);
          setTimeout(() => { isPaused = false; log.resumed = uppy.pauseResume(pausedId); }, 600);
        }
      });
      const result = await uppy.upload();
      const errors = [];
      uppy.on("upload-error", (file, error) => errors.push([file.name, error.code, error.constructor.name]));
      const bad = randomFile("bad.bin", 1000);
      uppy.addFile({ name: bad.name, data: bad });
      uppy.getPlugin("RindleUpload").setOptions({ strategy: "ftp" });
      const failed = await uppy.upload();
      return {
        successful: result.successful.map((f) => f.name), removedState: (await session(log.removedSession)).state,
        pausedStored: successes["paused.bin"], pausedSent: await sha256(paused), log, errors,
        failed: failed.failed.map((f) => f.name),
      };
    });
    assert.deepEqual(seen.successful, ["paused.bin"]);
    assert.equal(seen.pausedStored, seen.pausedSent, "paused and resumed, the file is stored byte-identical");
    assert.equal(seen.log.pausedProgressWhilePaused <= 1, true, `no progress while paused (${seen.log.pausedProgressWhilePaused})`);
    assert.equal(seen.removedState, "aborted", "removing the file cancelled its session");
    assert.deepEqual(seen.errors, [["bad.bin", "invalid_request", "UploadError"]]);
    assert.deepEqual(seen.failed, ["bad.bin"]);
  });
});

describe("rindle-upload/filepond with filepond", () => {
  const suite = brokerAndPage({ WWW_DIR: www });

  /** A FilePond on a form's file input, its server ours with these options. */
  const POND = async (options) => {
    const { FilePond } = await import("/widgets.js");
    const { rindleServer } = await import("/pkg/filepond.js");
    document.getElementById("widget").innerHTML = '<form id="form"><input type="file" name="photo"></form>';
    window.reverted = [];
    window.pond = FilePond.create(document.querySelector("input"), {
      server: rindleServer({
        endpoint: "/api/uploads", strategy: options.strategy, partSize: options.partSize, concurrency: options.concurrency,
        onRevert: options.revert ? (r) => window.reverted.push(r.asset.id) : undefined,
        onStateChange: ({ from, session }) => { if (from === null) window.sessionId = session.id; },
      }),
    });
    window.pondEvents = [];
    for (const type of ["processfileprogress", "processfile", "processfileabort", "processfilerevert", "removefile"]) {
      window.pond.on(type, (...args) => window.pondEvents.push([type, ...args.map((a) => (typeof a === "number" ? a : a?.serverId ?? a?.type ?? null))]));
    }
  };

  test("a file added to FilePond is stored byte-identical; its field submits the asset id; progress reaches FilePond; undo calls onRevert", async () => {
    await suite.page.evaluate(IN_PAGE_HELPERS);
    await suite.page.evaluate(POND, { revert: true });
    const seen = await suite.page.evaluate(async () => {
      const file = randomFile("pond.bin", 9 << 20);
      const processed = new Promise((resolve) => pond.on("processfile", (error, item) => resolve({ error, id: item.serverId })));
      await pond.addFile(file);
      const { error, id } = await processed;
      const field = new FormData(document.getElementById("form")).get("photo");
      const removed = new Promise((resolve) => pond.on("removefile", resolve));
      pond.removeFile(pond.getFile().id, { revert: true });
      await removed;
      const progress = pondEvents.filter(([type]) => type === "processfileprogress").map(([, , p]) => p);
      return { error, id, field, progress, reverted: window.reverted, files: pond.getFiles().length };
    });
    assert.equal(seen.error, null);
    assert.equal(seen.field, seen.id, "the form field submits the asset id");
    assert.ok(seen.progress.length > 1 && seen.progress.at(-1) === 1, JSON.stringify(seen.progress));
    assert.ok(seen.progress.every((p, i) => i === 0 || p >= seen.progress[i - 1]), "progress never goes back");
    assert.deepEqual(seen.reverted, [seen.id], "FilePond's undo went to onRevert with the upload");
    assert.equal(seen.files, 0);
  });

  test("FilePond's cancel button while a file uploads aborts it: the broker's session is aborted", async () => {
    await suite.page.evaluate(IN_PAGE_HELPERS);
    await suite.page.evaluate(POND, { strategy: "multipart", partSize: 5 << 20, concurrency: 1 });
    const state = await suite.page.evaluate(async () => {
      const started = new Promise((resolve) => pond.on("processfileprogress", (_f, p) => p > 0 && resolve()));
      await pond.addFile(randomFile("big.bin", 96 << 20));
      await started;
      const aborted = new Promise((resolve) => pond.on("processfileabort", resolve));
      document.querySelector(".filepond--action-abort-item-processing").click();
      await aborted;
      // The upload's cancel tells the broker; give it a moment.
      for (let i = 0; i < 50 && (await session(window.sessionId)).state !== "aborted"; i++) await new Promise((r) => setTimeout(r, 100));
      return (await session(window.sessionId)).state;
    });
    assert.equal(state, "aborted");
  });
});
