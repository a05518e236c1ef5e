//! Checksums of file ranges in the browser, computed off the main thread:
//! two dedicated module Workers (`checksum-worker.js`, shipped beside the
//! package) run the checksum module (`checksum-stream.js` over `checksum.js`,
//! the `rindle-upload-checksum` crate) and hash the Blob they are handed (a
//! handle: no bytes are copied on the main thread). A range is read as a
//! stream, chunk by chunk, so a file is never whole in memory. A large
//! CRC32C is split between the two workers and the halves combined. Where
//! no Worker can be started (no `Worker`, a CSP that forbids it, a bundler
//! that left the script out), the page loads the checksum module itself
//! and hashes in its own thread. Idle workers are ended (and started again
//! when next needed), so that they let go of the files they hashed.

use crate::digest::crc32c_of_pieces;
use crate::error::{ErrorCode, UploadError};
use crate::transport::ChecksumAlgorithm;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::Blob;

/// A CRC32C of a range at least this long is split between the workers.
const SPLIT_FROM: u64 = 8 << 20;

#[wasm_bindgen(inline_js = r#"
const WORKERS = 2;
// A worker keeps each Blob it was handed until its own garbage collection,
// which an idle worker may not run for minutes: Chromium's Blob storage
// then fills, and later reads of other files fail ("network error"). The
// workers are ended once nothing was asked of them for this long.
const IDLE_MS = 1000;
let workers = [];
let idle = 0;
let next = 0;
const pending = new Map();
export function worker_available() {
  return typeof Worker === "function";
}
function stop() {
  for (const worker of workers) worker.terminate();
  workers = [];
}
function failed() {
  stop();
  for (const waiting of pending.values()) waiting.reject({ name: "WorkerError", message: "the checksum worker failed" });
  pending.clear();
}
function start() {
  // This snippet lives in pkg/snippets/<crate>/: the worker is pkg/checksum-worker.js.
  const worker = new Worker(new URL("../../checksum-worker.js", import.meta.url), { type: "module" });
  worker.busy = 0;
  worker.onmessage = ({ data }) => {
    const waiting = pending.get(data.id);
    pending.delete(data.id);
    worker.busy--;
    if (data.error) waiting.reject(data.error);
    else waiting.resolve(data.digest);
    if (!pending.size) idle = setTimeout(stop, IDLE_MS);
  };
  worker.onerror = (event) => {
    event.preventDefault();
    failed();
  };
  return worker;
}
export function digest_in_worker(blob, start_at, end, algorithm) {
  clearTimeout(idle);
  if (!workers.length) for (let i = 0; i < WORKERS; i++) workers.push(start());
  const worker = workers.reduce((idlest, other) => (other.busy < idlest.busy ? other : idlest));
  worker.busy++;
  return new Promise((resolve, reject) => {
    const id = next++;
    pending.set(id, { resolve, reject });
    worker.postMessage({ id, blob, start: start_at, end, algorithm });
  });
}
// Starts the workers before their first job, for an upload with checksums
// that is starting: its first broker call hides their start (a fresh
// worker takes 60-110 ms to load the module). Unused, they end as idle
// ones do.
export function warm_up() {
  if (workers.length) return;
  try {
    for (let i = 0; i < WORKERS; i++) workers.push(start());
  } catch {
    // Left for the first job to find out (and hash here instead).
    stop();
    return;
  }
  idle = setTimeout(stop, IDLE_MS);
}
// Without a Worker: the checksum module, loaded the first time it is needed.
export async function digest_here(blob, start_at, end, algorithm) {
  const { digestBlob } = await import("../../checksum-stream.js");
  return digestBlob(blob, start_at, end, algorithm);
}
"#)]
extern "C" {
    fn worker_available() -> bool;
    #[wasm_bindgen(js_name = warm_up)]
    fn warm_up_workers();
    #[wasm_bindgen(catch)]
    fn digest_in_worker(
        blob: &Blob,
        start: f64,
        end: f64,
        algorithm: &str,
    ) -> Result<js_sys::Promise, JsValue>;
    fn digest_here(blob: &Blob, start: f64, end: f64, algorithm: &str) -> js_sys::Promise;
}

thread_local! {
    /// Set once the worker could not be started: hash here from then on.
    static NO_WORKER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Hashing here goes one range at a time, as in a worker.
    static HERE: std::rc::Rc<futures::lock::Mutex<()>> = std::rc::Rc::default();
}

/// Starts the checksum workers ahead of an upload's first checksum.
pub fn warm_up() {
    if worker_available() && !NO_WORKER.get() {
        warm_up_workers();
    }
}

/// The digest of `blob[start..end]`, computed in the checksum workers.
pub async fn digest(
    blob: &Blob,
    start: u64,
    end: u64,
    algorithm: ChecksumAlgorithm,
) -> Result<Vec<u8>, UploadError> {
    if algorithm != ChecksumAlgorithm::Crc32c || end - start < SPLIT_FROM {
        return digest_range(blob, start, end, algorithm).await;
    }
    let middle = start + (end - start) / 2;
    let (first, second) = futures::join!(
        digest_range(blob, start, middle, algorithm),
        digest_range(blob, middle, end, algorithm)
    );
    let crc = |digest: Vec<u8>| u32::from_be_bytes(digest.try_into().unwrap_or_default());
    let pieces = [(crc(first?), middle - start), (crc(second?), end - middle)];
    Ok(crc32c_of_pieces(pieces).to_be_bytes().to_vec())
}

async fn digest_range(
    blob: &Blob,
    start: u64,
    end: u64,
    algorithm: ChecksumAlgorithm,
) -> Result<Vec<u8>, UploadError> {
    let (start, end) = (start as f64, end as f64);
    if worker_available() && !NO_WORKER.get() {
        let answer = match digest_in_worker(blob, start, end, algorithm.name()) {
            Ok(promise) => JsFuture::from(promise).await,
            Err(_thrown) => Err(worker_error()),
        };
        match answer {
            Ok(digest) => return Ok(js_sys::Uint8Array::new(&digest).to_vec()),
            Err(error) if error_name(&error).as_deref() != Some("WorkerError") => {
                return Err(unreadable(&error))
            }
            Err(_) => NO_WORKER.set(true),
        }
    }
    let turn = HERE.with(std::rc::Rc::clone);
    let _turn = turn.lock().await;
    let digest = JsFuture::from(digest_here(blob, start, end, algorithm.name())).await;
    digest.map(|digest| js_sys::Uint8Array::new(&digest).to_vec()).map_err(|e| unreadable(&e))
}

fn error_name(error: &JsValue) -> Option<String> {
    js_sys::Reflect::get(error, &"name".into()).ok().and_then(|n| n.as_string())
}

/// `new Worker` threw (a CSP forbids it, say): as if the worker failed.
fn worker_error() -> JsValue {
    let error = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&error, &"name".into(), &"WorkerError".into());
    error.into()
}

/// A failure to read the file: `file_changed` when the browser says the
/// file can no longer be read as it was, `internal` otherwise.
fn unreadable(error: &JsValue) -> UploadError {
    match error_name(error).as_deref() {
        Some("NotReadableError" | "NotFoundError") => {
            UploadError::new(ErrorCode::FileChanged, "the file could not be read (it may have changed)")
        }
        _ => UploadError::new(ErrorCode::Internal, "the file's checksum could not be computed"),
    }
}
