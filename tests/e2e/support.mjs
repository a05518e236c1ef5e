// Test support for the end-to-end suites: start the reference broker on a
// free loopback port, launch Debian's Chromium (both, with a page, for a suite:
// `brokerAndPage`), and small HTTP helpers.
import { after, before } from "node:test";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer, request as httpRequest } from "node:http";
import { once } from "node:events";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

export const root = new URL("../../", import.meta.url).pathname;

/**
 * Starts target/release/rindle-broker with its own data dir. It uses the
 * embedded store unless `env` names an S3 store (the S3_* variables of the
 * test run are not inherited). Pages on any loopback origin may call it
 * with credentials (a page on one test broker calls another).
 */
export async function startBroker(env = {}) {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("S3_")));
  const dataDir = mkdtempSync(join(tmpdir(), "rindle-e2e-"));
  const child = spawn(join(root, "target/release/rindle-broker"), [], {
    cwd: root,
    env: {
      ...inherited, HOST: "127.0.0.1", PORT: "0", DATA_DIR: dataDir, RUST_LOG: "warn",
      ALLOWED_ORIGINS: "http://127.0.0.1:*", ...env,
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = createInterface({ input: child.stdout });
  const url = await new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`broker exited with ${code} before listening`)));
    lines.on("line", (line) => {
      const match = line.match(/listening on (http:\/\/\S+)/);
      if (match) resolve(match[1]);
    });
  });
  return {
    url,
    dataDir,
    async stop() {
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        // Graceful shutdown waits for open connections; a test is not.
        const killer = setTimeout(() => child.kill("SIGKILL"), 3_000);
        await once(child, "exit");
        clearTimeout(killer);
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * Whether the embedded store of `broker` holds an object under `key` (on
 * disk: `/objects` serves only verified objects, so it cannot tell).
 */
export function storedObjectExists(broker, key) {
  return existsSync(join(broker.dataDir, "store", "objects", key));
}

/**
 * A session as its owner sees it: the broker call made from `page`, with
 * the page's owner cookie.
 */
export function showInPage(page, endpoint, sessionId) {
  return page.evaluate(
    ({ endpoint, sessionId }) => fetch(`${endpoint}/${sessionId}`, { credentials: "include" }).then((r) => r.json()),
    { endpoint, sessionId },
  );
}

/** A tiny CORS-answering HTTP server on a free loopback port (credentials allowed). */
export async function startServer(handler) {
  const server = createServer((req, res) => {
    // With credentials `*` is no wildcard: what the preflight asks is echoed.
    res.setHeader("Access-Control-Allow-Origin", req.headers.origin ?? "*");
    res.setHeader("Access-Control-Allow-Credentials", "true");
    res.setHeader("Access-Control-Allow-Headers", req.headers["access-control-request-headers"] ?? "*");
    res.setHeader("Access-Control-Allow-Methods", req.headers["access-control-request-method"] ?? "*");
    if (req.method === "OPTIONS") return res.writeHead(204).end();
    handler(req, res);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return { url: `http://127.0.0.1:${server.address().port}`, stop: () => new Promise((r) => server.close(r)) };
}

export function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      // uploadInPage collects the files of earlier uploads before making a
      // new one: Chromium keeps in-memory Blobs within a quota (here about
      // 400 MiB), and a Blob made past it cannot be read at all.
      "--js-flags=--expose-gc",
    ],
  });
}

export async function sha256OfUrl(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`GET ${url} answered ${response.status}`);
  const bytes = Buffer.from(await response.arrayBuffer());
  return { sha256: createHash("sha256").update(bytes).digest("hex"), length: bytes.length };
}

export const MiB = 1 << 20;

export const FULL_SEQUENCE = [
  [null, "initialized"],
  ["initialized", "signed"],
  ["signed", "uploading"],
  ["uploading", "uploaded"],
  ["uploaded", "verifying"],
  ["verifying", "completed"],
];

