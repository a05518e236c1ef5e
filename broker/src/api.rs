//! The broker protocol v1 (docs/broker-protocol.md) over HTTP, the embedded
//! store's presigned PUT endpoints, and the static files (demo page, built
//! package, stored objects).

use crate::config::Config;
use crate::db::{Db, Record};
use crate::store::local::{PutQuery, Refusal, SignedQuery};
use crate::store::{Presigned, Store, StoreError};
use crate::tus::RemoteTus;
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use rindle_upload::broker::{Asset, BrokerReply, InitiateRequest, SignedPart, SignedRequest};
use rindle_upload::error::ErrorBody;
use rindle_upload::multipart::{PartPlan, DEFAULT_PART_SIZE};
use rindle_upload::secret::Secret;
use rindle_upload::session::MultipartPart;
use rindle_upload::transport::ChecksumAlgorithm;
use rindle_upload::wire::gcs::{ChunkAnswer, ContentRange};
use rindle_upload::wire::routes;
use rindle_upload::wire::tus::{
    algorithm_name, decode_metadata, parse_checksum, parse_size, OFFSET_CONTENT_TYPE, TUS_VERSION,
};
use rindle_upload::{ErrorCode, Session, SessionState, UploadError, UploadStrategy};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tower::Service;
use tower_http::cors::{Any, CorsLayer};
use tower_http::services::ServeDir;

pub struct AppState {
    pub config: Config,
    pub db: Db,
    pub store: Store,
    /// Set when tus sessions go to an external tus server.
    pub remote_tus: Option<RemoteTus>,
}

/// The tus headers every embedded tus answer carries, and what it offers.
const TUS_EXTENSIONS: &str = "creation,termination,expiration,checksum";

fn is_tus(session: &Session) -> bool {
    session.resumable_protocol.as_deref() == Some("tus")
}

/// Response headers browsers may read: ETags of parts, GCS's Range, tus's
/// offsets and discovery headers.
fn exposed_headers() -> [HeaderName; 12] {
    [
        header::ETAG,
        header::CONTENT_LENGTH,
        header::RANGE,
        header::LOCATION,
        HeaderName::from_static("upload-offset"),
        HeaderName::from_static("upload-length"),
        HeaderName::from_static("upload-expires"),
        HeaderName::from_static("tus-resumable"),
        HeaderName::from_static("tus-version"),
        HeaderName::from_static("tus-extension"),
        HeaderName::from_static("tus-max-size"),
        HeaderName::from_static("tus-checksum-algorithm"),
    ]
}

pub fn router(state: Arc<AppState>) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods(Any)
        .allow_headers(Any)
        .expose_headers(exposed_headers())
        .max_age(Duration::from_secs(600));
    let routes = routes(state);
    let with_cors = routes.clone().layer(cors);
    // tower-http's CorsLayer answers every OPTIONS request as a preflight,
    // but tus discovery is a plain OPTIONS request: those go to the routes,
    // with the headers a cross-origin page needs to read the answer.
    Router::new().fallback_service(tower::service_fn(move |request: axum::extract::Request| {
        let preflight = request.method() != axum::http::Method::OPTIONS
            || request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        let (mut with_cors, mut routes) = (with_cors.clone(), routes.clone());
        async move {
            if preflight {
                return with_cors.call(request).await;
            }
            let mut response = routes.call(request).await?;
            let headers = response.headers_mut();
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
            let exposed = exposed_headers().map(|h| h.to_string()).join(", ");
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_str(&exposed).expect("names"),
            );
            Ok(response)
        }
    }))
}

/// The broker protocol's endpoint on this server.
pub const API_BASE: &str = "/api/uploads";

fn api(route: &str) -> String {
    format!("{API_BASE}{route}")
}

fn routes(state: Arc<AppState>) -> Router {
    let mut router = Router::new()
        .route(&api(routes::INITIATE), post(initiate))
        .route(&api(routes::SHOW), get(show))
        .route(&api(routes::SIGN), post(sign))
        .route(&api(routes::SIGN_PARTS), post(sign_parts))
        .route(&api(routes::LIST_PARTS), post(list_parts))
        .route(&api(routes::COMPLETE), post(complete))
        .route(&api(routes::COMPLETE_MULTIPART), post(complete_multipart))
        .route(&api(routes::RESUMABLE_STATUS), post(resumable_status))
        .route(&api(routes::CANCEL), post(cancel));
    if let Some(local) = state.store.local() {
        router = router
            .route("/store/{*key}", put(store_put))
            .route("/store-parts/{upload_id}/{part_number}", put(store_put_part))
            .route("/store-resumable/{id}", put(store_resumable_put).delete(store_resumable_delete))
            .route("/tus", post(tus_create).options(tus_options))
            .route(
                "/tus/{id}",
                axum::routing::head(tus_head).patch(tus_patch).delete(tus_delete).options(tus_options),
            )
            .nest_service("/objects", ServeDir::new(local.objects_dir()));
    }
    router
        .nest_service("/pkg", ServeDir::new(&state.config.pkg_dir))
        .fallback_service(ServeDir::new(&state.config.www_dir))
        .with_state(state)
}

