//! The browser edge: the engine's traits over the browser's APIs (called
//! through `js/browser.js`, js-sys and web-sys) and the `#[wasm_bindgen]`
//! API (`Uploader`, `Upload`) with its TypeScript types.

mod broker;
mod checksums;
mod records;
mod totals;
mod types;
mod xhr;

pub use broker::{FirstContact, WebBroker};
pub use xhr::{BlobSource, DateClock, XhrTransport};

use crate::broker::Asset;
use crate::engine::{controls, Control, Engine, Event, EventSink, Outcome};
use crate::error::{ErrorCode, UploadError};
use crate::options::{FileFacts, GivenOptions, UploadOptions};
use crate::queue::{Queue, Turn, Waiter};
use crate::secret::Secret;
use crate::session::Session;
use crate::state::SessionState;
use crate::wire::broker_json::{self, JsonBuilder};
use futures::future::{FutureExt, LocalBoxFuture};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use totals::{Status, Totals};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{future_to_promise, JsFuture};
use web_sys::Blob;

#[wasm_bindgen]
pub struct Uploader {
    endpoint: String,
    headers: Vec<(String, String)>,
    credentials: &'static str,
    callbacks: JsValue,
    queue: Queue,
    totals: Rc<Totals>,
    first_contact: FirstContact,
}

/// Uploads transferring at once per `Uploader` unless `maxUploads` says.
const DEFAULT_MAX_UPLOADS: f64 = 3.0;

#[wasm_bindgen]
impl Uploader {
    #[wasm_bindgen(constructor)]
    pub fn new(
        #[wasm_bindgen(unchecked_param_type = "UploaderOptions")] options: JsValue,
    ) -> Result<Uploader, JsValue> {
        let endpoint = string_option(&options, "endpoint")?
            .ok_or_else(|| invalid("Uploader: `endpoint` (the broker's base URL) is required"))?;
        let mut headers = Vec::new();
        if let Some(object) = get(&options, "headers") {
            for entry in js_sys::Object::entries(object.unchecked_ref()).iter() {
                let pair: js_sys::Array = entry.unchecked_into();
                let (name, value) = (pair.get(0).as_string().unwrap_or_default(), pair.get(1).as_string());
                let value = value.ok_or_else(|| {
                    invalid(&["Uploader: header ", &crate::error::shown(&name), " must be a string"].concat())
                })?;
                crate::transport::check_header(&name, &value).map_err(|e| error_to_js(&e))?;
                headers.push((name, value));
            }
        }
        // Cookies go to a broker on another origin only when asked ("include").
        let credentials = match string_option(&options, "credentials")?.as_deref() {
            None | Some("same-origin") => "same-origin",
            Some("include") => "include",
            Some("omit") => "omit",
            Some(_) => {
                return Err(invalid("Uploader: `credentials` is \"same-origin\", \"include\" or \"omit\""))
            }
        };
        let callbacks = get(&options, "broker").unwrap_or(JsValue::UNDEFINED);
        let max_uploads = number_option(&options, "maxUploads")?.unwrap_or(DEFAULT_MAX_UPLOADS);
        if !(max_uploads >= 1.0 && max_uploads.fract() == 0.0) {
            return Err(invalid("Uploader: `maxUploads` must be a whole number of at least 1"));
        }
        let totals = Totals::new(function_option(&options, "onProgress")?);
        Ok(Uploader {
            endpoint,
            headers,
            credentials,
            callbacks,
            queue: Queue::new(max_uploads as usize),
            totals,
            first_contact: FirstContact::default(),
        })
    }

    /// The total over this uploader's uploads: bytes sent, acknowledged and
    /// to send, and how many are active, queued, paused, done and failed.
    #[wasm_bindgen(getter, unchecked_return_type = "UploaderProgress")]
    pub fn progress(&self) -> JsValue {
        self.totals.to_js()
    }

    /// Unfinished uploads of this file to this broker, recorded by earlier
    /// pages (expired ones are pruned).
    #[wasm_bindgen(js_name = findPreviousUploads, unchecked_return_type = "Promise<PreviousUpload[]>")]
    pub fn find_previous_uploads(&self, file: Blob) -> js_sys::Promise {
        records::find(&self.endpoint, &file)
    }

