//! Checksums of file ranges in the browser, computed off the main thread:
//! a dedicated module Worker (`checksum-worker.js`, shipped beside the
//! package) runs this same package and hashes the Blob it is handed (a
//! handle: no bytes are copied on the main thread), in 1 MiB windows, so a
//! file is never whole in memory. Where no Worker can be started (no
//! `Worker`, a CSP that forbids it, a bundler that left the script out), the
//! same code runs in the current thread, still window by window.

use crate::digest::Hasher;
use crate::error::{ErrorCode, UploadError};
use crate::transport::ChecksumAlgorithm;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::Blob;

/// Bytes hashed per read of the file.
const WINDOW: f64 = (1 << 20) as f64;

#[wasm_bindgen(inline_js = r#"
let worker = null;
let next = 0;
const pending = new Map();
export function worker_available() {
  return typeof Worker === "function";
}
// This snippet lives in pkg/snippets/<crate>/: the worker is pkg/checksum-worker.js.
export function digest_in_worker(blob, start, end, algorithm) {
  if (!worker) {
    worker = new Worker(new URL("../../checksum-worker.js", import.meta.url), { type: "module" });
    worker.onmessage = ({ data }) => {
      const waiting = pending.get(data.id);
      pending.delete(data.id);
      if (data.error) waiting.reject(data.error);
      else waiting.resolve(data.digest);
    };
    worker.onerror = (event) => {
      event.preventDefault();
      for (const waiting of pending.values()) waiting.reject({ name: "WorkerError", message: "the checksum worker failed" });
      pending.clear();
      worker = null;
    };
  }
  return new Promise((resolve, reject) => {
    const id = next++;
    pending.set(id, { resolve, reject });
    worker.postMessage({ id, blob, start, end, algorithm });
  });
}
"#)]
extern "C" {
    fn worker_available() -> bool;
    #[wasm_bindgen(catch)]
    fn digest_in_worker(
        blob: &Blob,
        start: f64,
        end: f64,
        algorithm: &str,
    ) -> Result<js_sys::Promise, JsValue>;
}

thread_local! {
    /// Set once the worker could not be started: hash here from then on.
    static NO_WORKER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The digest of `blob[start..end]`, computed in the checksum worker.
pub async fn digest(
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
    digest_here(blob, start, end, algorithm).await
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

async fn digest_here(
    blob: &Blob,
    start: f64,
    end: f64,
    algorithm: ChecksumAlgorithm,
) -> Result<Vec<u8>, UploadError> {
    let mut hasher = Hasher::new(algorithm);
    let mut window = Vec::new();
    let mut at = start;
    while at < end {
        let until = (at + WINDOW).min(end);
        let slice = blob.slice_with_f64_and_f64(at, until).map_err(|e| unreadable(&e))?;
        let bytes = JsFuture::from(slice.array_buffer()).await.map_err(|e| unreadable(&e))?;
        let bytes = js_sys::Uint8Array::new(&bytes);
        window.resize(bytes.length() as usize, 0);
        bytes.copy_to(&mut window);
        hasher.update(&window);
        at = until;
    }
    Ok(hasher.finish())
}

/// Used by `checksum-worker.js`: the digest of `blob[start..end]` by
/// `algorithm` ("crc32c", "md5", "sha1" or "sha256"), hashed in this thread.
#[wasm_bindgen(js_name = digestBlob)]
pub async fn digest_blob(
    blob: Blob,
    start: f64,
    end: f64,
    algorithm: String,
) -> Result<js_sys::Uint8Array, JsValue> {
    let algorithm = ChecksumAlgorithm::named(&algorithm)
        .ok_or_else(|| JsValue::from_str("unknown checksum algorithm"))?;
    match digest_here(&blob, start, end, algorithm).await {
        Ok(digest) => Ok(js_sys::Uint8Array::from(digest.as_slice())),
        Err(error) => Err(js_sys::Error::new(&error.message).into()),
    }
}
