// npm run bench: this library against the browser's bare PUT and the
// libraries front ends use today, in one run, in headless Chromium over
// loopback. Needs the S3_* variables of scripts/garage.sh (scripts/bench.sh
// starts Garage). Options: --sizes 256,1024 (MiB) --repeat 3 --write
// (update docs/benchmarks.md and docs/bench-chart.svg) --check (exit 1 if
// any upload failed: the smoke run in npm test) --rows presigned,tus (only
// the rows whose name contains one of these, for a quick comparison)
// --link 50 (the page's uploads limited to 50 MiB/s by Chromium's network
// emulation: a link slower than the machine, as over any real network,
// where loopback leaves the CPU as the limit).
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { build } from "esbuild";
import { launchBrowser, root, startBroker, startTusServer } from "../tests/e2e/support.mjs";

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const at = args.indexOf(`--${name}`);
  return at >= 0 ? args[at + 1] : fallback;
};
const sizes = option("sizes", "256,1024").split(",").map((mib) => Number(mib) * (1 << 20));
const repeat = Number(option("repeat", "3"));
const write = args.includes("--write");
const check = args.includes("--check");
const only = option("rows", "").split(",").filter(Boolean);
const link = Number(option("link", "0"));
const MiB = 1 << 20;

// ---- sizes: our package next to the anchors, bundled the same way ----
async function gzipOf(contents) {
  const out = await build({
    stdin: { contents, resolveDir: root, loader: "js" },
    bundle: true, minify: true, format: "esm", platform: "browser", write: false, logLevel: "silent",
  });
  return gzipSync(out.outputFiles[0].contents, { level: 9 }).length;
}
// Ours: the WebAssembly and the package's entry bundled like the anchors.
const ours = gzipSync(readFileSync(`${root}pkg/rindle_upload_bg.wasm`), { level: 9 }).length
  + await gzipOf('export * from "./pkg/index.js";');
const sizeRows = [
  ["rindle-upload (wasm + glue, all four strategies)", ours],
  ["tus-js-client", await gzipOf('export * from "tus-js-client";')],
  ["@uppy/core + @uppy/aws-s3", await gzipOf('export { default as U } from "@uppy/core"; export { default as S } from "@uppy/aws-s3";')],
  ["@uppy/core + @uppy/tus", await gzipOf('export { default as U } from "@uppy/core"; export { default as T } from "@uppy/tus";')],
  ["@uppy/core + aws-s3 + tus + golden-retriever", await gzipOf(
    'export { default as U } from "@uppy/core"; export { default as S } from "@uppy/aws-s3"; export { default as T } from "@uppy/tus"; export { default as G } from "@uppy/golden-retriever";',
  )],
  ["@aws-sdk/lib-storage + client-s3", await gzipOf('export * from "@aws-sdk/lib-storage"; export { S3Client } from "@aws-sdk/client-s3";')],
];

// ---- servers ----
await build({
  entryPoints: [`${root}bench/peers.js`], outfile: `${root}bench/www/peers.js`,
  bundle: true, minify: true, format: "esm", platform: "browser", logLevel: "silent",
});
const s3 = {
  endpoint: process.env.S3_ENDPOINT, region: process.env.S3_REGION, bucket: process.env.S3_BUCKET,
  accessKeyId: process.env.S3_ACCESS_KEY_ID, secretAccessKey: process.env.S3_SECRET_ACCESS_KEY,
};
if (!s3.endpoint) throw new Error("S3_* are not set: run npm run bench (scripts/bench.sh starts Garage)");
const s3Env = Object.fromEntries(Object.entries(process.env).filter(([name]) => name.startsWith("S3_")));
const www = { WWW_DIR: `${root}bench/www`, MAX_BYTES: String(8 * 1024 ** 3) };
const tusServer = await startTusServer();
const [garageBroker, localBroker, tusBroker] = await Promise.all([
  startBroker({ ...www, ...s3Env }),
  startBroker(www),
  startBroker({ ...www, TUS_ENDPOINT: `${tusServer.url}/files` }),
]);
const api = (broker) => `${broker.url}/api/uploads`;

