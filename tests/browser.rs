//! The browser edge in headless Chromium against the real reference broker
//! (started by scripts/test.sh; its URL is baked in at compile time as
//! RINDLE_TEST_BROKER). The test page is served from another origin than
//! the broker, so every request here also crosses CORS.
#![cfg(target_arch = "wasm32")]

use futures::future::{select, Either};
use rindle_upload::broker::{Broker, BrokerCall, BrokerReply, InitiateRequest};
use rindle_upload::transport::{HttpRequest, Transport, TransportError};
use rindle_upload::web::{FirstContact, WebBroker, XhrTransport};
use rindle_upload::wire::s3;
use rindle_upload::{ErrorCode, SessionState, UploadStrategy};
use std::cell::RefCell;
use std::pin::pin;
use std::rc::Rc;
use wasm_bindgen::JsValue;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const BROKER: &str = match option_env!("RINDLE_TEST_BROKER") {
    Some(url) => url,
    None => "http://127.0.0.1:18181",
};

fn broker() -> WebBroker {
    // The page is on another origin: the owner cookie goes only when asked.
    WebBroker {
        endpoint: format!("{BROKER}/api/uploads"),
        headers: vec![],
        credentials: "include",
        callbacks: JsValue::UNDEFINED,
        first_contact: FirstContact::default(),
    }
}

/// Bytes that differ from their neighbours, so a misplaced or repeated
/// range changes the stored object's hash.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn blob(len: usize) -> web_sys::Blob {
    let bytes = js_sys::Uint8Array::from(&pattern(len)[..]);
    let parts = js_sys::Array::of1(&bytes);
    let options = web_sys::BlobPropertyBag::new();
    options.set_type("text/plain");
    web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &options).unwrap()
}

/// A session signed for `len` bytes, through the real HTTP broker.
async fn signed_session(len: u64) -> BrokerReply {
    let broker = broker();
    let created = broker
        .call(&BrokerCall::Initiate(InitiateRequest {
            filename: "browser.txt".into(),
            content_type: "text/plain".into(),
            byte_size: len,
            upload_strategy: UploadStrategy::PresignedPut,
            resumable_protocol: None,
            part_size: None,
            checksum_algorithm: None,
            idempotency_key: None,
        }))
        .await
        .unwrap();
    assert_eq!(created.session.state, SessionState::Initialized);
    let signed =
        broker.call(&BrokerCall::Sign { session_id: created.session.id, checksum: None }).await.unwrap();
    assert_eq!(signed.session.state, SessionState::Signed);
    signed
}

fn put(reply: &BrokerReply, body: web_sys::Blob) -> HttpRequest<web_sys::Blob> {
    reply.upload.as_ref().unwrap().request_with(body)
}

async fn complete(session_id: String) -> BrokerReply {
    broker().call(&BrokerCall::Complete { session_id, checksum: None }).await.unwrap()
}

#[wasm_bindgen_test]
async fn xhr_reports_upload_progress_and_the_store_keeps_the_bytes() {
    const LEN: usize = 8 << 20;
    let signed = signed_session(LEN as u64).await;
    let seen = Rc::new(RefCell::new(Vec::new()));
    let recorder = Rc::clone(&seen);
    let response = XhrTransport
        .send(put(&signed, blob(LEN)), Rc::new(move |sent| recorder.borrow_mut().push(sent)))
        .await
        .unwrap();

    assert_eq!(response.status, 200);
    assert!(
        response.header("etag").is_some_and(|etag| etag.len() == 66),
        "ETag exposed through CORS: {response:?}"
    );
    let seen = seen.borrow().clone();
    assert!(!seen.is_empty(), "XHR upload progress events arrived");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(*seen.last().unwrap(), LEN as u64);

    let done = complete(signed.session.id.clone()).await;
    assert_eq!(done.session.state, SessionState::Completed);
    let asset = done.asset.unwrap();
    assert_eq!(asset.byte_size, LEN as u64);
    assert_eq!(asset.sha256, Some(sha256_hex(&pattern(LEN))), "the store holds exactly the bytes sent");
}

