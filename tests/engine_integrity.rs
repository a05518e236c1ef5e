//! The engine's checksums: what each strategy asks the broker to sign and
//! sends to the store, a piece the store refuses as corrupted sent again,
//! a persistent mismatch ending `checksum_mismatch`, and the whole file's
//! checksum at completion.
#![cfg(not(target_arch = "wasm32"))]

mod engine_harness;
mod support;

use engine_harness::*;
use rindle_upload::digest::digest_of;
use rindle_upload::transport::{ChecksumAlgorithm, HttpResponse};
use rindle_upload::wire::checksum::Checksum;
use rindle_upload::{ErrorCode, SessionState, UploadStrategy};
use serde_json::{json, Value};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

fn crc32c(bytes: &[u8]) -> Value {
    let checksum =
        Checksum::of_digest(ChecksumAlgorithm::Crc32c, &digest_of(ChecksumAlgorithm::Crc32c, bytes));
    serde_json::to_value(checksum).unwrap()
}

/// The body of the broker call named `name` (the first such call).
fn body_of(broker: &ScriptedBroker, name: &str) -> Value {
    bodies_of(broker, name).into_iter().next().unwrap_or_else(|| panic!("no {name} call"))
}

/// The bodies of every broker call named `name`, in call order.
fn bodies_of(broker: &ScriptedBroker, name: &str) -> Vec<Value> {
    let calls = broker.calls.borrow();
    let bodies = broker.bodies.borrow();
    calls
        .iter()
        .zip(bodies.iter())
        .filter(|(call, _)| call.starts_with(name))
        .map(|(_, body)| body.clone())
        .collect()
}

fn digest_refused() -> HttpResponse {
    let body =
        "<Error><Code>BadDigest</Code><Message>The CRC32C you specified did not match</Message></Error>";
    HttpResponse { status: 400, headers: vec![], body: body.into() }
}

/// A store that refuses the first `corrupted` requests as corrupted, then stores.
fn corrupting(corrupted: usize) -> ScriptedTransport {
    let sent = Cell::new(0);
    ScriptedTransport::new(Answer::Script(Box::new(move |request| {
        sent.set(sent.get() + 1);
        Ok(if sent.get() <= corrupted { digest_refused() } else { stored_part(&request.url) })
    })))
}

#[test]
fn presigned_put_signs_for_the_files_checksum_and_sends_a_refused_body_again() {
    let data = b"0123456789";
    let signed = reply_of(json!({
        "session": session_json("signed", json!({})),
        "upload": {"method": "PUT", "url": URL, "expires_in": 900,
                   "headers": {"Content-Type": "text/plain", "x-amz-checksum-crc32c": crc32c(data)["value"]}},
    }));
    let broker = ScriptedBroker::new(vec![Ok(reply("initialized")), Ok(signed), Ok(completed_reply())]);
    let transport = corrupting(1);
    let run = run_upload(&broker, &transport, 1.0, UploadStrategy::PresignedPut, None);

    assert_eq!(run.result.as_ref().unwrap().session.state, SessionState::Completed);
    assert_eq!(body_of(&broker, "sign"), json!({"session_id": "s1", "checksum": crc32c(data)}));
    assert_eq!(body_of(&broker, "complete"), json!({"session_id": "s1", "checksum": crc32c(data)}));
    let requests = transport.requests.borrow();
    assert_eq!(requests.len(), 2, "the refused body is sent again");
    for request in requests.iter() {
        assert_eq!(
            (request.url.as_str(), request.body.as_slice()),
            (URL, data.as_slice()),
            "same URL, same bytes"
        );
        assert_eq!(
            header(request, "x-amz-checksum-crc32c"),
            crc32c(data)["value"].as_str(),
            "the signed header"
        );
    }
    assert!(run.slept.is_empty(), "a corrupted piece is sent again at once");
}

