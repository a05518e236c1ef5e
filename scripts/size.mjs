// Prints the gzip -9 size of what a page downloads to upload (the entry,
// the glue, its snippets and the WebAssembly), then of the checksum module
// the checksum workers load (and a page without workers, once it needs a
// checksum). Run after `npm run build`. Each JS file is also measured as a
// bundler ships it (esbuild --minify): the way docs/benchmarks.md measures
// the peer libraries.
import { readdirSync, readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { transform } from "esbuild";

const snippets = readdirSync(new URL("../pkg/snippets/", import.meta.url), { recursive: true })
  .filter((name) => name.endsWith(".js"))
  .map((name) => `pkg/snippets/${name}`);
const groups = [
  ["page (wasm + glue)", ["pkg/rindle_upload_bg.wasm", "pkg/index.js", "pkg/rindle_upload.js", ...snippets]],
  ["checksum module", ["pkg/checksum_bg.wasm", "pkg/checksum.js", "pkg/checksum-stream.js", "pkg/checksum-worker.js"]],
];
// The goals (docs/benchmarks.md keeps the history): figures, not gates.
const BUDGETS = { "page (wasm + glue)": 40 * 1024, "checksum module": 25 * 1024 };
const gzip = (bytes) => gzipSync(bytes, { level: 9 }).length;
const column = (value, width) => String(value).padStart(width);
const width = Math.max(...groups.flatMap(([group, files]) => [`total, ${group}`, ...files]).map((name) => name.length));
console.log(`${"file".padEnd(width)} ${column("bytes", 8)}    ${column("gzip", 7)}    ${column("minified gzip", 13)}`);
for (const [group, files] of groups) {
  let [total, minifiedTotal] = [0, 0];
  for (const file of files) {
    const bytes = readFileSync(new URL(`../${file}`, import.meta.url));
    const minified = file.endsWith(".js")
      ? (await transform(bytes.toString(), { minify: true, format: "esm" })).code
      : bytes;
    const [gzipped, minifiedGzipped] = [gzip(bytes), gzip(minified)];
    [total, minifiedTotal] = [total + gzipped, minifiedTotal + minifiedGzipped];
    console.log(`${file.padEnd(width)} ${column(bytes.length, 8)} B  ${column(gzipped, 7)} B  ${column(minifiedGzipped, 13)} B`);
  }
  const budget = BUDGETS[group];
  const against = (bytes) => (bytes <= budget ? "within" : `${bytes - budget} B over`);
  console.log(`${`total, ${group}`.padEnd(width)} ${"".padStart(8)}    ${column(total, 7)} B  ${column(minifiedTotal, 13)} B` +
    ` (budget ${budget}: ${against(total)}; minified ${against(minifiedTotal)})`);
}
