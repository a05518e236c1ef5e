//! The engine's test harness, shared by the `engine_*` suites: a scripted
//! broker and store transport that record every call and request, a clock
//! that steps and records sleeps, and one run of the engine with every
//! event it emitted. Each suite uses part of it.
#![allow(dead_code)]

use crate::support::Bytes;
use rindle_upload::broker::{Broker, BrokerCall, BrokerReply};
use rindle_upload::engine::{controls, Control, Engine, Event, EventSink, Outcome, UploadOptions};
pub use rindle_upload::events::PieceState;
use rindle_upload::progress::ProgressSnapshot;
use rindle_upload::queue::Queue;
use rindle_upload::retry::RetryPolicy;
use rindle_upload::transport::{
    ByteSource, ChecksumAlgorithm, Clock, HttpRequest, HttpResponse, ProgressFn, Transport, TransportError,
};
use rindle_upload::{SessionState, UploadError, UploadStrategy};
use serde_json::{json, Value};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use SessionState::*;

pub const URL: &str = "http://store.test/objects/k?expires=1&sig=SECRET";

/// Every state of an upload that starts, sends its bytes and completes.
pub const FULL_SEQUENCE: [(Option<SessionState>, SessionState); 6] = [
    (None, Initialized),
    (Some(Initialized), Signed),
    (Some(Signed), Uploading),
    (Some(Uploading), Uploaded),
    (Some(Uploaded), Verifying),
    (Some(Verifying), Completed),
];

/// `base` with the fields of `extra` set (both JSON objects).
pub fn merged(mut base: Value, extra: Value) -> Value {
    if let (Some(fields), Value::Object(extra)) = (base.as_object_mut(), extra) {
        fields.extend(extra);
    }
    base
}

pub fn reply_of(value: Value) -> BrokerReply {
    serde_json::from_value(value).expect("a reply of the protocol's shape")
}

/// The 10-byte presigned PUT session `s1`, with `extra` fields.
pub fn session_json(state: &str, extra: Value) -> Value {
    merged(
        json!({"id": "s1", "state": state, "upload_strategy": "presigned_put", "upload_length": 10}),
        extra,
    )
}

pub fn reply(state: &str) -> BrokerReply {
    reply_of(json!({"session": session_json(state, json!({}))}))
}

pub fn signed_reply(expires_in: u64) -> BrokerReply {
    reply_of(json!({
        "session": session_json("signed", json!({})),
        "upload": {"method": "PUT", "url": URL, "headers": {"Content-Type": "text/plain"}, "expires_in": expires_in},
    }))
}

/// The asset a fake broker reports for `byte_size` bytes.
pub fn asset(byte_size: usize) -> Value {
    json!({"id": "a1", "key": "k", "byte_size": byte_size, "content_type": "text/plain", "sha256": "00", "url": "u"})
}

pub fn completed_reply() -> BrokerReply {
    reply_of(json!({
        "session": session_json("completed", json!({"verified_at": "2026-11-26T00:00:00Z"})),
        "asset": asset(10),
    }))
}

pub type Responder = Box<dyn Fn(&BrokerCall) -> Result<BrokerReply, UploadError>>;

/// Answers each call with what `respond` makes of it, and records the
/// calls as "name path".
pub struct ScriptedBroker {
    pub respond: Responder,
    pub calls: RefCell<Vec<String>>,
    pub bodies: RefCell<Vec<serde_json::Value>>,
}

impl ScriptedBroker {
    /// Replies from a script, in order.
    pub fn new(replies: Vec<Result<BrokerReply, UploadError>>) -> Self {
        let replies = RefCell::new(VecDeque::from(replies));
        Self::responding(move |_| replies.borrow_mut().pop_front().expect("a scripted reply for every call"))
    }

    pub fn responding(respond: impl Fn(&BrokerCall) -> Result<BrokerReply, UploadError> + 'static) -> Self {
        ScriptedBroker { respond: Box::new(respond), calls: RefCell::default(), bodies: RefCell::default() }
    }
}