#[wasm_bindgen_test]
async fn dropping_the_request_aborts_it_and_nothing_is_stored() {
    const LEN: usize = 64 << 20;
    let signed = signed_session(LEN as u64).await;
    let (first_progress, progressed) = futures::channel::oneshot::channel::<()>();
    let first_progress = RefCell::new(Some(first_progress));
    let sending = XhrTransport.send(
        put(&signed, blob(LEN)),
        Rc::new(move |_| {
            if let Some(signal) = first_progress.borrow_mut().take() {
                let _ = signal.send(());
            }
        }),
    );
    match select(pin!(sending), progressed).await {
        Either::Left((answer, _)) => {
            panic!("the upload finished before it could be aborted: {answer:?}")
        }
        Either::Right(_) => {} // the send future is dropped here: XHR aborted
    }
    let done = complete(signed.session.id.clone()).await;
    assert_eq!(done.session.state, SessionState::Failed);
    assert_eq!(done.session.failure_reason.as_deref(), Some("no object was stored for this session"));
}

#[wasm_bindgen_test]
async fn non_2xx_answers_are_read_as_typed_store_errors() {
    let signed = signed_session(4).await;
    let mut tampered = put(&signed, blob(5));
    tampered.url = rindle_upload::secret::Secret::new(tampered.url.expose().replace("len=4", "len=5"));
    let response = XhrTransport.send(tampered, Rc::new(|_| {})).await.unwrap();
    assert_eq!(response.status, 403);
    let error = s3::check_answer(&response).unwrap_err();
    assert_eq!((error.code, error.retryable), (ErrorCode::SignatureInvalid, false));

    let wrong_size = XhrTransport.send(put(&signed, blob(3)), Rc::new(|_| {})).await.unwrap();
    assert_eq!(wrong_size.status, 400);
    assert_eq!(s3::check_answer(&wrong_size).unwrap_err().code, ErrorCode::StoreRejected);
}

#[wasm_bindgen_test]
async fn an_unreachable_store_is_a_network_error() {
    let request = HttpRequest {
        method: "PUT",
        url: rindle_upload::secret::Secret::new("http://127.0.0.1:9/store/x"),
        headers: vec![],
        body: Some(blob(1)),
    };
    assert_eq!(XhrTransport.send(request, Rc::new(|_| {})).await.unwrap_err(), TransportError::Network);
}

#[wasm_bindgen_test]
async fn broker_errors_over_http_keep_their_codes() {
    let err = broker()
        .call(&BrokerCall::Sign { session_id: "no-such-session".into(), checksum: None })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::SessionNotFound);
    let unreachable = WebBroker {
        endpoint: "http://127.0.0.1:9/api/uploads".into(),
        headers: vec![],
        credentials: "same-origin",
        callbacks: JsValue::UNDEFINED,
        first_contact: FirstContact::default(),
    };
    let err =
        unreachable.call(&BrokerCall::Sign { session_id: "x".into(), checksum: None }).await.unwrap_err();
    assert_eq!((err.code, err.retryable), (ErrorCode::BrokerUnreachable, true));
}

