//! The engine over GCS resumable sessions: Content-Range chunks, 308 offsets, status queries, expiry, cancel.
#![cfg(not(target_arch = "wasm32"))]

mod engine_harness;
mod support;

use engine_harness::*;
use rindle_upload::engine::UploadOptions;
use rindle_upload::progress::ProgressSnapshot;
use rindle_upload::transport::TransportError;
use rindle_upload::{ErrorCode, SessionState};
use std::cell::{Cell, RefCell};

use SessionState::*;

#[test]
fn resumable_continues_from_what_the_store_committed() {
    let broker = resumable_broker();
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
    use PieceState::*;
    assert_eq!(
        run.pieces(),
        [
            (0, 524_288, Sending),
            (0, 262_144, Stored),
            (262_144, 524_288, Sending),
            (262_144, 524_288, Stored),
            (786_432, 262_144, Sending),
            (786_432, 262_144, Stored),
        ],
        "a piece stored is what the store kept of it"
    );
}

#[test]
fn resumable_asks_for_the_offset_after_a_dropped_response() {
    let broker = resumable_broker();
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
    let broker = resumable_broker();
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
    let broker = resumable_broker();
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
    let broker = resumable_broker();
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
    let broker = resumable_broker();
    let transport =
        ScriptedTransport::new(Answer::Script(Box::new(|_| gcs_answer(308, Some("bytes=0-banana")))));
    let run = run_with(&broker, &transport, 1.0, &resumable_options(), pattern(1 << 20), None);
    let err = run.result.unwrap_err();
    assert_eq!((err.code, err.state), (ErrorCode::StoreMalformedResponse, Some(Uploading)));
}

