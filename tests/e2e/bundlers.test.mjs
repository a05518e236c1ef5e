// Where front ends build: the app in tests/e2e/bundler-app (the main module
// and every drop-in, imported by package name) built by Vite and by
// webpack 5, served from the reference broker's origin, uploading a file
// through each entry in Chromium.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { cpSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { build as viteBuild } from "vite";
import webpack from "webpack";
import { brokerAndPage, root } from "./support.mjs";

// Inside the repository (so @uppy/core and filepond resolve from its
// node_modules), with the package itself linked in as a dependency.
const work = join(root, "target/bundler-app");
const www = join(work, "www");
rmSync(work, { recursive: true, force: true });
mkdirSync(join(work, "node_modules"), { recursive: true });
cpSync(join(root, "tests/e2e/bundler-app"), join(work, "src"), { recursive: true });
symlinkSync(root, join(work, "node_modules/rindle-upload"), "dir");
writeFileSync(join(work, "package.json"), '{ "name": "bundled-app", "private": true, "type": "module" }');

await viteBuild({
  root: join(work, "src"), base: "/vite/", logLevel: "silent", configFile: false,
  build: { outDir: join(www, "vite"), emptyOutDir: true },
});
await new Promise((resolve, reject) =>
  webpack({
    mode: "production", context: work, entry: "./src/app.js",
    output: { path: join(www, "webpack"), publicPath: "/webpack/", filename: "app.js" },
    performance: { hints: false },
  }, (error, stats) => (error || stats.hasErrors() ? reject(error ?? new Error(stats.toString("errors-only"))) : resolve())),
);
writeFileSync(join(www, "webpack/index.html"), '<!doctype html><meta charset="utf-8"><title>webpack app</title><script src="/webpack/app.js"></script>');
writeFileSync(join(www, "index.html"), '<!doctype html><meta charset="utf-8"><title>apps</title>');
after(() => rmSync(work, { recursive: true, force: true }));

for (const bundler of ["vite", "webpack"]) {
  describe(`an app built by ${bundler}`, () => {
    const suite = brokerAndPage({ WWW_DIR: www });
    before(async () => {
      await suite.page.goto(`${suite.broker.url}/${bundler}/index.html`);
      await suite.page.waitForFunction(() => window.app);
    });

    for (const entry of ["main", "element", "uppy", "filepond", "liveview"]) {
      test(`${entry === "main" ? "rindle-upload" : `rindle-upload/${entry}`}: a file is stored byte-identical`, async () => {
        const run = await suite.page.evaluate(async (entry) => {
          const bytes = new Uint8Array((3 << 20) + 7);
          for (let i = 0; i < bytes.length; i += 65536) crypto.getRandomValues(bytes.subarray(i, Math.min(bytes.length, i + 65536)));
          const file = new File([bytes], `${entry}.bin`, { type: "application/octet-stream" });
          const hex = (b) => [...new Uint8Array(b)].map((x) => x.toString(16).padStart(2, "0")).join("");
          const asset = await window.app[entry](file);
          const stored = await fetch(asset.url).then((r) => r.arrayBuffer());
          return { sent: hex(await crypto.subtle.digest("SHA-256", bytes)), stored: hex(await crypto.subtle.digest("SHA-256", stored)) };
        }, entry);
        assert.equal(run.stored, run.sent);
      });
    }
  });
}