/// A broker callback (or HTTP answer) in the shapes a Phoenix app gets from
/// Rindle (lib/rindle/upload/broker.ex `sign_url`: `%{session, presigned}`
/// with an atom's method and `[]` headers; `multipart_parts` a map in
/// lib/rindle/domain/media_upload_session.ex) is read as the protocol's.
#[wasm_bindgen_test]
async fn rindles_reply_shapes_are_read_as_the_protocols() {
    let answer = |body: &str| {
        let callbacks = js_sys::Object::new();
        let sign = js_sys::Function::new_no_args(&format!("return {body};"));
        js_sys::Reflect::set(&callbacks, &"sign".into(), &sign).unwrap();
        WebBroker { callbacks: callbacks.into(), ..broker() }
    };
    let session = r#"id: "s1", state: "signed", upload_strategy: "presigned_put", upload_length: null"#;
    let reply = answer(&format!(
        r#"{{ session: {{ {session}, multipart_parts: {{}} }},
             presigned: {{ url: "https://bucket.example/k?X-Amz-Signature=S", method: "put", headers: [] }} }}"#
    ))
    .call(&BrokerCall::Sign { session_id: "s1".into(), checksum: None })
    .await
    .unwrap();
    let upload = reply.upload.unwrap();
    assert_eq!((upload.method.as_str(), upload.headers.len(), upload.expires_in), ("PUT", 0, None));
    assert!(reply.session.multipart_parts.is_empty());

    let parts = |value: &str| {
        let broker = answer(&format!(
            r#"{{ session: {{ {session}, upload_strategy: "multipart", multipart_parts: {value} }},
                 presigned: {{ url: "https://b.example/k", method: "PUT", headers: {{}} }} }}"#
        ));
        async move {
            let reply = broker.call(&BrokerCall::Sign { session_id: "s1".into(), checksum: None }).await;
            reply.unwrap().session.multipart_parts.iter().map(|p| (p.part_number, p.size)).collect::<Vec<_>>()
        }
    };
    assert_eq!(parts(r#"{ parts: [{ part_number: 1, etag: "\"e\"" }] }"#).await, vec![(1, None)]);
    assert_eq!(parts(r#"{ is_partial: true }"#).await, vec![]);
    assert_eq!(parts(r#"[{ part_number: 2, etag: "\"e\"", size: 5 }]"#).await, vec![(2, Some(5))]);

    // A tus upload URL given as a path (TusPlug's `Location`) is on the broker's origin.
    let tus = answer(
        r#"{ session: { id: "s1", state: "signed", upload_strategy: "resumable", resumable_protocol: "tus",
                        session_uri: "/uploads/tus/abc?token=T" } }"#,
    );
    let reply = tus.call(&BrokerCall::Sign { session_id: "s1".into(), checksum: None }).await.unwrap();
    assert_eq!(reply.session.session_uri.unwrap().expose(), format!("{BROKER}/uploads/tus/abc?token=T"));

    // A reply off the protocol's shape names the field, and never quotes a URL.
    let off = answer(&format!(
        r#"{{ session: {{ {session} }}, upload: {{ url: "https://b.example/k?sig=SECRET", method: "PUT", expires_in: 1.5 }} }}"#
    ));
    let err = off.call(&BrokerCall::Sign { session_id: "s1".into(), checksum: None }).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::BrokerMalformedResponse);
    assert_eq!(err.message, "sign: `reply.upload.expires_in` must be a whole number");
}

#[wasm_bindgen_test]
async fn the_browser_clock_sleeps_for_real() {
    use rindle_upload::transport::Clock;
    use rindle_upload::web::DateClock;
    let before = DateClock.now_ms();
    DateClock.sleep(40).await;
    let slept = DateClock.now_ms() - before;
    assert!(slept >= 35.0, "slept {slept} ms");
    let random = DateClock.random();
    assert!((0.0..1.0).contains(&random));
}

#[wasm_bindgen_test]
fn dates_are_read_by_the_browser_as_natively() {
    use rindle_upload::time::{parse_http_date_ms, parse_ms};
    assert_eq!(parse_http_date_ms(" Thu, 01 Jan 1970 00:00:10 GMT "), Some(10_000.0));
    assert_eq!(parse_ms("1970-01-01T00:00:01Z"), Some(1_000.0));
    assert_eq!(parse_ms("2026-11-26T00:00:00.5Z"), Some(1_795_651_200_500.0));
    // Without a zone (Ecto's NaiveDateTime): UTC, not the browser's local time.
    assert_eq!(parse_ms("2026-11-26T00:00:00.500000"), Some(1_795_651_200_500.0));
    for bad in ["tomorrow", "", "soon"] {
        assert_eq!((parse_ms(bad), parse_http_date_ms(bad)), (None, None), "{bad:?}");
    }
}
