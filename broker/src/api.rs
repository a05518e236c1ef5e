//! The broker protocol v1 (docs/broker-protocol.md) over HTTP, the embedded
//! store's presigned PUT endpoint, and the static files (demo page, built
//! package, stored objects).

use crate::config::Config;
use crate::db::{Db, Record};
use crate::store::{LocalStore, PutGrant, PutQuery, Refusal};
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use rindle_upload::broker::{Asset, BrokerReply, InitiateRequest, SignedRequest};
use rindle_upload::error::ErrorBody;
use rindle_upload::{ErrorCode, Session, SessionState, UploadError, UploadStrategy};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tower_http::cors::{Any, CorsLayer};
use tower_http::services::ServeDir;

pub struct AppState {
    pub config: Config,
    pub db: Db,
    pub store: LocalStore,
}

pub fn router(state: Arc<AppState>) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods(Any)
        .allow_headers(Any)
        .expose_headers([header::ETAG, header::CONTENT_LENGTH])
        .max_age(Duration::from_secs(600));
    Router::new()
        .route("/api/uploads", post(initiate))
        .route("/api/uploads/{id}", get(show))
        .route("/api/uploads/{id}/sign", post(sign))
        .route("/api/uploads/{id}/complete", post(complete))
        .route("/api/uploads/{id}/cancel", post(cancel))
        // Reserved in protocol v1 for the multipart and resumable strategies.
        .route("/api/uploads/{id}/parts", get(reserved))
        .route("/api/uploads/{id}/parts/sign", post(reserved))
        .route("/api/uploads/{id}/multipart/complete", post(reserved))
        .route("/api/uploads/{id}/resumable/status", post(reserved))
        .route("/store/{*key}", put(store_put))
        .nest_service("/objects", ServeDir::new(state.store.objects_dir()))
        .nest_service("/pkg", ServeDir::new(&state.config.pkg_dir))
        .fallback_service(ServeDir::new(&state.config.www_dir))
        .layer(cors)
        .with_state(state)
}

/// A protocol error: status plus `{"error": {"code", "message", "retryable"}}`.
pub struct ApiError(StatusCode, ErrorBody);

impl ApiError {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError(status, ErrorBody::new(code, message))
    }
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> Self {
        let status = match e.code {
            ErrorCode::IllegalTransition => StatusCode::CONFLICT,
            ErrorCode::SessionExpired => StatusCode::GONE,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(status, e.code, e.message)
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        tracing::error!("database: {e}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, "database error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

type ApiResult = Result<(StatusCode, Json<BrokerReply>), ApiError>;

fn now() -> SystemTime {
    SystemTime::now()
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Where this broker is reached from, for absolute URLs in replies.
fn base_url(config: &Config, headers: &HeaderMap) -> String {
    if let Some(url) = &config.public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    format!("http://{host}")
}

fn reply(record: Record) -> Json<BrokerReply> {
    Json(BrokerReply { session: record.session, upload: None, asset: record.asset })
}

/// Loads a session, first letting it expire if its time has passed.
fn load(state: &AppState, id: &str) -> Result<Record, ApiError> {
    let mut record = state.db.get(id)?.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, ErrorCode::SessionNotFound, "no such upload session")
    })?;
    let session = &mut record.session;
    let past_ttl = session
        .expires_at
        .as_deref()
        .and_then(|t| humantime::parse_rfc3339(t).ok())
        .is_some_and(|t| now() > t);
    if past_ttl && session.state.can_transition_to(SessionState::Expired) {
        session.transition(SessionState::Expired)?;
        session.updated_at = Some(timestamp(now()));
        state.db.put(&record)?;
    }
    Ok(record)
}

fn save(state: &AppState, record: &mut Record) -> Result<(), ApiError> {
    record.session.updated_at = Some(timestamp(now()));
    Ok(state.db.put(record)?)
}

fn refuse_if_expired(record: &Record) -> Result<(), ApiError> {
    if record.session.state == SessionState::Expired {
        return Err(ApiError::new(
            StatusCode::GONE,
            ErrorCode::SessionExpired,
            "the upload session has expired",
        ));
    }
    Ok(())
}

/// Object keys keep a readable, safe rendering of the file name.
fn key_for(asset_id: &str, filename: &str) -> String {
    let safe: String = filename
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' { c } else { '_' })
        .take(100)
        .collect();
    let safe = safe.trim_start_matches('.');
    format!("uploads/{asset_id}/{}", if safe.is_empty() { "file" } else { safe })
}

async fn initiate(
    State(state): State<Arc<AppState>>,
    body: Result<Json<InitiateRequest>, JsonRejection>,
) -> ApiResult {
    let Json(request) =
        body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, e.body_text()))?;
    let profile = &state.config.profile;
    if request.filename.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            "filename must not be empty",
        ));
    }
    if request.upload_strategy != UploadStrategy::PresignedPut {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::UnsupportedStrategy,
            format!("this broker does not offer {:?} yet", request.upload_strategy),
        ));
    }
    profile.check(request.byte_size, &request.content_type).map_err(ApiError::from)?;

    let created = now();
    let id = uuid::Uuid::new_v4().to_string();
    let asset_id = uuid::Uuid::new_v4().to_string();
    let session = Session {
        upload_key: Some(key_for(&asset_id, &request.filename)),
        id,
        asset_id: Some(asset_id),
        state: SessionState::Initialized,
        upload_strategy: request.upload_strategy,
        upload_length: Some(request.byte_size),
        resumable_protocol: None,
        multipart_upload_id: None,
        multipart_parts: vec![],
        session_uri: None,
        session_uri_expires_at: None,
        last_known_offset: None,
        region_hint: None,
        expires_at: Some(timestamp(created + state.config.session_ttl)),
        verified_at: None,
        failure_reason: None,
        inserted_at: Some(timestamp(created)),
        updated_at: Some(timestamp(created)),
    };
    let record =
        Record { session, filename: request.filename, content_type: request.content_type, asset: None };
    state.db.put(&record)?;
    tracing::info!(session = %record.session.id, bytes = request.byte_size, "session initialized");
    Ok((StatusCode::CREATED, reply(record)))
}