impl Broker for &ScriptedBroker {
    async fn call(&self, call: &BrokerCall) -> Result<BrokerReply, UploadError> {
        self.calls.borrow_mut().push(format!("{} {}", call.name(), call.path()));
        self.bodies.borrow_mut().push(call.serialize_body(serde_json::value::Serializer).unwrap());
        (self.respond)(call)
    }
}

#[derive(Debug, PartialEq)]
pub struct SentRequest {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

pub type StoreScript = Box<dyn Fn(&SentRequest) -> Result<HttpResponse, TransportError>>;

pub enum Answer {
    Respond(HttpResponse),
    /// Answer each request as the script says.
    Script(StoreScript),
    /// Answer 200 with an ETag naming the part, after letting other
    /// requests start, and count how many are in flight at once.
    StoreParts {
        in_flight: Cell<usize>,
        most_in_flight: Cell<usize>,
    },
    /// Fire the cancel handle and never answer, like a slow upload.
    CancelAndHang(RefCell<Option<Control>>),
    /// The `hang_at`-th request (from 1) never answers and reports no
    /// progress; if a control is given, it asks for pause and resume then.
    /// Every other request is stored like `StoreParts` (sequentially).
    HangAt {
        hang_at: usize,
        control: RefCell<Option<Control>>,
    },
    /// Requests fail as the network would while offline, until the engine
    /// waits for the network to come back; then `online` answers them. The
    /// first `unnoticed` looks at `is_online` still say online, as a browser
    /// may just after a request failed.
    Offline {
        offline: Cell<bool>,
        unnoticed: Cell<usize>,
        online: StoreScript,
    },
}

pub struct ScriptedTransport {
    pub answer: Answer,
    pub requests: RefCell<Vec<SentRequest>>,
    pub dropped_in_flight: Rc<Cell<bool>>,
}

impl ScriptedTransport {
    pub fn new(answer: Answer) -> Self {
        ScriptedTransport { answer, requests: RefCell::default(), dropped_in_flight: Rc::default() }
    }

