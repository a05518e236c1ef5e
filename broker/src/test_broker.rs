//! A broker for tests: the router on the embedded store (or another) in a
//! temporary directory, and requests sent through it as a browser would,
//! with the owner cookie of one person (`ALICE` unless said otherwise).

use crate::config::{AuthMode, Config, LimitsConfig, Profile};
use crate::db::Db;
use crate::routes::router;
use crate::service::AppState;
use crate::store::Store;
use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use http_body_util::BodyExt;
use rindle_upload::wire::tus::OFFSET_CONTENT_TYPE;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// Owner cookies of two people.
pub const ALICE: &str = "aa00000000000000000000000000000000000000000000000000000000000000";
pub const BOB: &str = "bb00000000000000000000000000000000000000000000000000000000000000";

pub fn app(url_ttl: u64, session_ttl: u64) -> Router {
    app_and_state(url_ttl, session_ttl, 3_600).0
}

/// The broker on the embedded store, and its state (to move its clock).
pub fn app_and_state(url_ttl: u64, session_ttl: u64, tus_ttl: u64) -> (Router, Arc<AppState>) {
    broker_with(|config| {
        config.url_ttl = Duration::from_secs(url_ttl);
        config.session_ttl = Duration::from_secs(session_ttl);
        config.tus_ttl = Duration::from_secs(tus_ttl);
    })
}

/// The broker on the embedded store, configured by `configure`.
pub fn broker_with(configure: impl FnOnce(&mut Config)) -> (Router, Arc<AppState>) {
    broker_on(configure, |dir| {
        Store::Local(
            crate::store::local::LocalStore::open(&dir.join("store"), Duration::from_secs(5)).unwrap(),
        )
    })
}

pub fn test_config(dir: &std::path::Path) -> Config {
    Config {
        host: "127.0.0.1".into(),
        port: 0,
        data_dir: dir.to_owned(),
        www_dir: dir.join("www"),
        pkg_dir: dir.join("pkg"),
        public_url: None,
        url_ttl: Duration::from_secs(900),
        session_ttl: Duration::from_secs(3_600),
        profile: Profile { max_bytes: 64 << 20, allowed_types: vec!["text/*".into()], allow_empty: true },
        s3: None,
        gcs: None,
        session_uri_ttl: Duration::from_secs(3_600),
        tus_endpoint: None,
        tus_ttl: Duration::from_secs(3_600),
        auth: AuthMode::Cookie,
        allowed_origins: vec![],
        allowed_hosts: vec!["broker.test".into()],
        limits: LimitsConfig {
            sessions_per_minute: 1_000,
            open_sessions: 1_000,
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(5),
            sweep_every: Duration::from_secs(60),
        },
    }
}

/// The broker on the store `open` makes (given the data directory).
pub fn broker_on(
    configure: impl FnOnce(&mut Config),
    open: impl FnOnce(&std::path::Path) -> Store,
) -> (Router, Arc<AppState>) {
    let dir = std::env::temp_dir().join(format!("rindle-api-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = test_config(&dir);
    configure(&mut config);
    let state = AppState {
        clock: crate::service::Clock::default(),
        db: Db::open(&dir.join("db.sqlite")).unwrap(),
        store: open(&dir),
        remote_tus: None,
        config,
        writes: Default::default(),
        limits: Default::default(),
    };
    let state = Arc::new(state);
    (router(Arc::clone(&state)), state)
}

/// A request as a browser sends it: on Host `broker.test`, with `headers`.
pub async fn request(
    app: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut request = Request::builder().method(method).uri(uri).header(header::HOST, "broker.test");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = app.clone().oneshot(request.body(Body::from(body)).unwrap()).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.into_body().collect().await.unwrap().to_bytes().to_vec())
}

pub fn cookie_of(owner: &str) -> (&'static str, String) {
    ("cookie", format!("rindle_owner={owner}"))
}

pub async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    request(app, method, uri, &[("content-type", content_type.to_owned()), cookie_of(ALICE)], body).await
}

/// A protocol call by `owner`.
pub async fn call_as(
    app: &Router,
    owner: &str,
    uri: &str,
    body: serde_json::Value,
) -> (StatusCode, serde_json::Value) {
    let headers = [("content-type", "application/json".to_owned()), cookie_of(owner)];
    let (status, _, bytes) = request(app, "POST", uri, &headers, body.to_string().into_bytes()).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("{uri} answered {status} without JSON")),
    )
}

