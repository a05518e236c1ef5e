//! The session service: one function per broker protocol call
//! (docs/broker-protocol.md), the rules of sessions (state checks, expiry,
//! verification), and no HTTP types: `routes` is the HTTP face.

use crate::config::Config;
use crate::db::{Db, DbError, Record};
use crate::store::{Presigned, Store, StoreError, StoreErrorKind};
use crate::tus::RemoteTus;
use rindle_upload::broker::{Asset, BrokerReply, InitiateRequest, SignedPart, SignedRequest};
use rindle_upload::error::ErrorBody;
use rindle_upload::multipart::{PartPlan, DEFAULT_PART_SIZE};
use rindle_upload::secret::Secret;
use rindle_upload::session::MultipartPart;
use rindle_upload::{ErrorCode, Session, SessionState, UploadError, UploadStrategy};
use serde::Deserialize;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub struct AppState {
    pub config: Config,
    pub clock: Clock,
    pub db: Db,
    pub store: Store,
    /// Set when tus sessions go to an external tus server.
    pub remote_tus: Option<RemoteTus>,
}

/// A refused call: the HTTP status it is answered with, and the protocol's
/// error body (`{"error": {"code", "message", "retryable"}}`).
#[derive(Debug)]
pub struct ServiceError {
    pub status: u16,
    pub body: ErrorBody,
}

impl ServiceError {
    pub fn new(status: u16, code: ErrorCode, message: impl Into<String>) -> Self {
        ServiceError { status, body: ErrorBody::new(code, message) }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        ServiceError::new(400, ErrorCode::InvalidRequest, message)
    }
}

impl From<UploadError> for ServiceError {
    fn from(e: UploadError) -> Self {
        let status = match e.code {
            ErrorCode::IllegalTransition => 409,
            ErrorCode::SessionExpired => 410,
            ErrorCode::InvalidRequest => 400,
            _ => 422,
        };
        ServiceError::new(status, e.code, e.message)
    }
}

impl From<DbError> for ServiceError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Changed => ServiceError::new(
                409,
                ErrorCode::IllegalTransition,
                "the session changed while this call ran (a concurrent call); ask again",
            ),
            e => {
                tracing::error!("database: {e}");
                ServiceError::new(500, ErrorCode::Internal, "database error")
            }
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e.kind {
            StoreErrorKind::Refused | StoreErrorKind::NotFound => {
                ServiceError::new(422, ErrorCode::StoreRejected, format!("the object store refused: {e}"))
            }
            StoreErrorKind::Failed => {
                tracing::error!("store: {e}");
                ServiceError::new(502, ErrorCode::Internal, format!("the object store failed: {e}"))
            }
        }
    }
}

/// What every call answers: the session (and what the call adds), or a refusal.
pub type Outcome = Result<BrokerReply, ServiceError>;

pub fn is_tus(session: &Session) -> bool {
    session.resumable_protocol.as_deref() == Some("tus")
}

/// The broker's clock: the system's, which tests move on by hand so that
/// expiry is tested without sleeping.
#[derive(Default)]
pub struct Clock {
    moved_on: Mutex<Duration>,
}

