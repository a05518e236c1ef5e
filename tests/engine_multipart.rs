//! The engine over S3 multipart: concurrency, batches of part URLs, resume from ListParts, the broker's plan, part URL life.
#![cfg(not(target_arch = "wasm32"))]

mod engine_harness;
mod support;

use engine_harness::*;
use rindle_upload::broker::{BrokerCall, BrokerReply};
use rindle_upload::engine::UploadOptions;
use rindle_upload::options::ResumableProtocol;
use rindle_upload::progress::ProgressSnapshot;
use rindle_upload::transport::{HttpResponse, TransportError};
use rindle_upload::{ErrorCode, SessionState, UploadError, UploadStrategy};
use std::cell::{Cell, RefCell};

use serde_json::json;
use SessionState::*;

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
        let broker = multipart_broker(total, json!([]));
        let transport = first_request_cut();
        // Checksums off: every call signs a whole batch (with them, the
        // first signs only the part sent at once), so the calls count URL lives.
        let options = UploadOptions { checksum: None, ..one_retry_waiting(wait_ms, multipart_options(1)) };
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
        let part = (5 * MIB) as u64;
        use PieceState::*;
        assert_eq!(
            run.pieces(),
            [
                (0, part, Sending),
                (0, part, Failed),
                (0, part, Sending),
                (0, part, Stored),
                (part, part, Sending),
                (part, part, Stored)
            ]
        );
    }
}

#[test]
fn a_part_url_refused_as_expired_mid_upload_is_signed_again() {
    let total = 15 * MIB;
    let broker = multipart_broker(total, json!([]));
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
    // Checksums off: every call signs a whole batch.
    let options = UploadOptions { checksum: None, ..multipart_options(1) };
    let run = run_with(&broker, &transport, 1.0, &options, pattern(total), None);
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
fn multipart_sends_parts_concurrently_and_completes_them_in_order() {
    let total = 21 * MIB;
    let broker = multipart_broker(total, json!([]));
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
    // The parts sent at once first (their checksums are hashed before they
    // are signed), then batches of twice the concurrency as parts come due.
    assert_eq!(bodies[1]["part_numbers"], serde_json::json!([1, 2]));
    assert_eq!(bodies[2]["part_numbers"], serde_json::json!([3, 4, 5]));
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
    let full = multipart_broker(total, json!([]));
    let broker = ScriptedBroker::responding(move |call| {
        let mut reply = full.respond.as_ref()(call)?;
        reply.parts.truncate(1);
        Ok(reply)
    });
    let transport = parts_transport();
    // Two at once: the first call asks for parts 1 and 2.
    let run = run_with(&broker, &transport, 1.0, &multipart_options(2), pattern(total), None);
    let err = run.result.unwrap_err();
    assert_eq!((err.code, err.state), (ErrorCode::BrokerMalformedResponse, Some(Initialized)));
    assert!(err.message.contains("exactly the parts asked for"), "{}", err.message);
    assert!(transport.requests.borrow().is_empty());
}

#[test]
fn multipart_resume_sends_only_the_parts_the_store_lacks() {
    let total = 21 * MIB;
    let stored = json!([
        {"part_number": 1, "etag": "\"old-1\"", "size": 5_242_880},
        {"part_number": 3, "etag": "\"old-3\"", "size": 5_242_880},
        {"part_number": 5, "etag": "\"short\"", "size": 10},
    ]);
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
    let planned = multipart_broker(total, json!([]));
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
    let broker = multipart_broker(21 * MIB, json!([]));
    let options = UploadOptions { resume_session_id: Some("s1".into()), ..multipart_options(4) };
    let run = run_with(&broker, &parts_transport(), 1.0, &options, pattern(20 * MIB), None);
    let err = run.result.unwrap_err();
    assert_eq!((err.code, err.state), (ErrorCode::InvalidRequest, None));
    assert_eq!(*broker.calls.borrow(), vec!["show /s1"]);
}

#[test]
fn multipart_cancel_tells_the_broker_to_abort() {
    let total = 6 * MIB;
    let broker = multipart_broker(total, json!([]));
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
    let broker = multipart_broker(total, json!([]));
    let transport = ScriptedTransport::ok();
    let run = run_with(&broker, &transport, 1.0, &multipart_options(1), pattern(total), None);
    let err = run.result.unwrap_err();
    assert_eq!((err.code, err.state), (ErrorCode::StoreMalformedResponse, Some(Uploading)));
    assert!(err.message.contains("CORS rule must expose the ETag"), "{}", err.message);
    assert!(!broker.calls.borrow().iter().any(|c| c.starts_with("completeMultipart")));
}

#[test]
fn impossible_part_sizes_fail_before_any_call() {
    let broker = multipart_broker(MIB, json!([]));
    let options = UploadOptions { part_size: MIB as u64, ..multipart_options(4) };
    let run = run_with(&broker, &parts_transport(), 1.0, &options, pattern(MIB), None);
    assert_eq!(run.result.unwrap_err().code, ErrorCode::InvalidRequest);
    assert!(broker.calls.borrow().is_empty());
}

#[test]
fn a_failed_part_is_retried_alone_and_counted_once() {
    let total = 11 * MIB;
    let broker = multipart_broker(total, json!([]));
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

#[test]
fn auto_falls_back_to_the_next_strategy_a_broker_without_the_first_offers() {
    let total = 11 * MIB;
    let multipart = multipart_broker(total, json!([]));
    let broker = ScriptedBroker::responding(move |call| match call {
        BrokerCall::Initiate(request) if request.upload_strategy == UploadStrategy::PresignedPut => {
            Err(UploadError::new(ErrorCode::UnsupportedStrategy, "this broker's store does not offer it"))
        }
        other => (multipart.respond)(other),
    });
    let options = UploadOptions {
        fallbacks: vec![(UploadStrategy::Multipart, ResumableProtocol::GcsResumable)],
        ..UploadOptions { strategy: UploadStrategy::PresignedPut, ..multipart_options(2) }
    };
    let transport = parts_transport();
    let run = run_with(&broker, &transport, 1.0, &options, pattern(total), None);

    assert_eq!(run.result.map(|o| o.session.state), Ok(SessionState::Completed));
    let calls = broker.calls.borrow();
    assert_eq!(calls[..3], ["initiate ", "initiate ", "signParts /s1/parts/sign"]);
    let bodies = broker.bodies.borrow();
    assert_eq!(
        (&bodies[0]["upload_strategy"], &bodies[1]["upload_strategy"]),
        (&json!("presigned_put"), &json!("multipart"))
    );
    assert_eq!(bodies[0]["idempotency_key"], bodies[1]["idempotency_key"], "one upload, one key");
    assert_eq!(transport.requests.borrow().len(), 3, "three parts, no PUT of the whole file");
}

#[test]
fn a_strategy_named_is_not_replaced_when_the_broker_does_not_offer_it() {
    let broker =
        ScriptedBroker::responding(|_| Err(UploadError::new(ErrorCode::UnsupportedStrategy, "not offered")));
    let transport = parts_transport();
    let run = run_with(&broker, &transport, 1.0, &multipart_options(2), pattern(6 * MIB), None);

    assert_eq!(run.result.unwrap_err().code, ErrorCode::UnsupportedStrategy);
    assert_eq!(*broker.calls.borrow(), ["initiate "]);
}
