//! The embedded store's own HTTP endpoints, which behave like the real
//! stores: presigned object and part PUTs (S3), resumable session URIs
//! (GCS), and a tus 1.0 server. Mounted only when the store is the
//! embedded one.

use crate::service::{self, unix, AppState};
use crate::store::local::checksum::{claimed_by_gcs, claimed_by_s3, signed_form};
use crate::store::local::{Protocol, Received, Refusal, SignedQuery, WriteQuery};
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::Router;
use rindle_upload::transport::ChecksumAlgorithm;
use rindle_upload::wire::checksum::Checksum;
use rindle_upload::wire::gcs::{ChunkAnswer, ContentRange};
use rindle_upload::wire::tus::{parse_checksum, parse_size, OFFSET_CONTENT_TYPE, TUS_VERSION};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// What the embedded tus server offers. No creation: the broker creates
/// each upload for its session, so nobody makes uploads without one.
pub const TUS_EXTENSIONS: &str = "termination,expiration,checksum";

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/store/{*key}", put(store_put))
        .route("/store-parts/{upload_id}/{part_number}", put(store_put_part))
        .route("/store-resumable/{id}", put(store_resumable_put).delete(store_resumable_delete))
        .route("/tus", axum::routing::options(tus_options))
        .route(
            "/tus/{id}",
            axum::routing::head(tus_head).patch(tus_patch).delete(tus_delete).options(tus_options),
        )
}

/// Why a session's URL no longer writes, in the store's dialect.
fn no_more_bytes(refused: service::ServiceError) -> Refusal {
    if refused.status >= 500 {
        return Refusal::new(500, "InternalError", "the session could not be read");
    }
    Refusal::new(403, "AccessDenied", "the upload session no longer accepts bytes")
}

/// Receives a body for session `session` and, under its lock, lets
/// `place` put it where it goes, if the session still takes bytes then.
async fn write_for_session<T, F>(
    state: &AppState,
    session: &str,
    received: impl std::future::Future<Output = Result<Received, Refusal>>,
    place: impl FnOnce(Received) -> F,
) -> Result<T, Refusal>
where
    F: std::future::Future<Output = Result<T, Refusal>>,
{
    service::accepts_bytes(state, session).map_err(no_more_bytes)?;
    let received = received.await?;
    let _writes = service::lock_for_bytes(state, session).await.map_err(no_more_bytes)?;
    place(received).await
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
    query: Result<Query<WriteQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(local) = state.store.local() else { return StatusCode::NOT_FOUND.into_response() };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let result = async {
        let Ok(Query(query)) = query else { return Err(unsigned()) };
        let claimed = claimed_by_s3(&headers)?;
        let now = unix(state.clock.now());
        let grant = local.check_put(&key, &query, content_type, &signed_form(&claimed), now)?;
        let received = local.receive(body, grant.length, Some(grant.length), claimed);
        write_for_session(&state, &grant.session, received, |r| local.place_object(r, &grant.key)).await
    }
    .await;
    store_answer(result)
}

