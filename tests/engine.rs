//! The engine against a scripted broker and transport: exact state
//! sequences, exact requests, progress, cancel and failure paths.
#![cfg(not(target_arch = "wasm32"))]

mod support;

use rindle_upload::broker::{Broker, BrokerCall, BrokerReply};
use rindle_upload::engine::{controls, Control, Engine, Event, EventSink, Outcome, UploadOptions};
use rindle_upload::progress::ProgressSnapshot;
use rindle_upload::retry::RetryPolicy;
use rindle_upload::transport::{Clock, HttpRequest, HttpResponse, ProgressFn, Transport, TransportError};
use rindle_upload::{ErrorCode, SessionState, UploadError, UploadStrategy};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use support::Bytes;

use SessionState::*;

const URL: &str = "http://store.test/objects/k?expires=1&sig=SECRET";

/// Every state of an upload that starts, sends its bytes and completes.
const FULL_SEQUENCE: [(Option<SessionState>, SessionState); 6] = [
    (None, Initialized),
    (Some(Initialized), Signed),
    (Some(Signed), Uploading),
    (Some(Uploading), Uploaded),
    (Some(Uploaded), Verifying),
    (Some(Verifying), Completed),
];

fn session_json(state: &str, extra: &str) -> String {
    format!(r#"{{"id":"s1","state":"{state}","upload_strategy":"presigned_put","upload_length":10{extra}}}"#)
}

fn reply(state: &str) -> BrokerReply {
    serde_json::from_str(&format!(r#"{{"session":{}}}"#, session_json(state, ""))).unwrap()
}

fn signed_reply(expires_in: u64) -> BrokerReply {
    serde_json::from_str(&format!(
        r#"{{"session":{},"upload":{{"method":"PUT","url":"{URL}","headers":{{"Content-Type":"text/plain"}},"expires_in":{expires_in}}}}}"#,
        session_json("signed", "")
    ))
    .unwrap()
}

fn completed_reply() -> BrokerReply {
    serde_json::from_str(&format!(
        r#"{{"session":{},"asset":{{"id":"a1","key":"k","byte_size":10,"content_type":"text/plain","sha256":"00","url":"http://b/objects/k"}}}}"#,
        session_json("completed", r#","verified_at":"2026-11-26T00:00:00Z""#)
    ))
    .unwrap()
}

type Responder = Box<dyn Fn(&BrokerCall) -> Result<BrokerReply, UploadError>>;

/// Answers each call with what `respond` makes of it, and records the
/// calls as "name path".
struct ScriptedBroker {
    respond: Responder,
    calls: RefCell<Vec<String>>,
    bodies: RefCell<Vec<serde_json::Value>>,
}

impl ScriptedBroker {
    /// Replies from a script, in order.
    fn new(replies: Vec<Result<BrokerReply, UploadError>>) -> Self {
        let replies = RefCell::new(VecDeque::from(replies));
        Self::responding(move |_| replies.borrow_mut().pop_front().expect("a scripted reply for every call"))
    }

    fn responding(respond: impl Fn(&BrokerCall) -> Result<BrokerReply, UploadError> + 'static) -> Self {
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
struct SentRequest {
    method: &'static str,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

type StoreScript = Box<dyn Fn(&SentRequest) -> Result<HttpResponse, TransportError>>;

enum Answer {
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
    /// waits for the network to come back; then `online` answers them.
    Offline {
        offline: Cell<bool>,
        online: StoreScript,
    },
}

struct ScriptedTransport {
    answer: Answer,
    requests: RefCell<Vec<SentRequest>>,
    dropped_in_flight: Rc<Cell<bool>>,
}

impl ScriptedTransport {
    fn new(answer: Answer) -> Self {
        ScriptedTransport { answer, requests: RefCell::default(), dropped_in_flight: Rc::default() }
    }

    fn ok() -> Self {
        Self::new(Answer::Respond(HttpResponse { status: 200, headers: vec![], body: String::new() }))
    }
}

/// Sets a flag when the request future is dropped before it finished.
struct InFlight(Rc<Cell<bool>>);
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
        !matches!(&self.answer, Answer::Offline { offline, .. } if offline.get())
    }

    async fn online(&self) {
        if let Answer::Offline { offline, .. } = &self.answer {
            offline.set(false);
        }
    }
}

/// A store's answer to a part PUT: 200 with an ETag naming the part.
fn stored_part(url: &str) -> HttpResponse {
    let part = url.split("part=").nth(1).unwrap_or_default().split('&').next().unwrap_or_default();
    HttpResponse {
        status: 200,
        headers: vec![("etag".into(), format!("\"etag-{part}\""))],
        body: String::new(),
    }
}

/// Pending once (after asking to be polled again), then ready: lets the
/// executor run the other requests in between.
struct YieldOnce(bool);
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
struct SteppingClock {
    now: Cell<f64>,
    step: f64,
    slept: Rc<RefCell<Vec<u64>>>,
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
enum Seen {
    State(Option<SessionState>, SessionState),
    Progress(ProgressSnapshot),
    Part(u32, String, u64),
    Paused(bool),
}

struct Run {
    result: Result<Outcome, UploadError>,
    seen: Vec<Seen>,
    slept: Vec<u64>,
}

impl Run {
    fn states(&self) -> Vec<(Option<SessionState>, SessionState)> {
        self.seen
            .iter()
            .filter_map(|s| match s {
                Seen::State(from, to) => Some((*from, *to)),
                _ => None,
            })
            .collect()
    }

    fn progress(&self) -> Vec<ProgressSnapshot> {
        self.seen
            .iter()
            .filter_map(|s| match s {
                Seen::Progress(p) => Some(*p),
                _ => None,
            })
            .collect()
    }
}

fn run_upload(
    broker: &ScriptedBroker,
    transport: &ScriptedTransport,
    clock_step: f64,
    strategy: UploadStrategy,
    cancel_slot: Option<&RefCell<Option<Control>>>,
) -> Run {
    let options = UploadOptions::new("a.txt", "text/plain", strategy);
    run_with(broker, transport, clock_step, &options, b"0123456789".to_vec(), cancel_slot)
}

fn run_with(
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
            Event::Paused(paused) => Seen::Paused(paused),
        })
    });
    let (handle, signal) = controls();
    if let Some(slot) = cancel_slot {
        *slot.borrow_mut() = Some(handle);
    }
    let slept = Rc::new(RefCell::new(Vec::new()));
    let clock = SteppingClock { now: Cell::new(0.0), step: clock_step, slept: Rc::clone(&slept) };
    let engine = Engine { broker, transport, clock };
    let result = futures::executor::block_on(engine.upload(&Bytes(data), options, events, signal));
    let seen = seen.borrow().clone();
    let slept = slept.borrow().clone();
    Run { result, seen, slept }
}

#[test]
fn presigned_put_walks_every_state_with_exact_requests() {
    let broker =
        ScriptedBroker::new(vec![Ok(reply("initialized")), Ok(signed_reply(900)), Ok(completed_reply())]);
    let transport = ScriptedTransport::ok();
    let run = run_upload(&broker, &transport, 1.0, UploadStrategy::PresignedPut, None);

    let outcome = run.result.as_ref().unwrap();
    assert_eq!(outcome.session.state, Completed);
    assert_eq!(outcome.asset.sha256, "00");
    assert_eq!(run.states(), FULL_SEQUENCE);
    assert_eq!(*broker.calls.borrow(), vec!["initiate ", "sign /s1/sign", "complete /s1/complete"]);
    assert_eq!(
        *transport.requests.borrow(),
        vec![SentRequest {
            method: "PUT",
            url: URL.into(),
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: b"0123456789".to_vec(),
        }]
    );
    let progress = run.progress();
    assert!(progress
        .windows(2)
        .all(|w| w[0].bytes_sent < w[1].bytes_sent || w[0].bytes_acked < w[1].bytes_acked));
    assert!(progress.iter().all(|p| p.bytes_acked <= p.bytes_sent && p.bytes_total == 10));
    assert_eq!(progress.first().unwrap().bytes_sent, 3);
    assert_eq!(
        *progress.last().unwrap(),
        ProgressSnapshot { bytes_sent: 10, bytes_acked: 10, bytes_total: 10 }
    );
}

#[test]
fn cancel_aborts_the_request_and_tells_the_broker() {
    let broker =
        ScriptedBroker::new(vec![Ok(reply("initialized")), Ok(signed_reply(900)), Ok(reply("aborted"))]);
    let transport = ScriptedTransport::new(Answer::CancelAndHang(RefCell::new(None)));
    let Answer::CancelAndHang(handle_slot) = &transport.answer else { unreachable!() };
    let run = run_upload(&broker, &transport, 1.0, UploadStrategy::PresignedPut, Some(handle_slot));

    assert!(transport.dropped_in_flight.get(), "the in-flight request was dropped (aborted)");
    let err = run.result.clone().unwrap_err();
    assert_eq!((err.code, err.state, err.retryable), (ErrorCode::Aborted, Some(Aborted), false));
    assert_eq!(run.states().last(), Some(&(Some(Uploading), Aborted)));
    assert_eq!(*broker.calls.borrow(), vec!["initiate ", "sign /s1/sign", "cancel /s1/cancel"]);
}

#[test]
fn an_expired_url_refused_by_the_store_is_signed_again() {
    let broker = ScriptedBroker::new(vec![
        Ok(reply("initialized")),
        Ok(signed_reply(900)),
        Ok(signed_reply(900)),
        Ok(completed_reply()),
    ]);
    let puts = Cell::new(0);
    let transport = ScriptedTransport::new(Answer::Script(Box::new(move |_| {
        puts.set(puts.get() + 1);
        let (status, body) = if puts.get() == 1 {
            (403, "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>")
        } else {
            (200, "")
        };
        Ok(HttpResponse { status, headers: vec![], body: body.into() })
    })));
    let run = run_upload(&broker, &transport, 1.0, UploadStrategy::PresignedPut, None);
    assert!(run.result.is_ok(), "{:?}", run.result);
    assert_eq!(
        *broker.calls.borrow(),
        ["initiate ", "sign /s1/sign", "sign /s1/sign", "complete /s1/complete"]
    );
    assert_eq!(transport.requests.borrow().len(), 2);
    assert!(run.slept.is_empty(), "re-signing is not a backoff");
    assert_eq!(run.progress().last().unwrap().bytes_sent, 10, "the resent bytes are not counted twice");
}

/// Options whose one retry waits `jittered_wait_ms` (the test clock's
/// "random" is one half).
fn one_retry_waiting(jittered_wait_ms: u64, options: UploadOptions) -> UploadOptions {
    UploadOptions {
        retry: RetryPolicy { delays_ms: vec![2 * jittered_wait_ms], ..RetryPolicy::default() },
        ..options
    }
}

/// The first store request fails as a cut connection; every later one is
/// stored (with an ETag naming its part, as S3 answers).
fn first_request_cut() -> ScriptedTransport {
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

#[test]
fn a_presigned_url_is_used_only_in_the_first_90_percent_of_its_life() {
    // A 10 s URL, a cut PUT, then a backoff ending before or after 9 s.
    for (wait_ms, signatures) in [(8_900, 1), (9_100, 2)] {
        let mut replies = vec![Ok(reply("initialized"))];
        replies.extend((0..signatures).map(|_| Ok(signed_reply(10))));
        replies.push(Ok(completed_reply()));
        let broker = ScriptedBroker::new(replies);
        let transport = first_request_cut();
        let options = one_retry_waiting(
            wait_ms,
            UploadOptions::new("a.txt", "text/plain", UploadStrategy::PresignedPut),
        );
        let run = run_with(&broker, &transport, 1.0, &options, b"0123456789".to_vec(), None);
        assert!(run.result.is_ok(), "{wait_ms} ms: {:?}", run.result);
        let signs = broker.calls.borrow().iter().filter(|c| c.starts_with("sign ")).count();
        assert_eq!(
            signs,
            signatures,
            "after {wait_ms} ms the URL is {}",
            if signatures == 1 { "reused" } else { "signed again" }
        );
        assert_eq!(run.slept, vec![wait_ms]);
        assert_eq!(transport.requests.borrow().len(), 2);
    }
}

#[test]
fn a_part_url_is_used_only_in_the_first_90_percent_of_its_life() {
    // The reference broker's 900 s part URLs: fresh until 810 s after signing.
    for (wait_ms, sign_calls) in [(800_000, 1), (820_000, 2)] {
        let total = 10 * MIB;
        let broker = multipart_broker(total, "");
        let transport = first_request_cut();
        let options = one_retry_waiting(wait_ms, multipart_options(1));
        let run = run_with(&broker, &transport, 1.0, &options, pattern(total), None);
        assert!(run.result.is_ok(), "{wait_ms} ms: {:?}", run.result);
        let bodies = broker.bodies.borrow();
        let signed: Vec<&serde_json::Value> = bodies.iter().filter_map(|b| b.get("part_numbers")).collect();
        assert_eq!(signed.len(), sign_calls, "after {wait_ms} ms: {signed:?}");
        assert_eq!(signed[0], &serde_json::json!([1, 2]));
        if sign_calls == 2 {
            assert_eq!(signed[1], &serde_json::json!([1, 2]), "the stale batch is signed again from part 1");
        }
        assert_eq!(transport.requests.borrow().len(), 3, "part 1 twice, part 2 once");
    }
}

#[test]
fn a_part_url_refused_as_expired_mid_upload_is_signed_again() {
    let total = 15 * MIB;
    let broker = multipart_broker(total, "");
    let sent = Cell::new(0);
    let transport = ScriptedTransport::new(Answer::Script(Box::new(move |request| {
        sent.set(sent.get() + 1);
        if sent.get() == 2 {
            let body = "<Error><Code>InvalidRequest</Code><Message>Date is too old</Message></Error>";
            Ok(HttpResponse { status: 400, headers: vec![], body: body.into() })
        } else {
            Ok(stored_part(&request.url))
        }
    })));
    let run = run_with(&broker, &transport, 1.0, &multipart_options(1), pattern(total), None);
    assert!(run.result.is_ok(), "{:?}", run.result);
    let bodies = broker.bodies.borrow();
    let signed: Vec<&serde_json::Value> = bodies.iter().filter_map(|b| b.get("part_numbers")).collect();
    assert_eq!(signed, [&serde_json::json!([1, 2]), &serde_json::json!([2, 3])], "part 2 signed again");
    let parts: Vec<String> =
        transport.requests.borrow().iter().map(|r| r.url.split('?').nth(1).unwrap().to_owned()).collect();
    assert_eq!(parts, ["part=1&sig=S", "part=2&sig=S", "part=2&sig=S", "part=3&sig=S"]);
    assert!(run.slept.is_empty(), "re-signing is not a backoff");
}

#[test]
fn a_url_that_keeps_expiring_is_reported_after_one_new_signature() {
    let broker =
        ScriptedBroker::new(vec![Ok(reply("initialized")), Ok(signed_reply(1)), Ok(signed_reply(1))]);
    let transport = ScriptedTransport::ok();
    // Each clock reading is a second later: every URL is stale on arrival.
    let run = run_upload(&broker, &transport, 1_000.0, UploadStrategy::PresignedPut, None);
    let err = run.result.unwrap_err();
    assert_eq!((err.code, err.state, err.retryable), (ErrorCode::UrlExpired, Some(Uploading), true));
    assert!(!err.message.contains("SECRET"));
    assert_eq!(broker.calls.borrow().len(), 3, "initiate and two signatures");
    assert!(transport.requests.borrow().is_empty(), "an expired URL is never sent");
}

fn answering(responses: Vec<(u16, Vec<(&'static str, &'static str)>)>) -> ScriptedTransport {
    let queue = RefCell::new(VecDeque::from(responses));
    ScriptedTransport::new(Answer::Script(Box::new(move |_| {
        let (status, headers) = queue.borrow_mut().pop_front().expect("an answer for every request");
        let headers = headers.into_iter().map(|(n, v)| (n.to_owned(), v.to_owned())).collect();
        Ok(HttpResponse { status, headers, body: String::new() })
    })))
}

#[test]
fn server_errors_are_retried_with_jittered_backoff() {
    let broker =
        ScriptedBroker::new(vec![Ok(reply("initialized")), Ok(signed_reply(900)), Ok(completed_reply())]);
    let transport = answering(vec![(503, vec![]), (500, vec![]), (200, vec![])]);
    let run = run_upload(&broker, &transport, 1.0, UploadStrategy::PresignedPut, None);
    assert!(run.result.is_ok(), "{:?}", run.result);
    assert_eq!(transport.requests.borrow().len(), 3);
    assert_eq!(run.slept, [500, 1_500], "half (the clock's jitter) of 1 s, then of 3 s");
    let sent: Vec<u64> = run.progress().iter().map(|p| p.bytes_sent).collect();
    assert!(sent.windows(2).all(|w| w[0] <= w[1]) && *sent.last().unwrap() == 10, "{sent:?}");
}

#[test]
fn retry_after_is_waited_out_and_final_refusals_are_not_retried() {
    let broker =
        ScriptedBroker::new(vec![Ok(reply("initialized")), Ok(signed_reply(900)), Ok(completed_reply())]);
    let transport = answering(vec![(429, vec![("retry-after", "7")]), (200, vec![])]);
    let run = run_upload(&broker, &transport, 1.0, UploadStrategy::PresignedPut, None);
    assert!(run.result.is_ok(), "{:?}", run.result);
    assert_eq!(run.slept, [7_000]);

    let broker = ScriptedBroker::new(vec![Ok(reply("initialized")), Ok(signed_reply(900))]);
    let transport = answering(vec![(403, vec![])]);
    let run = run_upload(&broker, &transport, 1.0, UploadStrategy::PresignedPut, None);
    assert_eq!(run.result.unwrap_err().code, ErrorCode::StoreRejected);
    assert_eq!(transport.requests.borrow().len(), 1, "a 403 is not retried");
    assert!(run.slept.is_empty());
}

#[test]
fn retries_are_bounded_by_the_policy() {
    let broker = ScriptedBroker::new(vec![Ok(reply("initialized")), Ok(signed_reply(900))]);
    let transport = answering(vec![(502, vec![]); 6]);
    let run = run_upload(&broker, &transport, 1.0, UploadStrategy::PresignedPut, None);
    let err = run.result.unwrap_err();
    assert_eq!((err.code, err.retryable), (ErrorCode::StoreServerError, true));
    assert_eq!(transport.requests.borrow().len(), 6, "one try and the policy's five retries");
    assert_eq!(run.slept, [500, 1_500, 2_500, 5_000, 10_000]);
}

#[test]
fn verification_failure_carries_the_reason() {
    let failed: BrokerReply = serde_json::from_str(&format!(
        r#"{{"session":{}}}"#,
        session_json("failed", r#","failure_reason":"content type image/png not allowed""#)
    ))
    .unwrap();
    let broker = ScriptedBroker::new(vec![Ok(reply("initialized")), Ok(signed_reply(900)), Ok(failed)]);
    let run = run_upload(&broker, &ScriptedTransport::ok(), 1.0, UploadStrategy::PresignedPut, None);
    let err = run.result.clone().unwrap_err();
    assert_eq!((err.code, err.state), (ErrorCode::VerificationFailed, Some(Failed)));
    assert_eq!(err.message, "content type image/png not allowed");
    assert_eq!(run.states().last(), Some(&(Some(Verifying), Failed)));
}

#[test]
fn an_illegal_server_state_is_refused_and_nothing_is_sent() {
    let mut signed_but_completed = signed_reply(900);
    signed_but_completed.session.state = Completed;
    let broker = ScriptedBroker::new(vec![Ok(reply("initialized")), Ok(signed_but_completed)]);
    let transport = ScriptedTransport::ok();
    let run = run_upload(&broker, &transport, 1.0, UploadStrategy::PresignedPut, None);
    let err = run.result.clone().unwrap_err();
    assert_eq!((err.code, err.state), (ErrorCode::IllegalTransition, Some(Initialized)));
    assert_eq!(run.states(), vec![(None, Initialized)]);
    assert!(transport.requests.borrow().is_empty());
}

#[test]
fn broker_calls_are_retried_then_surface_with_the_state_they_happened_in() {
    let unreachable = || Err(UploadError::new(ErrorCode::BrokerUnreachable, "fetch failed"));
    let mut script = vec![Ok(reply("initialized"))];
    script.extend((0..6).map(|_| unreachable()));
    let broker = ScriptedBroker::new(script);
    let run = run_upload(&broker, &ScriptedTransport::ok(), 1.0, UploadStrategy::PresignedPut, None);
    let err = run.result.clone().unwrap_err();
    assert_eq!((err.code, err.state, err.retryable), (ErrorCode::BrokerUnreachable, Some(Initialized), true));
    assert_eq!(broker.calls.borrow().len(), 7, "initiate, then sign tried once and retried five times");
    assert_eq!(run.slept, vec![500, 1_500, 2_500, 5_000, 10_000], "the default backoff with jitter 0.5");
}

#[test]
fn a_broker_that_recovers_is_not_an_error_and_refusals_are_not_retried() {
    let broker = ScriptedBroker::new(vec![
        Ok(reply("initialized")),
        Err(UploadError::new(ErrorCode::BrokerServerError, "502")),
        Ok(signed_reply(900)),
        Ok(completed_reply()),
    ]);
    let run = run_upload(&broker, &ScriptedTransport::ok(), 1.0, UploadStrategy::PresignedPut, None);
    assert_eq!(run.result.unwrap().session.state, Completed);
    assert_eq!(run.slept, vec![500]);

    let broker = ScriptedBroker::new(vec![
        Ok(reply("initialized")),
        Err(UploadError::new(ErrorCode::SessionNotFound, "gone")),
    ]);
    let run = run_upload(&broker, &ScriptedTransport::ok(), 1.0, UploadStrategy::PresignedPut, None);
    assert_eq!(run.result.unwrap_err().code, ErrorCode::SessionNotFound);
    assert!(run.slept.is_empty());
}

// ---- multipart ----

const MIB: usize = 1 << 20;

fn multipart_session(state: &str, total: usize, parts: &str) -> String {
    format!(
        r#"{{"id":"s1","state":"{state}","upload_strategy":"multipart","upload_length":{total},
            "multipart_upload_id":"mp1","multipart_parts":[{parts}]}}"#
    )
}

/// A broker that answers like the reference broker for a multipart session
/// of `total` bytes whose store already holds `stored` (as JSON parts).
fn multipart_broker(total: usize, stored: &'static str) -> ScriptedBroker {
    ScriptedBroker::responding(move |call| {
        let reply = |session: String, extra: &str| -> BrokerReply {
            serde_json::from_str(&format!(r#"{{"session":{session}{extra}}}"#)).unwrap()
        };
        Ok(match call {
            BrokerCall::Initiate(_) => reply(multipart_session("initialized", total, ""), ""),
            BrokerCall::Show { .. } => reply(multipart_session("signed", total, ""), ""),
            BrokerCall::ListParts { .. } => reply(multipart_session("signed", total, stored), ""),
            BrokerCall::SignParts { part_numbers, .. } => {
                let parts: Vec<String> = part_numbers
                    .iter()
                    .map(|n| {
                        format!(
                            r#"{{"part_number":{n},"upload":{{"method":"PUT","url":"http://store.test/k?part={n}&sig=S","expires_in":900}}}}"#
                        )
                    })
                    .collect();
                reply(multipart_session("signed", total, ""), &format!(r#","parts":[{}]"#, parts.join(",")))
            }
            BrokerCall::CompleteMultipart { .. } => reply(
                multipart_session("completed", total, ""),
                &format!(
                    r#","asset":{{"id":"a1","key":"k","byte_size":{total},"content_type":"text/plain","sha256":"00","url":"u"}}"#
                ),
            ),
            BrokerCall::Cancel { .. } => reply(multipart_session("aborted", total, ""), ""),
            other => panic!("unexpected call {other:?}"),
        })
    })
}

fn parts_transport() -> ScriptedTransport {
    ScriptedTransport::new(Answer::StoreParts { in_flight: Cell::new(0), most_in_flight: Cell::new(0) })
}

fn multipart_options(concurrency: usize) -> UploadOptions {
    UploadOptions {
        part_size: 5 * MIB as u64,
        concurrency,
        ..UploadOptions::new("a.txt", "text/plain", UploadStrategy::Multipart)
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn multipart_sends_parts_concurrently_and_completes_them_in_order() {
    let total = 21 * MIB;
    let broker = multipart_broker(total, "");
    let transport = parts_transport();
    let run = run_with(&broker, &transport, 1.0, &multipart_options(2), pattern(total), None);

    assert_eq!(run.result.as_ref().map(|o| o.session.state), Ok(Completed));
    let Answer::StoreParts { most_in_flight, .. } = &transport.answer else { unreachable!() };
    assert_eq!(most_in_flight.get(), 2, "two parts in flight at once, never more");
    assert_eq!(
        *broker.calls.borrow(),
        vec![
            "initiate ",
            "signParts /s1/parts/sign",
            "signParts /s1/parts/sign",
            "completeMultipart /s1/multipart/complete"
        ]
    );
    let bodies = broker.bodies.borrow();
    assert_eq!(bodies[0]["part_size"], 5 * MIB);
    // Batches of twice the concurrency, signed as parts come due.
    assert_eq!(bodies[1]["part_numbers"], serde_json::json!([1, 2, 3, 4]));
    assert_eq!(bodies[2]["part_numbers"], serde_json::json!([5]));
    let completed = &bodies.last().unwrap()["parts"];
    let numbers: Vec<u64> =
        completed.as_array().unwrap().iter().map(|p| p["part_number"].as_u64().unwrap()).collect();
    assert_eq!(numbers, vec![1, 2, 3, 4, 5], "completion lists parts in order");
    assert_eq!(completed[4]["etag"], "\"etag-5\"");
    assert_eq!(completed[4]["size"], MIB);

    let requests = transport.requests.borrow();
    assert_eq!(requests.len(), 5);
    let data = pattern(total);
    for request in requests.iter() {
        let part: usize =
            request.url.split("part=").nth(1).unwrap().split('&').next().unwrap().parse().unwrap();
        let start = (part - 1) * 5 * MIB;
        assert_eq!(request.body, data[start..(start + 5 * MIB).min(total)], "part {part} carries its bytes");
    }
    let parts_seen = run.seen.iter().filter(|s| matches!(s, Seen::Part(..))).count();
    assert_eq!(parts_seen, 5, "onPart once per part");
    assert_eq!(
        *run.progress().last().unwrap(),
        ProgressSnapshot { bytes_sent: total as u64, bytes_acked: total as u64, bytes_total: total as u64 }
    );
}

#[test]
fn a_broker_that_signs_fewer_parts_than_asked_is_refused_before_any_byte() {
    let total = 10 * MIB;
    let full = multipart_broker(total, "");
    let broker = ScriptedBroker::responding(move |call| {
        let mut reply = full.respond.as_ref()(call)?;
        reply.parts.truncate(1);
        Ok(reply)
    });
    let transport = parts_transport();
    let run = run_with(&broker, &transport, 1.0, &multipart_options(1), pattern(total), None);
    let err = run.result.unwrap_err();
    assert_eq!((err.code, err.state), (ErrorCode::BrokerMalformedResponse, Some(Initialized)));
    assert!(err.message.contains("exactly the parts asked for"), "{}", err.message);
    assert!(transport.requests.borrow().is_empty());
}

#[test]
fn multipart_resume_sends_only_the_parts_the_store_lacks() {
    let total = 21 * MIB;
    let stored = r#"{"part_number":1,"etag":"\"old-1\"","size":5242880},{"part_number":3,"etag":"\"old-3\"","size":5242880},
                    {"part_number":5,"etag":"\"short\"","size":10}"#;
    let broker = multipart_broker(total, stored);
    let transport = parts_transport();
    let options = UploadOptions { resume_session_id: Some("s1".into()), ..multipart_options(4) };
    let run = run_with(&broker, &transport, 1.0, &options, pattern(total), None);

    assert!(run.result.is_ok(), "{:?}", run.result);
    assert_eq!(
        run.states(),
        vec![
            (None, Signed),
            (Some(Signed), Resuming),
            (Some(Resuming), Uploading),
            (Some(Uploading), Uploaded),
            (Some(Uploaded), Verifying),
            (Some(Verifying), Completed),
        ]
    );
    assert_eq!(broker.calls.borrow()[..2], ["show /s1", "listParts /s1/parts"]);
    let bodies = broker.bodies.borrow();
    assert_eq!(
        bodies[2]["part_numbers"],
        serde_json::json!([2, 4, 5]),
        "part 5 was stored with the wrong size"
    );
    let completed = &bodies.last().unwrap()["parts"];
    assert_eq!(completed[0]["etag"], "\"old-1\"");
    assert_eq!(completed[1]["etag"], "\"etag-2\"");
    assert_eq!(transport.requests.borrow().len(), 3);
    let stored = 10 * MIB as u64;
    assert_eq!(
        run.progress()[0],
        ProgressSnapshot { bytes_sent: stored, bytes_acked: stored, bytes_total: total as u64 },
        "the stored parts count as acknowledged before any byte is sent"
    );
}

#[test]
fn a_resumed_multipart_upload_plans_with_the_brokers_part_size() {
    // The session was planned with 10 MiB parts; the page resuming it asks
    // for 5 MiB (the default of another page, say).
    let total = 21 * MIB;
    let planned = multipart_broker(total, "");
    let broker = ScriptedBroker::responding(move |call| {
        let reply = planned.respond.as_ref()(call)?;
        Ok(BrokerReply { part_size: Some(10 * MIB as u64), ..reply })
    });
    let transport = parts_transport();
    let options = UploadOptions { resume_session_id: Some("s1".into()), ..multipart_options(1) };
    let run = run_with(&broker, &transport, 1.0, &options, pattern(total), None);
    assert!(run.result.is_ok(), "{:?}", run.result);
    let bodies = broker.bodies.borrow();
    let signed: Vec<u64> = bodies
        .iter()
        .filter_map(|b| b.get("part_numbers"))
        .flat_map(|numbers| numbers.as_array().unwrap().iter().map(|n| n.as_u64().unwrap()))
        .collect();
    assert_eq!(signed, [1, 2, 3], "the broker's three parts, not five");
    let sizes: Vec<usize> = transport.requests.borrow().iter().map(|r| r.body.len()).collect();
    assert_eq!(sizes, [10 * MIB, 10 * MIB, MIB]);
    let completed = &bodies.last().unwrap()["parts"];
    assert_eq!(completed.as_array().unwrap().len(), 3);
}

#[test]
fn multipart_refuses_to_resume_with_another_file() {
    let broker = multipart_broker(21 * MIB, "");
    let options = UploadOptions { resume_session_id: Some("s1".into()), ..multipart_options(4) };
    let run = run_with(&broker, &parts_transport(), 1.0, &options, pattern(20 * MIB), None);
    let err = run.result.unwrap_err();
    assert_eq!((err.code, err.state), (ErrorCode::InvalidRequest, None));
    assert_eq!(*broker.calls.borrow(), vec!["show /s1"]);
}

#[test]
fn multipart_cancel_tells_the_broker_to_abort() {
    let total = 6 * MIB;
    let broker = multipart_broker(total, "");
    let transport = ScriptedTransport::new(Answer::CancelAndHang(RefCell::new(None)));
    let Answer::CancelAndHang(handle_slot) = &transport.answer else { unreachable!() };
    let run = run_with(&broker, &transport, 1.0, &multipart_options(4), pattern(total), Some(handle_slot));
    let err = run.result.unwrap_err();
    assert_eq!((err.code, err.state), (ErrorCode::Aborted, Some(Aborted)));
    assert_eq!(broker.calls.borrow().last().unwrap(), "cancel /s1/cancel");
    assert!(transport.dropped_in_flight.get());
}

#[test]
fn a_missing_etag_names_the_cors_cause() {
    let total = 6 * MIB;
    let broker = multipart_broker(total, "");
    let transport = ScriptedTransport::ok();
    let run = run_with(&broker, &transport, 1.0, &multipart_options(1), pattern(total), None);
    let err = run.result.unwrap_err();
    assert_eq!((err.code, err.state), (ErrorCode::StoreMalformedResponse, Some(Uploading)));
    assert!(err.message.contains("CORS rule must expose the ETag"), "{}", err.message);
    assert!(!broker.calls.borrow().iter().any(|c| c.starts_with("completeMultipart")));
}

#[test]
fn impossible_part_sizes_fail_before_any_call() {
    let broker = multipart_broker(MIB, "");
    let options = UploadOptions { part_size: MIB as u64, ..multipart_options(4) };
    let run = run_with(&broker, &parts_transport(), 1.0, &options, pattern(MIB), None);
    assert_eq!(run.result.unwrap_err().code, ErrorCode::InvalidRequest);
    assert!(broker.calls.borrow().is_empty());
}

// ---- resumable (GCS) ----

const KIB: u64 = 1024;

fn resumable_session(state: &str, extra: &str) -> String {
    format!(
        r#"{{"id":"s1","state":"{state}","upload_strategy":"resumable","upload_length":1048576,
            "session_uri":"http://gcs.test/upload?upload_id=SECRET","session_uri_expires_at":"2999-01-01T00:00:00Z"{extra}}}"#
    )
}

/// A broker for a 1 MiB resumable session; records the offsets reported.
fn resumable_broker(session_extra: &'static str) -> ScriptedBroker {
    ScriptedBroker::responding(move |call| {
        let reply = |state: &str, extra: &str| -> BrokerReply {
            serde_json::from_str(&format!(
                r#"{{"session":{}{extra}}}"#,
                resumable_session(state, session_extra)
            ))
            .unwrap()
        };
        Ok(match call {
            BrokerCall::Initiate(_) => reply("initialized", ""),
            BrokerCall::Show { .. } | BrokerCall::Sign { .. } | BrokerCall::ResumableStatus { .. } => {
                reply("signed", "")
            }
            BrokerCall::Complete { .. } => reply(
                "completed",
                r#","asset":{"id":"a1","key":"k","byte_size":1048576,"content_type":"text/plain","sha256":"00","url":"u"}"#,
            ),
            BrokerCall::Cancel { .. } => reply("aborted", ""),
            other => panic!("unexpected call {other:?}"),
        })
    })
}

fn resumable_options() -> UploadOptions {
    UploadOptions {
        chunk_size: 512 * KIB,
        ..UploadOptions::new("a.txt", "text/plain", UploadStrategy::Resumable)
    }
}

fn gcs_answer(status: u16, range: Option<&str>) -> Result<HttpResponse, TransportError> {
    let headers = range.map(|r| vec![("range".to_owned(), r.to_owned())]).unwrap_or_default();
    Ok(HttpResponse { status, headers, body: String::new() })
}

fn content_ranges(transport: &ScriptedTransport) -> Vec<String> {
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

#[test]
fn resumable_continues_from_what_the_store_committed() {
    let broker = resumable_broker("");
    let transport = ScriptedTransport::new(Answer::Script(Box::new(|request| {
        let range = &request.headers[0].1;
        match range.as_str() {
            // The store kept only half of the first chunk.
            "bytes 0-524287/1048576" => gcs_answer(308, Some("bytes=0-262143")),
            "bytes 262144-786431/1048576" => gcs_answer(308, Some("bytes=0-786431")),
            "bytes 786432-1048575/1048576" => gcs_answer(200, None),
            other => panic!("unexpected Content-Range {other}"),
        }
    })));
    let data = pattern(1 << 20);
    let run = run_with(&broker, &transport, 1.0, &resumable_options(), data.clone(), None);

    assert!(run.result.is_ok(), "{:?}", run.result);
    assert_eq!(
        content_ranges(&transport),
        ["PUT bytes 0-524287/1048576", "PUT bytes 262144-786431/1048576", "PUT bytes 786432-1048575/1048576"]
    );
    let requests = transport.requests.borrow();
    assert_eq!(requests[1].body, data[262_144..786_432]);
    assert!(requests.iter().all(|r| r.url == "http://gcs.test/upload?upload_id=SECRET"));
    assert_eq!(*broker.calls.borrow(), ["initiate ", "sign /s1/sign", "complete /s1/complete"]);
    let progress = run.progress();
    assert!(progress
        .windows(2)
        .all(|w| w[0].bytes_sent <= w[1].bytes_sent && w[0].bytes_acked <= w[1].bytes_acked));
    let acked: Vec<u64> = progress.iter().map(|p| p.bytes_acked).collect();
    assert!(
        acked.contains(&262_144) && acked.contains(&786_432),
        "acknowledged = committed offset: {acked:?}"
    );
    assert_eq!(
        *progress.last().unwrap(),
        ProgressSnapshot { bytes_sent: 1 << 20, bytes_acked: 1 << 20, bytes_total: 1 << 20 }
    );
}

#[test]
fn resumable_asks_for_the_offset_after_a_dropped_response() {
    let broker = resumable_broker("");
    let dropped_once = Cell::new(false);
    let transport = ScriptedTransport::new(Answer::Script(Box::new(move |request| {
        match request.headers[0].1.as_str() {
            // The store got the chunk, the client never heard back.
            "bytes 0-524287/1048576" if !dropped_once.replace(true) => Err(TransportError::Network),
            "bytes */1048576" => gcs_answer(308, Some("bytes=0-524287")),
            "bytes 524288-1048575/1048576" => gcs_answer(201, None),
            other => panic!("unexpected Content-Range {other}"),
        }
    })));
    let run = run_with(&broker, &transport, 1.0, &resumable_options(), pattern(1 << 20), None);

    assert!(run.result.is_ok(), "{:?}", run.result);
    assert_eq!(
        content_ranges(&transport),
        ["PUT bytes 0-524287/1048576", "PUT bytes */1048576", "PUT bytes 524288-1048575/1048576"]
    );
    assert!(transport.requests.borrow()[1].body.is_empty(), "the status query has no body");
    assert_eq!(run.slept, [500], "a backoff before asking");
    assert_eq!(broker.calls.borrow()[2], "resumableStatus /s1/resumable/status");
    assert_eq!(broker.bodies.borrow()[2]["offset"], 524_288, "the broker hears the store's offset");
    let sent: Vec<u64> = run.progress().iter().map(|p| p.bytes_sent).collect();
    assert!(sent.windows(2).all(|w| w[0] <= w[1]), "{sent:?}");
    assert_eq!(*sent.last().unwrap(), 1 << 20, "retried bytes are not counted twice");
}

#[test]
fn resumable_resume_starts_at_the_stores_offset() {
    let broker = resumable_broker("");
    let transport =
        ScriptedTransport::new(Answer::Script(Box::new(|request| match request.headers[0].1.as_str() {
            "bytes */1048576" => gcs_answer(308, Some("bytes=0-786431")),
            "bytes 786432-1048575/1048576" => gcs_answer(200, None),
            other => panic!("unexpected Content-Range {other}"),
        })));
    let options = UploadOptions { resume_session_id: Some("s1".into()), ..resumable_options() };
    let run = run_with(&broker, &transport, 1.0, &options, pattern(1 << 20), None);
    assert!(run.result.is_ok(), "{:?}", run.result);
    assert_eq!(run.states()[..3], [(None, Signed), (Some(Signed), Resuming), (Some(Resuming), Uploading)]);
    assert_eq!(content_ranges(&transport), ["PUT bytes */1048576", "PUT bytes 786432-1048575/1048576"]);
    assert_eq!(run.progress()[0].bytes_acked, 786_432);
}

#[test]
fn resumable_cancel_deletes_the_session_at_the_store() {
    let broker = resumable_broker("");
    let transport = ScriptedTransport::new(Answer::CancelAndHang(RefCell::new(None)));
    let Answer::CancelAndHang(handle_slot) = &transport.answer else { unreachable!() };
    let run = run_with(&broker, &transport, 1.0, &resumable_options(), pattern(1 << 20), Some(handle_slot));
    assert_eq!(run.result.unwrap_err().code, ErrorCode::Aborted);
    assert_eq!(content_ranges(&transport), ["PUT bytes 0-524287/1048576", "DELETE -"]);
    assert_eq!(transport.requests.borrow()[1].url, "http://gcs.test/upload?upload_id=SECRET");
    assert_eq!(broker.calls.borrow().last().unwrap(), "cancel /s1/cancel");
}

#[test]
fn an_expired_session_uri_is_not_used() {
    let broker = resumable_broker("");
    let mut options = resumable_options();
    options.resume_session_id = Some("s1".into());
    // The clock reads far past the session URI's expiry (year 2999).
    let transport = ScriptedTransport::ok();
    let run = run_with(&broker, &transport, 4.0e13, &options, pattern(1 << 20), None);
    let err = run.result.unwrap_err();
    assert_eq!((err.code, err.state), (ErrorCode::SessionExpired, Some(Expired)));
    assert!(transport.requests.borrow().is_empty());
    assert!(!err.message.contains("SECRET"));
}

#[test]
fn malformed_range_from_the_store_is_a_typed_error() {
    let broker = resumable_broker("");
    let transport =
        ScriptedTransport::new(Answer::Script(Box::new(|_| gcs_answer(308, Some("bytes=0-banana")))));
    let run = run_with(&broker, &transport, 1.0, &resumable_options(), pattern(1 << 20), None);
    let err = run.result.unwrap_err();
    assert_eq!((err.code, err.state), (ErrorCode::StoreMalformedResponse, Some(Uploading)));
}

// ---- tus ----

/// A broker for a 1 MiB tus session: pre-created (session_uri) unless
/// `create` is set, in which case it hands out the creation endpoint.
fn tus_broker(create: bool) -> ScriptedBroker {
    ScriptedBroker::responding(move |call| {
        let uri = if create { "" } else { r#","session_uri":"http://tus.test/files/abc""# };
        let session = |state: &str| {
            format!(
                r#"{{"id":"s1","state":"{state}","upload_strategy":"resumable","resumable_protocol":"tus","upload_length":1048576{uri}}}"#
            )
        };
        let json = match call {
            BrokerCall::Initiate(_) => format!(r#"{{"session":{}}}"#, session("initialized")),
            BrokerCall::Sign { .. } if create => format!(
                r#"{{"session":{},"upload":{{"method":"POST","url":"http://tus.test/files","expires_in":900}}}}"#,
                session("signed")
            ),
            BrokerCall::Show { .. } | BrokerCall::Sign { .. } | BrokerCall::ResumableStatus { .. } => {
                format!(r#"{{"session":{}}}"#, session("signed"))
            }
            BrokerCall::Complete { .. } => format!(
                r#"{{"session":{},"asset":{{"id":"a1","key":"k","byte_size":1048576,"content_type":"text/plain","sha256":"00","url":"u"}}}}"#,
                session("completed")
            ),
            BrokerCall::Cancel { .. } => format!(r#"{{"session":{}}}"#, session("aborted")),
            other => panic!("unexpected call {other:?}"),
        };
        Ok(serde_json::from_str(&json).unwrap())
    })
}

fn tus_options() -> UploadOptions {
    UploadOptions {
        chunk_size: 512 * KIB,
        resumable_protocol: rindle_upload::options::ResumableProtocol::Tus,
        ..UploadOptions::new("a.txt", "text/plain", UploadStrategy::Resumable)
    }
}

fn tus_answer(status: u16, headers: &[(&str, &str)]) -> Result<HttpResponse, TransportError> {
    let mut all = vec![("tus-resumable".to_owned(), "1.0.0".to_owned())];
    all.extend(headers.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    Ok(HttpResponse { status, headers: all, body: String::new() })
}

const DISCOVERY: &[(&str, &str)] = &[
    ("tus-version", "1.0.0"),
    ("tus-extension", "creation,creation-with-upload,termination,checksum,expiration"),
    ("tus-checksum-algorithm", "md5,sha1"),
];

fn header<'a>(request: &'a SentRequest, name: &str) -> Option<&'a str> {
    request.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn tus_requests(transport: &ScriptedTransport) -> Vec<String> {
    transport
        .requests
        .borrow()
        .iter()
        .map(|r| format!("{} {}", r.method, header(r, "Upload-Offset").unwrap_or("-")))
        .collect()
}

#[test]
fn tus_answers_a_conflict_with_head_and_resumes_from_the_servers_offset() {
    let broker = tus_broker(false);
    let conflicted = Cell::new(false);
    let transport = ScriptedTransport::new(Answer::Script(Box::new(move |r| {
        match (r.method, header(r, "Upload-Offset")) {
            ("OPTIONS", _) => tus_answer(204, DISCOVERY),
            ("HEAD", _) if !conflicted.get() => {
                tus_answer(200, &[("upload-offset", "0"), ("upload-length", "1048576")])
            }
            ("HEAD", _) => tus_answer(200, &[("upload-offset", "786432")]),
            ("PATCH", Some("0")) => tus_answer(204, &[("upload-offset", "524288")]),
            ("PATCH", Some("524288")) if !conflicted.replace(true) => tus_answer(409, &[]),
            ("PATCH", Some("786432")) => tus_answer(204, &[("upload-offset", "1048576")]),
            other => panic!("unexpected {other:?}"),
        }
    })));
    let data = pattern(1 << 20);
    let run = run_with(&broker, &transport, 1.0, &tus_options(), data.clone(), None);

    assert!(run.result.is_ok(), "{:?}", run.result);
    assert_eq!(
        tus_requests(&transport),
        ["OPTIONS -", "HEAD -", "PATCH 0", "PATCH 524288", "HEAD -", "PATCH 786432"]
    );
    assert!(run.slept.is_empty(), "an offset conflict is asked about at once");
    let requests = transport.requests.borrow();
    assert!(
        requests.iter().all(|r| header(r, "Tus-Resumable") == Some("1.0.0")),
        "Tus-Resumable on every request"
    );
    assert!(
        requests.iter().all(|r| r.url == "http://tus.test/files/abc"),
        "the broker's upload URL, as given"
    );
    let first = &requests[2];
    assert_eq!(header(first, "Content-Type"), Some("application/offset+octet-stream"));
    use sha2::Digest;
    let expected = rindle_upload::wire::tus::checksum_header(
        rindle_upload::transport::ChecksumAlgorithm::Sha1,
        &sha1::Sha1::digest(&data[..524_288]),
    );
    assert_eq!(
        header(first, "Upload-Checksum"),
        Some(expected.as_str()),
        "sha1: the strongest both sides know"
    );
    assert_eq!(requests[5].body, data[786_432..]);
    let reported: Vec<u64> = broker.bodies.borrow().iter().filter_map(|b| b["offset"].as_u64()).collect();
    assert_eq!(reported, [0, 786_432], "each HEAD's offset goes to the broker");
}

#[test]
fn tus_resends_a_chunk_the_server_refused_by_checksum() {
    let broker = tus_broker(false);
    let refused = Cell::new(false);
    let transport = ScriptedTransport::new(Answer::Script(Box::new(move |r| {
        match (r.method, header(r, "Upload-Offset")) {
            ("OPTIONS", _) => tus_answer(204, DISCOVERY),
            ("HEAD", _) => tus_answer(200, &[("upload-offset", "0")]),
            ("PATCH", Some("0")) if !refused.replace(true) => tus_answer(460, &[]),
            ("PATCH", Some("0")) => tus_answer(204, &[("upload-offset", "524288")]),
            ("PATCH", Some("524288")) => tus_answer(204, &[("upload-offset", "1048576")]),
            other => panic!("unexpected {other:?}"),
        }
    })));
    let run = run_with(&broker, &transport, 1.0, &tus_options(), pattern(1 << 20), None);
    assert!(run.result.is_ok(), "{:?}", run.result);
    assert_eq!(tus_requests(&transport), ["OPTIONS -", "HEAD -", "PATCH 0", "PATCH 0", "PATCH 524288"]);
    let requests = transport.requests.borrow();
    assert_eq!(requests[2].body, requests[3].body);
    assert_eq!(header(&requests[2], "Upload-Checksum"), header(&requests[3], "Upload-Checksum"));
    assert_eq!(run.progress().last().unwrap().bytes_sent, 1 << 20, "the resent chunk is not counted twice");
}

#[test]
fn tus_creation_with_upload_then_patches_from_the_servers_offset() {
    let broker = tus_broker(true);
    let transport =
        ScriptedTransport::new(Answer::Script(Box::new(|r| match (r.method, header(r, "Upload-Offset")) {
            ("OPTIONS", _) => tus_answer(204, DISCOVERY),
            ("POST", _) => tus_answer(201, &[("location", "/files/xyz"), ("upload-offset", "524288")]),
            ("PATCH", Some("524288")) => tus_answer(204, &[("upload-offset", "1048576")]),
            other => panic!("unexpected {other:?}"),
        })));
    let run = run_with(&broker, &transport, 1.0, &tus_options(), pattern(1 << 20), None);
    assert!(run.result.is_ok(), "{:?}", run.result);
    assert_eq!(tus_requests(&transport), ["OPTIONS -", "POST -", "PATCH 524288"]);
    let mut acked: Vec<u64> = run.progress().iter().map(|p| p.bytes_acked).collect();
    acked.dedup();
    assert_eq!(acked, [0, 524_288, 1_048_576], "acknowledged = the server's offset");
    assert!(
        run.progress()
            .iter()
            .any(|p| p.bytes_acked == 524_288 && p.bytes_sent > 524_288 && p.bytes_sent < 1 << 20),
        "the PATCH's bytes show as sent while the server holds only the first chunk: {:?}",
        run.progress()
    );
    let requests = transport.requests.borrow();
    let post = &requests[1];
    assert_eq!(post.url, "http://tus.test/files");
    assert_eq!(header(post, "Upload-Length"), Some("1048576"));
    assert_eq!(header(post, "Upload-Metadata"), Some("filename YS50eHQ=,filetype dGV4dC9wbGFpbg=="));
    assert_eq!(post.body.len(), 524_288, "creation-with-upload carries the first chunk");
    assert_eq!(requests[2].url, "http://tus.test/files/xyz", "the Location, on the endpoint's origin");
    let bodies = broker.bodies.borrow();
    let reported = bodies.iter().find(|b| b.get("offset").is_some()).unwrap();
    assert_eq!(reported["session_uri"], "http://tus.test/files/xyz");
}

#[test]
fn tus_deferred_length_goes_with_the_first_patch() {
    let broker = tus_broker(true);
    let transport =
        ScriptedTransport::new(Answer::Script(Box::new(|r| match (r.method, header(r, "Upload-Offset")) {
            ("OPTIONS", _) => tus_answer(
                204,
                &[("tus-version", "1.0.0"), ("tus-extension", "creation,creation-defer-length")],
            ),
            ("POST", _) => tus_answer(201, &[("location", "http://tus.test/files/d")]),
            ("PATCH", Some("0")) => tus_answer(204, &[("upload-offset", "524288")]),
            ("PATCH", Some("524288")) => tus_answer(204, &[("upload-offset", "1048576")]),
            other => panic!("unexpected {other:?}"),
        })));
    let options = UploadOptions { defer_length: true, ..tus_options() };
    let run = run_with(&broker, &transport, 1.0, &options, pattern(1 << 20), None);
    assert!(run.result.is_ok(), "{:?}", run.result);
    let requests = transport.requests.borrow();
    assert_eq!(header(&requests[1], "Upload-Defer-Length"), Some("1"));
    assert_eq!(header(&requests[1], "Upload-Length"), None);
    assert_eq!(header(&requests[2], "Upload-Length"), Some("1048576"), "the first PATCH says the length");
    assert_eq!(header(&requests[3], "Upload-Length"), None);
    assert_eq!(header(&requests[2], "Upload-Checksum"), None, "no checksum when the server offers none");
}

#[test]
fn tus_honours_upload_expires() {
    let broker = tus_broker(false);
    let transport = ScriptedTransport::new(Answer::Script(Box::new(|r| match r.method {
        "OPTIONS" => tus_answer(204, DISCOVERY),
        "HEAD" => {
            tus_answer(200, &[("upload-offset", "0"), ("upload-expires", "Thu, 01 Jan 1970 00:00:01 GMT")])
        }
        other => panic!("unexpected {other}"),
    })));
    let run = run_with(&broker, &transport, 1.0e6, &tus_options(), pattern(1 << 20), None);
    let err = run.result.unwrap_err();
    assert_eq!((err.code, err.state), (ErrorCode::SessionExpired, Some(Expired)));
    assert!(!tus_requests(&transport).iter().any(|r| r.starts_with("PATCH")));
}

#[test]
fn tus_cancel_terminates_the_upload() {
    let broker = tus_broker(false);
    let transport = ScriptedTransport::new(Answer::CancelAndHang(RefCell::new(None)));
    let Answer::CancelAndHang(handle_slot) = &transport.answer else { unreachable!() };
    let run = run_with(&broker, &transport, 1.0, &tus_options(), pattern(1 << 20), Some(handle_slot));
    assert_eq!(run.result.unwrap_err().code, ErrorCode::Aborted);
    let requests = transport.requests.borrow();
    let delete = requests.last().unwrap();
    assert_eq!((delete.method, delete.url.as_str()), ("DELETE", "http://tus.test/files/abc"));
    assert_eq!(header(delete, "Tus-Resumable"), Some("1.0.0"));
    assert_eq!(broker.calls.borrow().last().unwrap(), "cancel /s1/cancel");
}

#[test]
fn a_failed_part_is_retried_alone_and_counted_once() {
    let total = 11 * MIB;
    let broker = multipart_broker(total, "");
    let failed = Cell::new(false);
    let transport = ScriptedTransport::new(Answer::Script(Box::new(move |request| {
        let part = request.url.split("part=").nth(1).unwrap().split('&').next().unwrap().to_owned();
        if part == "2" && !failed.replace(true) {
            return Err(TransportError::Network);
        }
        Ok(HttpResponse {
            status: 200,
            headers: vec![("etag".into(), format!("\"etag-{part}\""))],
            body: String::new(),
        })
    })));
    let run = run_with(&broker, &transport, 1.0, &multipart_options(2), pattern(total), None);
    assert!(run.result.is_ok(), "{:?}", run.result);
    let mut parts: Vec<String> = transport
        .requests
        .borrow()
        .iter()
        .map(|r| r.url.split("part=").nth(1).unwrap()[..1].to_owned())
        .collect();
    parts.sort();
    assert_eq!(parts, ["1", "2", "2", "3"], "only the failed part is sent again");
    assert_eq!(run.slept, [500]);
    assert_eq!(run.progress().last().unwrap().bytes_sent, total as u64);
}

// ---- reliability: stalls, offline, pause and resume, changed files ----

#[test]
fn a_stalled_request_is_aborted_and_retried() {
    let broker =
        ScriptedBroker::new(vec![Ok(reply("initialized")), Ok(signed_reply(900)), Ok(completed_reply())]);
    let transport = ScriptedTransport::new(Answer::HangAt { hang_at: 1, control: RefCell::new(None) });
    let run = run_upload(&broker, &transport, 1.0, UploadStrategy::PresignedPut, None);

    assert_eq!(run.result.unwrap().session.state, Completed);
    assert!(transport.dropped_in_flight.get(), "the stalled request was aborted");
    assert_eq!(transport.requests.borrow().len(), 2);
    assert_eq!(
        run.slept,
        vec![7_500, 7_500, 7_500, 7_500, 500],
        "the watchdog looks four times per 30 s timeout, then the first retry's backoff"
    );
}

#[test]
fn a_failure_while_offline_waits_for_the_network_and_spends_no_retry() {
    let broker =
        ScriptedBroker::new(vec![Ok(reply("initialized")), Ok(signed_reply(900)), Ok(completed_reply())]);
    let transport = ScriptedTransport::new(Answer::Offline {
        offline: Cell::new(true),
        online: Box::new(|_| Ok(HttpResponse { status: 200, headers: vec![], body: String::new() })),
    });
    let mut options = UploadOptions::new("a.txt", "text/plain", UploadStrategy::PresignedPut);
    options.retry.delays_ms = vec![];
    let run = run_with(&broker, &transport, 1.0, &options, b"0123456789".to_vec(), None);

    assert_eq!(run.result.unwrap().session.state, Completed, "no retry was allowed, none was spent");
    assert_eq!(transport.requests.borrow().len(), 2);
    assert!(run.slept.is_empty());
}

#[test]
fn pause_aborts_in_flight_and_resume_continues_without_discarding() {
    let broker = ScriptedBroker::new(vec![
        Ok(reply("initialized")),
        Ok(signed_reply(900)),
        Ok(reply("signed")),
        Ok(signed_reply(900)),
        Ok(completed_reply()),
    ]);
    let transport = ScriptedTransport::new(Answer::HangAt { hang_at: 1, control: RefCell::new(None) });
    let Answer::HangAt { control, .. } = &transport.answer else { unreachable!() };
    let (handle, commands) = controls();
    *control.borrow_mut() = Some(handle);
    // Each pause event notes whether the request in flight was dropped by then.
    let dropped = Rc::clone(&transport.dropped_in_flight);
    let (pauses, states) = (Rc::new(RefCell::new(Vec::new())), Rc::new(RefCell::new(Vec::new())));
    let events: EventSink = {
        let (pauses, states) = (Rc::clone(&pauses), Rc::clone(&states));
        Rc::new(move |event| match event {
            Event::Paused(paused) => pauses.borrow_mut().push((paused, dropped.get())),
            Event::StateChanged { from, to, .. } => states.borrow_mut().push((from, to)),
            _ => {}
        })
    };
    let clock = SteppingClock { now: Cell::new(0.0), step: 1.0, slept: Rc::default() };
    let engine = Engine { broker: &broker, transport: &transport, clock };
    let options = UploadOptions::new("a.txt", "text/plain", UploadStrategy::PresignedPut);
    let source = Bytes(b"0123456789".to_vec());
    let outcome = futures::executor::block_on(engine.upload(&source, &options, events, commands));

    assert_eq!(outcome.unwrap().session.state, Completed);
    assert_eq!(
        *pauses.borrow(),
        [(true, true), (false, true)],
        "the request in flight was aborted as the upload paused, before it resumed"
    );
    assert_eq!(
        *broker.calls.borrow(),
        vec!["initiate ", "sign /s1/sign", "show /s1", "sign /s1/sign", "complete /s1/complete"],
        "nothing was cancelled; resume asked the broker again"
    );
    assert_eq!(transport.requests.borrow().iter().filter(|r| r.method == "PUT").count(), 2);
    assert!(transport.requests.borrow().iter().all(|r| r.method != "DELETE"));
    assert_eq!(*states.borrow(), FULL_SEQUENCE, "the session stays uploading while paused");
}

#[test]
fn multipart_resumed_after_a_pause_sends_only_the_parts_the_store_lacks() {
    let total = 21 * MIB;
    let broker = multipart_broker(total, r#"{"part_number":1,"etag":"\"etag-1\"","size":5242880}"#);
    let transport = ScriptedTransport::new(Answer::HangAt { hang_at: 2, control: RefCell::new(None) });
    let Answer::HangAt { control, .. } = &transport.answer else { unreachable!() };
    let run = run_with(&broker, &transport, 1.0, &multipart_options(1), pattern(total), Some(control));

    assert!(run.result.is_ok(), "{:?}", run.result);
    let calls = broker.calls.borrow();
    assert_eq!(calls[..4], ["initiate ", "signParts /s1/parts/sign", "show /s1", "listParts /s1/parts"]);
    let parts_sent: Vec<String> = transport.requests.borrow().iter().map(|r| r.url.clone()).collect();
    let numbers: Vec<&str> =
        parts_sent.iter().map(|u| u.split("part=").nth(1).unwrap().split('&').next().unwrap()).collect();
    assert_eq!(
        numbers,
        ["1", "2", "2", "3", "4", "5"],
        "part 2 was cut by the pause and sent again; 1 was not"
    );
    let progress = run.progress();
    assert!(progress
        .windows(2)
        .all(|w| w[0].bytes_sent <= w[1].bytes_sent && w[0].bytes_acked <= w[1].bytes_acked));
    assert_eq!(progress.last().unwrap().bytes_acked, total as u64);
    let body = &broker.bodies.borrow()[calls.len() - 1];
    assert_eq!(body["parts"].as_array().unwrap().len(), 5);
}

/// A file that becomes unreadable after `readable` checks, as a file
/// changed on disk does in a browser.
struct ChangingFile {
    bytes: support::Bytes,
    readable: Cell<usize>,
}

impl rindle_upload::transport::ByteSource for ChangingFile {
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
        algorithm: rindle_upload::transport::ChecksumAlgorithm,
    ) -> Result<Vec<u8>, UploadError> {
        self.bytes.digest(start, end, algorithm).await
    }
    async fn check_unchanged(&self) -> Result<(), UploadError> {
        match self.readable.get() {
            0 => Err(UploadError::new(ErrorCode::FileChanged, "changed")),
            left => {
                self.readable.set(left - 1);
                Ok(())
            }
        }
    }
}

#[test]
fn a_file_that_changes_mid_upload_ends_file_changed_before_mixed_bytes_are_sent() {
    use rindle_upload::transport::ByteSource;
    let total = 21 * MIB;
    let broker = multipart_broker(total, "");
    let transport = parts_transport();
    let file = ChangingFile { bytes: Bytes(pattern(total)), readable: Cell::new(2) };
    let (_control, commands) = controls();
    let clock = SteppingClock { now: Cell::new(0.0), step: 1.0, slept: Rc::default() };
    let engine = Engine { broker: &broker, transport: &transport, clock };
    let options = multipart_options(1);
    assert_eq!(file.size(), total as u64);
    let err =
        futures::executor::block_on(engine.upload(&file, &options, Rc::new(|_| {}), commands)).unwrap_err();

    assert_eq!((err.code, err.state, err.retryable), (ErrorCode::FileChanged, Some(Uploading), false));
    assert_eq!(transport.requests.borrow().len(), 2, "no byte was sent after the change was seen");
}

#[test]
fn the_retry_budget_bounds_retries_across_the_whole_upload() {
    let total = 15 * MIB;
    let broker = multipart_broker(total, "");
    let tried = RefCell::new(std::collections::HashSet::new());
    let transport = ScriptedTransport::new(Answer::Script(Box::new(move |request| {
        if tried.borrow_mut().insert(request.url.clone()) {
            Ok(HttpResponse { status: 502, headers: vec![], body: String::new() })
        } else {
            Ok(stored_part(&request.url))
        }
    })));
    let mut options = multipart_options(1);
    options.retry.budget = 2;
    let run = run_with(&broker, &transport, 1.0, &options, pattern(total), None);

    let err = run.result.unwrap_err();
    assert_eq!((err.code, err.state), (ErrorCode::StoreServerError, Some(Uploading)));
    assert_eq!(
        transport.requests.borrow().len(),
        5,
        "parts 1 and 2 failed once and were retried; part 3's failure found the budget spent"
    );
    assert_eq!(run.slept, [500, 500], "each part's retry counter starts afresh; the budget does not");
}

#[test]
fn resumable_waits_out_an_offline_spell_without_spending_a_retry() {
    let broker = resumable_broker("");
    let transport = ScriptedTransport::new(Answer::Offline {
        offline: Cell::new(true),
        online: Box::new(|request| match request.headers[0].1.as_str() {
            "bytes */1048576" => gcs_answer(308, None),
            "bytes 0-524287/1048576" => gcs_answer(308, Some("bytes=0-524287")),
            "bytes 524288-1048575/1048576" => gcs_answer(201, None),
            other => panic!("unexpected Content-Range {other}"),
        }),
    });
    let mut options = resumable_options();
    options.retry.delays_ms = vec![];
    let run = run_with(&broker, &transport, 1.0, &options, pattern(1 << 20), None);

    assert!(run.result.is_ok(), "{:?}", run.result);
    assert_eq!(
        content_ranges(&transport),
        [
            "PUT bytes 0-524287/1048576",
            "PUT bytes */1048576",
            "PUT bytes 0-524287/1048576",
            "PUT bytes 524288-1048575/1048576"
        ],
        "the chunk failed offline; once online the store was asked, then the chunk went again"
    );
    assert!(run.slept.is_empty());
}
