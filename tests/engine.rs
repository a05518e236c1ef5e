//! The engine against a scripted broker and transport: exact state
//! sequences, exact requests, progress, cancel and failure paths.
#![cfg(not(target_arch = "wasm32"))]

use rindle_upload::broker::{Broker, BrokerCall, BrokerReply};
use rindle_upload::engine::{
    cancellation, CancelHandle, Engine, Event, EventSink, Outcome, UploadOptions,
};
use rindle_upload::progress::ProgressSnapshot;
use rindle_upload::transport::{
    ByteSource, Clock, HttpRequest, HttpResponse, ProgressFn, Transport, TransportError,
};
use rindle_upload::{ErrorCode, SessionState, UploadError, UploadStrategy};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use SessionState::*;

const URL: &str = "http://store.test/objects/k?expires=1&sig=SECRET";

fn session_json(state: &str, extra: &str) -> String {
    format!(
        r#"{{"id":"s1","state":"{state}","upload_strategy":"presigned_put","upload_length":10{extra}}}"#
    )
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

/// Answers calls from a script, in order, and records each call's route.
#[derive(Default)]
struct ScriptedBroker {
    replies: RefCell<VecDeque<Result<BrokerReply, UploadError>>>,
    calls: RefCell<Vec<String>>,
}

impl ScriptedBroker {
    fn new(replies: Vec<Result<BrokerReply, UploadError>>) -> Self {
        ScriptedBroker {
            replies: RefCell::new(replies.into()),
            calls: RefCell::default(),
        }
    }
}

impl Broker for &ScriptedBroker {
    async fn call(&self, call: &BrokerCall) -> Result<BrokerReply, UploadError> {
        self.calls
            .borrow_mut()
            .push(format!("{} {}", call.name(), call.path()));
        let reply = self
            .replies
            .borrow_mut()
            .pop_front()
            .expect("a scripted reply for every call")?;
        call.check_reply(&reply)?;
        Ok(reply)
    }
}

#[derive(Debug, PartialEq)]
struct SentRequest {
    method: &'static str,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

enum Answer {
    Respond(HttpResponse),
    /// Fire the cancel handle and never answer, like a slow upload.
    CancelAndHang(RefCell<Option<CancelHandle>>),
}

struct ScriptedTransport {
    answer: Answer,
    requests: RefCell<Vec<SentRequest>>,
    dropped_in_flight: Rc<Cell<bool>>,
}

impl ScriptedTransport {
    fn new(answer: Answer) -> Self {
        ScriptedTransport {
            answer,
            requests: RefCell::default(),
            dropped_in_flight: Rc::default(),
        }
    }

    fn ok() -> Self {
        Self::new(Answer::Respond(HttpResponse {
            status: 200,
            headers: vec![],
            body: String::new(),
        }))
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
            Answer::CancelAndHang(handle) => {
                let guard = InFlight(Rc::clone(&self.dropped_in_flight));
                handle.borrow_mut().take().unwrap().cancel();
                futures::future::pending::<()>().await;
                drop(guard);
                unreachable!()
            }
        }
    }
}

struct Bytes(Vec<u8>);
impl ByteSource for Bytes {
    type Slice = Vec<u8>;
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn slice(&self, start: u64, end: u64) -> Vec<u8> {
        self.0[start as usize..end as usize].to_vec()
    }
}

/// Advances `step` milliseconds each time it is read.
struct SteppingClock {
    now: Cell<f64>,
    step: f64,
}
impl Clock for SteppingClock {
    fn now_ms(&self) -> f64 {
        self.now.set(self.now.get() + self.step);
        self.now.get()
    }
}

#[derive(Debug, PartialEq, Clone)]
enum Seen {
    State(Option<SessionState>, SessionState),
    Progress(ProgressSnapshot),
}

struct Run {
    result: Result<Outcome, UploadError>,
    seen: Vec<Seen>,
}

impl Run {
    fn states(&self) -> Vec<(Option<SessionState>, SessionState)> {
        self.seen
            .iter()
            .filter_map(|s| match s {
                Seen::State(from, to) => Some((*from, *to)),
                Seen::Progress(_) => None,
            })
            .collect()
    }

    fn progress(&self) -> Vec<ProgressSnapshot> {
        self.seen
            .iter()
            .filter_map(|s| match s {
                Seen::Progress(p) => Some(*p),
                Seen::State(..) => None,
            })
            .collect()
    }
}

fn options(strategy: UploadStrategy) -> UploadOptions {
    UploadOptions {
        filename: "a.txt".into(),
        content_type: "text/plain".into(),
        strategy,
    }
}

fn run_upload(
    broker: &ScriptedBroker,
    transport: &ScriptedTransport,
    clock_step: f64,
    strategy: UploadStrategy,
    cancel_slot: Option<&RefCell<Option<CancelHandle>>>,
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
        })
    });
    let (handle, signal) = cancellation();
    if let Some(slot) = cancel_slot {
        *slot.borrow_mut() = Some(handle);
    }
    let engine = Engine {
        broker,
        transport,
        clock: SteppingClock {
            now: Cell::new(0.0),
            step: clock_step,
        },
    };
    let result = futures::executor::block_on(engine.upload(
        &Bytes(b"0123456789".to_vec()),
        &options(strategy),
        events,
        signal,
    ));
    let seen = seen.borrow().clone();
    Run { result, seen }
}