/// The embedded store's presigned part PUT: exactly the planned size.
async fn store_put_part(
    State(state): State<Arc<AppState>>,
    Path((upload_id, part_number)): Path<(String, u32)>,
    query: Result<Query<WriteQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(local) = state.store.local() else { return StatusCode::NOT_FOUND.into_response() };
    let result = async {
        let Ok(Query(query)) = query else { return Err(unsigned()) };
        let claimed = claimed_by_s3(&headers)?;
        let now = unix(state.clock.now());
        let grant = local.check_part(&upload_id, part_number, &query, &signed_form(&claimed), now)?;
        let received = local.receive(body, grant.length, Some(grant.length), claimed);
        write_for_session(&state, &grant.session, received, |r| local.place_part(r, &grant)).await
    }
    .await;
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
    let result = async {
        let Ok(Query(query)) = query else { return Err(unsigned()) };
        local.check_resumable(&id, &query, unix(state.clock.now()))?;
        let meta = local.resumable_meta(&id, Protocol::Gcs).await?;
        match range {
            None => Err(Refusal::new(400, "InvalidRange", "Content-Range is missing or malformed")),
            // A status query writes nothing: answered in any state.
            Some(range @ ContentRange::Status { .. }) => {
                local.resumable_put(&id, meta, range, None, vec![]).await
            }
            Some(range @ ContentRange::Chunk { start, last, .. }) => {
                let len = last + 1 - start;
                let session = meta.session.clone();
                let whole_object = claimed_by_gcs(&headers)?;
                let received = local.receive(body, len, Some(len), vec![]);
                write_for_session(&state, &session, received, |r| {
                    local.resumable_put(&id, meta, range, Some(r), whole_object)
                })
                .await
            }
        }
    }
    .await;
    match result {
        Ok(ChunkAnswer::Complete) => (StatusCode::OK, axum::Json(serde_json::json!({}))).into_response(),
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
    let result = async {
        let Ok(Query(query)) = query else { return Err(unsigned()) };
        local.check_resumable(&id, &query, unix(state.clock.now()))?;
        local.resumable_meta(&id, Protocol::Gcs).await?;
        local.cancel_resumable(&id).await.map_err(|e| Refusal::new(500, "InternalError", e.message))
    }
    .await;
    match result {
        // GCS answers a cancelled session with 499.
        Ok(()) => StatusCode::from_u16(499).expect("499 is a status").into_response(),
        Err(refusal) => refusal_response(refusal),
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
                [
                    ChecksumAlgorithm::Crc32c,
                    ChecksumAlgorithm::Md5,
                    ChecksumAlgorithm::Sha1,
                    ChecksumAlgorithm::Sha256,
                ]
                .map(ChecksumAlgorithm::name)
                .join(","),
            ),
            ("tus-max-size", state.config.profile.max_bytes.to_string()),
        ],
    )
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
    let now = unix(state.clock.now());
    let result = async {
        let meta = local.live_tus_meta(&id, now).await?;
        let (committed, total, _) = local.tus_head(&id, now).await?;
        if meta.complete {
            return Err(Refusal::new(
                403,
                "UploadComplete",
                "the upload is complete and takes no more bytes",
            ));
        }
        if offset != committed {
            let message = format!("the upload is at offset {committed}, not {offset}");
            return Err(Refusal::new(409, "Conflict", message));
        }
        let session = meta.session.clone();
        let claimed = checksum.map(|(algorithm, digest)| Checksum::of_digest(algorithm, &digest));
        // tus answers a chunk that does not match its checksum with 460.
        let received = async {
            local.receive(body, total - committed, None, claimed.into_iter().collect()).await.map_err(
                |refusal| match refusal.code {
                    "BadDigest" => {
                        Refusal::new(460, "ChecksumMismatch", "the chunk does not match Upload-Checksum")
                    }
                    _ => refusal,
                },
            )
        };
        write_for_session(&state, &session, received, |r| local.tus_patch(&id, meta, offset, r)).await
    }
    .await;
    match result {
        Ok(_) => {
            let (committed, _, expires) = local.tus_head(&id, now).await.unwrap_or((offset, 0, None));
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

/// Termination: an unfinished upload's bytes go; a completed upload (an
/// asset now) is left alone and the request refused.
async fn tus_delete(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(local) = state.store.local() else { return StatusCode::NOT_FOUND.into_response() };
    if let Err(refused) = tus_version(&headers) {
        return *refused;
    }
    let result = async {
        let meta = local.live_tus_meta(&id, unix(state.clock.now())).await?;
        if meta.complete {
            return Err(Refusal::new(403, "UploadComplete", "a completed upload is not terminated"));
        }
        local.cancel_resumable(&id).await.map_err(|e| Refusal::new(500, "InternalError", e.message))
    }
    .await;
    match result {
        Ok(()) => tus_response(StatusCode::NO_CONTENT, &[]),
        Err(refusal) => {
            tus_response(StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::NOT_FOUND), &[])
        }
    }
}