    /// Starts uploading `file`; the returned `Upload` reports and controls it.
    /// Never throws: bad options, like every other failure, reject `done`
    /// and go to `onError`.
    pub fn upload(
        &self,
        file: Blob,
        #[wasm_bindgen(unchecked_param_type = "UploadOptions")] options: Option<js_sys::Object>,
    ) -> Upload {
        let options = options.map_or(JsValue::UNDEFINED, JsValue::from);
        let latest: Rc<RefCell<Option<Session>>> = Rc::default();
        let paused: Rc<Cell<bool>> = Rc::default();
        // The place in line is taken now, in call order.
        let place = self.queue.ask();
        let queued = Rc::new(Cell::new(place.is_err()));
        let tally =
            self.totals.add(file.size() as u64, if queued.get() { Status::Queued } else { Status::Active });
        let (control, commands) = controls();
        let on_error = function_option(&options, "onError");
        let flags = Flags { latest: &latest, paused: &paused, queued: &queued, tally };
        let started = on_error
            .clone()
            .and_then(|_| follow_signal(&options, &control))
            .and_then(|_| self.start(file, &options, flags, place, commands));
        let on_error = on_error.ok().flatten();
        let (totals, ended_queued) = (Rc::clone(&self.totals), Rc::clone(&queued));
        let run = async move {
            let ended = match started {
                Ok(run) => run.await,
                Err(error) => Err(error),
            };
            ended_queued.set(false);
            totals.set_status(tally, end_status(&ended));
            if let (Err(error), Some(callback)) = (&ended, &on_error) {
                report_thrown(callback.call1(&JsValue::NULL, error));
            }
            ended
        };
        Upload { latest, paused, queued, done: future_to_promise(run), control }
    }
}

/// What an upload's events keep current for its `Upload` and the totals.
struct Flags<'a> {
    latest: &'a Rc<RefCell<Option<Session>>>,
    paused: &'a Rc<Cell<bool>>,
    queued: &'a Rc<Cell<bool>>,
    tally: usize,
}

fn end_status(ended: &Result<JsValue, JsValue>) -> Status {
    match ended {
        Ok(_) => Status::Done,
        Err(error) if get(error, "code").and_then(|c| c.as_string()).as_deref() == Some("aborted") => {
            Status::Cancelled
        }
        Err(_) => Status::Failed,
    }
}

impl Uploader {
    /// Reads the options and sets the upload going: its run, or the option
    /// that is wrong.
    fn start(
        &self,
        file: Blob,
        options_value: &JsValue,
        flags: Flags<'_>,
        place: Result<Turn, Waiter>,
        commands: crate::engine::Commands,
    ) -> Result<LocalBoxFuture<'static, Result<JsValue, JsValue>>, JsValue> {
        // A previous upload's record supplies what must match its session.
        let previous = given_options(&get(options_value, "resumeFrom").unwrap_or(JsValue::UNDEFINED))?;
        let facts = FileFacts {
            name: file.dyn_ref::<web_sys::File>().map(|f| f.name()),
            content_type: file.type_(),
            size: file.size() as u64,
        };
        let options =
            given_options(options_value)?.resolve(&previous, &facts).map_err(|e| error_to_js(&e))?;
        // The resume record's key and value, for a `File` unless `resume: false`.
        let record = file
            .dyn_ref::<web_sys::File>()
            .filter(|_| get(options_value, "resume").is_none_or(|v| v.is_truthy()))
            .map(|f| (records::key(&self.endpoint, f), resume_record(f, &self.endpoint, &options)));
        let on_progress = function_option(options_value, "onProgress")?;
        let on_state_change = function_option(options_value, "onStateChange")?;
        let on_part = function_option(options_value, "onPart")?;
        let on_piece = function_option(options_value, "onPiece")?;
        let on_paused_change = function_option(options_value, "onPausedChange")?;