#[test]
fn a_store_that_keeps_refusing_the_checksum_ends_checksum_mismatch_never_completed() {
    let broker = ScriptedBroker::new(vec![Ok(reply("initialized")), Ok(signed_reply(900))]);
    let transport = corrupting(usize::MAX);
    let run = run_upload(&broker, &transport, 1.0, UploadStrategy::PresignedPut, None);

    let error = run.result.unwrap_err();
    assert_eq!((error.code, error.state), (ErrorCode::ChecksumMismatch, Some(SessionState::Uploading)));
    assert_eq!(transport.requests.borrow().len(), 6, "the first try and five resends");
    assert!(!broker.calls.borrow().iter().any(|c| c.starts_with("complete")), "never completed");
}

#[test]
fn multipart_signs_each_part_for_its_checksum_and_completes_with_the_files() {
    let data = pattern(12 * MIB);
    let broker = multipart_broker(data.len(), json!([]));
    let transport = parts_transport();
    let run = run_with(&broker, &transport, 1.0, &multipart_options(2), data.clone(), None);

    assert_eq!(run.result.as_ref().unwrap().session.state, SessionState::Completed);
    let parts: Vec<&[u8]> = data.chunks(5 * MIB).collect();
    assert_eq!(
        bodies_of(&broker, "signParts").iter().map(|body| body["checksums"].clone()).collect::<Vec<_>>(),
        [json!({"1": crc32c(parts[0]), "2": crc32c(parts[1])}), json!({"3": crc32c(parts[2])})],
        "every part's checksum, for the URL the broker signs (first the two sent at once)"
    );
    let completed = body_of(&broker, "completeMultipart");
    assert_eq!(completed["checksum"], crc32c(&data), "the parts' CRC32Cs combine into the file's");
}

#[test]
fn a_resumed_multipart_upload_still_gives_the_whole_files_checksum() {
    let data = pattern(12 * MIB);
    let stored = json!([{"part_number": 1, "etag": "\"e1\"", "size": 5 * MIB}]);
    let broker = multipart_broker(data.len(), stored);
    let transport = parts_transport();
    let options =
        rindle_upload::engine::UploadOptions { resume_session_id: Some("s1".into()), ..multipart_options(2) };
    let run = run_with(&broker, &transport, 1.0, &options, data.clone(), None);

    assert_eq!(run.result.as_ref().unwrap().session.state, SessionState::Completed);
    let signed = body_of(&broker, "signParts");
    assert_eq!(signed["part_numbers"], json!([2, 3]));
    assert_eq!(signed["checksums"].as_object().unwrap().len(), 2, "only the parts sent are signed");
    assert_eq!(body_of(&broker, "completeMultipart")["checksum"], crc32c(&data));
}

#[test]
fn a_gcs_session_gets_the_files_checksum_on_its_last_chunk_only() {
    let data = pattern(1 << 20);
    let broker = resumable_broker();
    let sent = Cell::new(0u64);
    let transport = ScriptedTransport::new(Answer::Script(Box::new(move |request| {
        sent.set(sent.get() + request.body.len() as u64);
        if sent.get() < 1 << 20 {
            gcs_answer(308, Some(&format!("bytes=0-{}", sent.get() - 1)))
        } else {
            gcs_answer(200, None)
        }
    })));
    let run = run_with(&broker, &transport, 1.0, &resumable_options(), data.clone(), None);

    assert_eq!(run.result.as_ref().unwrap().session.state, SessionState::Completed);
    let hashes: Vec<Option<String>> =
        transport.requests.borrow().iter().map(|r| header(r, "x-goog-hash").map(str::to_owned)).collect();
    let whole = format!("crc32c={}", crc32c(&data)["value"].as_str().unwrap());
    assert_eq!(hashes, [None, Some(whole)]);
    assert_eq!(body_of(&broker, "complete")["checksum"], crc32c(&data));
}

