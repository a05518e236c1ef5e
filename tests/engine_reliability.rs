//! The engine under trouble: stalls, offline spells, pause and resume, files changing on disk, the retry budget.
#![cfg(not(target_arch = "wasm32"))]

mod engine_harness;
mod support;

use engine_harness::*;
use rindle_upload::engine::{controls, Engine, Event, EventSink, UploadOptions};
use rindle_upload::queue::Queue;
use rindle_upload::transport::{Clock, HttpRequest, HttpResponse, ProgressFn, Transport, TransportError};
use rindle_upload::{ErrorCode, SessionState, UploadStrategy};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use support::Bytes;

use serde_json::json;
use SessionState::*;

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

/// A presigned PUT of ten bytes, no retry allowed, through a transport that
/// is offline until the engine waits for the network (then `online`
/// answers) and still says online for its first `unnoticed` looks.
fn put_through_offline_spell(
    broker: &ScriptedBroker,
    unnoticed: usize,
    online: StoreScript,
) -> (Run, ScriptedTransport) {
    let transport = ScriptedTransport::new(Answer::Offline {
        offline: Cell::new(true),
        unnoticed: Cell::new(unnoticed),
        online,
    });
    let mut options = UploadOptions::new("a.txt", "text/plain", UploadStrategy::PresignedPut);
    options.retry.delays_ms = vec![];
    let run = run_with(broker, &transport, 1.0, &options, b"0123456789".to_vec(), None);
    (run, transport)
}

fn stored(_: &SentRequest) -> Result<HttpResponse, TransportError> {
    Ok(HttpResponse { status: 200, headers: vec![], body: String::new() })
}

#[test]
fn a_failure_while_offline_waits_for_the_network_and_spends_no_retry() {
    let broker =
        ScriptedBroker::new(vec![Ok(reply("initialized")), Ok(signed_reply(900)), Ok(completed_reply())]);
    let (run, transport) = put_through_offline_spell(&broker, 0, Box::new(stored));

    assert_eq!(run.result.unwrap().session.state, Completed, "no retry was allowed, none was spent");
    assert_eq!(transport.requests.borrow().len(), 2);
    assert!(run.slept.is_empty());
}

#[test]
fn a_network_failure_the_browser_reports_late_as_offline_still_waits_for_the_network() {
    let broker =
        ScriptedBroker::new(vec![Ok(reply("initialized")), Ok(signed_reply(900)), Ok(completed_reply())]);
    let (run, transport) = put_through_offline_spell(&broker, 1, Box::new(stored));

    assert_eq!(run.result.unwrap().session.state, Completed, "no retry was allowed, none was spent");
    assert_eq!(
        transport.requests.borrow().len(),
        2,
        "the failed PUT, then the one after the network came back"
    );
    assert_eq!(run.slept, vec![500], "half a second for the browser to notice, then no backoff");
}

#[test]
fn a_network_failure_while_online_fails_after_one_last_look() {
    let broker = ScriptedBroker::new(vec![Ok(reply("initialized")), Ok(signed_reply(900))]);
    let (run, transport) = put_through_offline_spell(
        &broker,
        usize::MAX,
        Box::new(|_| unreachable!("the network never came back")),
    );

    let err = run.result.unwrap_err();
    assert_eq!((err.code, err.retryable), (ErrorCode::NetworkError, true));
    assert_eq!(transport.requests.borrow().len(), 1);
    assert_eq!(run.slept, vec![500]);
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
    let (pauses, states, pieces) = (
        Rc::new(RefCell::new(Vec::new())),
        Rc::new(RefCell::new(Vec::new())),
        Rc::new(RefCell::new(Vec::new())),
    );
    let events: EventSink = {
        let (pauses, states, pieces) = (Rc::clone(&pauses), Rc::clone(&states), Rc::clone(&pieces));
        Rc::new(move |event| match event {
            Event::Paused(paused) => pauses.borrow_mut().push((paused, dropped.get())),
            Event::StateChanged { from, to, .. } => states.borrow_mut().push((from, to)),
            Event::Piece { piece, state } => pieces.borrow_mut().push((piece.start, piece.len, state)),
            _ => {}
        })
    };
    let clock = SteppingClock { now: Cell::new(0.0), step: 1.0, slept: Rc::default() };
    let engine = Engine { broker: &broker, transport: &transport, clock, queue: Queue::unlimited() };
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
    use PieceState::*;
    assert_eq!(
        *pieces.borrow(),
        [(0, 10, Sending), (0, 10, Stopped), (0, 10, Sending), (0, 10, Stored)],
        "the request the pause aborted ended stopped"
    );
}

