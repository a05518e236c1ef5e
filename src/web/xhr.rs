//! The browser transport: XMLHttpRequest, because fetch reports no upload
//! progress. Bodies are `Blob` slices handed straight to the browser, so
//! file bytes never enter WASM memory.

use crate::error::{ErrorCode, UploadError};
use crate::transport::{
    parse_header_block, ByteSource, ChecksumAlgorithm, Clock, HttpRequest, HttpResponse, ProgressFn,
    Transport, TransportError,
};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::Blob;

#[wasm_bindgen(module = "/js/browser.js")]
extern "C" {
    /// A request being sent (`js/browser.js`'s `storeRequest`).
    type StoreRequest;
    #[wasm_bindgen(catch, js_name = storeRequest)]
    fn store_request(
        method: &str,
        url: &str,
        headers: js_sys::Array,
        body: Option<Blob>,
        on_progress: &Closure<dyn FnMut(f64)>,
    ) -> Result<StoreRequest, JsValue>;
    #[wasm_bindgen(method, getter)]
    fn done(this: &StoreRequest) -> js_sys::Promise;
    #[wasm_bindgen(method)]
    fn abort(this: &StoreRequest);

    /// What a loaded request answered: the status and body text, and for
    /// a store request its headers as one block of lines.
    pub(super) type Answer;
    #[wasm_bindgen(method, getter)]
    pub(super) fn status(this: &Answer) -> u16;
    #[wasm_bindgen(method, getter)]
    fn headers(this: &Answer) -> String;
    #[wasm_bindgen(method, getter)]
    pub(super) fn text(this: &Answer) -> String;

    fn sleep(ms: f64) -> js_sys::Promise;
    #[wasm_bindgen(js_name = isOnline)]
    fn is_online() -> bool;
    fn online() -> js_sys::Promise;
}

/// Headers as `js/browser.js` takes them: name, value, name, value.
pub(super) fn header_list<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> js_sys::Array {
    let list = js_sys::Array::new();
    for (name, value) in headers {
        list.push(&JsValue::from_str(name));
        list.push(&JsValue::from_str(value));
    }
    list
}

#[derive(Clone, Copy, Default)]
pub struct XhrTransport;

/// Keeps the progress callback alive while the request runs; dropped
/// early, it aborts the request (that is how pause and cancel stop the
/// bytes).
struct InFlight {
    request: StoreRequest,
    finished: bool,
    _progress: Closure<dyn FnMut(f64)>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.finished {
            self.request.abort();
        }
    }
}

impl Transport for XhrTransport {
    type Body = Blob;

    async fn send(
        &self,
        request: HttpRequest<Blob>,
        progress: ProgressFn,
    ) -> Result<HttpResponse, TransportError> {
        let headers =
            header_list(request.headers.iter().map(|(name, value)| (name.as_str(), value.as_str())));
        let on_progress = Closure::<dyn FnMut(f64)>::new(move |loaded: f64| progress(loaded as u64));
        let sent = store_request(request.method, request.url.expose(), headers, request.body, &on_progress)
            .map_err(|_| TransportError::Network)?;
        let mut in_flight = InFlight { request: sent, finished: false, _progress: on_progress };
        let ended = JsFuture::from(in_flight.request.done()).await;
        in_flight.finished = true;
        let answer: Answer = ended.map_err(|_| TransportError::Network)?.unchecked_into();
        Ok(HttpResponse {
            status: answer.status(),
            headers: parse_header_block(&answer.headers()),
            body: answer.text(),
        })
    }

    fn is_online(&self) -> bool {
        is_online()
    }

    async fn online(&self) {
        let _ = JsFuture::from(online()).await;
    }
}

/// A `File` or `Blob`; slicing it costs no copy.
pub struct BlobSource(pub Blob);

impl ByteSource for BlobSource {
    type Slice = Blob;

    fn size(&self) -> u64 {
        self.0.size() as u64
    }

    fn slice(&self, start: u64, end: u64) -> Blob {
        self.0
            .slice_with_f64_and_f64(start as f64, end as f64)
            .expect_throw("Blob.slice does not throw for numeric bounds")
    }

    async fn digest(
        &self,
        start: u64,
        end: u64,
        algorithm: ChecksumAlgorithm,
    ) -> Result<Vec<u8>, UploadError> {
        super::checksums::digest(&self.0, start, end, algorithm).await
    }

    /// A file changed on disk since it was picked can no longer be read
    /// (`NotReadableError`): reading one byte finds out before its bytes
    /// are sent, where XHR would only report a network error.
    async fn check_unchanged(&self) -> Result<(), UploadError> {
        if self.0.size() == 0.0 {
            return Ok(());
        }
        JsFuture::from(self.slice(0, 1).array_buffer()).await.map(|_| ()).map_err(|thrown| {
            let name = js_sys::Reflect::get(&thrown, &"name".into()).ok().and_then(|n| n.as_string());
            UploadError::new(
                ErrorCode::FileChanged,
                format!(
                    "the file changed or became unreadable since the upload began ({})",
                    name.as_deref().unwrap_or("read failed")
                ),
            )
        })
    }
}

#[derive(Clone, Copy, Default)]
pub struct DateClock;

impl Clock for DateClock {
    fn now_ms(&self) -> f64 {
        js_sys::Date::now()
    }

    async fn sleep(&self, ms: u64) {
        // setTimeout fires at once for a delay beyond 32 bits.
        let _ = JsFuture::from(sleep(ms.min(i32::MAX as u64) as f64)).await;
    }

    fn random(&self) -> f64 {
        js_sys::Math::random()
    }
}
