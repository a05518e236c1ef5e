//! The protocol's routes end to end through the router, on the embedded
//! store (and refusals that need no store).

use crate::store::Store;
use crate::test_broker::*;
use axum::body::Body;
use axum::http::{header, HeaderValue, Request, StatusCode};
use sha2::{Digest, Sha256};
use std::time::Duration;
use tower::ServiceExt;

#[tokio::test]
async fn presigned_put_from_initiate_to_completed() {
    let app = app(900, 3_600);
    let (status, created) = initiate(&app, 11, "text/plain").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["session"]["state"], "initialized");
    assert_eq!(created["session"]["upload_length"], 11);
    let key = created["session"]["upload_key"].as_str().unwrap().to_owned();
    assert!(key.ends_with("/notes_1.txt"), "{key}");
    let id = created["session"]["id"].as_str().unwrap().to_owned();

    let (status, signed) =
        call(&app, &format!("/api/uploads/{id}/sign"), serde_json::json!({"session_id": id})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(signed["session"]["state"], "signed");
    assert_eq!(signed["upload"]["method"], "PUT");
    assert_eq!(signed["upload"]["headers"]["Content-Type"], "text/plain");
    assert_eq!(signed["upload"]["expires_in"], 900);
    let url = signed["upload"]["url"].as_str().unwrap();

    let (status, headers, _) = send(&app, "PUT", &path_of(url), "text/plain", b"hello world".to_vec()).await;
    assert_eq!(status, StatusCode::OK);
    let sha = hex::encode(Sha256::digest(b"hello world"));
    assert_eq!(headers[header::ETAG], format!("\"{sha}\"").as_str());

    let (status, done) =
        call(&app, &format!("/api/uploads/{id}/complete"), serde_json::json!({"session_id": id})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(done["session"]["state"], "completed");
    assert!(done["session"]["verified_at"].is_string());
    assert_eq!(done["asset"]["sha256"], sha.as_str());
    assert_eq!(done["asset"]["byte_size"], 11);
    let asset_url = done["asset"]["url"].as_str().unwrap();
    let (status, _, stored) = send(&app, "GET", &path_of(asset_url), "", vec![]).await;
    assert_eq!((status, stored.as_slice()), (StatusCode::OK, b"hello world".as_slice()));

    // Completing again answers the same record; cancelling is too late.
    let (_, again) = call(&app, &format!("/api/uploads/{id}/complete"), serde_json::json!({})).await;
    assert_eq!(again["session"]["state"], "completed");
    let (status, refused) = call(&app, &format!("/api/uploads/{id}/cancel"), serde_json::json!({})).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("illegal_transition"))
    );
}

#[tokio::test]
async fn a_strategy_the_store_does_not_offer_is_refused_at_initiate() {
    // Nothing listens on port 9: refusing must not need the store.
    let (s3, _) = broker_on(
        |_| {},
        |_| {
            Store::S3(
                crate::store::s3::S3Store::new(crate::store::s3::S3Config {
                    endpoint: "http://127.0.0.1:9".into(),
                    region: "r".into(),
                    bucket: "b".into(),
                    access_key_id: "GK0123456789abcdef01234567".into(),
                    secret_access_key: "0".repeat(64),
                    path_style: true,
                })
                .unwrap(),
            )
        },
    );
    let (gcs, _) = broker_on(
        |_| {},
        |_| {
            Store::Gcs(Box::new(
                crate::store::gcs::GcsStore::new(crate::store::gcs::GcsConfig {
                    base_url: "http://127.0.0.1:9".into(),
                    bucket: "b".into(),
                    credentials: None,
                })
                .unwrap(),
            ))
        },
    );
    for (app, strategy) in [(&s3, "resumable"), (&gcs, "presigned_put"), (&gcs, "multipart")] {
        let body = serde_json::json!({
            "filename": "a.txt", "content_type": "text/plain", "byte_size": 10, "upload_strategy": strategy,
        });
        let (status, reply) = call(app, "/api/uploads", body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{strategy}");
        assert_eq!(reply["error"]["code"], "unsupported_strategy", "{strategy}");
    }
}

#[tokio::test]
async fn the_profile_refuses_before_any_byte() {
    let app = app(900, 3_600);
    let (status, body) = initiate(&app, (64 << 20) + 1, "text/plain").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("file_too_large"))
    );
    let (_, body) = initiate(&app, 10, "image/png").await;
    assert_eq!(body["error"]["code"], "content_type_not_allowed");
    let (status, _, body) =
        send(&app, "POST", "/api/uploads", "application/json", b"{\"filename\":".to_vec()).await;
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")));
    let (status, body) = call(&app, "/api/uploads/nope/sign", serde_json::json!({})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("session_not_found")));
}