/**
 * Runs one upload inside the page through the package's public API and
 * reports what a program using it would see. The file's bytes come from a
 * seeded generator, so a new page can rebuild the same file to resume it.
 *
 * Scenario: size, fill ("random" | "zero"), seed, endpoint, strategy,
 * partSize, concurrency, sessionId, brokerMode ("callbacks" | "counted" | "lateSign" | "lateFirstParts"),
 * cancelAtFraction (cancel once that share of bytes is sent), background
 * (start and return at once; `window.__upload` shows the live state and
 * `uploadReport(page)` waits for the end).
 */
export async function uploadInPage(page, scenario) {
  return page.evaluate(uploadScenario, { ...SCENARIO_DEFAULTS, ...scenario });
}

export const SCENARIO_DEFAULTS = { strategy: "presigned_put", fill: "random", seed: 1 };

/**
 * `uploadInPage`'s body, run in the page (by Playwright, or as a WebDriver
 * script): it uses nothing from this module.
 */
export async function uploadScenario(scenario) {
  const { size, fill, seed, endpoint, brokerMode, cancelAtFraction, pauseAtFraction, pauseMs } = scenario;
  const { default: init, Uploader, UploadError } = await import("/pkg/index.js");
  const wasm = await init();
  globalThis.gc?.();
  const bytes = new Uint8Array(size);
  if (fill === "random") {
    const words = new Uint32Array(bytes.buffer, 0, Math.floor(size / 4));
    let x = seed >>> 0 || 0x9e3779b9;
    for (let i = 0; i < words.length; i++) {
      x ^= x << 13; x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5; x >>>= 0;
      words[i] = x;
    }
    for (let i = words.length * 4; i < size; i++) bytes[i] = i & 0xff;
  }
  const hex = (buffer) => [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, "0")).join("");
  // A File, so the same scenario in another page is the same file to
  // `findPreviousUploads`; or the file picked in the file input `fromInput` selects.
  const blob = scenario.fromInput
    ? document.querySelector(scenario.fromInput).files[0]
    : new File([bytes], "random.bin", { type: "application/octet-stream", lastModified: 1_700_000_000_000 + (seed ?? 0) });
  const sha256 = hex(await crypto.subtle.digest("SHA-256", scenario.fromInput ? await blob.arrayBuffer() : bytes));

  // A broker on another origin gets the page's owner cookie only when asked.
  const credentials = new URL(endpoint, location.href).origin === location.origin ? "same-origin" : "include";
  const post = (path, body) =>
    fetch(endpoint + path, {
      method: "POST", credentials, headers: { "content-type": "application/json" }, body: JSON.stringify(body),
    }).then((r) => r.json());
  const brokers = {
    // Every call through JavaScript callbacks that forward to the broker.
    callbacks: {
      initiate: (request) => post("", request),
      sign: (request) => post(`/${request.session_id}/sign`, request),
      complete: (request) => post(`/${request.session_id}/complete`, request),
      cancel: (request) => post(`/${request.session_id}/cancel`, request),
    },
    // Every call over HTTP as the built-in broker client makes it, each
    // one recorded in `brokerCalls` ("sign", "parts/sign", ...).
    counted: Object.fromEntries(
      [
        ["initiate", ""], ["show", ""], ["sign", "sign"], ["signParts", "parts/sign"], ["listParts", "parts"],
        ["resumableStatus", "resumable/status"], ["complete", "complete"],
        ["completeMultipart", "multipart/complete"], ["cancel", "cancel"],
      ].map(([name, route]) => [name, (request) => {
        live.brokerCalls.push(name);
        if (name === "initiate") return post("", request);
        if (name === "show") return fetch(`${endpoint}/${request.session_id}`, { credentials }).then((r) => r.json());
        return post(`/${request.session_id}/${route}`, request);
      }]),
    ),
    // Hands over a URL only after its real expiry, claiming it is fresh,
    // so the store itself must refuse it.
    lateSign: {
      sign: async (request) => {
        const reply = await post(`/${request.session_id}/sign`, request);
        await new Promise((resolve) => setTimeout(resolve, 2100));
        return { ...reply, upload: { ...reply.upload, expires_in: 900 } };
      },
    },
    // The first batch of part URLs the same way (late, claimed fresh);
    // later batches as signed. Every call is counted in `brokerCalls`.
    // Made for URLs living 2 s: stores count expiry in whole seconds, so a
    // URL may last up to 3 s; a shorter life could expire the URLs signed
    // again before they reach the store.
    lateFirstParts: {
      signParts: async (request) => {
        live.brokerCalls.push("signParts");
        const reply = await post(`/${request.session_id}/parts/sign`, request);
        if (live.brokerCalls.length > 1) return reply;
        await new Promise((resolve) => setTimeout(resolve, 3200));
        return { ...reply, parts: reply.parts.map((part) => ({ ...part, upload: { ...part.upload, expires_in: 900 } })) };
      },
    },
  };

  const live = {
    sha256, states: [], recordsMatchedStates: true, progress: [], parts: [], errorsSeen: [], sessionId: null,
    pausedChanges: [], progressAtPause: null, progressAtResume: null, previous: null, brokerCalls: [],
  };
  window.__upload = live;
  const wasmBytesBefore = wasm.memory.buffer.byteLength;
  const uploader = new Uploader({ endpoint, credentials, headers: scenario.uploaderHeaders, broker: brokers[brokerMode] });
  if (scenario.resumePrevious) live.previous = await uploader.findPreviousUploads(blob);
  const started = performance.now();
  let cancelled = null;
  let paused = false;
  const upload = uploader.upload(blob, {
    resumeFrom: live.previous?.[0],
    strategy: scenario.strategy,
    partSize: scenario.partSize,
    chunkSize: scenario.chunkSize,
    concurrency: scenario.concurrency,
    sessionId: scenario.sessionId,
    ...scenario.options,
    filename: "random.bin",
    onStateChange: ({ from, to, session }) => {
      live.states.push([from, to]);
      live.recordsMatchedStates &&= session.state === to;
      live.sessionId = session.id;
    },
    onProgress: (p) => {
      live.progress.push(p);
      if (cancelAtFraction !== undefined && !cancelled && p.bytesSent > cancelAtFraction * size) {
        cancelled = upload.cancel();
      }
      if (pauseAtFraction !== undefined && !paused && p.bytesSent > pauseAtFraction * size) {
        paused = true;
        upload.pause();
        live.progressAtPause = live.progress.length;
        live.pausedAtMs = Date.now();
        setTimeout(() => {
          live.progressAtResume = live.progress.length;
          live.resumedAtMs = Date.now();
          upload.resume();
        }, pauseMs);
      }
    },
    onPausedChange: (now) => live.pausedChanges.push([now, upload.paused]),
    onPart: (part) => live.parts.push(part),
    onError: (error) => live.errorsSeen.push(error.code),
  });
  // Tests pause it from the page (e.g. in the same step that sees ~50 %).
  window.__uploadHandle = upload;
  const finished = (async () => {
    const report = (extra) => ({
      ...live,
      finalState: upload.state,
      // WebAssembly memory never shrinks: its size before and after tells
      // whether file bytes ever entered it.
      wasmBytesBefore,
      wasmBytesAfter: wasm.memory.buffer.byteLength,
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
        error: { name: e.name, code: e.code, message: e.message, retryable: e.retryable, state: e.state, isError: e instanceof Error, isUploadError: e instanceof UploadError },
      });
    }
  })();
  if (scenario.background) {
    window.__finished = finished;
    return null;
  }
  return finished;
}