#[test]
fn with_checksums_off_nothing_is_hashed_or_claimed() {
    let broker =
        ScriptedBroker::new(vec![Ok(reply("initialized")), Ok(signed_reply(900)), Ok(completed_reply())]);
    let transport = ScriptedTransport::ok();
    let options = rindle_upload::engine::UploadOptions {
        checksum: None,
        ..rindle_upload::engine::UploadOptions::new("a.txt", "text/plain", UploadStrategy::PresignedPut)
    };
    let run = run_with(&broker, &transport, 1.0, &options, b"0123456789".to_vec(), None);

    assert_eq!(run.result.as_ref().unwrap().session.state, SessionState::Completed);
    assert_eq!(body_of(&broker, "sign"), json!({"session_id": "s1"}));
    assert_eq!(body_of(&broker, "complete"), json!({"session_id": "s1"}));
}

#[test]
fn the_first_signing_call_waits_only_for_the_parts_sent_at_once() {
    let total = 21 * MIB;
    let broker = multipart_broker(total, json!([]));
    let transport = parts_transport();
    let file = WatchedFile::new(pattern(total));
    // Two in flight: URLs are signed four parts at a time (parts of 5 MiB),
    // but the first call only two.
    let outcome = upload_file(&broker, &transport, &multipart_options(2), &file);

    assert_eq!(outcome.unwrap().session.state, SessionState::Completed);
    let log = file.digests.borrow();
    let first_end = log.iter().position(|&(event, _)| event == "end").unwrap();
    let m = 5 * MIB as u64;
    assert_eq!(
        log[..first_end],
        [("start", 0), ("start", m)],
        "the two parts of the first signing call were both being hashed before either finished"
    );
    assert_eq!(log.iter().filter(|&&(event, _)| event == "start").count(), 5, "each part was hashed once");
    let signed: Vec<Value> = broker
        .calls
        .borrow()
        .iter()
        .zip(broker.bodies.borrow().iter())
        .filter(|(call, _)| call.starts_with("signParts"))
        .map(|(_, body)| body["part_numbers"].clone())
        .collect();
    assert_eq!(
        signed,
        [json!([1, 2]), json!([3, 4, 5])],
        "the first call carried the parts sent at once, the next a batch"
    );
}

#[test]
fn tus_without_chunk_checksums_hashes_the_whole_file_while_the_chunks_go() {
    let file = Rc::new(WatchedFile::new(pattern(1 << 20)));
    // What the file had been asked to hash when each PATCH went.
    let hashed_by_patch = Rc::new(RefCell::new(vec![]));
    let transport = ScriptedTransport::new(Answer::Script(Box::new({
        let (file, hashed_by_patch) = (file.clone(), hashed_by_patch.clone());
        move |request| match (request.method, header(request, "Upload-Offset")) {
            ("OPTIONS", _) => tus_answer(204, &[("tus-version", "1.0.0"), ("tus-extension", "creation")]),
            ("HEAD", _) => tus_answer(200, &[("upload-offset", "0")]),
            ("PATCH", Some(offset)) => {
                hashed_by_patch.borrow_mut().push(file.digests.borrow().clone());
                let end = if offset == "0" { "524288" } else { "1048576" };
                tus_answer(204, &[("upload-offset", end)])
            }
            other => panic!("unexpected {other:?}"),
        }
    })));
    let broker = tus_broker(false);
    let outcome = upload_file(&broker, &transport, &tus_options(), &file).unwrap();

    assert_eq!(outcome.session.state, SessionState::Completed);
    let hashed_by_patch = hashed_by_patch.borrow();
    assert_eq!(hashed_by_patch.len(), 2, "two PATCHes");
    assert_eq!(hashed_by_patch[0], [("start", 0)], "the whole file's digest started before the first PATCH");
    assert_eq!(*file.digests.borrow(), [("start", 0), ("end", 0)], "hashed once");
    assert_eq!(body_of(&broker, "complete")["checksum"], crc32c(&file.bytes.0));
}
