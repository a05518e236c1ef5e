//! The reference broker against the attacks of its hardening issue, one
//! test per hole (docs/security.md): each fails on a broker that lacks the
//! defence.

use crate::config::AuthMode;
use crate::test_broker::*;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use futures::SinkExt;
use http_body_util::BodyExt;
use std::time::Duration;
use tower::ServiceExt;

const EMPTY: fn() -> serde_json::Value = || serde_json::json!({});

async fn get(app: &Router, path: &str) -> (StatusCode, HeaderMap, Vec<u8>) {
    request(app, "GET", path, &[cookie_of(ALICE)], vec![]).await
}

async fn put(app: &Router, path: &str, bytes: &[u8]) -> StatusCode {
    send(app, "PUT", path, "text/plain", bytes.to_vec()).await.0
}

fn key_of(path: &str) -> String {
    path.trim_start_matches("/store/").split('?').next().unwrap().to_owned()
}

#[tokio::test]
async fn a_put_url_writes_once_and_never_after_its_session_ended() {
    let app = app(900, 3_600);
    let (id, path) = signed_put(&app, 5).await;
    assert_eq!(put(&app, &path, b"hello").await, StatusCode::OK);
    assert_eq!(put(&app, &path, b"hello").await, StatusCode::OK, "a retried PUT of the same bytes");
    assert_eq!(
        put(&app, &path, b"HELLO").await,
        StatusCode::PRECONDITION_FAILED,
        "other bytes never overwrite"
    );
    let (_, done) = call(&app, &format!("/api/uploads/{id}/complete"), EMPTY()).await;
    assert_eq!(done["session"]["state"], "completed");
    assert_eq!(put(&app, &path, b"HELLO").await, StatusCode::FORBIDDEN, "completed: the URL writes nothing");
    let (_, _, stored) = get(&app, &format!("/objects/{}", key_of(&path))).await;
    assert_eq!(stored, b"hello");

    let (id, path) = signed_put(&app, 5).await;
    let (_, cancelled) = call(&app, &format!("/api/uploads/{id}/cancel"), EMPTY()).await;
    assert_eq!(cancelled["session"]["state"], "aborted");
    assert_eq!(put(&app, &path, b"hello").await, StatusCode::FORBIDDEN, "aborted: the URL writes nothing");

    let (expiring, state) = app_and_state(900, 1, 3_600);
    let (_, path) = signed_put(&expiring, 5).await;
    state.clock.advance(Duration::from_secs(2));
    assert_eq!(
        put(&expiring, &path, b"hello").await,
        StatusCode::FORBIDDEN,
        "expired: the URL writes nothing"
    );
    let local = state.store.local().unwrap();
    assert!(!local.object_path(&key_of(&path)).unwrap().exists());
}

#[tokio::test]
async fn cancel_removes_what_was_stored() {
    let (app, state) = app_and_state(900, 3_600, 3_600);
    let (id, path) = signed_put(&app, 5).await;
    assert_eq!(put(&app, &path, b"hello").await, StatusCode::OK);
    call(&app, &format!("/api/uploads/{id}/cancel"), EMPTY()).await;
    assert!(!state.store.local().unwrap().object_path(&key_of(&path)).unwrap().exists());
}

