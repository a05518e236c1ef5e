// Prints the gzip -9 size of the package's WASM and JS glue (what a page
// downloads). Run after `npm run build`.
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

const files = ["pkg/rindle_upload_bg.wasm", "pkg/rindle_upload.js"];
let total = 0;
for (const file of files) {
  const bytes = readFileSync(new URL(`../${file}`, import.meta.url));
  const gzipped = gzipSync(bytes, { level: 9 }).length;
  total += gzipped;
  console.log(`${file.padEnd(28)} ${String(bytes.length).padStart(8)} B  ${String(gzipped).padStart(7)} B gzip`);
}
console.log(`${"total (wasm + glue)".padEnd(28)} ${"".padStart(8)}    ${String(total).padStart(7)} B gzip`);