impl Clock {
    pub fn now(&self) -> SystemTime {
        SystemTime::now() + *self.moved_on.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    pub fn advance(&self, by: Duration) {
        *self.moved_on.lock().unwrap_or_else(PoisonError::into_inner) += by;
    }
}

pub fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// The reply every call gives: the session, its asset once completed, and a
/// multipart session's part size (the client plans with it).
fn reply(record: Record) -> BrokerReply {
    BrokerReply {
        session: record.session,
        upload: None,
        parts: vec![],
        asset: record.asset,
        part_size: record.part_size,
    }
}

fn signed_request(presigned: Presigned, signed_at: SystemTime, ttl: Duration) -> SignedRequest {
    SignedRequest {
        method: "PUT".into(),
        url: Secret::new(presigned.url),
        headers: presigned.headers,
        expires_at: Some(timestamp(signed_at + ttl)),
        expires_in: ttl.as_secs(),
    }
}

/// Loads a session, first letting it expire if its time has passed.
fn load(state: &AppState, id: &str) -> Result<Record, ServiceError> {
    let mut record = state
        .db
        .get(id)?
        .ok_or_else(|| ServiceError::new(404, ErrorCode::SessionNotFound, "no such upload session"))?;
    let session = &mut record.session;
    let past_ttl = session
        .expires_at
        .as_deref()
        .and_then(|t| humantime::parse_rfc3339(t).ok())
        .is_some_and(|t| state.clock.now() > t);
    if past_ttl && session.state.can_transition_to(SessionState::Expired) {
        session.transition(SessionState::Expired)?;
        save(state, &mut record)?;
    }
    Ok(record)
}

fn save(state: &AppState, record: &mut Record) -> Result<(), ServiceError> {
    record.session.updated_at = Some(timestamp(state.clock.now()));
    Ok(state.db.save(record)?)
}

fn refuse_if_expired(record: &Record) -> Result<(), ServiceError> {
    if record.session.state == SessionState::Expired {
        return Err(ServiceError::new(410, ErrorCode::SessionExpired, "the upload session has expired"));
    }
    Ok(())
}

/// The part plan of a multipart session; refuses other sessions.
fn multipart_plan(record: &Record) -> Result<(PartPlan, String), ServiceError> {
    let session = &record.session;
    match (session.upload_strategy, &session.multipart_upload_id) {
        (UploadStrategy::Multipart, Some(upload_id)) => {
            let plan = PartPlan::new(
                session.upload_length.unwrap_or(0),
                record.part_size.unwrap_or(DEFAULT_PART_SIZE),
            )?;
            Ok((plan, upload_id.clone()))
        }
        _ => Err(ServiceError::invalid("this call is for multipart sessions")),
    }
}

/// Object keys keep a readable, safe rendering of the file name.
pub fn key_for(asset_id: &str, filename: &str) -> String {
    let safe: String = filename
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' { c } else { '_' })
        .take(100)
        .collect();
    let safe = safe.trim_start_matches('.');
    format!("uploads/{asset_id}/{}", if safe.is_empty() { "file" } else { safe })
}

pub async fn initiate(state: &AppState, request: InitiateRequest) -> Outcome {
    if request.filename.is_empty() {
        return Err(ServiceError::invalid("filename must not be empty"));
    }
    let idempotency_key = request.idempotency_key.clone();
    if let Some(key) = &idempotency_key {
        let plain = key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !(1..=128).contains(&key.len()) || !plain {
            return Err(ServiceError::invalid("idempotency_key must be 1-128 characters of [A-Za-z0-9_-]"));
        }
        if let Some(id) = state.db.session_initiated_as(key)? {
            return initiated_before(state, &id, &request);
        }
    }
    state.config.profile.check(request.byte_size, &request.content_type)?;
    let tus = match request.resumable_protocol.as_deref() {
        None => false,
        Some("tus") if request.upload_strategy == UploadStrategy::Resumable => true,
        Some(other) => {
            return Err(ServiceError::new(
                422,
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
        return Err(ServiceError::new(
            422,
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

    let created = state.clock.now();
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
        revision: 0,
    };
    let stored = match &idempotency_key {
        Some(key) => state.db.insert_initiated(&record, key),
        None => state.db.insert(&record),
    };
    if let Err(e) = stored {
        // A concurrent try with the same key won: give up this session's
        // multipart upload and answer with that one.
        let other = idempotency_key.as_deref().map(|key| state.db.session_initiated_as(key));
        if let Some(Ok(Some(other))) = other {
            if let Some(upload_id) = &record.session.multipart_upload_id {
                let key = record.session.upload_key.as_deref().unwrap_or_default();
                let _ = state.store.abort_multipart(key, upload_id).await;
            }
            return initiated_before(state, &other, &request_shape(&record));
        }
        return Err(e.into());
    }
    tracing::info!(session = %record.session.id, bytes = request.byte_size, "session initialized");
    Ok(reply(record))
}

/// What `initiate` asked for, as a record keeps it.
fn request_shape(record: &Record) -> InitiateRequest {
    InitiateRequest {
        filename: record.filename.clone(),
        content_type: record.content_type.clone(),
        byte_size: record.session.upload_length.unwrap_or(0),
        upload_strategy: record.session.upload_strategy,
        resumable_protocol: record.session.resumable_protocol.clone(),
        part_size: record.part_size,
        idempotency_key: None,
    }
}

/// The answer to an `initiate` whose idempotency key created session `id`
/// before: that session, if the request is for the same file.
fn initiated_before(state: &AppState, id: &str, request: &InitiateRequest) -> Outcome {
    let record = load(state, id)?;
    let earlier = request_shape(&record);
    let same_file = (earlier.filename.as_str(), earlier.byte_size, earlier.upload_strategy)
        == (request.filename.as_str(), request.byte_size, request.upload_strategy);
    if !same_file {
        return Err(ServiceError::new(
            409,
            ErrorCode::InvalidRequest,
            "this idempotency_key started a session for another file",
        ));
    }
    Ok(reply(record))
}

pub fn show(state: &AppState, id: &str) -> Outcome {
    Ok(reply(load(state, id)?))
}

/// `base`: where this broker is reached from, for the URLs it signs.
pub async fn sign(state: &AppState, id: &str, base: &str) -> Outcome {
    let mut record = load(state, id)?;
    refuse_if_expired(&record)?;
    let key = record.session.upload_key.clone().unwrap_or_default();
    let total = record.session.upload_length.unwrap_or(0);
    match record.session.upload_strategy {
        UploadStrategy::Multipart => {
            Err(ServiceError::invalid("multipart sessions sign parts: POST {id}/parts/sign"))
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
                        let expires = state.clock.now() + state.config.tus_ttl;
                        let id = local.create_tus(&key, total, unix(expires)).await?;
                        record.session.session_uri = Some(Secret::new(format!("{base}/tus/{id}")));
                        record.session.session_uri_expires_at = Some(timestamp(expires));
                        record.session.last_known_offset = Some(0);
                    }
                    None
                }
                (None, None) => return Err(ServiceError::invalid("this broker offers no tus server")),
            };
            save(state, &mut record)?;
            Ok(BrokerReply { upload: creation, ..reply(record) })
        }
        // Signing a resumable session opens it at the store, once.
        UploadStrategy::Resumable => {
            record.session.transition(SessionState::Signed)?;
            if record.session.session_uri.is_none() {
                let ttl = state.config.session_uri_ttl;
                let uri = state.store.open_resumable(base, &key, &record.content_type, total, ttl).await?;
                record.session.session_uri = Some(Secret::new(uri));
                record.session.session_uri_expires_at = Some(timestamp(state.clock.now() + ttl));
                record.session.last_known_offset = Some(0);
            }
            save(state, &mut record)?;
            Ok(reply(record))
        }
        UploadStrategy::PresignedPut => {
            record.session.transition(SessionState::Signed)?;
            save(state, &mut record)?;
            let ttl = state.config.url_ttl;
            let presigned = state.store.presign_put(base, &key, total, &record.content_type, ttl)?;
            let upload = Some(signed_request(presigned, state.clock.now(), ttl));
            Ok(BrokerReply { upload, ..reply(record) })
        }
    }
}

#[derive(Deserialize)]
pub struct ResumableStatusBody {
    pub offset: u64,
    /// The upload URL a tus client created on the external server.
    #[serde(default)]
    pub session_uri: Option<String>,
}

/// The client reports an offset; the broker records the store's own
/// answer, which is the truth.
pub async fn resumable_status(state: &AppState, id: &str, request: ResumableStatusBody) -> Outcome {
    let reported = request.offset;
    let mut record = load(state, id)?;
    refuse_if_expired(&record)?;
    if let (Some(created), None, Some(remote)) =
        (&request.session_uri, &record.session.session_uri, &state.remote_tus)
    {
        if !is_tus(&record.session) || !remote.owns(created) {
            return Err(ServiceError::invalid("the upload URL is not on this broker's tus server"));
        }
        record.session.session_uri = Some(Secret::new(created.clone()));
    }
    let Some(uri) = record.session.session_uri.clone() else {
        return Err(ServiceError::invalid("this call is for resumable sessions that were signed"));
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
    save(state, &mut record)?;
    Ok(reply(record))
}

#[derive(Deserialize)]
pub struct SignPartsBody {
    pub part_numbers: Vec<u32>,
}

pub async fn sign_parts(state: &AppState, id: &str, base: &str, request: SignPartsBody) -> Outcome {
    let mut record = load(state, id)?;
    refuse_if_expired(&record)?;
    let (plan, upload_id) = multipart_plan(&record)?;
    if request.part_numbers.is_empty() || request.part_numbers.len() > 1_000 {
        return Err(ServiceError::invalid("sign 1 to 1000 parts at a time"));
    }
    if let Some(bad) = request.part_numbers.iter().find(|n| !(1..=plan.count()).contains(n)) {
        return Err(ServiceError::invalid(format!("part {bad} is outside 1..={}", plan.count())));
    }
    record.session.transition(SessionState::Signed)?;
    save(state, &mut record)?;

    let ttl = state.config.url_ttl;
    let key = record.session.upload_key.clone().unwrap_or_default();
    let parts = request
        .part_numbers
        .iter()
        .map(|&part_number| {
            Ok(SignedPart {
                part_number,
                upload: signed_request(
                    state.store.presign_part(base, &key, &upload_id, part_number, ttl)?,
                    state.clock.now(),
                    ttl,
                ),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(BrokerReply { parts, ..reply(record) })
}

pub async fn list_parts(state: &AppState, id: &str) -> Outcome {
    let mut record = load(state, id)?;
    refuse_if_expired(&record)?;
    let (_, upload_id) = multipart_plan(&record)?;
    if record.session.state.is_terminal() {
        return Ok(reply(record));
    }
    let key = record.session.upload_key.clone().unwrap_or_default();
    record.session.multipart_parts = state.store.list_parts(&key, &upload_id).await?;
    save(state, &mut record)?;
    Ok(reply(record))
}

/// Moves a session to `verifying`, or answers that it is already completed.
fn begin_verifying(state: &AppState, record: &mut Record) -> Result<bool, ServiceError> {
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
fn finish(state: &AppState, mut record: Record, verified: Result<Asset, String>) -> Outcome {
    match verified {
        Ok(asset) => {
            record.session.transition(SessionState::Completed)?;
            record.session.verified_at = Some(timestamp(state.clock.now()));
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
    Ok(reply(record))
}

pub async fn complete(state: &AppState, id: &str, base: &str) -> Outcome {
    let mut record = load(state, id)?;
    if !begin_verifying(state, &mut record)? {
        return Ok(reply(record));
    }
    let verified = verify(state, &record, base).await;
    finish(state, record, verified)
}

#[derive(Deserialize)]
pub struct CompleteMultipartBody {
    pub parts: Vec<MultipartPart>,
}

pub async fn complete_multipart(
    state: &AppState,
    id: &str,
    base: &str,
    request: CompleteMultipartBody,
) -> Outcome {
    let mut record = load(state, id)?;
    let (_, upload_id) = multipart_plan(&record)?;
    if !begin_verifying(state, &mut record)? {
        return Ok(reply(record));
    }
    let key = record.session.upload_key.clone().unwrap_or_default();
    let verified = match state.store.complete_multipart(&key, &upload_id, &request.parts).await {
        Ok(()) => {
            record.session.multipart_parts = request.parts;
            verify(state, &record, base).await
        }
        Err(refused) => {
            // A failed session must not leave parts behind in the store.
            if let Err(e) = state.store.abort_multipart(&key, &upload_id).await {
                tracing::warn!(session = %record.session.id, "could not abort a refused multipart upload: {e}");
            }
            Err(refused.message)
        }
    };
    finish(state, record, verified)
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

pub async fn cancel(state: &AppState, id: &str) -> Outcome {
    let mut record = load(state, id)?;
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
    save(state, &mut record)?;
    tracing::info!(session = %record.session.id, "session aborted");
    Ok(reply(record))
}