#[test]
fn multipart_resumed_after_a_pause_sends_only_the_parts_the_store_lacks() {
    let total = 21 * MIB;
    let broker =
        multipart_broker(total, json!([{"part_number": 1, "etag": "\"etag-1\"", "size": 5_242_880}]));
    let transport = ScriptedTransport::new(Answer::HangAt { hang_at: 2, control: RefCell::new(None) });
    let Answer::HangAt { control, .. } = &transport.answer else { unreachable!() };
    let run = run_with(&broker, &transport, 1.0, &multipart_options(1), pattern(total), Some(control));

    assert!(run.result.is_ok(), "{:?}", run.result);
    let calls = broker.calls.borrow();
    // Part 1 signed alone (sent at once, hashed first), then a batch from part 2.
    assert_eq!(
        calls[..5],
        [
            "initiate ",
            "signParts /s1/parts/sign",
            "signParts /s1/parts/sign",
            "show /s1",
            "listParts /s1/parts"
        ]
    );
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

#[test]
fn a_file_that_changes_mid_upload_ends_file_changed_before_mixed_bytes_are_sent() {
    use rindle_upload::transport::ByteSource;
    let total = 21 * MIB;
    let broker = multipart_broker(total, json!([]));
    let transport = parts_transport();
    let file = WatchedFile { readable: Cell::new(2), ..WatchedFile::new(pattern(total)) };
    let options = multipart_options(1);
    assert_eq!(file.size(), total as u64);
    let err = upload_file(&broker, &transport, &options, &file).unwrap_err();

    assert_eq!((err.code, err.state, err.retryable), (ErrorCode::FileChanged, Some(Uploading), false));
    assert_eq!(transport.requests.borrow().len(), 2, "no byte was sent after the change was seen");
}

#[test]
fn the_retry_budget_bounds_retries_across_the_whole_upload() {
    let total = 15 * MIB;
    let broker = multipart_broker(total, json!([]));
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

/// A store whose PUTs each wait for the test to let them finish, in order.
struct GatedStore {
    puts: RefCell<Vec<String>>,
    gates: RefCell<VecDeque<futures::channel::oneshot::Receiver<()>>>,
}

impl Transport for &GatedStore {
    type Body = Vec<u8>;

    async fn send(
        &self,
        request: HttpRequest<Vec<u8>>,
        _: ProgressFn,
    ) -> Result<HttpResponse, TransportError> {
        self.puts.borrow_mut().push(request.url.expose().to_owned());
        let gate = self
            .gates
            .borrow_mut()
            .pop_front()
            .unwrap_or_else(|| panic!("a gate for every PUT: {:?}", self.puts.borrow()));
        let _ = gate.await;
        Ok(HttpResponse { status: 200, headers: vec![], body: String::new() })
    }
}

/// Time stands still: no stall timeout or retry wait ever ends.
struct StillClock;

impl Clock for StillClock {
    fn now_ms(&self) -> f64 {
        0.0
    }
    async fn sleep(&self, _: u64) {
        futures::future::pending::<()>().await
    }
    fn random(&self) -> f64 {
        0.5
    }
}

#[test]
fn a_queue_of_one_transfers_one_upload_at_a_time_and_a_pause_frees_the_turn() {
    use futures::task::LocalSpawnExt;
    // Each upload's calls name its file, so the log says whose they are.
    // Leaked: the spawned uploads borrow them for 'static.
    let broker: &'static ScriptedBroker = Box::leak(Box::new(ScriptedBroker::responding(|call| {
        let body = call.serialize_body(serde_json::value::Serializer).unwrap();
        let name = body["filename"].as_str().unwrap_or("");
        Ok(match call.name() {
            "initiate" => reply_of(json!({"session": session_json("initialized", json!({"id": name}))})),
            "sign" => reply_of(json!({
                "session": session_json("signed", json!({"id": call.path().split('/').nth(1)})),
                "upload": {"method": "PUT", "url": format!("http://store.test/{}", call.path()), "headers": {}},
            })),
            "show" => reply_of(
                json!({"session": session_json("signed", json!({"id": call.path().split('/').nth(1)}))}),
            ),
            _ => reply_of(json!({
                "session": session_json("completed", json!({"id": call.path().split('/').nth(1)})),
                "asset": asset(10),
            })),
        })
    })));
    let (open, gates): (Vec<_>, VecDeque<_>) = (0..3).map(|_| futures::channel::oneshot::channel()).unzip();
    let mut open = VecDeque::from(open);
    let store: &'static GatedStore =
        Box::leak(Box::new(GatedStore { puts: RefCell::default(), gates: RefCell::new(gates) }));
    let engine = Rc::new(Engine { broker, transport: store, clock: StillClock, queue: Queue::new(1) });
    let seen = Rc::new(RefCell::new(Vec::<String>::new()));
    let mut pool = futures::executor::LocalPool::new();
    let mut controls_of = Vec::new();
    let mut outcomes = Vec::new();
    for name in ["a", "b"] {
        let (control, commands) = controls();
        controls_of.push(control);
        let seen = Rc::clone(&seen);
        let events: EventSink = Rc::new(move |event| match event {
            Event::Queued(queued) => seen.borrow_mut().push(format!("{name} queued {queued}")),
            Event::Paused(paused) => seen.borrow_mut().push(format!("{name} paused {paused}")),
            _ => {}
        });
        let (engine, outcome) = (Rc::clone(&engine), Rc::new(RefCell::new(None)));
        outcomes.push(Rc::clone(&outcome));
        let options = UploadOptions::new(name, "text/plain", UploadStrategy::PresignedPut);
        pool.spawner()
            .spawn_local(async move {
                let source = Bytes(b"0123456789".to_vec());
                *outcome.borrow_mut() =
                    Some(engine.upload(&source, &options, events, commands).await.is_ok());
            })
            .unwrap();
    }
    let calls = || broker.calls.borrow().clone();

    pool.run_until_stalled();
    assert_eq!(calls(), ["initiate ", "sign /a/sign"], "b makes no call while a holds the turn");
    assert_eq!(*seen.borrow(), ["b queued true"]);

    controls_of[0].pause();
    pool.run_until_stalled();
    assert_eq!(calls()[2..], ["initiate ", "sign /b/sign"], "a's pause gave b the turn");
    controls_of[0].resume();
    pool.run_until_stalled();
    assert_eq!(
        *seen.borrow(),
        ["b queued true", "a paused true", "b queued false", "a paused false", "a queued true"]
    );
    assert_eq!(calls().len(), 4, "resumed, a waits for b");

    open.pop_front(); // a's first PUT, aborted by the pause
    open.pop_front().unwrap().send(()).unwrap(); // b's PUT
    pool.run_until_stalled();
    assert_eq!(*outcomes[1].borrow(), Some(true));
    assert_eq!(
        calls()[4..],
        ["complete /b/complete", "show /a", "sign /a/sign"],
        "b's end gave a the turn back"
    );
    open.pop_front().unwrap().send(()).unwrap();
    pool.run_until_stalled();
    assert_eq!(*outcomes[0].borrow(), Some(true));
    assert_eq!(
        *store.puts.borrow(),
        ["http://store.test//a/sign", "http://store.test//b/sign", "http://store.test//a/sign"]
    );
    assert_eq!(seen.borrow().last().map(String::as_str), Some("a queued false"));
}