pub async fn call(app: &Router, uri: &str, body: serde_json::Value) -> (StatusCode, serde_json::Value) {
    call_as(app, ALICE, uri, body).await
}

pub async fn initiate(app: &Router, bytes: u64, content_type: &str) -> (StatusCode, serde_json::Value) {
    let body = serde_json::json!({"filename": "notes 1.txt", "content_type": content_type, "byte_size": bytes, "upload_strategy": "presigned_put"});
    call(app, "/api/uploads", body).await
}

/// A presigned PUT session of `bytes` bytes, signed: (session id, URL path).
pub async fn signed_put(app: &Router, bytes: u64) -> (String, String) {
    let (_, created) = initiate(app, bytes, "text/plain").await;
    let id = created["session"]["id"].as_str().unwrap().to_owned();
    let (_, signed) = call(app, &format!("/api/uploads/{id}/sign"), serde_json::json!({})).await;
    (id, path_of(signed["upload"]["url"].as_str().unwrap()))
}

/// A signed resumable session of `bytes` bytes on the embedded store's
/// `protocol` ("tus" or "gcs"): (session id, upload URL path).
pub async fn signed_resumable(app: &Router, bytes: usize, protocol: &str) -> (String, String) {
    let mut body = serde_json::json!({"filename": "r.bin", "content_type": "text/plain", "byte_size": bytes,
                                      "upload_strategy": "resumable"});
    if protocol == "tus" {
        body["resumable_protocol"] = "tus".into();
    }
    let (_, created) = call(app, "/api/uploads", body).await;
    let id = created["session"]["id"].as_str().unwrap().to_owned();
    let (status, signed) = call(app, &format!("/api/uploads/{id}/sign"), serde_json::json!({})).await;
    assert_eq!(status, StatusCode::OK, "{signed}");
    (id, path_of(signed["session"]["session_uri"].as_str().unwrap()))
}

/// The part of a presigned URL after the host, to send through the router.
pub fn path_of(url: &str) -> String {
    url.strip_prefix("http://broker.test").expect("absolute URL on the Host we sent").to_owned()
}

pub async fn initiate_multipart(app: &Router, bytes: usize) -> (String, serde_json::Value) {
    let body = serde_json::json!({"filename": "big.bin", "content_type": "text/plain", "byte_size": bytes,
                                  "upload_strategy": "multipart", "part_size": 5 << 20});
    let (status, created) = call(app, "/api/uploads", body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    (created["session"]["id"].as_str().unwrap().to_owned(), created)
}

/// PUTs part `index` of a `parts/sign` answer; (status, ETag if any).
pub async fn try_put_part(
    app: &Router,
    signed: &serde_json::Value,
    index: usize,
    bytes: &[u8],
) -> (StatusCode, Option<String>) {
    let url = signed["parts"][index]["upload"]["url"].as_str().unwrap();
    let (status, headers, _) =
        send(app, "PUT", &path_of(url), "application/octet-stream", bytes.to_vec()).await;
    (status, headers.get(header::ETAG).map(|e| e.to_str().unwrap().to_owned()))
}

pub async fn put_part(app: &Router, signed: &serde_json::Value, index: usize, bytes: &[u8]) -> String {
    let (status, etag) = try_put_part(app, signed, index, bytes).await;
    assert_eq!(status, StatusCode::OK);
    etag.unwrap()
}

pub async fn put_range(
    app: &Router,
    uri_path: &str,
    range: &str,
    bytes: &[u8],
) -> (StatusCode, Option<String>) {
    let (status, headers, _) =
        request(app, "PUT", uri_path, &[("content-range", range.to_owned())], bytes.to_vec()).await;
    (status, headers.get(header::RANGE).map(|r| r.to_str().unwrap().to_owned()))
}

pub async fn tus(
    app: &Router,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Response {
    let mut request = Request::builder().method(method).uri(path).header(header::HOST, "broker.test");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    app.clone().oneshot(request.body(Body::from(body)).unwrap()).await.unwrap()
}

pub fn patch_headers(offset: u64, checksum: Option<String>) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("tus-resumable", "1.0.0".to_owned()),
        ("content-type", OFFSET_CONTENT_TYPE.to_owned()),
        ("upload-offset", offset.to_string()),
    ];
    headers.extend(checksum.map(|c| ("upload-checksum", c)));
    headers
}
