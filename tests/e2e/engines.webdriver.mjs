// The same uploads in Firefox (firefox-esr + geckodriver) and WebKit
// (WebKitGTK's MiniBrowser + WebKitWebDriver, under xvfb-run), driven over
// WebDriver by selenium-webdriver, against the reference broker and its
// embedded store: each strategy byte-identical with monotonic progress,
// pause/resume, cancel, and the reload resume. The in-page code is
// support.mjs's `uploadScenario`, the one the Chromium suites run.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { createServer } from "node:net";
import { Builder } from "selenium-webdriver";
import firefox from "selenium-webdriver/firefox.js";
import { assertProgressSound, MiB, SCENARIO_DEFAULTS, startBroker, uploadScenario } from "./support.mjs";

const GECKODRIVER = process.env.GECKODRIVER ?? `${process.env.HOME}/.cargo/bin/geckodriver`;
const MINIBROWSER = "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser";

const freePort = () => new Promise((resolve) => {
  const server = createServer().listen(0, "127.0.0.1", () => {
    const { port } = server.address();
    server.close(() => resolve(port));
  });
});

const engines = {
  async firefox() {
    const options = new firefox.Options().setBinary("/usr/bin/firefox-esr").addArguments("-headless");
    const service = new firefox.ServiceBuilder(GECKODRIVER);
    return { driver: await new Builder().forBrowser("firefox").setFirefoxOptions(options).setFirefoxService(service).build() };
  },
  async webkit() {
    const port = await freePort();
    const server = spawn("xvfb-run", ["-a", "WebKitWebDriver", `--port=${port}`], { stdio: "ignore", detached: true });
    const url = `http://127.0.0.1:${port}`;
    for (let i = 0; i < 100; i++) {
      if (await fetch(`${url}/status`).then((r) => r.ok, () => false)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const driver = await new Builder().usingServer(url).withCapabilities({
      browserName: "MiniBrowser",
      "webkitgtk:browserOptions": { binary: MINIBROWSER, args: ["--automation"] },
    }).build();
    return { driver, stop: () => process.kill(-server.pid, "SIGTERM") };
  },
};

/** Runs `uploadScenario` in the browser and waits for its report. */
async function upload(driver, scenario) {
  return driver.executeAsyncScript(
    `const done = arguments[arguments.length - 1];
     (${uploadScenario})(arguments[0]).then(done, (e) => done({ ok: false, error: { message: String(e) } }));`,
    { ...SCENARIO_DEFAULTS, ...scenario },
  );
}

const STRATEGIES = [
  ["presigned_put", { size: 6 * MiB + 1 }],
  ["multipart", { size: 12 * MiB + 3, partSize: 5 * MiB }],
  ["resumable", { size: 6 * MiB + 5, chunkSize: MiB }],
  ["tus", { size: 6 * MiB + 7, chunkSize: MiB }],
];

for (const engine of Object.keys(engines)) {
  // scripts/setup.sh test installs both engines and their drivers.
  describe(`${engine} over WebDriver (reference broker, embedded store)`, () => {
    let broker;
    let browser;
    let endpoint;
    before(async () => {
      [broker, browser] = await Promise.all([startBroker(), engines[engine]()]);
      endpoint = `${broker.url}/api/uploads`;
      await browser.driver.manage().setTimeouts({ script: 120_000 });
      await browser.driver.get(`${broker.url}/`);
    });
    after(async () => {
      await browser?.driver.quit();
      browser?.stop?.();
      await broker?.stop();
      // The next suite starts once this engine's processes have exited.
      const running = () => {
        try {
          return execFileSync("pgrep", ["-f", "firefox-esr|geckodriver|WebKitWebDriver|MiniBrowser|WebKitWebProcess|WebKitNetworkProcess"]).length > 0;
        } catch {
          return false;
        }
      };
      for (let i = 0; i < 100 && running(); i++) await new Promise((r) => setTimeout(r, 100));
    });

    for (const [strategy, shape] of STRATEGIES) {
      test(`${strategy}: stored byte-identical, progress monotonic`, async () => {
        const run = await upload(browser.driver, { ...shape, strategy, endpoint, seed: 3 });
        assert.equal(run.ok, true, JSON.stringify(run.error));
        assert.equal(run.result.asset.sha256, run.sha256);
        // Multipart sends 4 parts at once.
        assertProgressSound(run.progress, shape.size, shape.partSize ? 4 * shape.partSize : shape.chunkSize ?? shape.size);
      });
    }

    test("pause and resume: nothing is sent while paused, the file is stored byte-identical", async () => {
      const run = await upload(browser.driver, { strategy: "multipart", size: 24 * MiB, partSize: 5 * MiB, concurrency: 1, endpoint, seed: 4, pauseAtFraction: 0.3, pauseMs: 700 });
      assert.equal(run.ok, true, JSON.stringify(run.error));
      assert.equal(run.result.asset.sha256, run.sha256);
      assert.deepEqual(run.pausedChanges, [[true, true], [false, false]]);
      const whilePaused = run.progress.slice(run.progressAtPause, run.progressAtResume);
      assert.ok(whilePaused.every((p) => p.bytesSent === whilePaused[0]?.bytesSent), "no bytes went while paused");
    });

    test("cancel: the upload and the broker's session end aborted", async () => {
      const run = await upload(browser.driver, { strategy: "resumable", size: 24 * MiB, chunkSize: MiB, endpoint, seed: 5, cancelAtFraction: 0.2 });
      assert.equal(run.ok, false);
      assert.equal(run.error.code, "aborted");
      assert.equal(run.cancelResult, "aborted");
      const { session } = await browser.driver.executeAsyncScript(
        "const done = arguments[1]; fetch(arguments[0]).then((r) => r.json()).then(done);", `${endpoint}/${run.sessionId}`);
      assert.equal(session.state, "aborted");
    });

    test("a reload at ~40 % resumes from the store's offset in the new page (tus)", async () => {
      const scenario = { strategy: "tus", size: 24 * MiB, chunkSize: MiB, endpoint, seed: 6 };
      await browser.driver.executeScript(`(${uploadScenario})(arguments[0]);`, { ...SCENARIO_DEFAULTS, ...scenario, background: true });
      await browser.driver.wait(async () =>
        browser.driver.executeScript("const p = window.__upload?.progress.at(-1); return !!p && p.bytesAcked > 0.4 * p.bytesTotal;"), 60_000);
      await browser.driver.navigate().refresh();
      const run = await upload(browser.driver, { ...scenario, resumePrevious: true });
      assert.equal(run.ok, true, JSON.stringify(run.error));
      assert.equal(run.previous.length, 1, "the resume record survived the reload");
      assert.equal(run.result.asset.sha256, run.sha256);
      assert.ok(run.progress[0].bytesAcked >= 0.4 * scenario.size, `continued from the store's offset: ${run.progress[0].bytesAcked}`);
    });
  });
}