        let events: EventSink = {
            let (latest, paused, queued) =
                (Rc::clone(flags.latest), Rc::clone(flags.paused), Rc::clone(flags.queued));
            let (totals, tally) = (Rc::clone(&self.totals), flags.tally);
            Rc::new(move |event| match event {
                Event::StateChanged { from, to, session } => {
                    *latest.borrow_mut() = Some(session.clone());
                    if let Some((key, record)) = &record {
                        keep_record(key, record, from, session);
                    }
                    if let Some(callback) = &on_state_change {
                        let change = object(&[
                            ("from", from.map_or(JsValue::NULL, |s| s.as_str().into())),
                            ("to", to.as_str().into()),
                            ("session", session_to_js(session)),
                        ]);
                        report_thrown(callback.call1(&JsValue::NULL, &change));
                    }
                }
                Event::Progress(p) => {
                    totals.set_bytes(tally, p);
                    if let Some(callback) = &on_progress {
                        let progress = object(&[
                            ("bytesSent", (p.bytes_sent as f64).into()),
                            ("bytesAcked", (p.bytes_acked as f64).into()),
                            ("bytesTotal", (p.bytes_total as f64).into()),
                        ]);
                        report_thrown(callback.call1(&JsValue::NULL, &progress));
                    }
                }
                Event::PartStored { part_number, etag, size } => {
                    if let Some(callback) = &on_part {
                        let part = object(&[
                            ("partNumber", part_number.into()),
                            ("etag", etag.into()),
                            ("size", (size as f64).into()),
                        ]);
                        report_thrown(callback.call1(&JsValue::NULL, &part));
                    }
                }
                Event::Piece { piece, state } => {
                    if let Some(callback) = &on_piece {
                        let piece = object(&[
                            ("offset", (piece.start as f64).into()),
                            ("size", (piece.len as f64).into()),
                            ("state", state.as_str().into()),
                        ]);
                        report_thrown(callback.call1(&JsValue::NULL, &piece));
                    }
                }
                Event::Paused(now_paused) => {
                    paused.set(now_paused);
                    totals.set_status(tally, if now_paused { Status::Paused } else { Status::Active });
                    if let Some(callback) = &on_paused_change {
                        report_thrown(callback.call1(&JsValue::NULL, &now_paused.into()));
                    }
                }
                Event::Queued(now_queued) => {
                    queued.set(now_queued);
                    totals.set_status(tally, if now_queued { Status::Queued } else { Status::Active });
                }
            })
        };

        if options.checksum.is_some() {
            checksums::warm_up();
        }
        let engine = Engine {
            broker: WebBroker {
                endpoint: self.endpoint.clone(),
                headers: self.headers.clone(),
                credentials: self.credentials,
                callbacks: self.callbacks.clone(),
                first_contact: self.first_contact.clone(),
            },
            transport: XhrTransport,
            clock: DateClock,
            queue: self.queue.clone(),
        };
        Ok(async move {
            let outcome = engine.upload_from(place, &BlobSource(file), &options, events, commands).await;
            outcome.map(|outcome| outcome_to_js(&outcome)).map_err(|error| error_to_js(&error))
        }
        .boxed_local())
    }
}

/// One upload in progress.
#[wasm_bindgen]
pub struct Upload {
    latest: Rc<RefCell<Option<Session>>>,
    paused: Rc<Cell<bool>>,
    queued: Rc<Cell<bool>>,
    done: js_sys::Promise,
    control: Control,
}

#[wasm_bindgen]
impl Upload {
    /// The session's current state; null until the broker created it.
    #[wasm_bindgen(getter, unchecked_return_type = "SessionState | null")]
    pub fn state(&self) -> JsValue {
        self.latest.borrow().as_ref().map_or(JsValue::NULL, |s| s.state.as_str().into())
    }

    /// A snapshot of the session record; null until the broker created it.
    #[wasm_bindgen(getter, unchecked_return_type = "Session | null")]
    pub fn session(&self) -> JsValue {
        self.latest.borrow().as_ref().map_or(JsValue::NULL, session_to_js)
    }