async fn show(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> ApiResult {
    Ok((StatusCode::OK, reply(load(&state, &id)?)))
}

async fn sign(State(state): State<Arc<AppState>>, Path(id): Path<String>, headers: HeaderMap) -> ApiResult {
    let mut record = load(&state, &id)?;
    refuse_if_expired(&record)?;
    record.session.transition(SessionState::Signed)?;
    save(&state, &mut record)?;

    let ttl = state.config.url_ttl;
    let expires = now() + ttl;
    let grant = PutGrant {
        key: record.session.upload_key.clone().unwrap_or_default(),
        length: record.session.upload_length.unwrap_or(0),
        content_type: record.content_type.clone(),
        expires_unix: unix(expires),
    };
    let url = format!(
        "{}/store/{}?{}",
        base_url(&state.config, &headers),
        grant.key,
        state.store.presign_query(&grant)
    );
    let upload = SignedRequest {
        method: "PUT".into(),
        url: rindle_upload::secret::Secret::new(url),
        headers: BTreeMap::from([("Content-Type".to_owned(), record.content_type.clone())]),
        expires_at: Some(timestamp(expires)),
        expires_in: ttl.as_secs(),
    };
    Ok((StatusCode::OK, Json(BrokerReply { session: record.session, upload: Some(upload), asset: None })))
}

async fn complete(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let mut record = load(&state, &id)?;
    if record.session.state == SessionState::Completed {
        return Ok((StatusCode::OK, reply(record)));
    }
    refuse_if_expired(&record)?;
    if !matches!(record.session.state, SessionState::Uploaded | SessionState::Verifying) {
        record.session.transition(SessionState::Uploaded)?;
    }
    record.session.transition(SessionState::Verifying)?;
    save(&state, &mut record)?;

    match verify(&state, &record, &base_url(&state.config, &headers)).await {
        Ok(asset) => {
            record.session.transition(SessionState::Completed)?;
            record.session.verified_at = Some(timestamp(now()));
            record.asset = Some(asset);
            tracing::info!(session = %record.session.id, "session completed");
        }
        Err(reason) => {
            record.session.transition(SessionState::Failed)?;
            tracing::info!(session = %record.session.id, %reason, "session failed verification");
            record.session.failure_reason = Some(reason);
        }
    }
    save(&state, &mut record)?;
    Ok((StatusCode::OK, reply(record)))
}

/// Checks the stored object against the session and the profile.
async fn verify(state: &AppState, record: &Record, base: &str) -> Result<Asset, String> {
    let session = &record.session;
    let key = session.upload_key.clone().unwrap_or_default();
    let (size, sha256) = match state.store.inspect(&key).await {
        Ok(Some(found)) => found,
        Ok(None) => return Err("no object was stored for this session".into()),
        Err(e) => return Err(format!("the stored object could not be read: {e}")),
    };
    let declared = session.upload_length.unwrap_or(0);
    if size != declared {
        return Err(format!("stored {size} bytes, but the session declared {declared}"));
    }
    state.config.profile.check(size, &record.content_type).map_err(|e| e.message)?;
    Ok(Asset {
        id: session.asset_id.clone().unwrap_or_default(),
        url: format!("{base}/objects/{key}"),
        key,
        byte_size: size,
        content_type: record.content_type.clone(),
        sha256,
    })
}

async fn cancel(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> ApiResult {
    let mut record = load(&state, &id)?;
    record.session.transition(SessionState::Aborted)?;
    if let Some(key) = &record.session.upload_key {
        if let Err(e) = state.store.delete(key).await {
            tracing::warn!(session = %record.session.id, "could not delete the object of a cancelled session: {e}");
        }
    }
    save(&state, &mut record)?;
    tracing::info!(session = %record.session.id, "session aborted");
    Ok((StatusCode::OK, reply(record)))
}

async fn reserved() -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        ErrorCode::UnsupportedStrategy,
        "reserved in broker protocol v1 for a strategy this broker does not offer yet",
    )
}