// Each row: what is measured, on which store, and how the page runs it.
const rows = [
  { name: "fetch PUT (ceiling)", store: "Garage", variant: "fetchPut", endpoint: api(garageBroker) },
  { ours: true, name: "rindle presigned_put", store: "Garage", variant: "presignedPut", endpoint: api(garageBroker) },
  { ours: true, name: "rindle multipart ×4", store: "Garage", variant: "multipart4", endpoint: api(garageBroker) },
  { ours: true, name: "rindle multipart ×8", store: "Garage", variant: "multipart8", endpoint: api(garageBroker) },
  { ours: true, name: "rindle presigned_put, no checksum", store: "Garage", variant: "presignedPutNoChecksum", endpoint: api(garageBroker) },
  { ours: true, name: "rindle multipart ×4, no checksum", store: "Garage", variant: "multipart4NoChecksum", endpoint: api(garageBroker) },
  { name: "@uppy/aws-s3", store: "Garage", variant: "uppyAwsS3" },
  { name: "@aws-sdk/lib-storage", store: "Garage", variant: "libStorage" },
  { name: "fetch PUT (ceiling)", store: "embedded", variant: "fetchPut", endpoint: api(localBroker) },
  { ours: true, name: "rindle resumable", store: "embedded", variant: "resumable", endpoint: api(localBroker) },
  { ours: true, name: "rindle tus", store: "@tus/server", variant: "tus", endpoint: api(tusBroker) },
  { ours: true, name: "rindle tus, no checksum", store: "@tus/server", variant: "tusNoChecksum", endpoint: api(tusBroker) },
  { name: "tus-js-client", store: "@tus/server", variant: "tusJsClient" },
];

const browser = await launchBrowser();
const page = await browser.newPage();
await page.goto(`${garageBroker.url}/`);
await page.waitForFunction(() => window.benchReady === true);
const cdp = await page.context().newCDPSession(page);
if (link) {
  await cdp.send("Network.enable");
  await cdp.send("Network.emulateNetworkConditions", {
    offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: link * (1 << 20),
  });
}

/** Resident memory of the largest Chromium renderer, in bytes (from the OS). */
function rendererRss() {
  const lines = execFileSync("ps", ["-eo", "rss=,args="], { encoding: "utf8" }).split("\n");
  const rss = lines.filter((line) => line.includes("--type=renderer")).map((line) => Number(line.trim().split(/\s+/)[0]) * 1024);
  return Math.max(0, ...rss);
}

async function measure(row, size) {
  await page.evaluate(() => new Promise((resolve) => setTimeout(resolve, 200)));
  const baseline = rendererRss();
  let peak = baseline;
  const sampler = setInterval(() => { peak = Math.max(peak, rendererRss()); }, 50);
  const config = { endpoint: row.endpoint, s3, tusEndpoint: `${tusServer.url}/files` };
  try {
    const result = await page.evaluate(({ variant, size, config }) => window.bench(variant, size, config), { variant: row.variant, size, config });
    const heap = await cdp.send("Runtime.getHeapUsage");
    return {
      ...result,
      rssGrowth: peak - baseline,
      jsHeap: heap.usedSize,
      mibPerSecond: size / MiB / (result.transferMs / 1000),
      withVerification: size / MiB / (result.ms / 1000),
    };
  } catch (error) {
    return { error: String(error.message ?? error).split("\n")[0].replace("page.evaluate: ", "").slice(0, 120) };
  } finally {
    clearInterval(sampler);
  }
}

// Hashing: the checksum worker in Chromium, and the same code natively
// (not in the smoke run: it needs a large file and a release build).
const hashSize = 256 * MiB;
const inWorker = check ? {} : await page.evaluate((size) => window.hashBench(size), hashSize);
const native = check ? {} : Object.fromEntries(
  execFileSync("cargo", ["run", "--quiet", "--release", "--example", "hash_throughput"], { cwd: root, encoding: "utf8" })
    .trim().split("\n").map((line) => JSON.parse(line)).map(({ algorithm, mibPerSecond }) => [algorithm, mibPerSecond]),
);