/// A protocol error: status plus `{"error": {"code", "message", "retryable"}}`.
pub struct ApiError(StatusCode, ErrorBody);

impl ApiError {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError(status, ErrorBody::new(code, message))
    }

    fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, message)
    }
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> Self {
        let status = match e.code {
            ErrorCode::IllegalTransition => StatusCode::CONFLICT,
            ErrorCode::SessionExpired => StatusCode::GONE,
            ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
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

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!("store: {e}");
        ApiError::new(StatusCode::BAD_GATEWAY, ErrorCode::Internal, format!("the object store failed: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

type ApiResult = Result<(StatusCode, Json<BrokerReply>), ApiError>;

/// A JSON body, refused with the protocol's error body when malformed.
fn body<T: DeserializeOwned>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(value)| value).map_err(|e| ApiError::invalid(e.body_text()))
}

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
    Json(BrokerReply { session: record.session, upload: None, parts: vec![], asset: record.asset })
}

fn signed_request(presigned: Presigned, ttl: Duration) -> SignedRequest {
    SignedRequest {
        method: "PUT".into(),
        url: Secret::new(presigned.url),
        headers: presigned.headers,
        expires_at: Some(timestamp(now() + ttl)),
        expires_in: ttl.as_secs(),
    }
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

/// The part plan of a multipart session; refuses other sessions.
fn multipart_plan(record: &Record) -> Result<(PartPlan, String), ApiError> {
    let session = &record.session;
    match (session.upload_strategy, &session.multipart_upload_id) {
        (UploadStrategy::Multipart, Some(upload_id)) => {
            let plan = PartPlan::new(
                session.upload_length.unwrap_or(0),
                record.part_size.unwrap_or(DEFAULT_PART_SIZE),
            )?;
            Ok((plan, upload_id.clone()))
        }
        _ => Err(ApiError::invalid("this call is for multipart sessions")),
    }
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
    request: Result<Json<InitiateRequest>, JsonRejection>,
) -> ApiResult {
    let request = body(request)?;
    if request.filename.is_empty() {
        return Err(ApiError::invalid("filename must not be empty"));
    }
    state.config.profile.check(request.byte_size, &request.content_type)?;
    let tus = match request.resumable_protocol.as_deref() {
        None => false,
        Some("tus") if request.upload_strategy == UploadStrategy::Resumable => true,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::UnsupportedStrategy,
                format!("resumable protocol {other:?} is not offered"),
            ))
        }
    };
    let offered = if tus {
        state.remote_tus.is_some() || state.store.local().is_some()
    } else {
        state.store.offers(request.upload_strategy)
    };
    if !offered {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::UnsupportedStrategy,
            format!("this broker's store does not offer {:?} uploads", request.upload_strategy),
        ));
    }
    let part_size = match request.upload_strategy {
        UploadStrategy::Multipart => {
            Some(PartPlan::new(request.byte_size, request.part_size.unwrap_or(DEFAULT_PART_SIZE))?.part_size)
        }
        UploadStrategy::PresignedPut | UploadStrategy::Resumable => None,
    };

    let created = now();
    let id = uuid::Uuid::new_v4().to_string();
    let asset_id = uuid::Uuid::new_v4().to_string();
    let key = key_for(&asset_id, &request.filename);
    let multipart_upload_id = match part_size {
        Some(_) => Some(state.store.create_multipart(&key, &request.content_type).await?),
        None => None,
    };
    let session = Session {
        upload_key: Some(key),
        id,
        asset_id: Some(asset_id),
        state: SessionState::Initialized,
        upload_strategy: request.upload_strategy,
        upload_length: Some(request.byte_size),
        resumable_protocol: tus.then(|| "tus".to_owned()),
        multipart_upload_id,
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
    let record = Record {
        session,
        filename: request.filename,
        content_type: request.content_type,
        part_size,
        asset: None,
    };
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
    let base = base_url(&state.config, &headers);
    let key = record.session.upload_key.clone().unwrap_or_default();
    let total = record.session.upload_length.unwrap_or(0);
    match record.session.upload_strategy {
        UploadStrategy::Multipart => {
            Err(ApiError::invalid("multipart sessions sign parts: POST {id}/parts/sign"))
        }
        UploadStrategy::Resumable if is_tus(&record.session) => {
            record.session.transition(SessionState::Signed)?;
            let creation = match (&state.remote_tus, state.store.local()) {
                // The client creates the upload on the external server.
                (Some(remote), _) => Some(SignedRequest {
                    method: "POST".into(),
                    url: Secret::new(remote.endpoint.clone()),
                    headers: Default::default(),
                    expires_at: record.session.expires_at.clone(),
                    expires_in: state.config.session_ttl.as_secs(),
                }),
                // The broker pre-creates it on the embedded server, once.
                (None, Some(local)) => {
                    if record.session.session_uri.is_none() {
                        let expires = now() + state.config.tus_ttl;
                        let id = local.create_tus(&key, total, unix(expires)).await?;
                        record.session.session_uri = Some(Secret::new(format!("{base}/tus/{id}")));
                        record.session.session_uri_expires_at = Some(timestamp(expires));
                        record.session.last_known_offset = Some(0);
                    }
                    None
                }
                (None, None) => return Err(ApiError::invalid("this broker offers no tus server")),
            };
            save(&state, &mut record)?;
            Ok((
                StatusCode::OK,
                Json(BrokerReply { session: record.session, upload: creation, parts: vec![], asset: None }),
            ))
        }
        // Signing a resumable session opens it at the store, once.
        UploadStrategy::Resumable => {
            record.session.transition(SessionState::Signed)?;
            if record.session.session_uri.is_none() {
                let ttl = state.config.session_uri_ttl;
                let uri = state.store.open_resumable(&base, &key, &record.content_type, total, ttl).await?;
                record.session.session_uri = Some(Secret::new(uri));
                record.session.session_uri_expires_at = Some(timestamp(now() + ttl));
                record.session.last_known_offset = Some(0);
            }
            save(&state, &mut record)?;
            Ok((StatusCode::OK, reply(record)))
        }
        UploadStrategy::PresignedPut => {
            record.session.transition(SessionState::Signed)?;
            save(&state, &mut record)?;
            let ttl = state.config.url_ttl;
            let presigned = state.store.presign_put(&base, &key, total, &record.content_type, ttl)?;
            let upload = Some(signed_request(presigned, ttl));
            Ok((
                StatusCode::OK,
                Json(BrokerReply { session: record.session, upload, parts: vec![], asset: None }),
            ))
        }
    }
}