/// A session of `content_type` holding `bytes`, completed (or failed);
/// (reply of complete, object path).
async fn stored_as(
    app: &Router,
    filename: &str,
    content_type: &str,
    bytes: &[u8],
) -> (serde_json::Value, String) {
    let body = serde_json::json!({"filename": filename, "content_type": content_type, "byte_size": bytes.len(),
                                  "upload_strategy": "presigned_put"});
    let (status, created) = call(app, "/api/uploads", body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["session"]["id"].as_str().unwrap().to_owned();
    let (_, signed) = call(app, &format!("/api/uploads/{id}/sign"), EMPTY()).await;
    let path = path_of(signed["upload"]["url"].as_str().unwrap());
    let (status, _, _) = send(app, "PUT", &path, content_type, bytes.to_vec()).await;
    assert_eq!(status, StatusCode::OK);
    let object = format!("/objects/{}", key_of(&path));
    assert_eq!(get(app, &object).await.0, StatusCode::NOT_FOUND, "nothing is served before verification");
    let (_, done) = call(app, &format!("/api/uploads/{id}/complete"), EMPTY()).await;
    (done, object)
}

#[tokio::test]
async fn downloads_are_inert_on_the_brokers_origin() {
    let (app, state) =
        broker_with(|config| config.profile.allowed_types = vec!["image/*".into(), "text/*".into()]);
    let page = b"<!DOCTYPE html><html><script>alert(document.cookie)</script></html>";

    // Declared an image, it is a page: verification fails, the bytes go.
    let (done, object) = stored_as(&app, "x.html", "image/png", page).await;
    assert_eq!(done["session"]["state"], "failed");
    assert_eq!(done["session"]["failure_reason"], "the content is text/html, not the declared image/png");
    assert_eq!(get(&app, &object).await.0, StatusCode::NOT_FOUND);
    let key = object.trim_start_matches("/objects/");
    assert!(
        !state.store.local().unwrap().object_path(key).unwrap().exists(),
        "a failed session's bytes are deleted"
    );

    // Declared a page: served as one, but as an attachment that runs nothing.
    let (done, object) = stored_as(&app, "x.html", "text/html", page).await;
    assert_eq!(done["session"]["state"], "completed");
    let (status, headers, bytes) = get(&app, &object).await;
    assert_eq!((status, bytes.as_slice()), (StatusCode::OK, page.as_slice()));
    assert_eq!(headers[header::CONTENT_TYPE], "text/html");
    assert_eq!(headers[header::CONTENT_DISPOSITION], "attachment; filename=\"x.html\"");
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(headers[header::CONTENT_SECURITY_POLICY], "default-src 'none'; sandbox");

    // Plain text named .svg is served as the text it was verified as.
    let (done, object) = stored_as(&app, "x.svg", "text/plain", b"just words").await;
    assert_eq!(done["session"]["state"], "completed");
    let (_, headers, _) = get(&app, &object).await;
    assert_eq!(headers[header::CONTENT_TYPE], "text/plain");
    assert_eq!(headers[header::CONTENT_DISPOSITION], "inline; filename=\"x.svg\"");
}

#[tokio::test]
async fn a_completed_tus_upload_takes_no_patch_and_no_delete() {
    let app = app(900, 3_600);
    let (id, path) = signed_resumable(&app, 5, "tus").await;
    let written = tus(&app, "PATCH", &path, &patch_headers(0, None), b"hello".to_vec()).await;
    assert_eq!(written.status(), StatusCode::NO_CONTENT);
    let (_, done) = call(&app, &format!("/api/uploads/{id}/complete"), EMPTY()).await;
    assert_eq!(done["session"]["state"], "completed");
    let empty = tus(&app, "PATCH", &path, &patch_headers(5, None), vec![]).await;
    assert_eq!(empty.status(), StatusCode::FORBIDDEN, "an empty PATCH does not truncate the asset");
    let v = [("tus-resumable", "1.0.0".to_owned())];
    assert_eq!(tus(&app, "DELETE", &path, &v, vec![]).await.status(), StatusCode::FORBIDDEN);
    let object = path_of(done["asset"]["url"].as_str().unwrap());
    assert_eq!(get(&app, &object).await.2, b"hello");
}

#[tokio::test]
async fn each_embedded_protocol_serves_only_its_own_sessions() {
    let app = app(900, 3_600);
    let (_, uri) = signed_resumable(&app, 5, "gcs").await;
    let gcs_id = uri.trim_start_matches("/store-resumable/").split('?').next().unwrap().to_owned();
    let tus_path = format!("/tus/{gcs_id}");
    let patched = tus(&app, "PATCH", &tus_path, &patch_headers(0, None), b"hello".to_vec()).await;
    assert_eq!(
        patched.status(),
        StatusCode::NOT_FOUND,
        "unsigned tus routes do not reach GCS-style sessions"
    );
    let v = [("tus-resumable", "1.0.0".to_owned())];
    assert_eq!(tus(&app, "HEAD", &tus_path, &v, vec![]).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(tus(&app, "DELETE", &tus_path, &v, vec![]).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(put_range(&app, &uri, "bytes */5", b"").await.0, StatusCode::PERMANENT_REDIRECT, "untouched");
}

#[tokio::test]
async fn part_urls_take_only_their_planned_size() {
    let app = app(900, 3_600);
    let (id, _) = initiate_multipart(&app, (6 << 20) + 1).await;
    let (_, signed) =
        call(&app, &format!("/api/uploads/{id}/parts/sign"), serde_json::json!({"part_numbers": [1, 2]}))
            .await;
    assert_eq!(try_put_part(&app, &signed, 0, &vec![1u8; (5 << 20) + 1]).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(try_put_part(&app, &signed, 1, &vec![1u8; 5 << 20]).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(try_put_part(&app, &signed, 1, &[1u8; 2]).await.0, StatusCode::BAD_REQUEST, "short");
    assert_eq!(try_put_part(&app, &signed, 1, &vec![1u8; (1 << 20) + 1]).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_part_in_flight_during_cancel_stores_nothing() {
    let (app, state) = app_and_state(900, 3_600, 3_600);
    let (id, _) = initiate_multipart(&app, 6 << 20).await;
    let (_, signed) =
        call(&app, &format!("/api/uploads/{id}/parts/sign"), serde_json::json!({"part_numbers": [1]})).await;
    let url = path_of(signed["parts"][0]["upload"]["url"].as_str().unwrap());
    let (mut sender, receiver) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let request = Request::builder()
        .method("PUT")
        .uri(url)
        .header(header::HOST, "broker.test")
        .body(Body::from_stream(receiver))
        .unwrap();
    let in_flight = tokio::spawn(app.clone().oneshot(request));
    sender.send(Ok(Bytes::from(vec![7u8; 1 << 20]))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (_, cancelled) = call(&app, &format!("/api/uploads/{id}/cancel"), EMPTY()).await;
    assert_eq!(cancelled["session"]["state"], "aborted");
    sender.send(Ok(Bytes::from(vec![7u8; 4 << 20]))).await.unwrap();
    drop(sender);
    let answer = in_flight.await.unwrap().unwrap();
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        state.store.local().unwrap().open_multipart_uploads(),
        0,
        "the part directory is not recreated"
    );
}

#[tokio::test]
async fn a_session_is_acted_on_only_by_its_owner() {
    let app = app(900, 3_600);
    let (id, _) = signed_put(&app, 5).await;
    for (route, method) in [
        ("", "GET"),
        ("/sign", "POST"),
        ("/complete", "POST"),
        ("/cancel", "POST"),
        ("/resumable/status", "POST"),
        ("/parts", "POST"),
    ] {
        let headers = [("content-type", "application/json".to_owned()), cookie_of(BOB)];
        let body = if method == "POST" { b"{\"offset\": 0}".to_vec() } else { vec![] };
        let (status, _, reply) =
            request(&app, method, &format!("/api/uploads/{id}{route}"), &headers, body).await;
        let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("session_not_found")),
            "{route}"
        );
    }
    let (status, shown, _) = get(&app, &format!("/api/uploads/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{shown:?}");

    // A first visit gets its owner cookie, which page code cannot read.
    let body = serde_json::json!({"filename": "a.txt", "content_type": "text/plain", "byte_size": 1,
                                  "upload_strategy": "presigned_put", "idempotency_key": "k1"});
    let json = [("content-type", "application/json".to_owned())];
    let (status, headers, _) =
        request(&app, "POST", "/api/uploads", &json, body.to_string().into_bytes()).await;
    assert_eq!(status, StatusCode::CREATED);
    let cookie = headers[header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.starts_with("rindle_owner=") && cookie.contains("; HttpOnly; SameSite=Lax"), "{cookie}");

    // An idempotency key is its owner's: another caller's finds nothing.
    let (_, alices) = call(&app, "/api/uploads", body.clone()).await;
    let (_, bobs) = call_as(&app, BOB, "/api/uploads", body).await;
    assert_ne!(alices["session"]["id"], bobs["session"]["id"]);
}

#[tokio::test]
async fn bearer_mode_needs_a_configured_token() {
    let (alice, bob) = ("token-of-alice-0123".to_owned(), "token-of-bob-456789".to_owned());
    let tokens = vec![alice.clone(), bob.clone()];
    let (app, _) = broker_with(|config| config.auth = AuthMode::Bearer(tokens));
    let body = serde_json::json!({"filename": "a.txt", "content_type": "text/plain", "byte_size": 1,
                                  "upload_strategy": "presigned_put"})
    .to_string()
    .into_bytes();
    let json = ("content-type", "application/json".to_owned());
    let bearer = |token: &str| ("authorization", format!("Bearer {token}"));
    for refused in [vec![json.clone()], vec![json.clone(), bearer("not-a-known-token")]] {
        let (status, headers, reply) = request(&app, "POST", "/api/uploads", &refused, body.clone()).await;
        let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthorized"))
        );
        assert!(!headers.contains_key(header::SET_COOKIE));
    }
    let (status, _, created) =
        request(&app, "POST", "/api/uploads", &[json.clone(), bearer(&alice)], body).await;
    assert_eq!(status, StatusCode::CREATED);
    let created: serde_json::Value = serde_json::from_slice(&created).unwrap();
    let shown = format!("/api/uploads/{}", created["session"]["id"].as_str().unwrap());
    assert_eq!(request(&app, "GET", &shown, &[bearer(&alice)], vec![]).await.0, StatusCode::OK);
    assert_eq!(request(&app, "GET", &shown, &[bearer(&bob)], vec![]).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn handed_out_urls_never_come_from_an_unlisted_host() {
    let app = app(900, 3_600);
    let (_, created) = initiate(&app, 5, "text/plain").await;
    let id = created["session"]["id"].as_str().unwrap();
    let request = Request::builder()
        .method("POST")
        .uri(format!("/api/uploads/{id}/sign"))
        .header(header::HOST, "evil.example")
        .header(header::COOKIE, format!("rindle_owner={ALICE}"))
        .body(Body::empty())
        .unwrap();
    let answer = app.clone().oneshot(request).await.unwrap();
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    let reply: serde_json::Value =
        serde_json::from_slice(&answer.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(reply["error"]["code"], "invalid_request");
    let (_, shown, _) = get(&app, &format!("/api/uploads/{id}")).await;
    assert!(!String::from_utf8_lossy(
        &shown.get(header::LOCATION).map(|h| h.as_bytes().to_vec()).unwrap_or_default()
    )
    .contains("evil"));
    let (_, signed) = call(&app, &format!("/api/uploads/{id}/sign"), EMPTY()).await;
    assert!(signed["upload"]["url"].as_str().unwrap().starts_with("http://broker.test/store/"));
}

#[tokio::test]
async fn new_sessions_are_limited_per_client_and_per_owner() {
    let (app, _) = broker_with(|config| config.limits.sessions_per_minute = 2);
    assert_eq!(initiate(&app, 1, "text/plain").await.0, StatusCode::CREATED);
    assert_eq!(initiate(&app, 1, "text/plain").await.0, StatusCode::CREATED);
    let (status, refused) = initiate(&app, 1, "text/plain").await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited"))
    );

    let (app, _) = broker_with(|config| config.limits.open_sessions = 1);
    let (_, first) = initiate(&app, 1, "text/plain").await;
    let (status, refused) = initiate(&app, 1, "text/plain").await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited"))
    );
    let id = first["session"]["id"].as_str().unwrap();
    call(&app, &format!("/api/uploads/{id}/cancel"), EMPTY()).await;
    assert_eq!(
        initiate(&app, 1, "text/plain").await.0,
        StatusCode::CREATED,
        "an ended session frees its place"
    );
}

#[tokio::test]
async fn the_sweeper_expires_sessions_and_deletes_their_bytes() {
    let (app, state) = app_and_state(900, 10, 3_600);
    let (put_id, path) = signed_put(&app, 5).await;
    assert_eq!(put(&app, &path, b"hello").await, StatusCode::OK);
    let (part_id, _) = initiate_multipart(&app, 6 << 20).await;
    let (_, signed) =
        call(&app, &format!("/api/uploads/{part_id}/parts/sign"), serde_json::json!({"part_numbers": [1]}))
            .await;
    put_part(&app, &signed, 0, &vec![1u8; 5 << 20]).await;
    assert_eq!(crate::service::sweep(&state).await.unwrap(), 0, "nothing is due yet");
    state.clock.advance(Duration::from_secs(11));
    assert_eq!(crate::service::sweep(&state).await.unwrap(), 2);
    let local = state.store.local().unwrap();
    assert!(!local.object_path(&key_of(&path)).unwrap().exists());
    assert_eq!(local.open_multipart_uploads(), 0);
    for id in [put_id, part_id] {
        let (_, _, shown) = get(&app, &format!("/api/uploads/{id}")).await;
        let shown: serde_json::Value = serde_json::from_slice(&shown).unwrap();
        assert_eq!(shown["session"]["state"], "expired");
    }
}

#[test]
fn credentials_on_disk_are_readable_by_the_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("rindle-private-{}", uuid::Uuid::new_v4()));
    crate::store::local::LocalStore::open(&dir, Duration::from_secs(1)).unwrap();
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.join("signing.key")), 0o600);
    let db = dir.join("sessions.sqlite");
    crate::private_file::restrict(&db).unwrap();
    crate::db::Db::open(&db).unwrap();
    assert_eq!(mode(&db), 0o600);
}

#[tokio::test]
async fn hostile_ids_and_gone_uploads_answer_4xx() {
    let app = app(900, 3_600);
    let long = "a".repeat(600);
    let v = ("tus-resumable", "1.0.0".to_owned());
    for id in ["..%2f..", "%2e%2e", "..", long.as_str(), "a%00b", "%ff"] {
        let path = format!("/tus/{id}");
        for method in ["HEAD", "PATCH", "DELETE"] {
            let headers = if method == "PATCH" { patch_headers(0, None) } else { vec![v.clone()] };
            let status = tus(&app, method, &path, &headers, b"x".to_vec()).await.status();
            assert!(status.is_client_error(), "{method} {path}: {status}");
        }
        let (status, _, _) =
            request(&app, "PUT", &format!("/store-resumable/{id}?expires=1&sig=00"), &[], vec![]).await;
        assert!(status.is_client_error(), "resumable {id}: {status}");
        let (status, _, _) = get(&app, &format!("/objects/{id}")).await;
        assert!(status.is_client_error(), "objects {id}: {status}");
    }
    let (id, path) = signed_resumable(&app, 5, "tus").await;
    tus(&app, "DELETE", &path, &[v], vec![]).await;
    let (status, reply) =
        call(&app, &format!("/api/uploads/{id}/resumable/status"), serde_json::json!({"offset": 0})).await;
    assert!(status.is_client_error(), "status after a DELETE: {status} {reply}");
}

#[tokio::test]
async fn content_types_are_validated_at_initiate() {
    let app = app(900, 3_600);
    for bad in ["", "text/plain\r\nX-Evil: 1", "text", "text/plain\n"] {
        let (status, reply) = initiate(&app, 1, bad).await;
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_request")),
            "{bad:?}"
        );
    }
}

async fn preflight(app: &Router, origin: &str) -> HeaderMap {
    let request = Request::builder()
        .method("OPTIONS")
        .uri("/api/uploads")
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization, content-type")
        .body(Body::empty())
        .unwrap();
    app.clone().oneshot(request).await.unwrap().headers().clone()
}

#[tokio::test]
async fn cors_follows_the_configured_origins() {
    let open = preflight(&app(900, 3_600), "http://any.test").await;
    assert_eq!(open[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert_eq!(
        open[header::ACCESS_CONTROL_ALLOW_HEADERS],
        "authorization, content-type",
        "Authorization passes"
    );
    assert!(!open.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));

    let (listed, _) = broker_with(|config| config.allowed_origins = vec!["http://app.test:*".into()]);
    let allowed = preflight(&listed, "http://app.test:3000").await;
    assert_eq!(allowed[header::ACCESS_CONTROL_ALLOW_ORIGIN], "http://app.test:3000");
    assert_eq!(allowed[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    let other = preflight(&listed, "http://evil.test").await;
    assert!(!other.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
}