#[test]
fn resumable_waits_out_an_offline_spell_without_spending_a_retry() {
    let broker = resumable_broker();
    let transport = ScriptedTransport::new(Answer::Offline {
        offline: Cell::new(true),
        unnoticed: Cell::new(0),
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

/// At every progress event, sent − acknowledged is at most what one chunk
/// in flight can carry: a cut request's bytes stop counting once the store
/// has said what it kept.
fn assert_in_flight_bounded(run: &Run, chunk: u64) {
    for p in run.progress() {
        assert!(p.bytes_sent - p.bytes_acked <= chunk, "more in flight than one chunk: {p:?}");
        assert!(p.bytes_acked <= p.bytes_sent && p.bytes_sent <= p.bytes_total, "{p:?}");
    }
}

#[test]
fn a_cut_chunk_stops_counting_once_the_store_says_what_it_kept() {
    let broker = resumable_broker();
    let transport = ScriptedTransport::new(Answer::Script(Box::new(|request| {
        match request.headers[0].1.as_str() {
            // Every byte of the first chunk went out, then the connection broke.
            "bytes 0-524287/1048576" => Err(TransportError::Network),
            "bytes */1048576" => gcs_answer(308, Some("bytes=0-262143")),
            "bytes 262144-786431/1048576" => gcs_answer(308, Some("bytes=0-786431")),
            "bytes 786432-1048575/1048576" => gcs_answer(200, None),
            other => panic!("unexpected Content-Range {other}"),
        }
    })));
    let run = run_with(&broker, &transport, 1.0, &resumable_options(), pattern(1 << 20), None);
    assert!(run.result.is_ok(), "{:?}", run.result);
    assert_eq!(
        content_ranges(&transport),
        [
            "PUT bytes 0-524287/1048576",
            "PUT bytes */1048576",
            "PUT bytes 262144-786431/1048576",
            "PUT bytes 786432-1048575/1048576"
        ]
    );
    assert_in_flight_bounded(&run, 512 * KIB);
    assert_eq!(run.progress().last().unwrap().bytes_acked, 1 << 20);
}

#[test]
fn a_session_gone_after_its_last_byte_is_left_to_verification() {
    let broker = resumable_broker();
    let transport = ScriptedTransport::new(Answer::Script(Box::new(|request| {
        match request.headers[0].1.as_str() {
            "bytes 0-524287/1048576" => gcs_answer(308, Some("bytes=0-524287")),
            // The last chunk's answer is lost, and the store has since
            // forgotten the finalized session (gcp-storage-emulator does).
            "bytes 524288-1048575/1048576" => Err(TransportError::Network),
            "bytes */1048576" => gcs_answer(404, None),
            other => panic!("unexpected Content-Range {other}"),
        }
    })));
    let run = run_with(&broker, &transport, 1.0, &resumable_options(), pattern(1 << 20), None);
    assert!(run.result.is_ok(), "{:?}", run.result);
    assert_eq!(broker.calls.borrow().last().unwrap(), "complete /s1/complete", "the broker verifies");
    assert_eq!(run.states().last(), Some(&(Some(Verifying), Completed)));
    assert_in_flight_bounded(&run, 512 * KIB);
}

#[test]
fn a_session_gone_before_its_last_byte_fails() {
    let broker = resumable_broker();
    let transport =
        ScriptedTransport::new(Answer::Script(Box::new(|request| match request.headers[0].1.as_str() {
            "bytes 0-524287/1048576" => Err(TransportError::Network),
            "bytes */1048576" => gcs_answer(404, None),
            other => panic!("unexpected Content-Range {other}"),
        })));
    let run = run_with(&broker, &transport, 1.0, &resumable_options(), pattern(1 << 20), None);
    let err = run.result.unwrap_err();
    assert_eq!((err.code, err.state), (ErrorCode::SessionExpired, Some(Uploading)));
    assert!(!broker.calls.borrow().iter().any(|c| c.starts_with("complete")));
}

/// Rindle opens resumable and tus sessions at initiate
/// (lib/rindle/upload/broker.ex `initiate_resumable_session`,
/// `initiate_tus_upload`): the session comes `signed` with its URI, and no
/// `sign` call is made (Rindle's table has no `signed → signed`).
#[test]
fn sessions_rindle_opens_at_initiate_are_not_signed_again() {
    for tus in [false, true] {
        let session = move |state: &str| {
            let mut fields = resumable_session(state);
            if tus {
                fields["resumable_protocol"] = "tus".into();
                fields["session_uri"] = "http://tus.test/files/abc".into();
            }
            // Rindle's initiate functions set no length.
            fields["upload_length"] = serde_json::Value::Null;
            fields
        };
        let broker = ScriptedBroker::responding(move |call| {
            Ok(reply_of(match call {
                rindle_upload::broker::BrokerCall::Initiate(_)
                | rindle_upload::broker::BrokerCall::ResumableStatus { .. } => {
                    serde_json::json!({"session": session("signed")})
                }
                rindle_upload::broker::BrokerCall::Complete { .. } => {
                    serde_json::json!({"session": session("completed"), "asset": asset(1_048_576)})
                }
                other => panic!("unexpected call {other:?}"),
            }))
        });
        let transport =
            ScriptedTransport::new(Answer::Script(Box::new(move |request| match request.method {
                "HEAD" => tus_answer(200, &[("upload-offset", "0"), ("upload-length", "1048576")]),
                "OPTIONS" => tus_answer(204, DISCOVERY),
                "PATCH" => {
                    let offset: u64 = header(request, "Upload-Offset").unwrap().parse().unwrap();
                    let next = (offset + request.body.len() as u64).to_string();
                    tus_answer(204, &[("upload-offset", next.as_str())])
                }
                _ if request.headers[0].1 == "bytes 0-524287/1048576" => {
                    gcs_answer(308, Some("bytes=0-524287"))
                }
                _ => gcs_answer(200, None),
            })));
        let options = if tus { tus_options() } else { resumable_options() };
        let run = run_with(&broker, &transport, 1.0, &options, pattern(1 << 20), None);
        assert!(run.result.is_ok(), "tus {tus}: {:?}", run.result);
        let calls = broker.calls.borrow();
        assert!(!calls.iter().any(|c| c.starts_with("sign")), "tus {tus}: {calls:?}");
        assert_eq!(run.states()[0], (None, Signed), "tus {tus}");
    }
}
