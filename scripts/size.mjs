// Prints the gzip -9 size of what a page downloads to upload (the entry,
// the glue, its snippets and the WebAssembly), then of the checksum module
// the checksum workers load (and a page without workers, once it needs a
// checksum). Run after `npm run build`.
import { readdirSync, readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

const snippets = readdirSync(new URL("../pkg/snippets/", import.meta.url), { recursive: true })
  .filter((name) => name.endsWith(".js"))
  .map((name) => `pkg/snippets/${name}`);
const groups = [
  ["page (wasm + glue)", ["pkg/rindle_upload_bg.wasm", "pkg/index.js", "pkg/rindle_upload.js", ...snippets]],
  ["checksum module", ["pkg/checksum_bg.wasm", "pkg/checksum.js", "pkg/checksum-stream.js", "pkg/checksum-worker.js"]],
];
// The goals (docs/benchmarks.md keeps the history): figures, not gates.
const BUDGETS = { "page (wasm + glue)": 40 * 1024, "checksum module": 25 * 1024 };
for (const [group, files] of groups) {
  let total = 0;
  for (const file of files) {
    const bytes = readFileSync(new URL(`../${file}`, import.meta.url));
    const gzipped = gzipSync(bytes, { level: 9 }).length;
    total += gzipped;
    console.log(`${file.padEnd(28)} ${String(bytes.length).padStart(8)} B  ${String(gzipped).padStart(7)} B gzip`);
  }
  const budget = BUDGETS[group];
  const against = total <= budget ? "within" : `${total - budget} B over`;
  console.log(`${`total, ${group}`.padEnd(28)} ${"".padStart(8)}    ${String(total).padStart(7)} B gzip (budget ${budget}: ${against})`);
}
