//! The engine over tus 1.0: discovery, creation, HEAD offsets, checksums, deferred length, expiry, termination.
#![cfg(not(target_arch = "wasm32"))]

mod engine_harness;
mod support;

use engine_harness::*;
use rindle_upload::engine::UploadOptions;
use rindle_upload::{ErrorCode, SessionState};
use std::cell::{Cell, RefCell};

use SessionState::*;

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