/**
 * A reference broker (started with `env`) and a Chromium page on its
 * origin, for one suite: started before its tests, stopped after them.
 * Tests read `.broker`, `.browser` and `.page`.
 */
export function brokerAndPage(env = {}) {
  const suite = {};
  before(async () => {
    [suite.broker, suite.browser] = await Promise.all([startBroker(env), launchBrowser()]);
    suite.page = await suite.browser.newPage();
    await suite.page.goto(`${suite.broker.url}/`);
  });
  after(async () => {
    await suite.browser?.close();
    await suite.broker?.stop();
  });
  return suite;
}

/** Waits until `predicate(window.__upload)` holds in the page. */
export async function waitInPage(page, predicate, arg) {
  await page.waitForFunction(predicate, arg, { polling: 20, timeout: 120_000 });
}

/** Progress only grows, acknowledged never passes sent, both end at the
 * total, and at every report sent runs ahead of acknowledged by at most
 * `inFlight`: what the pieces in flight at once can carry (so the bytes of
 * a failed request stop counting). */
export function assertProgressSound(progress, total, inFlight) {
  assert.ok(inFlight > 0, "say how many bytes can be in flight");
  for (const p of progress) {
    assert.ok(p.bytesSent - p.bytesAcked <= inFlight, `more in flight than ${inFlight}: ${JSON.stringify(p)}`);
  }
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

export function assertNoCredentials(message) {
  assert.doesNotMatch(message, /sig=|\/store\/|expires=/, `a presigned URL leaked into: ${message}`);
}


/**
 * A small HTTP proxy on a free loopback port that answers CORS for the
 * store behind it (exposing Range, Location and ETag), logs each request
 * (method and Content-Range), and can cut one chunk mid-body.
 */
export async function startProxy(upstream) {
  let target = new URL(upstream);
  const log = [];
  const cut = { after: null, limit: null, range: null };
  const throttle = { bytesPerSecond: null };
  const hold = { next: false };
  const flip = { next: 0 };
  const server = createServer((req, res) => {
    const cors = {
      "access-control-allow-origin": "*",
      "access-control-allow-methods": "GET, PUT, POST, PATCH, DELETE, HEAD, OPTIONS",
      "access-control-allow-headers": "*",
      "access-control-expose-headers":
        "Range, Location, ETag, Content-Length, Upload-Offset, Upload-Length, Upload-Expires, Tus-Resumable, "
        + "Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm",
      "access-control-max-age": "600",
    };
    // A preflight is answered here; a tus discovery OPTIONS goes on.
    if (req.method === "OPTIONS" && req.headers["access-control-request-method"]) return res.writeHead(204, cors).end();
    const contentRange = req.headers["content-range"] ?? null;
    // `at`: when the request reached the proxy (ms since the epoch, the clock pages read too).
    const entry = {
      method: req.method, path: req.url, contentRange, bytes: Number(req.headers["content-length"] ?? 0), at: Date.now(),
    };
    log.push(entry);
    const upstreamRequest = httpRequest(
      // A connection per request: no idle upstream connection outlives it
      // (the broker's graceful shutdown would wait for one).
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers, agent: false },
      (answer) => {
        entry.status = answer.statusCode;
        entry.range = answer.headers.range ?? null;
        const headers = Object.fromEntries(
          Object.entries(answer.headers).filter(([name]) => !name.startsWith("access-control-")),
        );
        res.writeHead(answer.statusCode, { ...headers, ...cors });
        answer.pipe(res);
      },
    );
    upstreamRequest.on("error", () => res.destroy());
    // A client that goes away mid-body (a closed page) must not leave the
    // store waiting for the rest: the emulator serves one request at a time.
    req.on("close", () => {
      if (!req.complete) upstreamRequest.destroy();
    });
    const isChunk = req.method === "PUT" && contentRange && !contentRange.includes("*");
    if (!isChunk && req.method === "PUT") cut.range = null;
    // The chunk is cut, and so is the browser's own resend of it (Chromium
    // resends a request once when a kept-alive connection drops), until
    // the client asks for the offset itself.
    if (isChunk && (cut.after !== null || cut.range === contentRange)) {
      const limit = cut.after ?? cut.limit;
      cut.limit = limit;
      cut.after = null;
      cut.range = contentRange;
      let seen = 0;
      entry.cut = true;
      req.on("data", (data) => {
        seen += data.length;
        if (seen >= limit) {
          upstreamRequest.destroy();
          req.socket.destroy();
        } else {
          upstreamRequest.write(data);
        }
      });
      req.on("end", () => upstreamRequest.end());
      return;
    }
    // One bit of the body flipped on the way (its length unchanged).
    let transform = (data) => data;
    if (flip.next > 0 && (req.method === "PUT" || req.method === "PATCH") && entry.bytes > 0 && !isStatusQuery(contentRange)) {
      flip.next -= 1;
      entry.flipped = true;
      let done = false;
      transform = (data) => {
        if (done || data.length === 0) return data;
        done = true;
        const copy = Buffer.from(data);
        copy[copy.length >> 1] ^= 0x10;
        return copy;
      };
    }
    // A held request: its body is read, no answer ever comes.
    if (hold.next && (req.method === "PUT" || req.method === "PATCH") && entry.bytes > 0) {
      hold.next = false;
      entry.held = true;
      upstreamRequest.destroy();
      req.resume();
      return;
    }
    if (throttle.bytesPerSecond) return pipeThrottled(req, upstreamRequest, throttle.bytesPerSecond, transform);
    req.on("data", (data) => upstreamRequest.write(transform(data)));
    req.on("end", () => upstreamRequest.end());
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    log,
    /** Forwards to another upstream from now on. */
    retarget(url) {
      target = new URL(url);
    },
    /** Request bodies are read at most this fast from now on (null: at full speed). */
    throttle(bytesPerSecond) {
      throttle.bytesPerSecond = bytesPerSecond;
    },
    /** The next request carrying file bytes is never answered. */
    holdNext() {
      hold.next = true;
    },
    /** Requests that carried file bytes (PUT, PATCH with a body). */
    dataRequests: () => log.filter((e) => (e.method === "PUT" || e.method === "PATCH") && e.bytes > 0),
    /** The next `count` requests carrying file bytes have one bit flipped. */
    flipNext(count = 1) {
      flip.next = count;
    },
    /** The next chunk PUT is cut after `bytes` of its body. */
    cutNextChunk(bytes) {
      cut.after = bytes;
    },
    stop: () => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }),
  };
}