    pub fn ok() -> Self {
        Self::new(Answer::Respond(HttpResponse { status: 200, headers: vec![], body: String::new() }))
    }
}

/// Sets a flag when the request future is dropped before it finished.
pub struct InFlight(pub Rc<Cell<bool>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

impl Transport for &ScriptedTransport {
    type Body = Vec<u8>;

    async fn send(
        &self,
        request: HttpRequest<Vec<u8>>,
        progress: ProgressFn,
    ) -> Result<HttpResponse, TransportError> {
        let body = request.body.unwrap_or_default();
        let url = request.url.expose().to_owned();
        let request_method = request.method;
        if let Answer::HangAt { hang_at, control } = &self.answer {
            if self.requests.borrow().len() + 1 == *hang_at {
                self.requests.borrow_mut().push(SentRequest {
                    method: request.method,
                    url: url.clone(),
                    headers: request.headers,
                    body,
                });
                let guard = InFlight(Rc::clone(&self.dropped_in_flight));
                if let Some(control) = control.borrow_mut().take() {
                    control.pause();
                    control.resume();
                }
                futures::future::pending::<()>().await;
                drop(guard);
                unreachable!()
            }
        }
        // Progress in thirds, with one repeated report, as XHR may send.
        let len = body.len() as u64;
        for sent in [len / 3, len / 3, 2 * len / 3, len] {
            progress(sent);
        }
        self.requests.borrow_mut().push(SentRequest {
            method: request.method,
            url: request.url.expose().to_owned(),
            headers: request.headers,
            body,
        });
        match &self.answer {
            Answer::Respond(response) => Ok(response.clone()),
            Answer::Script(script) => script(self.requests.borrow().last().unwrap()),
            Answer::Offline { offline, .. } if offline.get() => Err(TransportError::Network),
            Answer::Offline { online, .. } => online(self.requests.borrow().last().unwrap()),
            Answer::HangAt { .. } => Ok(stored_part(&url)),
            Answer::StoreParts { in_flight, most_in_flight } => {
                in_flight.set(in_flight.get() + 1);
                most_in_flight.set(most_in_flight.get().max(in_flight.get()));
                YieldOnce(false).await;
                in_flight.set(in_flight.get() - 1);
                Ok(stored_part(&url))
            }
            Answer::CancelAndHang(_) if request_method == "DELETE" => {
                Ok(HttpResponse { status: 499, headers: vec![], body: String::new() })
            }
            Answer::CancelAndHang(handle) => {
                let guard = InFlight(Rc::clone(&self.dropped_in_flight));
                if let Some(handle) = handle.borrow_mut().take() {
                    handle.cancel();
                }
                futures::future::pending::<()>().await;
                drop(guard);
                unreachable!()
            }
        }
    }

    fn is_online(&self) -> bool {
        match &self.answer {
            Answer::Offline { offline, unnoticed, .. } if offline.get() => {
                let still_unnoticed = unnoticed.get() > 0;
                unnoticed.set(unnoticed.get().saturating_sub(1));
                still_unnoticed
            }
            _ => true,
        }
    }

    async fn online(&self) {
        if let Answer::Offline { offline, .. } = &self.answer {
            offline.set(false);
        }
    }
}

/// A store's answer to a part PUT: 200 with an ETag naming the part.
pub fn stored_part(url: &str) -> HttpResponse {
    let part = url.split("part=").nth(1).unwrap_or_default().split('&').next().unwrap_or_default();
    HttpResponse {
        status: 200,
        headers: vec![("etag".into(), format!("\"etag-{part}\""))],
        body: String::new(),
    }
}

/// Pending once (after asking to be polled again), then ready: lets the
/// executor run the other requests in between.
pub struct YieldOnce(pub bool);

impl std::future::Future for YieldOnce {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// Advances `step` milliseconds each time it is read; sleeps are recorded,
/// move the time on by their length and return after letting the executor
/// poll everything else once; "random" is always one half.
pub struct SteppingClock {
    pub now: Cell<f64>,
    pub step: f64,
    pub slept: Rc<RefCell<Vec<u64>>>,
}

impl Clock for SteppingClock {
    fn now_ms(&self) -> f64 {
        self.now.set(self.now.get() + self.step);
        self.now.get()
    }
    async fn sleep(&self, ms: u64) {
        self.slept.borrow_mut().push(ms);
        self.now.set(self.now.get() + ms as f64);
        YieldOnce(false).await;
    }
    fn random(&self) -> f64 {
        0.5
    }
}

#[derive(Debug, PartialEq, Clone)]
pub enum Seen {
    State(Option<SessionState>, SessionState),
    Progress(ProgressSnapshot),
    Part(u32, String, u64),
    /// A piece's start, length and what happened to its request.
    Piece(u64, u64, PieceState),
    Paused(bool),
    Queued(bool),
}

pub struct Run {
    pub result: Result<Outcome, UploadError>,
    pub seen: Vec<Seen>,
    pub slept: Vec<u64>,
}

impl Run {
    pub fn states(&self) -> Vec<(Option<SessionState>, SessionState)> {
        self.seen
            .iter()
            .filter_map(|s| match s {
                Seen::State(from, to) => Some((*from, *to)),
                _ => None,
            })
            .collect()
    }

    /// Every piece event: start, length, state.
    pub fn pieces(&self) -> Vec<(u64, u64, PieceState)> {
        self.seen
            .iter()
            .filter_map(|s| match s {
                Seen::Piece(start, len, state) => Some((*start, *len, *state)),
                _ => None,
            })
            .collect()
    }

    pub fn progress(&self) -> Vec<ProgressSnapshot> {
        self.seen
            .iter()
            .filter_map(|s| match s {
                Seen::Progress(p) => Some(*p),
                _ => None,
            })
            .collect()
    }
}

pub fn run_upload(
    broker: &ScriptedBroker,
    transport: &ScriptedTransport,
    clock_step: f64,
    strategy: UploadStrategy,
    cancel_slot: Option<&RefCell<Option<Control>>>,
) -> Run {
    let options = UploadOptions::new("a.txt", "text/plain", strategy);
    run_with(broker, transport, clock_step, &options, b"0123456789".to_vec(), cancel_slot)
}

pub fn run_with(
    broker: &ScriptedBroker,
    transport: &ScriptedTransport,
    clock_step: f64,
    options: &UploadOptions,
    data: Vec<u8>,
    cancel_slot: Option<&RefCell<Option<Control>>>,
) -> Run {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let sink_seen = Rc::clone(&seen);
    let events: EventSink = Rc::new(move |event| {
        sink_seen.borrow_mut().push(match event {
            Event::StateChanged { from, to, session } => {
                assert_eq!(session.state, to, "the record carries the new state");
                Seen::State(from, to)
            }
            Event::Progress(p) => Seen::Progress(p),
            Event::PartStored { part_number, etag, size } => Seen::Part(part_number, etag.to_owned(), size),
            Event::Piece { piece, state } => Seen::Piece(piece.start, piece.len, state),
            Event::Paused(paused) => Seen::Paused(paused),
            Event::Queued(queued) => Seen::Queued(queued),
        })
    });
    let (handle, signal) = controls();
    if let Some(slot) = cancel_slot {
        *slot.borrow_mut() = Some(handle);
    }
    let slept = Rc::new(RefCell::new(Vec::new()));
    let clock = SteppingClock { now: Cell::new(0.0), step: clock_step, slept: Rc::clone(&slept) };
    let engine = Engine { broker, transport, clock, queue: Queue::unlimited() };
    let result = futures::executor::block_on(engine.upload(&Bytes(data), options, events, signal));
    let seen = seen.borrow().clone();
    let slept = slept.borrow().clone();
    Run { result, seen, slept }
}

/// A file in memory the test watches: each digest takes a turn of the
/// executor and is logged as it starts and as it ends (by the piece's first
/// byte); after `readable` checks the file reads as changed on disk, as a
/// file changed in a browser does.
pub struct WatchedFile {
    pub bytes: Bytes,
    pub readable: Cell<usize>,
    pub digests: RefCell<Vec<(&'static str, u64)>>,
}

impl WatchedFile {
    /// A file that never changes.
    pub fn new(bytes: Vec<u8>) -> Self {
        WatchedFile { bytes: Bytes(bytes), readable: Cell::new(usize::MAX), digests: RefCell::default() }
    }
}

impl ByteSource for WatchedFile {
    type Slice = Vec<u8>;
    fn size(&self) -> u64 {
        self.bytes.size()
    }
    fn slice(&self, start: u64, end: u64) -> Vec<u8> {
        self.bytes.slice(start, end)
    }
    async fn digest(
        &self,
        start: u64,
        end: u64,
        algorithm: ChecksumAlgorithm,
    ) -> Result<Vec<u8>, UploadError> {
        self.digests.borrow_mut().push(("start", start));
        YieldOnce(false).await;
        self.digests.borrow_mut().push(("end", start));
        self.bytes.digest(start, end, algorithm).await
    }
    async fn check_unchanged(&self) -> Result<(), UploadError> {
        match self.readable.get() {
            0 => Err(UploadError::new(rindle_upload::ErrorCode::FileChanged, "changed")),
            left => {
                self.readable.set(left - 1);
                Ok(())
            }
        }
    }
}

/// One upload of `file`, its events unwatched.
pub fn upload_file(
    broker: &ScriptedBroker,
    transport: &ScriptedTransport,
    options: &UploadOptions,
    file: &WatchedFile,
) -> Result<Outcome, UploadError> {
    let (_control, commands) = controls();
    let clock = SteppingClock { now: Cell::new(0.0), step: 1.0, slept: Rc::default() };
    let engine = Engine { broker, transport, clock, queue: Queue::unlimited() };
    futures::executor::block_on(engine.upload(file, options, Rc::new(|_| {}), commands))
}

/// Options whose one retry waits `jittered_wait_ms` (the test clock's
/// "random" is one half).
pub fn one_retry_waiting(jittered_wait_ms: u64, options: UploadOptions) -> UploadOptions {
    UploadOptions {
        retry: RetryPolicy { delays_ms: vec![2 * jittered_wait_ms], ..RetryPolicy::default() },
        ..options
    }
}

/// The first store request fails as a cut connection; every later one is
/// stored (with an ETag naming its part, as S3 answers).
pub fn first_request_cut() -> ScriptedTransport {
    let sent = Cell::new(0);
    ScriptedTransport::new(Answer::Script(Box::new(move |request| {
        sent.set(sent.get() + 1);
        if sent.get() == 1 {
            Err(TransportError::Network)
        } else {
            Ok(stored_part(&request.url))
        }
    })))
}

pub fn answering(responses: Vec<(u16, Vec<(&'static str, &'static str)>)>) -> ScriptedTransport {
    let queue = RefCell::new(VecDeque::from(responses));
    ScriptedTransport::new(Answer::Script(Box::new(move |_| {
        let (status, headers) = queue.borrow_mut().pop_front().expect("an answer for every request");
        let headers = headers.into_iter().map(|(n, v)| (n.to_owned(), v.to_owned())).collect();
        Ok(HttpResponse { status, headers, body: String::new() })
    })))
}

pub const MIB: usize = 1 << 20;

pub fn multipart_session(state: &str, total: usize, parts: Value) -> Value {
    json!({"id": "s1", "state": state, "upload_strategy": "multipart", "upload_length": total,
           "multipart_upload_id": "mp1", "multipart_parts": parts})
}

/// A broker that answers like the reference broker for a multipart session
/// of `total` bytes whose store already holds `stored` (a JSON part list).
pub fn multipart_broker(total: usize, stored: Value) -> ScriptedBroker {
    ScriptedBroker::responding(move |call| {
        let session = |state: &str| multipart_session(state, total, json!([]));
        Ok(reply_of(match call {
            BrokerCall::Initiate(_) => json!({"session": session("initialized")}),
            BrokerCall::Show { .. } => json!({"session": session("signed")}),
            BrokerCall::ListParts { .. } => {
                json!({"session": multipart_session("signed", total, stored.clone())})
            }
            BrokerCall::SignParts { part_numbers, .. } => {
                let parts: Vec<Value> = part_numbers
                    .iter()
                    .map(|n| {
                        let url = format!("http://store.test/k?part={n}&sig=S");
                        json!({"part_number": n, "upload": {"method": "PUT", "url": url, "expires_in": 900}})
                    })
                    .collect();
                json!({"session": session("signed"), "parts": parts})
            }
            BrokerCall::CompleteMultipart { .. } => {
                json!({"session": session("completed"), "asset": asset(total)})
            }
            BrokerCall::Cancel { .. } => json!({"session": session("aborted")}),
            other => panic!("unexpected call {other:?}"),
        }))
    })
}

pub fn parts_transport() -> ScriptedTransport {
    ScriptedTransport::new(Answer::StoreParts { in_flight: Cell::new(0), most_in_flight: Cell::new(0) })
}

pub fn multipart_options(concurrency: usize) -> UploadOptions {
    UploadOptions {
        part_size: 5 * MIB as u64,
        concurrency,
        ..UploadOptions::new("a.txt", "text/plain", UploadStrategy::Multipart)
    }
}

pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

pub const KIB: u64 = 1024;

pub fn resumable_session(state: &str) -> Value {
    json!({"id": "s1", "state": state, "upload_strategy": "resumable", "upload_length": 1_048_576,
           "session_uri": "http://gcs.test/upload?upload_id=SECRET",
           "session_uri_expires_at": "2999-01-01T00:00:00Z"})
}

pub fn resumable_broker() -> ScriptedBroker {
    ScriptedBroker::responding(move |call| {
        let session = resumable_session;
        Ok(reply_of(match call {
            BrokerCall::Initiate(_) => json!({"session": session("initialized")}),
            BrokerCall::Show { .. } | BrokerCall::Sign { .. } | BrokerCall::ResumableStatus { .. } => {
                json!({"session": session("signed")})
            }
            BrokerCall::Complete { .. } => {
                json!({"session": session("completed"), "asset": asset(1_048_576)})
            }
            BrokerCall::Cancel { .. } => json!({"session": session("aborted")}),
            other => panic!("unexpected call {other:?}"),
        }))
    })
}

pub fn resumable_options() -> UploadOptions {
    UploadOptions {
        chunk_size: 512 * KIB,
        ..UploadOptions::new("a.txt", "text/plain", UploadStrategy::Resumable)
    }
}

pub fn gcs_answer(status: u16, range: Option<&str>) -> Result<HttpResponse, TransportError> {
    let headers = range.map(|r| vec![("range".to_owned(), r.to_owned())]).unwrap_or_default();
    Ok(HttpResponse { status, headers, body: String::new() })
}

pub fn content_ranges(transport: &ScriptedTransport) -> Vec<String> {
    transport
        .requests
        .borrow()
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r.method,
                r.headers.iter().find(|(n, _)| n == "Content-Range").map_or("-", |(_, v)| v)
            )
        })
        .collect()
}

/// A broker for a 1 MiB tus session: pre-created (session_uri) unless
/// `create` is set, in which case it hands out the creation endpoint.
pub fn tus_broker(create: bool) -> ScriptedBroker {
    ScriptedBroker::responding(move |call| {
        let session = |state: &str| {
            let fields = json!({"id": "s1", "state": state, "upload_strategy": "resumable",
                                "resumable_protocol": "tus", "upload_length": 1_048_576});
            let uri = if create { json!({}) } else { json!({"session_uri": "http://tus.test/files/abc"}) };
            merged(fields, uri)
        };
        Ok(reply_of(match call {
            BrokerCall::Initiate(_) => json!({"session": session("initialized")}),
            BrokerCall::Sign { .. } if create => json!({
                "session": session("signed"),
                "upload": {"method": "POST", "url": "http://tus.test/files", "expires_in": 900},
            }),
            BrokerCall::Show { .. } | BrokerCall::Sign { .. } | BrokerCall::ResumableStatus { .. } => {
                json!({"session": session("signed")})
            }
            BrokerCall::Complete { .. } => {
                json!({"session": session("completed"), "asset": asset(1_048_576)})
            }
            BrokerCall::Cancel { .. } => json!({"session": session("aborted")}),
            other => panic!("unexpected call {other:?}"),
        }))
    })
}

pub fn tus_options() -> UploadOptions {
    UploadOptions {
        chunk_size: 512 * KIB,
        resumable_protocol: rindle_upload::options::ResumableProtocol::Tus,
        ..UploadOptions::new("a.txt", "text/plain", UploadStrategy::Resumable)
    }
}

pub fn tus_answer(status: u16, headers: &[(&str, &str)]) -> Result<HttpResponse, TransportError> {
    let mut all = vec![("tus-resumable".to_owned(), "1.0.0".to_owned())];
    all.extend(headers.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    Ok(HttpResponse { status, headers: all, body: String::new() })
}

pub const DISCOVERY: &[(&str, &str)] = &[
    ("tus-version", "1.0.0"),
    ("tus-extension", "creation,creation-with-upload,termination,checksum,expiration"),
    ("tus-checksum-algorithm", "md5,sha1"),
];

pub fn header<'a>(request: &'a SentRequest, name: &str) -> Option<&'a str> {
    request.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

pub fn tus_requests(transport: &ScriptedTransport) -> Vec<String> {
    transport
        .requests
        .borrow()
        .iter()
        .map(|r| format!("{} {}", r.method, header(r, "Upload-Offset").unwrap_or("-")))
        .collect()
}