    /// Resolves with `{ session, asset }` once completed; rejects with an
    /// `UploadError`.
    #[wasm_bindgen(getter, unchecked_return_type = "Promise<UploadResult>")]
    pub fn done(&self) -> js_sys::Promise {
        self.done.clone()
    }

    /// Whether the upload is paused.
    #[wasm_bindgen(getter)]
    pub fn paused(&self) -> bool {
        self.paused.get()
    }

    /// Whether the upload waits for a turn (the uploader's `maxUploads`).
    #[wasm_bindgen(getter)]
    pub fn queued(&self) -> bool {
        self.queued.get()
    }

    /// Stops sending: requests in flight are aborted, nothing the store
    /// holds is discarded. Once the bytes are all stored it has no effect.
    pub fn pause(&self) {
        self.control.pause();
    }

    /// Continues a paused upload from what the store reports it holds.
    pub fn resume(&self) {
        self.control.resume();
    }

    /// Stops the upload and tells the broker to discard it. Resolves with
    /// the final state once the upload has ended ("aborted", or the state
    /// it reached if it was already past the point of cancelling).
    #[wasm_bindgen(unchecked_return_type = "Promise<SessionState | null>")]
    pub fn cancel(&self) -> js_sys::Promise {
        self.control.cancel();
        let done = JsFuture::from(self.done.clone());
        let latest = Rc::clone(&self.latest);
        future_to_promise(async move {
            let _ = done.await;
            let state = latest.borrow().as_ref().map_or(JsValue::NULL, |s| s.state.as_str().into());
            Ok(state)
        })
    }
}

/// `signal`: an `AbortSignal` whose abort is `cancel()`; one already
/// aborted ends the upload before any broker call.
fn follow_signal(options: &JsValue, control: &Control) -> Result<(), JsValue> {
    let Some(signal) = get(options, "signal") else { return Ok(()) };
    let control = control.clone();
    match follow(&signal, &Closure::once_into_js(move || control.cancel())).as_str() {
        "following" => Ok(()),
        "aborted" => Err(error_to_js(&UploadError::new(
            ErrorCode::Aborted,
            "upload cancelled: the signal was aborted",
        ))),
        _ => Err(invalid("option `signal` must be an AbortSignal")),
    }
}

#[wasm_bindgen(module = "/js/browser.js")]
extern "C" {
    #[wasm_bindgen(js_name = followSignal)]
    fn follow(signal: &JsValue, cancel: &JsValue) -> String;
}

/// What `findPreviousUploads` returns for this upload (the session id is
/// filled in once the broker created it).
fn resume_record(file: &web_sys::File, endpoint: &str, options: &UploadOptions) -> js_sys::Object {
    object(&[
        ("strategy", options.strategy_name().into()),
        ("partSize", (options.part_size as f64).into()),
        ("chunkSize", (options.chunk_size as f64).into()),
        ("filename", options.filename.as_str().into()),
        ("size", file.size().into()),
        ("lastModified", file.last_modified().into()),
        ("type", file.type_().into()),
        ("endpoint", endpoint.into()),
        ("createdAt", js_sys::Date::now().into()),
    ])
    .unchecked_into()
}

/// Writes the record when the session appears, deletes it when the session
/// ends (completed, aborted, expired, failed).
fn keep_record(key: &str, record: &js_sys::Object, from: Option<SessionState>, session: &Session) {
    if session.state.is_terminal() {
        records::remove(key);
    } else if from.is_none() {
        let expires_at = session.expires_at.as_deref().and_then(crate::time::parse_ms);
        let _ = js_sys::Reflect::set(record, &"sessionId".into(), &session.id.as_str().into());
        let _ = js_sys::Reflect::set(
            record,
            &"expiresAt".into(),
            &expires_at.map_or(JsValue::NULL, JsValue::from),
        );
        records::save(key, record);
    }
}