/// The embedded store's presigned PUT.
async fn store_put(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
    query: Result<Query<PutQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let result = match query {
        Ok(Query(query)) => match state.store.check_put(&key, &query, content_type, unix(now())) {
            Ok(grant) => state.store.write(&grant, body).await,
            Err(refusal) => Err(refusal),
        },
        Err(_) => Err(Refusal::new(403, "AccessDenied", "the URL is not signed")),
    };
    match result {
        Ok(etag) => {
            let etag = HeaderValue::from_str(&format!("\"{etag}\"")).expect("hex is a valid header value");
            (StatusCode::OK, [(header::ETAG, etag)]).into_response()
        }
        Err(refusal) => (
            StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST),
            [(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"))],
            refusal.xml(),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Profile;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use sha2::{Digest, Sha256};
    use tower::ServiceExt;

    fn app(url_ttl: u64, session_ttl: u64) -> Router {
        let dir = std::env::temp_dir().join(format!("rindle-api-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = Config {
            host: "127.0.0.1".into(),
            port: 0,
            data_dir: dir.clone(),
            www_dir: dir.join("www"),
            pkg_dir: dir.join("pkg"),
            public_url: None,
            url_ttl: Duration::from_secs(url_ttl),
            session_ttl: Duration::from_secs(session_ttl),
            profile: Profile { max_bytes: 1_000, allowed_types: vec!["text/*".into()], allow_empty: true },
        };
        let state = AppState {
            db: Db::open(&dir.join("db.sqlite")).unwrap(),
            store: LocalStore::open(&dir.join("store")).unwrap(),
            config,
        };
        router(Arc::new(state))
    }

    async fn send(
        app: &Router,
        method: &str,
        uri: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, "broker.test")
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        (status, headers, response.into_body().collect().await.unwrap().to_bytes().to_vec())
    }

    async fn call(app: &Router, uri: &str, body: serde_json::Value) -> (StatusCode, serde_json::Value) {
        let (status, _, bytes) =
            send(app, "POST", uri, "application/json", body.to_string().into_bytes()).await;
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    async fn initiate(app: &Router, bytes: u64, content_type: &str) -> (StatusCode, serde_json::Value) {
        let body = serde_json::json!({"filename": "notes 1.txt", "content_type": content_type, "byte_size": bytes, "upload_strategy": "presigned_put"});
        call(app, "/api/uploads", body).await
    }

    /// The part of a presigned URL after the host, to send through the router.
    fn path_of(url: &str) -> String {
        url.strip_prefix("http://broker.test").expect("absolute URL on the Host we sent").to_owned()
    }

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

        let (status, headers, _) =
            send(&app, "PUT", &path_of(url), "text/plain", b"hello world".to_vec()).await;
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
    async fn the_profile_refuses_before_any_byte() {
        let app = app(900, 3_600);
        let (status, body) = initiate(&app, 1_001, "text/plain").await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("file_too_large"))
        );
        let (_, body) = initiate(&app, 10, "image/png").await;
        assert_eq!(body["error"]["code"], "content_type_not_allowed");
        let (status, _, body) =
            send(&app, "POST", "/api/uploads", "application/json", b"{\"filename\":".to_vec()).await;
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_request"))
        );
        let (status, body) = call(&app, "/api/uploads/nope/sign", serde_json::json!({})).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("session_not_found"))
        );
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
    async fn expired_urls_are_refused() {
        let app = app(0, 3_600);
        let (_, created) = initiate(&app, 5, "text/plain").await;
        let id = created["session"]["id"].as_str().unwrap().to_owned();
        let (_, signed) = call(&app, &format!("/api/uploads/{id}/sign"), serde_json::json!({})).await;
        tokio::time::sleep(Duration::from_millis(1_100)).await;
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
        let (status, cancelled) =
            call(&app, &format!("/api/uploads/{id}/cancel"), serde_json::json!({})).await;
        assert_eq!((status, cancelled["session"]["state"].as_str()), (StatusCode::OK, Some("aborted")));
        let (status, body) = call(&app, &format!("/api/uploads/{id}/sign"), serde_json::json!({})).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::CONFLICT, Some("illegal_transition"))
        );

        let app = self::app(900, 0);
        let (_, created) = initiate(&app, 5, "text/plain").await;
        let id = created["session"]["id"].as_str().unwrap().to_owned();
        tokio::time::sleep(Duration::from_millis(1_100)).await;
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
}
