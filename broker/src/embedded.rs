//! The embedded store's own HTTP endpoints, which behave like the real
//! stores: presigned object and part PUTs (S3), resumable session URIs
//! (GCS), and a tus 1.0 server. Mounted only when the store is the
//! embedded one.

use crate::routes::base_url;
use crate::service::{key_for, unix, AppState};
use crate::store::local::{PutQuery, Refusal, SignedQuery};
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Json, Router};
use rindle_upload::transport::ChecksumAlgorithm;
use rindle_upload::wire::gcs::{ChunkAnswer, ContentRange};
use rindle_upload::wire::tus::{
    algorithm_name, decode_metadata, parse_checksum, parse_size, OFFSET_CONTENT_TYPE, TUS_VERSION,
};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// What the embedded tus server offers.
pub const TUS_EXTENSIONS: &str = "creation,termination,expiration,checksum";

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/store/{*key}", put(store_put))
        .route("/store-parts/{upload_id}/{part_number}", put(store_put_part))
        .route("/store-resumable/{id}", put(store_resumable_put).delete(store_resumable_delete))
        .route("/tus", post(tus_create).options(tus_options))
        .route(
            "/tus/{id}",
            axum::routing::head(tus_head).patch(tus_patch).delete(tus_delete).options(tus_options),
        )
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
        Ok(Query(query)) => match local.check_put(&key, &query, content_type, unix(state.clock.now())) {
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
        Ok(Query(query)) => {
            match local.check_part(&upload_id, part_number, &query, unix(state.clock.now())) {
                Ok(grant) => local.write_part(&grant, body).await,
                Err(refusal) => Err(refusal),
            }
        }
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
        (Ok(Query(query)), range) => {
            match (local.check_resumable(&id, &query, unix(state.clock.now())), range) {
                (Err(refusal), _) => Err(refusal),
                (Ok(()), None) => {
                    Err(Refusal::new(400, "InvalidRange", "Content-Range is missing or malformed"))
                }
                (Ok(()), Some(range)) => local.resumable_put(&id, range, body).await,
            }
        }
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
        Ok(Query(query)) => local.check_resumable(&id, &query, unix(state.clock.now())),
        Err(_) => Err(unsigned()),
    };
    match checked {
        Err(refusal) => refusal_response(refusal),
        Ok(()) => match local.cancel_resumable(&id).await {
            // GCS answers a cancelled session with 499.
            Ok(()) => StatusCode::from_u16(499).expect("499 is a status").into_response(),
            Err(e) => refusal_response(Refusal::new(500, "InternalError", e.message)),
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
    let expires = unix(state.clock.now() + state.config.tus_ttl);
    let key = key_for(&format!("tus-{id}"), filename);
    match local.create_tus(&key, total, expires).await {
        Ok(created) => tus_response(
            StatusCode::CREATED,
            &[
                ("location", format!("{}/tus/{created}", base_url(&state.config, &headers))),
                ("upload-expires", http_date(expires)),
            ],
        ),
        Err(e) => refusal_response(Refusal::new(500, "InternalError", e.message)),
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
    match local.tus_head(&id, unix(state.clock.now())).await {
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
    match local.tus_patch(&id, offset, body, checksum, unix(state.clock.now())).await {
        Ok(_) => {
            let (committed, _, expires) =
                local.tus_head(&id, unix(state.clock.now())).await.unwrap_or((offset, 0, None));
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
        Err(e) => refusal_response(Refusal::new(500, "InternalError", e.message)),
    }
}