// A GCS status query (`Content-Range: bytes */total`) carries no file bytes.
const isStatusQuery = (contentRange) => contentRange?.includes("*") ?? false;

/** Relays a request body no faster than `rate` bytes per second, so the
 * browser sees its upload slowed by back-pressure. */
function pipeThrottled(req, upstreamRequest, rate, transform) {
  const started = Date.now();
  let relayed = 0;
  req.on("data", (data) => {
    upstreamRequest.write(transform(data));
    relayed += data.length;
    const ahead = (relayed / rate) * 1000 - (Date.now() - started);
    if (ahead > 0) {
      req.pause();
      setTimeout(() => req.resume(), ahead);
    }
  });
  req.on("end", () => upstreamRequest.end());
}

/** gcp-storage-emulator (PyPI) in memory, with one bucket. */
export async function startGcsEmulator(bucket) {
  const probe = createServer();
  probe.listen(0, "127.0.0.1");
  await once(probe, "listening");
  const port = probe.address().port;
  await new Promise((resolve) => probe.close(resolve));
  const child = spawn("gcp-storage-emulator", [
    "start", "--port", String(port), "-H", "127.0.0.1", "--default-bucket", bucket, "--in-memory", "-q",
  ], { stdio: "ignore" });
  const url = `http://127.0.0.1:${port}`;
  for (let attempt = 0; ; attempt++) {
    try {
      if ((await fetch(`${url}/storage/v1/b/${bucket}`)).ok) break;
    } catch {
      // not listening yet
    }
    if (attempt > 100 || child.exitCode !== null) throw new Error("gcp-storage-emulator did not start");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    url,
    async stop() {
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        await once(child, "exit");
      }
    },
  };
}