/// Reads the options object as given (a type error is refused here; every
/// rule on the values is `GivenOptions::resolve`'s).
fn given_options(value: &JsValue) -> Result<GivenOptions, JsValue> {
    Ok(GivenOptions {
        strategy: string_option(value, "strategy")?,
        filename: string_option(value, "filename")?,
        content_type: string_option(value, "contentType")?,
        part_size: number_option(value, "partSize")?,
        concurrency: number_option(value, "concurrency")?,
        chunk_size: number_option(value, "chunkSize")?,
        session_id: string_option(value, "sessionId")?,
        retry_delays: get(value, "retryDelays").map(|delays| delays_option(&delays)).transpose()?,
        stall_timeout: number_option(value, "stallTimeout")?,
        retry_budget: number_option(value, "retryBudget")?,
        defer_length: get(value, "deferLength").is_some_and(|v| v.is_truthy()),
        checksum: string_option(value, "checksum")?,
        multipart_above: get(value, "auto")
            .map(|auto| number_option(&auto, "multipartAbove"))
            .transpose()?
            .flatten(),
    })
}

fn get(object: &JsValue, key: &str) -> Option<JsValue> {
    if !object.is_object() {
        return None;
    }
    js_sys::Reflect::get(object, &JsValue::from_str(key)).ok().filter(|v| !v.is_undefined() && !v.is_null())
}

fn string_option(object: &JsValue, key: &str) -> Result<Option<String>, JsValue> {
    get(object, key)
        .map(|v| v.as_string().ok_or_else(|| invalid(&format!("option `{key}` must be a string"))))
        .transpose()
}

fn number_option(object: &JsValue, key: &str) -> Result<Option<f64>, JsValue> {
    get(object, key)
        .map(|v| v.as_f64().ok_or_else(|| invalid(&format!("option `{key}` must be a number"))))
        .transpose()
}

/// `retryDelays`: an array of numbers.
fn delays_option(value: &JsValue) -> Result<Vec<f64>, JsValue> {
    let invalid_delays = || invalid("option `retryDelays` must be an array of whole milliseconds");
    let array: &js_sys::Array = value.dyn_ref().ok_or_else(invalid_delays)?;
    array.iter().map(|v| v.as_f64().ok_or_else(invalid_delays)).collect()
}

fn function_option(object: &JsValue, key: &str) -> Result<Option<js_sys::Function>, JsValue> {
    get(object, key)
        .map(|v| {
            v.dyn_into::<js_sys::Function>()
                .map_err(|_| invalid(&format!("option `{key}` must be a function")))
        })
        .transpose()
}

/// An event callback that throws does not stop the upload, but is never
/// silent: the exception goes to the console.
fn report_thrown(called: Result<JsValue, JsValue>) {
    if let Err(thrown) = called {
        web_sys::console::error_2(&"rindle-upload: an event callback threw:".into(), &thrown);
    }
}

fn invalid(message: &str) -> JsValue {
    error_to_js(&UploadError::new(ErrorCode::InvalidRequest, message))
}

fn object(fields: &[(&str, JsValue)]) -> JsValue {
    JsValue::object(fields.to_vec())
}

/// The record as JavaScript sees it: `session_uri` is a bearer credential
/// the page has no use for, so it never leaves WASM.
fn session_to_js(session: &Session) -> JsValue {
    let mut shown = session.clone();
    if shown.session_uri.is_some() {
        shown.session_uri = Some(Secret::new("[redacted]"));
    }
    broker_json::session_json(&shown)
}

fn outcome_to_js(outcome: &Outcome) -> JsValue {
    let asset: &Asset = &outcome.asset;
    object(&[("session", session_to_js(&outcome.session)), ("asset", broker_json::asset_json(asset))])
}

#[wasm_bindgen(module = "/js/upload-error.js")]
extern "C" {
    /// js/upload-error.js's class, so that `instanceof UploadError` works.
    #[wasm_bindgen(js_name = UploadError)]
    type JsUploadError;
    #[wasm_bindgen(constructor, js_class = "UploadError")]
    fn new(code: &str, message: &str, retryable: bool, state: JsValue) -> JsUploadError;
}

fn error_to_js(error: &UploadError) -> JsValue {
    let state = error.state.map_or(JsValue::NULL, |s| s.as_str().into());
    JsUploadError::new(error.code.as_str(), &error.message, error.retryable, state).into()
}
