//! The browser transport: XMLHttpRequest, because fetch reports no upload
//! progress. Bodies are `Blob` slices handed straight to the browser, so
//! file bytes never enter WASM memory.

use crate::error::{ErrorCode, UploadError};
use crate::transport::{
    parse_header_block, ByteSource, ChecksumAlgorithm, Clock, HttpRequest, HttpResponse, ProgressFn,
    Transport, TransportError,
};
use futures::channel::oneshot;
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Blob, ProgressEvent, XmlHttpRequest};

#[derive(Clone, Copy, Default)]
pub struct XhrTransport;

#[derive(Clone, Copy)]
enum Ending {
    Load,
    Error,
}

/// Keeps the event closures alive while the request runs; dropped early,
/// it aborts the request (that is how cancel stops the bytes).
struct InFlight {
    xhr: XmlHttpRequest,
    finished: bool,
    _closures: Vec<Closure<dyn FnMut(JsValue)>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.xhr.set_onload(None);
        self.xhr.set_onerror(None);
        if let Ok(upload) = self.xhr.upload() {
            upload.set_onprogress(None);
        }
        if !self.finished {
            let _ = self.xhr.abort();
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
        let xhr = XmlHttpRequest::new().map_err(|_| TransportError::Network)?;
        xhr.open_with_async(request.method, request.url.expose(), true)
            .map_err(|_| TransportError::Network)?;
        for (name, value) in &request.headers {
            xhr.set_request_header(name, value).map_err(|_| TransportError::Network)?;
        }

        let (sender, receiver) = oneshot::channel::<Ending>();
        let sender = Rc::new(RefCell::new(Some(sender)));
        let ending = |kind: Ending| {
            let sender = Rc::clone(&sender);
            Closure::<dyn FnMut(JsValue)>::new(move |_| {
                if let Some(sender) = sender.borrow_mut().take() {
                    let _ = sender.send(kind);
                }
            })
        };
        let on_load = ending(Ending::Load);
        let on_error = ending(Ending::Error);
        let on_progress = Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
            progress(event.unchecked_into::<ProgressEvent>().loaded() as u64);
        });
        xhr.set_onload(Some(on_load.as_ref().unchecked_ref()));
        xhr.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        xhr.upload()
            .map_err(|_| TransportError::Network)?
            .set_onprogress(Some(on_progress.as_ref().unchecked_ref()));

        let mut in_flight =
            InFlight { xhr, finished: false, _closures: vec![on_load, on_error, on_progress] };
        in_flight.xhr.send_with_opt_blob(request.body.as_ref()).map_err(|_| TransportError::Network)?;

        let ending = receiver.await.map_err(|_| TransportError::Network)?;
        in_flight.finished = true;
        let xhr = &in_flight.xhr;
        match ending {
            Ending::Load => Ok(HttpResponse {
                status: xhr.status().map_err(|_| TransportError::Network)?,
                headers: parse_header_block(&xhr.get_all_response_headers().unwrap_or_default()),
                body: xhr.response_text().ok().flatten().unwrap_or_default(),
            }),
            Ending::Error => Err(TransportError::Network),
        }
    }

    fn is_online(&self) -> bool {
        navigator_on_line().unwrap_or(true)
    }

    async fn online(&self) {
        let back = js_sys::Promise::new(&mut |resolve, _| {
            let global: web_sys::EventTarget = js_sys::global().unchecked_into();
            let options = web_sys::AddEventListenerOptions::new();
            options.set_once(true);
            let _ = global.add_event_listener_with_callback_and_add_event_listener_options(
                "online", &resolve, &options,
            );
            // The network may have come back before the listener was added.
            if navigator_on_line() != Some(false) {
                let _ = resolve.call0(&JsValue::NULL);
            }
        });
        let _ = JsFuture::from(back).await;
    }
}

/// `navigator.onLine` of the window or worker, if there is one.
fn navigator_on_line() -> Option<bool> {
    let navigator = js_sys::Reflect::get(&js_sys::global(), &"navigator".into()).ok()?;
    js_sys::Reflect::get(&navigator, &"onLine".into()).ok()?.as_bool()
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
        let timer = js_sys::Promise::new(&mut |resolve, _| {
            let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
            // Window and workers both have setTimeout on the global scope.
            let _ = scope.set_timeout_with_callback_and_timeout_and_arguments_0(
                &resolve,
                ms.min(i32::MAX as u64) as i32,
            );
        });
        let _ = JsFuture::from(timer).await;
    }

    fn random(&self) -> f64 {
        js_sys::Math::random()
    }
}