/** @tus/server with @tus/file-store (tests/servers/tus-server.mjs) in a
 * child process on a free port: its web-stream adapter can throw outside
 * any handler when a request is cut, which must not reach the test runner. */
export async function startTusServer() {
  const directory = mkdtempSync(join(tmpdir(), "rindle-tus-"));
  const child = spawn(process.execPath, [join(root, "tests/servers/tus-server.mjs"), directory], {
    cwd: root,
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = createInterface({ input: child.stdout });
  const url = await new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`the tus server exited with ${code} before listening`)));
    lines.on("line", (line) => {
      const match = line.match(/listening on (http:\/\/\S+)/);
      if (match) resolve(match[1]);
    });
  });
  return {
    url,
    directory,
    async stop() {
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        await once(child, "exit");
      }
      rmSync(directory, { recursive: true, force: true });
    },
  };
}

/**
 * A proxy in front of a tus server that checks `Upload-Checksum` (sha1,
 * sha256) on every PATCH and answers 460 on a mismatch, as @tus/server does
 * not; it advertises the checksum extension in OPTIONS answers. With
 * `verify: false` it only forwards (the server behind checks). Either way
 * it can corrupt one PATCH body on the way, and logs each request.
 */
export async function startTusChecksumProxy(upstream, { verify = true } = {}) {
  let target = new URL(upstream);
  const log = [];
  let corruptNext = false;
  const cors = {
    "access-control-allow-origin": "*",
    "access-control-expose-headers":
      "Location, Upload-Offset, Upload-Length, Upload-Expires, Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm",
  };
  const forward = (req, res, body, entry) => {
    const upstreamRequest = httpRequest(
      // A connection per request: no idle upstream connection outlives it
      // (the broker's graceful shutdown would wait for one).
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers, agent: false },
      (answer) => {
        entry.status = answer.statusCode;
        const headers = Object.fromEntries(Object.entries(answer.headers).filter(([n]) => !n.startsWith("access-control-")));
        if (verify && req.method === "OPTIONS") {
          headers["tus-extension"] = [headers["tus-extension"], "checksum"].filter(Boolean).join(",");
          headers["tus-checksum-algorithm"] = "sha1,sha256";
        }
        res.writeHead(answer.statusCode, { ...headers, ...cors });
        answer.pipe(res);
      },
    );
    upstreamRequest.on("error", () => res.destroy());
    upstreamRequest.end(body);
  };
  const server = createServer(async (req, res) => {
    if (req.method === "OPTIONS" && req.headers["access-control-request-method"]) {
      return res.writeHead(204, {
        ...cors,
        "access-control-allow-methods": "GET, HEAD, POST, PATCH, DELETE, OPTIONS",
        "access-control-allow-headers": "*",
        "access-control-max-age": "600",
      }).end();
    }
    const entry = {
      method: req.method,
      offset: req.headers["upload-offset"] ?? null,
      checksum: req.headers["upload-checksum"] ?? null,
      length: req.headers["upload-length"] ?? null,
      deferLength: req.headers["upload-defer-length"] ?? null,
    };
    log.push(entry);
    const chunks = [];
    try {
      for await (const chunk of req) chunks.push(chunk);
    } catch {
      return res.destroy(); // the client went away mid-body
    }
    const body = Buffer.concat(chunks);
    if (req.method === "PATCH" && corruptNext && body.length > 0) {
      corruptNext = false;
      body[body.length >> 1] ^= 0xff;
      entry.corrupted = true;
    }
    if (verify && req.method === "PATCH" && entry.checksum) {
      const [algorithm, digest] = entry.checksum.split(" ");
      const name = { sha1: "sha1", sha256: "sha256" }[algorithm];
      if (!name || createHash(name).update(body).digest("base64") !== digest) {
        entry.status = 460;
        return res.writeHead(460, { ...cors, "tus-resumable": "1.0.0" }).end();
      }
    }
    forward(req, res, body, entry);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    log,
    corruptNextPatch() {
      corruptNext = true;
    },
    retarget(url) {
      target = new URL(url);
    },
    stop: () => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }),
  };
}