// Every row at every size, `repeat` times, in turns, so a slow moment of
// the machine hits all rows alike.
const results = new Map();
for (const size of sizes) {
  for (let round = 0; round < repeat; round++) {
    for (const row of rows.filter((r) => !only.length || only.some((part) => r.name.includes(part)))) {
      const key = `${row.name}|${row.store}|${size}`;
      const measured = await measure(row, size);
      results.set(key, [...(results.get(key) ?? []), measured]);
      process.stderr.write(`${(size / MiB).toFixed(0)} MiB ${row.name} (${row.store}) #${round + 1}: ${
        measured.error ?? `${measured.mibPerSecond.toFixed(0)} MiB/s, +${(measured.rssGrowth / MiB).toFixed(0)} MiB RSS`}\n`);
    }
  }
}
await browser.close();
await Promise.all([garageBroker.stop(), localBroker.stop(), tusBroker.stop()]);
await tusServer.stop();

// ---- report ----
const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
};
const stats = (row, size, field) => {
  const ok = (results.get(`${row.name}|${row.store}|${size}`) ?? []).filter((m) => !m.error);
  if (!ok.length) return null;
  const values = ok.map((m) => m[field]);
  return { median: median(values), min: Math.min(...values), max: Math.max(...values) };
};
const largest = Math.max(...sizes);
const ceiling = (store) => stats(rows.find((r) => r.variant === "fetchPut" && r.store === (store === "embedded" ? "embedded" : "Garage")), largest, "mibPerSecond");
const peerOf = { multipart4: ["uppyAwsS3", "libStorage"], multipart8: ["uppyAwsS3", "libStorage"], tus: ["tusJsClient"] };
const fmt = (n, digits = 0) => (typeof n === "number" && Number.isFinite(n) ? n.toFixed(digits) : "—");
const mib = (bytes) => (bytes / MiB).toFixed(0);