#[tokio::test]
async fn tampered_or_wrongly_sized_puts_store_nothing() {
    let app = app(900, 3_600);
    let (_, created) = initiate(&app, 5, "text/plain").await;
    let id = created["session"]["id"].as_str().unwrap().to_owned();
    let (_, signed) = call(&app, &format!("/api/uploads/{id}/sign"), serde_json::json!({})).await;
    let path = path_of(signed["upload"]["url"].as_str().unwrap());

    let tampered = path.replace("len=5", "len=6");
    let (status, _, body) = send(&app, "PUT", &tampered, "text/plain", b"hello!".to_vec()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(String::from_utf8(body).unwrap().contains("<Code>SignatureDoesNotMatch</Code>"));
    let (status, _, _) = send(&app, "PUT", &path, "text/html", b"hello".to_vec()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "content type is signed");
    let (status, _, _) = send(&app, "PUT", &path, "text/plain", b"hell".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "short body");

    let (_, done) = call(&app, &format!("/api/uploads/{id}/complete"), serde_json::json!({})).await;
    assert_eq!(done["session"]["state"], "failed");
    assert_eq!(done["session"]["failure_reason"], "no object was stored for this session");
}

#[tokio::test]
async fn an_initiate_tried_again_with_its_idempotency_key_gets_the_same_session() {
    let app = app(900, 3_600);
    let body = |bytes: u64| {
        serde_json::json!({"filename": "big.bin", "content_type": "text/plain", "byte_size": bytes,
                           "upload_strategy": "multipart", "part_size": 5 << 20, "idempotency_key": "k-1"})
    };
    let (first_status, first) = call(&app, "/api/uploads", body(6 << 20)).await;
    let (again_status, again) = call(&app, "/api/uploads", body(6 << 20)).await;
    assert_eq!((first_status, again_status), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(first["session"]["id"], again["session"]["id"], "one session, not two");
    assert_eq!(first["session"]["multipart_upload_id"], again["session"]["multipart_upload_id"]);

    let (status, refused) = call(&app, "/api/uploads", body(7 << 20)).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("invalid_request")));
    let (status, _) = call(
        &app,
        "/api/uploads",
        serde_json::json!({"filename": "a.txt", "content_type": "text/plain",
        "byte_size": 1, "upload_strategy": "presigned_put", "idempotency_key": "not plain!"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn expired_urls_are_refused() {
    let (app, state) = app_and_state(0, 3_600, 3_600);
    let (_, created) = initiate(&app, 5, "text/plain").await;
    let id = created["session"]["id"].as_str().unwrap().to_owned();
    let (_, signed) = call(&app, &format!("/api/uploads/{id}/sign"), serde_json::json!({})).await;
    state.clock.advance(Duration::from_secs(2));
    let path = path_of(signed["upload"]["url"].as_str().unwrap());
    let (status, _, body) = send(&app, "PUT", &path, "text/plain", b"hello".to_vec()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(String::from_utf8(body).unwrap().contains("<Message>Request has expired</Message>"));
}

#[tokio::test]
async fn cancel_aborts_and_sessions_past_their_ttl_expire() {
    let app = app(900, 3_600);
    let (_, created) = initiate(&app, 5, "text/plain").await;
    let id = created["session"]["id"].as_str().unwrap().to_owned();
    let (status, cancelled) = call(&app, &format!("/api/uploads/{id}/cancel"), serde_json::json!({})).await;
    assert_eq!((status, cancelled["session"]["state"].as_str()), (StatusCode::OK, Some("aborted")));
    let (status, body) = call(&app, &format!("/api/uploads/{id}/sign"), serde_json::json!({})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("illegal_transition")));

    let (app, state) = app_and_state(900, 0, 3_600);
    let (_, created) = initiate(&app, 5, "text/plain").await;
    let id = created["session"]["id"].as_str().unwrap().to_owned();
    state.clock.advance(Duration::from_secs(2));
    let (status, body) = call(&app, &format!("/api/uploads/{id}/sign"), serde_json::json!({})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::GONE, Some("session_expired")));
    let (_, _, shown) = send(&app, "GET", &format!("/api/uploads/{id}"), "", vec![]).await;
    let shown: serde_json::Value = serde_json::from_slice(&shown).unwrap();
    assert_eq!(shown["session"]["state"], "expired");
}

#[tokio::test]
async fn cors_is_answered_on_every_route() {
    let app = app(900, 3_600);
    for path in ["/api/uploads", "/api/uploads/x/sign", "/store/uploads/a/b"] {
        let request = Request::builder()
            .method("OPTIONS")
            .uri(path)
            .header(header::ORIGIN, "http://other.test")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "PUT")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type")
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*", "{path}");
    }
}

#[tokio::test]
async fn multipart_on_the_embedded_store_from_initiate_to_completed() {
    let app = app(900, 3_600);
    let data: Vec<u8> = (0..(11usize << 20)).map(|i| (i % 253) as u8).collect();
    let (id, created) = initiate_multipart(&app, data.len()).await;
    assert!(created["session"]["multipart_upload_id"].is_string());
    assert_eq!(created["part_size"], 5 << 20, "the reply carries the broker's plan");
    let (_, shown) = call(&app, &format!("/api/uploads/{id}/parts"), serde_json::json!({})).await;
    assert_eq!(shown["part_size"], 5 << 20, "every reply does");

    let (status, refused) =
        call(&app, &format!("/api/uploads/{id}/parts/sign"), serde_json::json!({"part_numbers": [4]})).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    let (status, signed) =
        call(&app, &format!("/api/uploads/{id}/parts/sign"), serde_json::json!({"part_numbers": [1, 2, 3]}))
            .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(signed["session"]["state"], "signed");
    assert_eq!(signed["parts"].as_array().unwrap().len(), 3);

    let mut etags = vec![];
    for (index, chunk) in data.chunks(5 << 20).enumerate() {
        etags.push(put_part(&app, &signed, index, chunk).await);
    }
    let (_, listed) = call(&app, &format!("/api/uploads/{id}/parts"), serde_json::json!({})).await;
    let listed_etags: Vec<&str> = listed["session"]["multipart_parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["etag"].as_str().unwrap())
        .collect();
    assert_eq!(listed_etags, etags);

    let parts: Vec<serde_json::Value> =
        etags.iter().enumerate().map(|(i, e)| serde_json::json!({"part_number": i + 1, "etag": e})).collect();
    let (status, done) =
        call(&app, &format!("/api/uploads/{id}/multipart/complete"), serde_json::json!({"parts": parts}))
            .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(done["session"]["state"], "completed", "{done}");
    assert_eq!(done["asset"]["sha256"], hex::encode(Sha256::digest(&data)).as_str());
    let (_, _, stored) =
        send(&app, "GET", &path_of(done["asset"]["url"].as_str().unwrap()), "", vec![]).await;
    assert!(stored == data, "the joined object is the file");
}

#[tokio::test]
async fn a_refused_part_list_fails_the_session_and_cancel_leaves_no_parts() {
    let app = app(900, 3_600);
    let (id, _) = initiate_multipart(&app, 6 << 20).await;
    let (_, signed) =
        call(&app, &format!("/api/uploads/{id}/parts/sign"), serde_json::json!({"part_numbers": [1, 2]}))
            .await;
    put_part(&app, &signed, 0, &vec![1u8; 5 << 20]).await;
    let parts = serde_json::json!([{"part_number": 1, "etag": "\"wrong\""}]);
    let (_, done) =
        call(&app, &format!("/api/uploads/{id}/multipart/complete"), serde_json::json!({"parts": parts}))
            .await;
    assert_eq!(done["session"]["state"], "failed");
    assert_eq!(done["session"]["failure_reason"], "part 1's ETag does not match the stored part");

    let (id, _) = initiate_multipart(&app, 6 << 20).await;
    let (_, signed) =
        call(&app, &format!("/api/uploads/{id}/parts/sign"), serde_json::json!({"part_numbers": [1]})).await;
    put_part(&app, &signed, 0, &vec![1u8; 5 << 20]).await;
    let (_, cancelled) = call(&app, &format!("/api/uploads/{id}/cancel"), serde_json::json!({})).await;
    assert_eq!(cancelled["session"]["state"], "aborted");
    let url = signed["parts"][0]["upload"]["url"].as_str().unwrap();
    let (status, _, body) = send(&app, "PUT", &path_of(url), "", vec![1]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the upload and its parts are gone");
    assert!(String::from_utf8(body).unwrap().contains("NoSuchUpload"));
}

#[tokio::test]
async fn resumable_on_the_embedded_store_follows_the_gcs_protocol() {
    let app = app(900, 3_600);
    let data: Vec<u8> = (0..600_000usize).map(|i| (i % 249) as u8).collect();
    let body = serde_json::json!({"filename": "r.bin", "content_type": "text/plain", "byte_size": data.len(),
                                  "upload_strategy": "resumable"});
    let (_, created) = call(&app, "/api/uploads", body).await;
    let id = created["session"]["id"].as_str().unwrap().to_owned();
    let (status, signed) = call(&app, &format!("/api/uploads/{id}/sign"), serde_json::json!({})).await;
    assert_eq!(status, StatusCode::OK, "{signed}");
    assert_eq!(signed["session"]["state"], "signed");
    assert!(signed["session"]["session_uri_expires_at"].is_string());
    let uri = path_of(signed["session"]["session_uri"].as_str().unwrap());

    assert_eq!(put_range(&app, &uri, "bytes */600000", b"").await, (StatusCode::PERMANENT_REDIRECT, None));
    let first = put_range(&app, &uri, "bytes 0-262143/600000", &data[..262_144]).await;
    assert_eq!(first, (StatusCode::PERMANENT_REDIRECT, Some("bytes=0-262143".into())));
    let overlapping = put_range(&app, &uri, "bytes 0-262143/600000", &data[..262_144]).await;
    assert_eq!(overlapping.0, StatusCode::BAD_REQUEST, "overlapping chunks are refused");
    let skipping = put_range(&app, &uri, "bytes 524288-599999/600000", &data[524_288..]).await;
    assert_eq!(skipping.0, StatusCode::BAD_REQUEST, "skipping chunks are refused");
    let odd = put_range(&app, &uri, "bytes 262144-362143/600000", &data[262_144..362_144]).await;
    assert_eq!(odd.0, StatusCode::BAD_REQUEST, "chunks other than the last are 256 KiB multiples");
    let short = put_range(&app, &uri, "bytes 262144-524287/600000", &data[262_144..300_000]).await;
    assert_eq!(short.0, StatusCode::BAD_REQUEST, "a cut chunk commits nothing");
    assert_eq!(put_range(&app, &uri, "bytes */600000", b"").await.1, Some("bytes=0-262143".into()));

    let (_, status) =
        call(&app, &format!("/api/uploads/{id}/resumable/status"), serde_json::json!({"offset": 262_144}))
            .await;
    assert_eq!(status["session"]["last_known_offset"], 262_144);
    assert_eq!(put_range(&app, &uri, "bytes 262144-599999/600000", &data[262_144..]).await.0, StatusCode::OK);
    assert_eq!(
        put_range(&app, &uri, "bytes */600000", b"").await.0,
        StatusCode::OK,
        "complete stays complete"
    );

    let (_, done) = call(&app, &format!("/api/uploads/{id}/complete"), serde_json::json!({})).await;
    assert_eq!(done["session"]["state"], "completed", "{done}");
    assert_eq!(done["asset"]["sha256"], hex::encode(Sha256::digest(&data)).as_str());
}

#[tokio::test]
async fn cancelling_a_resumable_session_deletes_it_at_the_store() {
    let app = app(900, 3_600);
    let body = serde_json::json!({"filename": "r.bin", "content_type": "text/plain", "byte_size": 10,
                                  "upload_strategy": "resumable"});
    let (_, created) = call(&app, "/api/uploads", body).await;
    let id = created["session"]["id"].as_str().unwrap().to_owned();
    let (_, signed) = call(&app, &format!("/api/uploads/{id}/sign"), serde_json::json!({})).await;
    let uri = path_of(signed["session"]["session_uri"].as_str().unwrap());
    let (status, _, _) = send(&app, "DELETE", &uri, "", vec![]).await;
    assert_eq!(status.as_u16(), 499);
    assert_eq!(put_range(&app, &uri, "bytes */10", b"").await.0, StatusCode::NOT_FOUND);
    let forged = uri.replace("sig=", "sig=00");
    assert_eq!(put_range(&app, &forged, "bytes */10", b"").await.0, StatusCode::FORBIDDEN);
    let (_, cancelled) = call(&app, &format!("/api/uploads/{id}/cancel"), serde_json::json!({})).await;
    assert_eq!(cancelled["session"]["state"], "aborted");
}

#[tokio::test]
async fn tus_on_the_embedded_server() {
    let app = app(900, 3_600);
    let data: Vec<u8> = (0..300_000usize).map(|i| (i % 241) as u8).collect();
    let body = serde_json::json!({"filename": "t.bin", "content_type": "text/plain", "byte_size": data.len(),
                                  "upload_strategy": "resumable", "resumable_protocol": "tus"});
    let (_, created) = call(&app, "/api/uploads", body).await;
    assert_eq!(created["session"]["resumable_protocol"], "tus");
    let id = created["session"]["id"].as_str().unwrap().to_owned();
    let (_, signed) = call(&app, &format!("/api/uploads/{id}/sign"), serde_json::json!({})).await;
    let path = path_of(signed["session"]["session_uri"].as_str().unwrap());
    assert!(path.starts_with("/tus/"), "the broker pre-created the upload: {path}");

    let options = tus(&app, "OPTIONS", &path, &[], vec![]).await;
    assert_eq!(options.headers()["tus-extension"], crate::embedded::TUS_EXTENSIONS);
    assert_eq!(options.headers()["tus-checksum-algorithm"], "crc32c,md5,sha1,sha256");
    let v = [("tus-resumable", "1.0.0".to_owned())];
    let head = tus(&app, "HEAD", &path, &v, vec![]).await;
    assert_eq!(
        (head.status(), &head.headers()["upload-offset"]),
        (StatusCode::OK, &"0".parse::<HeaderValue>().unwrap())
    );
    assert!(head.headers().contains_key("upload-expires"));
    assert_eq!(tus(&app, "HEAD", &path, &[], vec![]).await.status(), StatusCode::PRECONDITION_FAILED);

    let sha1 = |bytes: &[u8]| {
        rindle_upload::wire::tus::checksum_header(
            rindle_upload::transport::ChecksumAlgorithm::Sha1,
            &sha1::Sha1::digest(bytes),
        )
    };
    let wrong =
        tus(&app, "PATCH", &path, &patch_headers(0, Some(sha1(b"other"))), data[..100_000].to_vec()).await;
    assert_eq!(wrong.status().as_u16(), 460, "a checksum mismatch keeps nothing");
    let first =
        tus(&app, "PATCH", &path, &patch_headers(0, Some(sha1(&data[..100_000]))), data[..100_000].to_vec())
            .await;
    assert_eq!(
        (first.status(), first.headers()["upload-offset"].to_str().unwrap()),
        (StatusCode::NO_CONTENT, "100000")
    );
    let conflict = tus(&app, "PATCH", &path, &patch_headers(0, None), data[..10].to_vec()).await;
    assert_eq!(conflict.status(), StatusCode::CONFLICT);
    let last = tus(&app, "PATCH", &path, &patch_headers(100_000, None), data[100_000..].to_vec()).await;
    assert_eq!(last.headers()["upload-offset"], "300000");

    let (_, status) =
        call(&app, &format!("/api/uploads/{id}/resumable/status"), serde_json::json!({"offset": 300_000}))
            .await;
    assert_eq!(status["session"]["last_known_offset"], 300_000);
    let (_, done) = call(&app, &format!("/api/uploads/{id}/complete"), serde_json::json!({})).await;
    assert_eq!(done["session"]["state"], "completed", "{done}");
    assert_eq!(done["asset"]["sha256"], hex::encode(Sha256::digest(&data)).as_str());
}

#[tokio::test]
async fn tus_termination_expiration_and_no_anonymous_creation() {
    let app = app(900, 3_600);
    let v = ("tus-resumable", "1.0.0".to_owned());
    let anonymous = tus(&app, "POST", "/tus", &[v.clone(), ("upload-length", "5".into())], vec![]).await;
    assert_eq!(anonymous.status(), StatusCode::METHOD_NOT_ALLOWED, "uploads come only with a session");
    let (_, path) = signed_resumable(&app, 5, "tus").await;
    assert_eq!(
        tus(&app, "DELETE", &path, std::slice::from_ref(&v), vec![]).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        tus(&app, "HEAD", &path, std::slice::from_ref(&v), vec![]).await.status(),
        StatusCode::NOT_FOUND
    );

    let (expiring, state) = app_and_state(900, 3_600, 0);
    let (_, path) = signed_resumable(&expiring, 5, "tus").await;
    state.clock.advance(Duration::from_secs(2));
    assert_eq!(tus(&expiring, "HEAD", &path, &[v], vec![]).await.status(), StatusCode::GONE);
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn a_resumable_object_completes_only_with_the_hash_its_last_chunk_claims() {
    let app = app(900, 3_600);
    let data: Vec<u8> = (0..300_000usize).map(|i| (i % 239) as u8).collect();
    let (id, uri) = signed_resumable(&app, data.len(), "gcs").await;
    put_range(&app, &uri, "bytes 0-262143/300000", &data[..262_144]).await;
    let last = |hash: String| {
        let (app, uri, tail) = (app.clone(), uri.clone(), data[262_144..].to_vec());
        async move {
            let headers = [("content-range", "bytes 262144-299999/300000".to_owned()), ("x-goog-hash", hash)];
            request(&app, "PUT", &uri, &headers, tail).await.0
        }
    };
    let mut corrupted = data.clone();
    corrupted[7] ^= 0x80;
    let wrong = format!("crc32c={}", b64(&crc32c::crc32c(&corrupted).to_be_bytes()));
    assert_eq!(last(wrong).await, StatusCode::BAD_REQUEST, "the whole object's hash is checked");
    assert_eq!(
        put_range(&app, &uri, "bytes */300000", b"").await.1,
        Some("bytes=0-262143".into()),
        "nothing committed"
    );
    let right =
        format!("crc32c={},md5={}", b64(&crc32c::crc32c(&data).to_be_bytes()), b64(&md5::Md5::digest(&data)));
    assert_eq!(last(right).await, StatusCode::OK);
    let (_, done) = call(&app, &format!("/api/uploads/{id}/complete"), serde_json::json!({})).await;
    assert_eq!(done["asset"]["sha256"], hex::encode(Sha256::digest(&data)).as_str());
}

fn crc32c_of(bytes: &[u8]) -> serde_json::Value {
    serde_json::json!({"algorithm": "crc32c", "value": b64(&crc32c::crc32c(bytes).to_be_bytes())})
}

#[tokio::test]
async fn urls_signed_with_a_checksum_take_only_bytes_that_have_it() {
    let app = app(900, 3_600);
    let (_, created) = initiate(&app, 5, "text/plain").await;
    let id = created["session"]["id"].as_str().unwrap().to_owned();
    let (status, refused) = call(
        &app,
        &format!("/api/uploads/{id}/sign"),
        serde_json::json!({"checksum": {"algorithm": "md5", "value": "AAAA"}}),
    )
    .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    let (_, signed) =
        call(&app, &format!("/api/uploads/{id}/sign"), serde_json::json!({"checksum": crc32c_of(b"hello")}))
            .await;
    let header = signed["upload"]["headers"]["x-amz-checksum-crc32c"].as_str().unwrap().to_owned();
    assert_eq!(header, b64(&crc32c::crc32c(b"hello").to_be_bytes()), "the client is told to send it");
    let path = path_of(signed["upload"]["url"].as_str().unwrap());
    let put = |claim: Option<&str>, body: &'static [u8]| {
        let (app, path) = (app.clone(), path.clone());
        let mut headers = vec![("content-type", "text/plain".to_owned())];
        headers.extend(claim.map(|value| ("x-amz-checksum-crc32c", value.to_owned())));
        async move { request(&app, "PUT", &path, &headers, body.to_vec()).await.0 }
    };
    assert_eq!(put(None, b"hello").await, StatusCode::FORBIDDEN, "the checksum is part of the signature");
    assert_eq!(put(Some("AAAAAA=="), b"hello").await, StatusCode::FORBIDDEN, "and only that checksum");
    assert_eq!(put(Some(&header), b"hellm").await, StatusCode::BAD_REQUEST, "a flipped bit is refused");
    assert_eq!(put(Some(&header), b"hello").await, StatusCode::OK);

    let (part_session, _) = initiate_multipart(&app, 10).await;
    let body = serde_json::json!({"part_numbers": [1], "checksums": {"1": crc32c_of(b"0123456789")}});
    let (_, signed) = call(&app, &format!("/api/uploads/{part_session}/parts/sign"), body).await;
    let header =
        signed["parts"][0]["upload"]["headers"]["x-amz-checksum-crc32c"].as_str().unwrap().to_owned();
    let url = path_of(signed["parts"][0]["upload"]["url"].as_str().unwrap());
    let claim = [("x-amz-checksum-crc32c", header)];
    assert_eq!(request(&app, "PUT", &url, &[], b"0123456789".to_vec()).await.0, StatusCode::FORBIDDEN);
    assert_eq!(request(&app, "PUT", &url, &claim, b"0123456788".to_vec()).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(request(&app, "PUT", &url, &claim, b"0123456789".to_vec()).await.0, StatusCode::OK);
}

#[tokio::test]
async fn complete_compares_the_clients_checksum_of_the_whole_file() {
    let (app, state) = app_and_state(900, 3_600, 3_600);
    for (claimed, outcome) in [(b"hellm", "failed"), (b"hello", "completed")] {
        let (id, path) = signed_put(&app, 5).await;
        assert_eq!(send(&app, "PUT", &path, "text/plain", b"hello".to_vec()).await.0, StatusCode::OK);
        let body = serde_json::json!({"checksum": crc32c_of(claimed)});
        let (_, done) = call(&app, &format!("/api/uploads/{id}/complete"), body).await;
        assert_eq!(done["session"]["state"], outcome, "{done}");
        let key = path.trim_start_matches("/store/").split('?').next().unwrap();
        assert_eq!(state.store.local().unwrap().object_path(key).unwrap().exists(), outcome == "completed");
        if outcome == "failed" {
            assert_eq!(
                done["session"]["failure_reason"],
                "the stored object's CRC32C does not match the one the client computed of the file"
            );
        }
        // A retried complete (the first answer lost on the way) is answered
        // the same, whichever way verification ended.
        let body = serde_json::json!({"checksum": crc32c_of(claimed)});
        let (status, again) = call(&app, &format!("/api/uploads/{id}/complete"), body).await;
        assert_eq!((status, &again["session"]), (StatusCode::OK, &done["session"]), "{again}");
    }
    for algorithm in ["md5", "sha256"] {
        let (id, path) = signed_put(&app, 5).await;
        send(&app, "PUT", &path, "text/plain", b"hello".to_vec()).await;
        let digest = if algorithm == "md5" {
            md5::Md5::digest(b"hello").to_vec()
        } else {
            Sha256::digest(b"hello").to_vec()
        };
        let body = serde_json::json!({"checksum": {"algorithm": algorithm, "value": b64(&digest)}});
        let (_, done) = call(&app, &format!("/api/uploads/{id}/complete"), body).await;
        assert_eq!(done["session"]["state"], "completed", "{algorithm}");
    }
}

#[test]
fn the_page_origin_passed_to_gcs_is_one_cors_allows() {
    let dir = std::env::temp_dir();
    let mut config = test_config(&dir);
    let origin = |value: &str| {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(header::ORIGIN, HeaderValue::from_str(value).unwrap());
        headers
    };
    assert_eq!(
        super::page_origin(&config, &origin("https://app.example")),
        Some("https://app.example".into())
    );
    for not_an_origin in
        ["https://app.example/path", "null", "javascript:alert(1)", "https://app.example:443"]
    {
        assert_eq!(super::page_origin(&config, &origin(not_an_origin)), None, "{not_an_origin}");
    }
    assert_eq!(super::page_origin(&config, &axum::http::HeaderMap::new()), None);
    config.allowed_origins = vec!["https://app.example".into()];
    assert_eq!(super::page_origin(&config, &origin("https://other.example")), None, "only an allowed one");
}