#[derive(Deserialize)]
struct ResumableStatusBody {
    offset: u64,
    /// The upload URL a tus client created on the external server.
    #[serde(default)]
    session_uri: Option<String>,
}

/// The client reports an offset; the broker records the store's own
/// answer, which is the truth.
async fn resumable_status(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: Result<Json<ResumableStatusBody>, JsonRejection>,
) -> ApiResult {
    let request = body(request)?;
    let reported = request.offset;
    let mut record = load(&state, &id)?;
    refuse_if_expired(&record)?;
    if let (Some(created), None, Some(remote)) =
        (&request.session_uri, &record.session.session_uri, &state.remote_tus)
    {
        if !is_tus(&record.session) || !remote.owns(created) {
            return Err(ApiError::invalid("the upload URL is not on this broker's tus server"));
        }
        record.session.session_uri = Some(Secret::new(created.clone()));
    }
    let Some(uri) = record.session.session_uri.clone() else {
        return Err(ApiError::invalid("this call is for resumable sessions that were signed"));
    };
    let total = record.session.upload_length.unwrap_or(0);
    let offset = match (is_tus(&record.session), &state.remote_tus, state.store.local()) {
        (true, Some(remote), _) => remote.head(uri.expose()).await?.0,
        (true, None, Some(local)) => crate::tus::embedded_offset(local, uri.expose()).await?,
        _ => state.store.resumable_offset(uri.expose(), total).await?,
    };
    if offset != reported {
        tracing::info!(session = %record.session.id, reported, offset, "client and store disagree on the offset");
    }
    record.session.last_known_offset = Some(offset);
    save(&state, &mut record)?;
    Ok((StatusCode::OK, reply(record)))
}

#[derive(Deserialize)]
struct SignPartsBody {
    part_numbers: Vec<u32>,
}

