// Prints the gzip -9 size of the package's WASM and JS glue (what a page
// downloads). Run after `npm run build`.
import { readdirSync, readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

// The page loads the entry, the glue and its snippets; the checksum worker loads the
// worker script and the same glue and WASM (cached).
const snippets = readdirSync(new URL("../pkg/snippets/", import.meta.url), { recursive: true })
  .filter((name) => name.endsWith(".js"))
  .map((name) => `pkg/snippets/${name}`);
const files = ["pkg/rindle_upload_bg.wasm", "pkg/index.js", "pkg/rindle_upload.js", ...snippets, "pkg/checksum-worker.js"];
let total = 0;
for (const file of files) {
  const bytes = readFileSync(new URL(`../${file}`, import.meta.url));
  const gzipped = gzipSync(bytes, { level: 9 }).length;
  total += gzipped;
  console.log(`${file.padEnd(28)} ${String(bytes.length).padStart(8)} B  ${String(gzipped).padStart(7)} B gzip`);
}
console.log(`${"total (wasm + glue)".padEnd(28)} ${"".padStart(8)}    ${String(total).padStart(7)} B gzip`);
// The goal for wasm + glue (docs/benchmarks.md keeps the history): a figure, not a gate.
const BUDGET = 40 * 1024;
console.log(`${"budget".padEnd(28)} ${"".padStart(8)}    ${String(BUDGET).padStart(7)} B gzip (${total <= BUDGET ? "within" : `${total - BUDGET} B over`})`);
