// The package as an app meets it: its entry (pkg/index.js) imports on a
// server, says what to do when used before init(), and reports every
// failure, bad options included, the one way: `done` rejects with an
// UploadError (a class: `instanceof` works) and `onError` sees it.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { brokerAndPage, root } from "./support.mjs";

describe("the package's entry", () => {
  const suite = brokerAndPage();

  test("the README's links work from the npm page: absolute, to files the tarball holds", () => {
    const packed = JSON.parse(execFileSync("npm", ["pack", "--dry-run", "--json"], { cwd: root, encoding: "utf8" }));
    const shipped = new Set(packed[0].files.map((file) => file.path));
    for (const required of ["LICENSE-MIT", "LICENSE-APACHE", "CHANGELOG.md", "docs/api.md", "docs/stores.md", "pkg/index.js"]) {
      assert.ok(shipped.has(required), `the tarball holds ${required}`);
    }
    const links = [...readFileSync(`${root}README.md`, "utf8").matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1]);
    assert.ok(links.length > 5, "the README has links");
    for (const link of links) {
      assert.match(link, /^(https:\/\/|#)/, `${link} is absolute`);
      const inPackage = link.match(/^https:\/\/unpkg\.com\/rindle-upload\/([^#]+)/);
      if (inPackage) assert.ok(shipped.has(inPackage[1]), `${link}: the tarball holds ${inPackage[1]}`);
    }
  });

  test("imports on a server (SSR) without touching browser globals", async () => {
    const entry = await import(pathToFileURL(`${root}pkg/index.js`).href);
    assert.equal(typeof entry.default, "function");
    assert.equal(typeof entry.Uploader, "function");
    const error = new entry.UploadError("network_error", "offline", true, "uploading");
    assert.ok(error instanceof Error);
    assert.deepEqual([error.name, error.code, error.retryable, error.state], ["UploadError", "network_error", true, "uploading"]);
  });

  test("new Uploader() before init() says to await init()", async () => {
    const fresh = await suite.browser.newPage();
    try {
      await fresh.goto(`${suite.broker.url}/`);
      const thrown = await fresh.evaluate(async () => {
        // A query string: a module instance of its own, not the demo's (already initialised).
        const { Uploader, UploadError } = await import("/pkg/index.js?before-init");
        try {
          new Uploader({ endpoint: "/api/uploads" });
          return null;
        } catch (e) {
          return { isUploadError: e instanceof UploadError, code: e.code, message: e.message };
        }
      });
      assert.deepEqual(thrown, {
        isUploadError: true,
        code: "invalid_request",
        message: "rindle-upload is not loaded yet: call and await init() (or initSync) before new Uploader()",
      });
    } finally {
      await fresh.close();
    }
  });

  test("an AbortSignal cancels: aborted before the start, no broker call; aborted midway, the session is discarded", async () => {
    const seen = await suite.page.evaluate(async (endpoint) => {
      const { default: init, Uploader } = await import("/pkg/index.js");
      await init();
      const code = (upload) => upload.done.then(() => "completed", (e) => e.code);

      let brokerCalls = 0;
      const counted = new Uploader({ endpoint, broker: { initiate: () => { brokerCalls++; throw new Error("called"); } } });
      const early = new AbortController();
      early.abort();
      const errors = [];
      const before = counted.upload(new File([new Uint8Array(10)], "a.bin"), { signal: early.signal, onError: (e) => errors.push(e.code) });
      const beforeCode = await code(before);

      const midway = new AbortController();
      const bytes = new Uint8Array(6 << 20);
      crypto.getRandomValues(bytes.subarray(0, 65536));
      const upload = new Uploader({ endpoint }).upload(new File([bytes], "b.bin"), {
        strategy: "presigned_put",
        signal: midway.signal,
        onProgress: ({ bytesSent }) => bytesSent > 1 << 20 && midway.abort(),
      });
      const midwayCode = await code(upload);
      const session = await fetch(`${endpoint}/${upload.session.id}`).then((r) => r.json());
      return { beforeCode, brokerCalls, errors, beforeState: before.state, midwayCode, state: upload.state, stored: session.session.state };
    }, `${suite.broker.url}/api/uploads`);
    assert.deepEqual(seen, {
      beforeCode: "aborted", brokerCalls: 0, errors: ["aborted"], beforeState: null,
      midwayCode: "aborted", state: "aborted", stored: "aborted",
    });
  });

  test("auto.multipartAbove: a file above it goes multipart, one at it presigned PUT", async () => {
    const strategies = await suite.page.evaluate(async (endpoint) => {
      const { default: init, Uploader } = await import("/pkg/index.js");
      await init();
      const uploader = new Uploader({ endpoint });
      const send = (size) =>
        uploader.upload(new File([new Uint8Array(size)], "a.bin"), { auto: { multipartAbove: 1 << 20 } }).done
          .then((r) => r.session.upload_strategy);
      return [await send((1 << 20) + 1), await send(1 << 20)];
    }, `${suite.broker.url}/api/uploads`);
    assert.deepEqual(strategies, ["multipart", "presigned_put"]);
  });

  test("a bad option rejects done and reaches onError; upload() does not throw", async () => {
    const seen = await suite.page.evaluate(async (endpoint) => {
      const { default: init, Uploader, UploadError } = await import("/pkg/index.js");
      await init();
      const uploader = new Uploader({ endpoint });
      const file = new File([new Uint8Array(10)], "a.bin");
      const outcomes = [];
      for (const options of [{ partSize: "big" }, { strategy: "ftp" }, { onProgress: 5 }]) {
        const errors = [];
        let threw = false;
        let upload;
        try {
          upload = uploader.upload(file, { ...options, onError: (e) => errors.push(e.code) });
        } catch {
          threw = true;
        }
        const rejected = await upload?.done.then(() => null, (e) => ({ code: e.code, isUploadError: e instanceof UploadError, message: e.message }));
        outcomes.push({ threw, rejected, errors, state: upload ? upload.state : "no upload" });
      }
      return outcomes;
    }, `${suite.broker.url}/api/uploads`);
    assert.deepEqual(seen, [
      { threw: false, rejected: { code: "invalid_request", isUploadError: true, message: "option `partSize` must be a number" }, errors: ["invalid_request"], state: null },
      { threw: false, rejected: { code: "invalid_request", isUploadError: true, message: 'unknown strategy "ftp"' }, errors: ["invalid_request"], state: null },
      { threw: false, rejected: { code: "invalid_request", isUploadError: true, message: "option `onProgress` must be a function" }, errors: ["invalid_request"], state: null },
    ]);
  });
});