#[test]
fn presigned_put_walks_every_state_with_exact_requests() {
    let broker = ScriptedBroker::new(vec![
        Ok(reply("initialized")),
        Ok(signed_reply(900)),
        Ok(completed_reply()),
    ]);
    let transport = ScriptedTransport::ok();
    let run = run_upload(&broker, &transport, 1.0, UploadStrategy::PresignedPut, None);

    let outcome = run.result.as_ref().unwrap();
    assert_eq!(outcome.session.state, Completed);
    assert_eq!(outcome.asset.sha256, "00");
    assert_eq!(
        run.states(),
        vec![
            (None, Initialized),
            (Some(Initialized), Signed),
            (Some(Signed), Uploading),
            (Some(Uploading), Uploaded),
            (Some(Uploaded), Verifying),
            (Some(Verifying), Completed),
        ]
    );
    assert_eq!(
        *broker.calls.borrow(),
        vec!["initiate ", "sign /s1/sign", "complete /s1/complete"]
    );
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
    assert!(progress
        .iter()
        .all(|p| p.bytes_acked <= p.bytes_sent && p.bytes_total == 10));
    assert_eq!(progress.first().unwrap().bytes_sent, 3);
    assert_eq!(
        *progress.last().unwrap(),
        ProgressSnapshot {
            bytes_sent: 10,
            bytes_acked: 10,
            bytes_total: 10
        }
    );
}

#[test]
fn cancel_aborts_the_request_and_tells_the_broker() {
    let broker = ScriptedBroker::new(vec![
        Ok(reply("initialized")),
        Ok(signed_reply(900)),
        Ok(reply("aborted")),
    ]);
    let transport = ScriptedTransport::new(Answer::CancelAndHang(RefCell::new(None)));
    let Answer::CancelAndHang(handle_slot) = &transport.answer else {
        unreachable!()
    };
    let run = run_upload(
        &broker,
        &transport,
        1.0,
        UploadStrategy::PresignedPut,
        Some(handle_slot),
    );

    assert!(
        transport.dropped_in_flight.get(),
        "the in-flight request was dropped (aborted)"
    );
    let err = run.result.clone().unwrap_err();
    assert_eq!(
        (err.code, err.state, err.retryable),
        (ErrorCode::Aborted, Some(Aborted), false)
    );
    assert_eq!(run.states().last(), Some(&(Some(Uploading), Aborted)));
    assert_eq!(
        *broker.calls.borrow(),
        vec!["initiate ", "sign /s1/sign", "cancel /s1/cancel"]
    );
}

#[test]
fn an_expired_url_refused_by_the_store_stops_before_verifying() {
    let broker = ScriptedBroker::new(vec![Ok(reply("initialized")), Ok(signed_reply(900))]);
    let transport = ScriptedTransport::new(Answer::Respond(HttpResponse {
        status: 403,
        headers: vec![],
        body: "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
            .into(),
    }));
    let run = run_upload(&broker, &transport, 1.0, UploadStrategy::PresignedPut, None);
    let err = run.result.clone().unwrap_err();
    assert_eq!(
        (err.code, err.state, err.retryable),
        (ErrorCode::UrlExpired, Some(Uploading), true)
    );
    assert!(!err.message.contains("SECRET"));
    assert_eq!(
        broker.calls.borrow().len(),
        2,
        "no complete call after a refused PUT"
    );
    assert!(run.progress().iter().all(|p| p.bytes_acked == 0));
}

#[test]
fn a_url_that_expired_before_use_is_never_sent() {
    let broker = ScriptedBroker::new(vec![Ok(reply("initialized")), Ok(signed_reply(1))]);
    let transport = ScriptedTransport::ok();
    let run = run_upload(
        &broker,
        &transport,
        1_000.0,
        UploadStrategy::PresignedPut,
        None,
    );
    assert_eq!(run.result.unwrap_err().code, ErrorCode::UrlExpired);
    assert!(transport.requests.borrow().is_empty());
}

#[test]
fn verification_failure_carries_the_reason() {
    let failed: BrokerReply = serde_json::from_str(&format!(
        r#"{{"session":{}}}"#,
        session_json(
            "failed",
            r#","failure_reason":"content type image/png not allowed""#
        )
    ))
    .unwrap();
    let broker = ScriptedBroker::new(vec![
        Ok(reply("initialized")),
        Ok(signed_reply(900)),
        Ok(failed),
    ]);
    let run = run_upload(
        &broker,
        &ScriptedTransport::ok(),
        1.0,
        UploadStrategy::PresignedPut,
        None,
    );
    let err = run.result.clone().unwrap_err();
    assert_eq!(
        (err.code, err.state),
        (ErrorCode::VerificationFailed, Some(Failed))
    );
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
    assert_eq!(
        (err.code, err.state),
        (ErrorCode::IllegalTransition, Some(Initialized))
    );
    assert_eq!(run.states(), vec![(None, Initialized)]);
    assert!(transport.requests.borrow().is_empty());
}

#[test]
fn unavailable_strategies_are_refused_before_any_call() {
    let broker = ScriptedBroker::new(vec![]);
    let run = run_upload(
        &broker,
        &ScriptedTransport::ok(),
        1.0,
        UploadStrategy::Multipart,
        None,
    );
    let err = run.result.clone().unwrap_err();
    assert_eq!(
        (err.code, err.state),
        (ErrorCode::UnsupportedStrategy, None)
    );
    assert!(broker.calls.borrow().is_empty());
}

#[test]
fn broker_errors_surface_with_the_state_they_happened_in() {
    let broker = ScriptedBroker::new(vec![
        Ok(reply("initialized")),
        Err(UploadError::new(
            ErrorCode::BrokerUnreachable,
            "fetch failed",
        )),
    ]);
    let run = run_upload(
        &broker,
        &ScriptedTransport::ok(),
        1.0,
        UploadStrategy::PresignedPut,
        None,
    );
    let err = run.result.clone().unwrap_err();
    assert_eq!(
        (err.code, err.state, err.retryable),
        (ErrorCode::BrokerUnreachable, Some(Initialized), true)
    );
}
