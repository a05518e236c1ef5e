//! The engine over presigned PUT: exact states and requests, re-signing, retries and backoff, broker calls and verification.
#![cfg(not(target_arch = "wasm32"))]

mod engine_harness;
mod support;

use engine_harness::*;
use rindle_upload::progress::ProgressSnapshot;
use rindle_upload::transport::HttpResponse;
use rindle_upload::{ErrorCode, SessionState, UploadError, UploadStrategy};
use std::cell::{Cell, RefCell};

use serde_json::json;
use SessionState::*;

#[test]
fn presigned_put_walks_every_state_with_exact_requests() {
    let broker =
        ScriptedBroker::new(vec![Ok(reply("initialized")), Ok(signed_reply(900)), Ok(completed_reply())]);
    let transport = ScriptedTransport::ok();
    let run = run_upload(&broker, &transport, 1.0, UploadStrategy::PresignedPut, None);

    let outcome = run.result.as_ref().unwrap();
    assert_eq!(outcome.session.state, Completed);
    assert_eq!(Some(&outcome.asset), completed_reply().asset.as_ref(), "the broker's asset, as it sent it");
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
    let failed = reply_of(
        json!({"session": session_json("failed", json!({"failure_reason": "content type image/png not allowed"}))}),
    );
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
    assert_eq!(
        run.slept,
        vec![500, 1_500, 2_500, 5_000, 10_000, 500],
        "the default backoff with jitter 0.5, then half a second for the browser to report being offline"
    );
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

#[test]
fn every_try_of_initiate_carries_the_same_idempotency_key() {
    let unreachable = UploadError::new(ErrorCode::BrokerUnreachable, "down");
    let broker = ScriptedBroker::new(vec![
        Err(unreachable),
        Ok(reply("initialized")),
        Ok(signed_reply(900)),
        Ok(completed_reply()),
    ]);
    let run = run_upload(&broker, &ScriptedTransport::ok(), 1.0, UploadStrategy::PresignedPut, None);
    assert!(run.result.is_ok(), "{:?}", run.result);
    let bodies = broker.bodies.borrow();
    let (first, second) = (&bodies[0]["idempotency_key"], &bodies[1]["idempotency_key"]);
    assert_eq!(first, second, "the retried initiate is the same request");
    let key = first.as_str().unwrap();
    assert!(key.split('-').count() == 3 && key.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'), "{key}");
    let other =
        ScriptedBroker::new(vec![Ok(reply("initialized")), Ok(signed_reply(900)), Ok(completed_reply())]);
    run_upload(&other, &ScriptedTransport::ok(), 1.0, UploadStrategy::PresignedPut, None);
    assert_ne!(&other.bodies.borrow()[0]["idempotency_key"], first, "another upload, another key");
}