async fn sign_parts(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    request: Result<Json<SignPartsBody>, JsonRejection>,
) -> ApiResult {
    let request = body(request)?;
    let mut record = load(&state, &id)?;
    refuse_if_expired(&record)?;
    let (plan, upload_id) = multipart_plan(&record)?;
    if request.part_numbers.is_empty() || request.part_numbers.len() > 1_000 {
        return Err(ApiError::invalid("sign 1 to 1000 parts at a time"));
    }
    if let Some(bad) = request.part_numbers.iter().find(|n| !(1..=plan.count()).contains(n)) {
        return Err(ApiError::invalid(format!("part {bad} is outside 1..={}", plan.count())));
    }
    record.session.transition(SessionState::Signed)?;
    save(&state, &mut record)?;

    let ttl = state.config.url_ttl;
    let base = base_url(&state.config, &headers);
    let key = record.session.upload_key.clone().unwrap_or_default();
    let parts = request
        .part_numbers
        .iter()
        .map(|&part_number| {
            Ok(SignedPart {
                part_number,
                upload: signed_request(
                    state.store.presign_part(&base, &key, &upload_id, part_number, ttl)?,
                    ttl,
                ),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok((StatusCode::OK, Json(BrokerReply { session: record.session, upload: None, parts, asset: None })))
}

async fn list_parts(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> ApiResult {
    let mut record = load(&state, &id)?;
    refuse_if_expired(&record)?;
    let (_, upload_id) = multipart_plan(&record)?;
    if record.session.state.is_terminal() {
        return Ok((StatusCode::OK, reply(record)));
    }
    let key = record.session.upload_key.clone().unwrap_or_default();
    record.session.multipart_parts = state.store.list_parts(&key, &upload_id).await?;
    save(&state, &mut record)?;
    Ok((StatusCode::OK, reply(record)))
}

/// Moves a session to `verifying`, or answers that it is already completed.
fn begin_verifying(state: &AppState, record: &mut Record) -> Result<bool, ApiError> {
    if record.session.state == SessionState::Completed {
        return Ok(false);
    }
    refuse_if_expired(record)?;
    if !matches!(record.session.state, SessionState::Uploaded | SessionState::Verifying) {
        record.session.transition(SessionState::Uploaded)?;
    }
    record.session.transition(SessionState::Verifying)?;
    save(state, record)?;
    Ok(true)
}

/// Ends a verifying session: `completed` with its asset, or `failed`.
fn finish(state: &AppState, mut record: Record, verified: Result<Asset, String>) -> ApiResult {
    match verified {
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
    save(state, &mut record)?;
    Ok((StatusCode::OK, reply(record)))
}

async fn complete(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let mut record = load(&state, &id)?;
    if !begin_verifying(&state, &mut record)? {
        return Ok((StatusCode::OK, reply(record)));
    }
    let verified = verify(&state, &record, &base_url(&state.config, &headers)).await;
    finish(&state, record, verified)
}

#[derive(Deserialize)]
struct CompleteMultipartBody {
    parts: Vec<MultipartPart>,
}

async fn complete_multipart(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    request: Result<Json<CompleteMultipartBody>, JsonRejection>,
) -> ApiResult {
    let request = body(request)?;
    let mut record = load(&state, &id)?;
    let (_, upload_id) = multipart_plan(&record)?;
    if !begin_verifying(&state, &mut record)? {
        return Ok((StatusCode::OK, reply(record)));
    }
    let key = record.session.upload_key.clone().unwrap_or_default();
    let verified = match state.store.complete_multipart(&key, &upload_id, &request.parts).await {
        Ok(()) => {
            record.session.multipart_parts = request.parts;
            verify(&state, &record, &base_url(&state.config, &headers)).await
        }
        Err(refused) => {
            // A failed session must not leave parts behind in the store.
            if let Err(e) = state.store.abort_multipart(&key, &upload_id).await {
                tracing::warn!(session = %record.session.id, "could not abort a refused multipart upload: {e}");
            }
            Err(refused.0)
        }
    };
    finish(&state, record, verified)
}

/// Checks the stored object against the session and the profile.
async fn verify(state: &AppState, record: &Record, base: &str) -> Result<Asset, String> {
    let session = &record.session;
    let key = session.upload_key.clone().unwrap_or_default();
    let remote = state.remote_tus.as_ref().filter(|_| is_tus(session));
    let uri = session.session_uri.as_ref().map(|u| u.expose().to_owned()).unwrap_or_default();
    let inspected = match remote {
        Some(remote) => remote.inspect(&uri).await,
        None => state.store.inspect(&key).await,
    };
    let (size, sha256) = match inspected {
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
        url: if remote.is_some() { uri } else { state.store.object_url(base, &key) },
        key,
        byte_size: size,
        content_type: record.content_type.clone(),
        sha256,
    })
}

async fn cancel(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> ApiResult {
    let mut record = load(&state, &id)?;
    record.session.transition(SessionState::Aborted)?;
    let key = record.session.upload_key.clone().unwrap_or_default();
    if let Some(upload_id) = &record.session.multipart_upload_id {
        if let Err(e) = state.store.abort_multipart(&key, upload_id).await {
            tracing::warn!(session = %record.session.id, "could not abort the multipart upload: {e}");
        }
    }
    if let Some(uri) = &record.session.session_uri {
        let cancelled = match (is_tus(&record.session), &state.remote_tus, state.store.local()) {
            (true, Some(remote), _) => remote.terminate(uri.expose()).await,
            (true, None, Some(local)) => local.cancel_resumable(crate::tus::upload_id(uri.expose())).await,
            _ => state.store.cancel_resumable(uri.expose()).await,
        };
        if let Err(e) = cancelled {
            tracing::warn!(session = %record.session.id, "could not cancel the resumable session: {e}");
        }
    }
    if let Err(e) = state.store.delete(&key).await {
        tracing::warn!(session = %record.session.id, "could not delete the object of a cancelled session: {e}");
    }
    save(&state, &mut record)?;
    tracing::info!(session = %record.session.id, "session aborted");
    Ok((StatusCode::OK, reply(record)))
}

/// The answer of the embedded store: the ETag, or an S3-style refusal.
fn store_answer(result: Result<String, Refusal>) -> Response {
    match result {
        Ok(etag) => {
            let etag = HeaderValue::from_str(&format!("\"{etag}\"")).expect("hex is a valid header value");
            (StatusCode::OK, [(header::ETAG, etag)]).into_response()
        }
        Err(refusal) => refusal_response(refusal),
    }
}

fn refusal_response(refusal: Refusal) -> Response {
    (
        StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST),
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"))],
        refusal.xml(),
    )
        .into_response()
}

fn unsigned() -> Refusal {
    Refusal::new(403, "AccessDenied", "the URL is not signed")
}

/// The embedded store's presigned object PUT.
async fn store_put(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
    query: Result<Query<PutQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(local) = state.store.local() else { return StatusCode::NOT_FOUND.into_response() };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let result = match query {
        Ok(Query(query)) => match local.check_put(&key, &query, content_type, unix(now())) {
            Ok(grant) => local.write_object(&grant, body).await,
            Err(refusal) => Err(refusal),
        },
        Err(_) => Err(unsigned()),
    };
    store_answer(result)
}

/// The embedded store's presigned part PUT.
async fn store_put_part(
    State(state): State<Arc<AppState>>,
    Path((upload_id, part_number)): Path<(String, u32)>,
    query: Result<Query<SignedQuery>, QueryRejection>,
    body: Body,
) -> Response {
    let Some(local) = state.store.local() else { return StatusCode::NOT_FOUND.into_response() };
    let result = match query {
        Ok(Query(query)) => match local.check_part(&upload_id, part_number, &query, unix(now())) {
            Ok(grant) => local.write_part(&grant, body).await,
            Err(refusal) => Err(refusal),
        },
        Err(_) => Err(unsigned()),
    };
    store_answer(result)
}

/// The embedded store's resumable session URI: chunks and status queries.
async fn store_resumable_put(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    query: Result<Query<SignedQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(local) = state.store.local() else { return StatusCode::NOT_FOUND.into_response() };
    let range = headers.get("content-range").and_then(|v| v.to_str().ok()).and_then(ContentRange::parse);
    let result = match (query, range) {
        (Err(_), _) => Err(unsigned()),
        (Ok(Query(query)), range) => match (local.check_resumable(&id, &query, unix(now())), range) {
            (Err(refusal), _) => Err(refusal),
            (Ok(()), None) => Err(Refusal::new(400, "InvalidRange", "Content-Range is missing or malformed")),
            (Ok(()), Some(range)) => local.resumable_put(&id, range, body).await,
        },
    };
    match result {
        Ok(ChunkAnswer::Complete) => (StatusCode::OK, Json(serde_json::json!({}))).into_response(),
        Ok(ChunkAnswer::Committed(committed)) => {
            let mut response = StatusCode::PERMANENT_REDIRECT.into_response();
            if let Some(range) =
                ChunkAnswer::range_header(committed).and_then(|r| HeaderValue::from_str(&r).ok())
            {
                response.headers_mut().insert(header::RANGE, range);
            }
            response
        }
        Err(refusal) => refusal_response(refusal),
    }
}

async fn store_resumable_delete(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    query: Result<Query<SignedQuery>, QueryRejection>,
) -> Response {
    let Some(local) = state.store.local() else { return StatusCode::NOT_FOUND.into_response() };
    let checked = match query {
        Ok(Query(query)) => local.check_resumable(&id, &query, unix(now())),
        Err(_) => Err(unsigned()),
    };
    match checked {
        Err(refusal) => refusal_response(refusal),
        Ok(()) => match local.cancel_resumable(&id).await {
            // GCS answers a cancelled session with 499.
            Ok(()) => StatusCode::from_u16(499).expect("499 is a status").into_response(),
            Err(e) => refusal_response(Refusal::new(500, "InternalError", e.0)),
        },
    }
}

fn tus_response(status: StatusCode, headers: &[(&'static str, String)]) -> Response {
    let mut response = status.into_response();
    let map = response.headers_mut();
    map.insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    map.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            map.insert(*name, value);
        }
    }
    response
}

fn http_date(unix_seconds: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(unix_seconds))
}

/// Every tus request but OPTIONS must speak tus 1.0.0 (412 otherwise).
fn tus_version(headers: &HeaderMap) -> Result<(), Box<Response>> {
    match headers.get("tus-resumable").and_then(|v| v.to_str().ok()) {
        Some(TUS_VERSION) => Ok(()),
        _ => Err(Box::new(tus_response(
            StatusCode::PRECONDITION_FAILED,
            &[("tus-version", TUS_VERSION.to_owned())],
        ))),
    }
}

async fn tus_options(State(state): State<Arc<AppState>>) -> Response {
    tus_response(
        StatusCode::NO_CONTENT,
        &[
            ("tus-version", TUS_VERSION.to_owned()),
            ("tus-extension", TUS_EXTENSIONS.to_owned()),
            (
                "tus-checksum-algorithm",
                [ChecksumAlgorithm::Sha1, ChecksumAlgorithm::Sha256].map(algorithm_name).join(","),
            ),
            ("tus-max-size", state.config.profile.max_bytes.to_string()),
        ],
    )
}

/// Creation on the embedded tus server (uploads not tied to a session).
async fn tus_create(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let Some(local) = state.store.local() else { return StatusCode::NOT_FOUND.into_response() };
    if let Err(refused) = tus_version(&headers) {
        return *refused;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let Ok(total) = parse_size("Upload-Length", header("upload-length")) else {
        return refusal_response(Refusal::new(
            400,
            "InvalidArgument",
            "Upload-Length is missing or malformed",
        ));
    };
    if total > state.config.profile.max_bytes {
        return refusal_response(Refusal::new(413, "EntityTooLarge", "Upload-Length is over Tus-Max-Size"));
    }
    let metadata = match header("upload-metadata").map(decode_metadata) {
        Some(None) => {
            return refusal_response(Refusal::new(400, "InvalidArgument", "Upload-Metadata is malformed"))
        }
        Some(Some(pairs)) => pairs,
        None => vec![],
    };
    let filename = metadata.iter().find(|(k, _)| k == "filename").map_or("file", |(_, v)| v.as_str());
    let id = uuid::Uuid::new_v4().to_string();
    let expires = unix(now() + state.config.tus_ttl);
    let key = key_for(&format!("tus-{id}"), filename);
    match local.create_tus(&key, total, expires).await {
        Ok(created) => tus_response(
            StatusCode::CREATED,
            &[
                ("location", format!("{}/tus/{created}", base_url(&state.config, &headers))),
                ("upload-expires", http_date(expires)),
            ],
        ),
        Err(e) => refusal_response(Refusal::new(500, "InternalError", e.0)),
    }
}

async fn tus_head(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(local) = state.store.local() else { return StatusCode::NOT_FOUND.into_response() };
    if let Err(refused) = tus_version(&headers) {
        return *refused;
    }
    match local.tus_head(&id, unix(now())).await {
        Ok((offset, total, expires)) => {
            let mut fields =
                vec![("upload-offset", offset.to_string()), ("upload-length", total.to_string())];
            fields.extend(expires.map(|at| ("upload-expires", http_date(at))));
            tus_response(StatusCode::OK, &fields)
        }
        Err(refusal) => {
            tus_response(StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::NOT_FOUND), &[])
        }
    }
}

async fn tus_patch(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(local) = state.store.local() else { return StatusCode::NOT_FOUND.into_response() };
    if let Err(refused) = tus_version(&headers) {
        return *refused;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header("content-type") != Some(OFFSET_CONTENT_TYPE) {
        return refusal_response(Refusal::new(
            415,
            "UnsupportedMediaType",
            "PATCH needs application/offset+octet-stream",
        ));
    }
    let Ok(offset) = parse_size("Upload-Offset", header("upload-offset")) else {
        return refusal_response(Refusal::new(
            400,
            "InvalidArgument",
            "Upload-Offset is missing or malformed",
        ));
    };
    let checksum = match header("upload-checksum").map(parse_checksum) {
        Some(None) => {
            return refusal_response(Refusal::new(400, "InvalidArgument", "unsupported Upload-Checksum"))
        }
        Some(Some(checksum)) => Some(checksum),
        None => None,
    };
    match local.tus_patch(&id, offset, body, checksum, unix(now())).await {
        Ok(_) => {
            let (committed, _, expires) = local.tus_head(&id, unix(now())).await.unwrap_or((offset, 0, None));
            let mut fields = vec![("upload-offset", committed.to_string())];
            fields.extend(expires.map(|at| ("upload-expires", http_date(at))));
            tus_response(StatusCode::NO_CONTENT, &fields)
        }
        Err(refusal) => {
            let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
            tus_response(status, &[])
        }
    }
}

async fn tus_delete(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(local) = state.store.local() else { return StatusCode::NOT_FOUND.into_response() };
    if let Err(refused) = tus_version(&headers) {
        return *refused;
    }
    match local.cancel_resumable(&id).await {
        Ok(()) => tus_response(StatusCode::NO_CONTENT, &[]),
        Err(e) => refusal_response(Refusal::new(500, "InternalError", e.0)),
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
        app_with(url_ttl, session_ttl, 3_600)
    }

    fn app_with_tus_ttl(tus_ttl: u64) -> Router {
        app_with(900, 3_600, tus_ttl)
    }

    fn app_with(url_ttl: u64, session_ttl: u64, tus_ttl: u64) -> Router {
        app_on(url_ttl, session_ttl, tus_ttl, |dir| {
            Store::Local(crate::store::local::LocalStore::open(&dir.join("store")).unwrap())
        })
    }

    /// The broker on the store `open` makes (given the data directory).
    fn app_on(
        url_ttl: u64,
        session_ttl: u64,
        tus_ttl: u64,
        open: impl FnOnce(&std::path::Path) -> Store,
    ) -> Router {
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
            profile: Profile { max_bytes: 64 << 20, allowed_types: vec!["text/*".into()], allow_empty: true },
            s3: None,
            gcs: None,
            session_uri_ttl: Duration::from_secs(3_600),
            tus_endpoint: None,
            tus_ttl: Duration::from_secs(tus_ttl),
        };
        let state = AppState {
            db: Db::open(&dir.join("db.sqlite")).unwrap(),
            store: open(&dir),
            remote_tus: None,
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
    async fn a_strategy_the_store_does_not_offer_is_refused_at_initiate() {
        // Nothing listens on port 9: refusing must not need the store.
        let s3 = app_on(900, 3_600, 3_600, |_| {
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
        });
        let gcs = app_on(900, 3_600, 3_600, |_| {
            Store::Gcs(Box::new(
                crate::store::gcs::GcsStore::new(crate::store::gcs::GcsConfig {
                    base_url: "http://127.0.0.1:9".into(),
                    bucket: "b".into(),
                    credentials: None,
                })
                .unwrap(),
            ))
        });
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

    async fn initiate_multipart(app: &Router, bytes: usize) -> (String, serde_json::Value) {
        let body = serde_json::json!({"filename": "big.bin", "content_type": "text/plain", "byte_size": bytes,
                                      "upload_strategy": "multipart", "part_size": 5 << 20});
        let (status, created) = call(app, "/api/uploads", body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        (created["session"]["id"].as_str().unwrap().to_owned(), created)
    }

    async fn put_part(app: &Router, signed: &serde_json::Value, index: usize, bytes: &[u8]) -> String {
        let url = signed["parts"][index]["upload"]["url"].as_str().unwrap();
        let (status, headers, _) =
            send(app, "PUT", &path_of(url), "application/octet-stream", bytes.to_vec()).await;
        assert_eq!(status, StatusCode::OK);
        headers[header::ETAG].to_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn multipart_on_the_embedded_store_from_initiate_to_completed() {
        let app = app(900, 3_600);
        let data: Vec<u8> = (0..(11usize << 20)).map(|i| (i % 253) as u8).collect();
        let (id, created) = initiate_multipart(&app, data.len()).await;
        assert!(created["session"]["multipart_upload_id"].is_string());

        let (status, refused) =
            call(&app, &format!("/api/uploads/{id}/parts/sign"), serde_json::json!({"part_numbers": [4]}))
                .await;
        assert_eq!(
            (status, refused["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_request"))
        );
        let (status, signed) = call(
            &app,
            &format!("/api/uploads/{id}/parts/sign"),
            serde_json::json!({"part_numbers": [1, 2, 3]}),
        )
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

        let parts: Vec<serde_json::Value> = etags
            .iter()
            .enumerate()
            .map(|(i, e)| serde_json::json!({"part_number": i + 1, "etag": e}))
            .collect();
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
            call(&app, &format!("/api/uploads/{id}/parts/sign"), serde_json::json!({"part_numbers": [1]}))
                .await;
        put_part(&app, &signed, 0, &vec![1u8; 5 << 20]).await;
        let (_, cancelled) = call(&app, &format!("/api/uploads/{id}/cancel"), serde_json::json!({})).await;
        assert_eq!(cancelled["session"]["state"], "aborted");
        let url = signed["parts"][0]["upload"]["url"].as_str().unwrap();
        let (status, _, body) = send(&app, "PUT", &path_of(url), "", vec![1]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "the upload and its parts are gone");
        assert!(String::from_utf8(body).unwrap().contains("NoSuchUpload"));
    }

    async fn put_range(
        app: &Router,
        uri_path: &str,
        range: &str,
        bytes: &[u8],
    ) -> (StatusCode, Option<String>) {
        let request = Request::builder()
            .method("PUT")
            .uri(uri_path)
            .header(header::HOST, "broker.test")
            .header("content-range", range)
            .body(Body::from(bytes.to_vec()))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let range = response.headers().get(header::RANGE).map(|r| r.to_str().unwrap().to_owned());
        (response.status(), range)
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

        assert_eq!(
            put_range(&app, &uri, "bytes */600000", b"").await,
            (StatusCode::PERMANENT_REDIRECT, None)
        );
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

        let (_, status) = call(
            &app,
            &format!("/api/uploads/{id}/resumable/status"),
            serde_json::json!({"offset": 262_144}),
        )
        .await;
        assert_eq!(status["session"]["last_known_offset"], 262_144);
        assert_eq!(
            put_range(&app, &uri, "bytes 262144-599999/600000", &data[262_144..]).await.0,
            StatusCode::OK
        );
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

    async fn tus(
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

    fn patch_headers(offset: u64, checksum: Option<String>) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("tus-resumable", "1.0.0".to_owned()),
            ("content-type", OFFSET_CONTENT_TYPE.to_owned()),
            ("upload-offset", offset.to_string()),
        ];
        headers.extend(checksum.map(|c| ("upload-checksum", c)));
        headers
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
        assert_eq!(options.headers()["tus-extension"], TUS_EXTENSIONS);
        assert_eq!(options.headers()["tus-checksum-algorithm"], "sha1,sha256");
        let v = [("tus-resumable", "1.0.0".to_owned())];
        let head = tus(&app, "HEAD", &path, &v, vec![]).await;
        assert_eq!(
            (head.status(), &head.headers()["upload-offset"]),
            (StatusCode::OK, &"0".parse::<HeaderValue>().unwrap())
        );
        assert!(head.headers().contains_key("upload-expires"));
        assert_eq!(tus(&app, "HEAD", &path, &[], vec![]).await.status(), StatusCode::PRECONDITION_FAILED);

        let sha1 = |bytes: &[u8]| {
            rindle_upload::wire::tus::checksum_header(ChecksumAlgorithm::Sha1, &sha1::Sha1::digest(bytes))
        };
        let wrong =
            tus(&app, "PATCH", &path, &patch_headers(0, Some(sha1(b"other"))), data[..100_000].to_vec())
                .await;
        assert_eq!(wrong.status().as_u16(), 460, "a checksum mismatch keeps nothing");
        let first = tus(
            &app,
            "PATCH",
            &path,
            &patch_headers(0, Some(sha1(&data[..100_000]))),
            data[..100_000].to_vec(),
        )
        .await;
        assert_eq!(
            (first.status(), first.headers()["upload-offset"].to_str().unwrap()),
            (StatusCode::NO_CONTENT, "100000")
        );
        let conflict = tus(&app, "PATCH", &path, &patch_headers(0, None), data[..10].to_vec()).await;
        assert_eq!(conflict.status(), StatusCode::CONFLICT);
        let last = tus(&app, "PATCH", &path, &patch_headers(100_000, None), data[100_000..].to_vec()).await;
        assert_eq!(last.headers()["upload-offset"], "300000");

        let (_, status) = call(
            &app,
            &format!("/api/uploads/{id}/resumable/status"),
            serde_json::json!({"offset": 300_000}),
        )
        .await;
        assert_eq!(status["session"]["last_known_offset"], 300_000);
        let (_, done) = call(&app, &format!("/api/uploads/{id}/complete"), serde_json::json!({})).await;
        assert_eq!(done["session"]["state"], "completed", "{done}");
        assert_eq!(done["asset"]["sha256"], hex::encode(Sha256::digest(&data)).as_str());
    }

    #[tokio::test]
    async fn tus_creation_termination_and_expiration() {
        let app = app(900, 3_600);
        let v = ("tus-resumable", "1.0.0".to_owned());
        let created = tus(
            &app,
            "POST",
            "/tus",
            &[
                v.clone(),
                ("upload-length", "5".into()),
                ("upload-metadata", rindle_upload::wire::tus::encode_metadata(&[("filename", "x.txt")])),
            ],
            vec![],
        )
        .await;
        assert_eq!(created.status(), StatusCode::CREATED);
        let location = created.headers()["location"].to_str().unwrap().to_owned();
        let path = path_of(&location);
        assert_eq!(
            tus(&app, "DELETE", &path, std::slice::from_ref(&v), vec![]).await.status(),
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            tus(&app, "HEAD", &path, std::slice::from_ref(&v), vec![]).await.status(),
            StatusCode::NOT_FOUND
        );
        let too_big =
            tus(&app, "POST", "/tus", &[v.clone(), ("upload-length", (65u64 << 20).to_string())], vec![])
                .await;
        assert_eq!(too_big.status(), StatusCode::PAYLOAD_TOO_LARGE);

        let expired_app_config = app_with_tus_ttl(0);
        let created =
            tus(&expired_app_config, "POST", "/tus", &[v.clone(), ("upload-length", "5".into())], vec![])
                .await;
        let path = path_of(created.headers()["location"].to_str().unwrap());
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        assert_eq!(tus(&expired_app_config, "HEAD", &path, &[v], vec![]).await.status(), StatusCode::GONE);
    }
}
