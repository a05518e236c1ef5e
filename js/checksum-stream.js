// rindle-upload's streamed checksums: a Blob range read as a stream and fed
// window by window to the checksum module's Hasher (checksum.js), so a file
// is never whole in memory. The checksum workers run it; so does a page
// that cannot start one (src/web/checksums.rs).
import init, { Hasher } from "./checksum.js";

let ready = null;

/** Loads the checksum module (once). */
export function load() {
  return (ready ??= init());
}

/** The digest of `blob[start..end]` by `algorithm` ("crc32c", "md5", "sha1",
 * "sha256"); rejects with the browser's read error (`NotReadableError`: the
 * file changed). */
export async function digestBlob(blob, start, end, algorithm) {
  await load();
  const hasher = new Hasher(algorithm);
  // A BYOB reader into one reused window would keep the worker's garbage
  // (and the renderer's growth) small, but Chromium fails BYOB reads of
  // large in-memory Blobs ("network error", with other reads under way),
  // and every read of that Blob fails after that (docs/benchmarks.md).
  const reader = blob.slice(start, end).stream().getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return hasher.finish();
      hasher.update(value);
    }
  } catch (error) {
    hasher.free();
    throw error;
  }
}