const lines = [];
lines.push(`Command: \`npm run bench -- --sizes ${sizes.map((s) => s / MiB).join(",")} --repeat ${repeat}${link ? ` --link ${link}` : ""}\`, ${new Date().toISOString().slice(0, 10)}.`);
lines.push(`Machine: ${execFileSync("nproc", { encoding: "utf8" }).trim()} cores, ${(Number(execFileSync("awk", ["/MemTotal/ {print $2}", "/proc/meminfo"], { encoding: "utf8" })) / 1048576).toFixed(0)} GiB, Chromium headless, loopback${link ? `, uploads limited to ${link} MiB/s by Chromium's network emulation` : ""}; a random disk-backed File (OPFS).`);
lines.push("");
lines.push(`### Throughput, ${mib(largest)} MiB (median of ${repeat}, min–max)`);
lines.push("");
lines.push("MiB/s counts until the bytes are stored; this library's sessions then verify, shown as \"with");
lines.push("verification\": the broker compares the client's checksum with the one the store kept (Garage) or,");
lines.push("without a checksum or a store that keeps one, reads the object back and hashes it.");
lines.push("");
lines.push("| library | store | MiB/s | min–max | with verification | × bare PUT | × peer | long tasks | failures |");
lines.push("|---|---|---|---|---|---|---|---|---|");
for (const row of rows) {
  const t = stats(row, largest, "mibPerSecond");
  const base = ceiling(row.store);
  const failures = (results.get(`${row.name}|${row.store}|${largest}`) ?? []).filter((m) => m.error);
  const peers = (peerOf[row.variant] ?? []).map((variant) => {
    const peer = rows.find((r) => r.variant === variant);
    const p = stats(peer, largest, "mibPerSecond");
    return t && p && p.median > 0 ? `${(t.median / p.median).toFixed(2)}× ${peer.name}` : null;
  }).filter(Boolean).join(", ");
  const longTasks = stats(row, largest, "longTasks");
  const verified = row.ours ? fmt(stats(row, largest, "withVerification")?.median) : "—";
  lines.push(`| ${row.name} | ${row.store} | ${fmt(t?.median)} | ${fmt(t?.min)}–${fmt(t?.max)} | ${verified} | ${t && base ? (t.median / base.median).toFixed(2) : "—"} | ${peers || "—"} | ${fmt(longTasks?.max)} | ${failures.length ? failures[0].error : 0} |`);
}
lines.push("");
lines.push("Rows \"no checksum\" run with `checksum: \"none\"`: the others send CRC32C with every piece (tus: the");
lines.push("server here offers no checksum extension, so only the whole file's goes to the broker).");
lines.push("");
lines.push(`### Hashing, MiB/s over a ${mib(hashSize)} MiB disk-backed File`);
lines.push("");
lines.push("| algorithm | in the checksum worker (WebAssembly, Chromium) | native (same code, release) |");
lines.push("|---|---|---|");
for (const algorithm of ["crc32c", "md5", "sha1", "sha256"]) {
  lines.push(`| ${algorithm} | ${fmt(inWorker[algorithm])} | ${fmt(native[algorithm])} |`);
}
lines.push("");
lines.push("### Memory (median): renderer RSS growth during the upload, JS heap and WASM memory after it");
lines.push("");
lines.push(`| library | store | ${sizes.map((s) => `RSS +MiB @ ${mib(s)} MiB`).join(" | ")} | JS heap MiB | WASM MiB |`);
lines.push(`|---|---|${sizes.map(() => "---|").join("")}---|---|`);
for (const row of rows) {
  const rss = sizes.map((s) => fmt(stats(row, s, "rssGrowth")?.median / MiB));
  const heap = stats(row, largest, "jsHeap");
  const wasm = row.ours ? stats(row, largest, "wasmBytes") : null;
  lines.push(`| ${row.name} | ${row.store} | ${rss.join(" | ")} | ${fmt(heap?.median / MiB)} | ${wasm ? fmt(wasm.median / MiB, 1) : "—"} |`);
}
lines.push("");
lines.push("### Size (gzip -9; anchors bundled and minified by esbuild in the same run)");
lines.push("");
lines.push("| package | bytes gzip |");
lines.push("|---|---|");
for (const [name, bytes] of sizeRows) lines.push(`| ${name} | ${bytes.toLocaleString("en")} |`);
const report = lines.join("\n");
console.log(report);

// A bar chart of throughput (left) and RSS growth at the largest size (right).
function chart() {
  const bars = rows.map((row) => ({
    ours: row.ours,
    label: `${row.name} (${row.store})`,
    speed: stats(row, largest, "mibPerSecond")?.median ?? 0,
    rss: (stats(row, largest, "rssGrowth")?.median ?? 0) / MiB,
  }));
  const maxSpeed = Math.max(1, ...bars.map((b) => b.speed));
  const maxRss = Math.max(1, ...bars.map((b) => b.rss));
  const rowHeight = 26;
  const height = 50 + bars.length * rowHeight;
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" width="960" height="${height}" font-family="sans-serif" font-size="12">`,
    `<text x="10" y="20" font-weight="bold">Throughput, MiB/s (${mib(largest)} MiB)</text>`,
    `<text x="680" y="20" font-weight="bold">Renderer RSS growth, MiB</text>`];
  bars.forEach((bar, i) => {
    const y = 40 + i * rowHeight;
    const isOurs = bar.ours;
    parts.push(`<text x="10" y="${y + 13}">${bar.label}</text>`);
    parts.push(`<rect x="300" y="${y}" width="${(bar.speed / maxSpeed) * 300}" height="16" fill="${isOurs ? "#3a63d8" : "#9aa3b5"}"/>`);
    parts.push(`<text x="${305 + (bar.speed / maxSpeed) * 300}" y="${y + 13}">${bar.speed.toFixed(0)}</text>`);
    parts.push(`<rect x="680" y="${y}" width="${(bar.rss / maxRss) * 220}" height="16" fill="${isOurs ? "#17803d" : "#b5b59a"}"/>`);
    parts.push(`<text x="${685 + (bar.rss / maxRss) * 220}" y="${y + 13}">${bar.rss.toFixed(0)}</text>`);
  });
  parts.push("</svg>");
  return parts.join("\n");
}

if (write) {
  const doc = `${root}docs/benchmarks.md`;
  const text = readFileSync(doc, "utf8");
  const start = "<!-- bench:start -->";
  const end = "<!-- bench:end -->";
  const section = `${start}\n${report}\n\n![Throughput and memory](bench-chart.svg)\n${end}`;
  writeFileSync(doc, text.includes(start) ? text.replace(new RegExp(`${start}[\\s\\S]*${end}`), section) : `${text}\n## npm run bench\n\n${section}\n`);
  writeFileSync(`${root}docs/bench-chart.svg`, chart());
}

const failed = [...results.values()].flat().filter((m) => m.error);
if (check && failed.length) {
  console.error(`${failed.length} bench upload(s) failed: ${failed[0].error}`);
  process.exit(1);
}
