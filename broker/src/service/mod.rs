//! The session service: one function per broker protocol call
//! (docs/broker-protocol.md), the rules of sessions (state checks, expiry,
//! verification), and no HTTP types: `routes` is the HTTP face.

use crate::config::Config;
use crate::db::{Db, DbError, Record};
use crate::store::{Presigned, Store, StoreError, StoreErrorKind};
use crate::tus::RemoteTus;
use rindle_upload::broker::{BrokerReply, SignedPart, SignedRequest};
use rindle_upload::error::ErrorBody;
use rindle_upload::multipart::{PartPlan, DEFAULT_PART_SIZE};
use rindle_upload::secret::Secret;
use rindle_upload::wire::checksum::Checksum;
use rindle_upload::{ErrorCode, Session, SessionState, UploadError, UploadStrategy};
use serde::Deserialize;
use std::collections::BTreeMap;

mod complete;
mod initiate;

pub use complete::{complete, complete_multipart, CompleteMultipartBody};
pub use initiate::initiate;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub struct AppState {
    pub config: Config,
    pub clock: Clock,
    pub db: Db,
    pub store: Store,
    /// Set when tus sessions go to an external tus server.
    pub remote_tus: Option<RemoteTus>,
    pub writes: SessionLocks,
    pub limits: crate::limits::Limits,
}

/// Who calls: a digest of the caller's credential (the owner cookie, or
/// the bearer token), never the credential itself. Sessions are bound to
/// the caller that initiated them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller(pub String);

/// One lock per session (striped): a store write lands wholly before or
/// wholly after the call that ends its session (complete, cancel, the
/// sweeper), so an ended session's URLs never write again.
pub struct SessionLocks(Vec<tokio::sync::Mutex<()>>);

impl Default for SessionLocks {
    fn default() -> Self {
        SessionLocks((0..64).map(|_| tokio::sync::Mutex::new(())).collect())
    }
}

impl SessionLocks {
    pub async fn lock(&self, session: &str) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(session);
        self.0[(hash % self.0.len() as u64) as usize].lock().await
    }
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
        headers: presigned.headers.into_iter().collect(),
        expires_at: Some(timestamp(signed_at + ttl)),
        expires_in: Some(ttl.as_secs()),
    }
}

fn not_found() -> ServiceError {
    ServiceError::new(404, ErrorCode::SessionNotFound, "no such upload session")
}

/// Loads a session of `caller`'s, first letting it expire if its time has
/// passed. Another caller's session is answered as missing: its existence
/// is not told.
fn owned(state: &AppState, id: &str, caller: &Caller) -> Result<Record, ServiceError> {
    let record = load(state, id)?;
    if record.owner.as_deref() != Some(caller.0.as_str()) {
        return Err(not_found());
    }
    Ok(record)
}

/// Loads a session, first letting it expire if its time has passed.
fn load(state: &AppState, id: &str) -> Result<Record, ServiceError> {
    let mut record = state.db.get(id)?.ok_or_else(not_found)?;
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

/// Whether session `id` may take bytes now: only while it is signed and
/// not yet completing, cancelled, failed or expired.
pub fn accepts_bytes(state: &AppState, id: &str) -> Result<(), ServiceError> {
    let record = load(state, id)?;
    match record.session.state {
        SessionState::Signed | SessionState::Resuming | SessionState::Uploading => Ok(()),
        other => Err(ServiceError::new(
            409,
            ErrorCode::IllegalTransition,
            format!("the session is {other} and takes no more bytes"),
        )),
    }
}

/// Taken by the embedded store to put received bytes in place: the
/// session's lock, held while the bytes are placed, once the session is
/// seen to still take bytes.
pub async fn lock_for_bytes<'a>(
    state: &'a AppState,
    id: &str,
) -> Result<tokio::sync::MutexGuard<'a, ()>, ServiceError> {
    let guard = state.writes.lock(id).await;
    accepts_bytes(state, id)?;
    Ok(guard)
}

pub fn show(state: &AppState, id: &str, caller: &Caller) -> Outcome {
    Ok(reply(owned(state, id, caller)?))
}

/// What `sign` may carry: the checksum of the whole file, for a presigned
/// PUT (the store then verifies the bytes against it).
#[derive(Default, Deserialize)]
pub struct SignBody {
    #[serde(default)]
    pub checksum: Option<Checksum>,
    /// Not from the body: the page's origin, as the request's validated
    /// `Origin` header (a GCS session answers CORS only for it).
    #[serde(skip)]
    pub origin: Option<String>,
}

/// A checksum a client sent, as the store will check it.
fn claimed(checksum: &Checksum) -> Result<Checksum, ServiceError> {
    checksum.digest().map(|_| checksum.clone()).ok_or_else(|| {
        ServiceError::invalid(format!(
            "checksum value must be base64 of a {}-byte {} digest",
            checksum.algorithm.digest_len(),
            checksum.algorithm.label()
        ))
    })
}

/// `base`: where this broker is reached from, for the URLs it signs.
pub async fn sign(state: &AppState, id: &str, caller: &Caller, base: &str, request: SignBody) -> Outcome {
    let checksum = request.checksum.as_ref().map(claimed).transpose()?;
    let mut record = owned(state, id, caller)?;
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
                    expires_in: Some(state.config.session_ttl.as_secs()),
                }),
                // The broker pre-creates it on the embedded server, once.
                (None, Some(local)) => {
                    if record.session.session_uri.is_none() {
                        let expires = state.clock.now() + state.config.tus_ttl;
                        let upload = local.create_tus(&record.session.id, &key, total, unix(expires)).await?;
                        record.session.session_uri = Some(Secret::new(format!("{base}/tus/{upload}")));
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
                let uri = state
                    .store
                    .open_resumable(
                        base,
                        &record.session.id,
                        &key,
                        &record.content_type,
                        total,
                        request.origin.as_deref(),
                        ttl,
                    )
                    .await?;
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
            let presigned = state.store.presign_put(
                base,
                &record.session.id,
                &key,
                total,
                &record.content_type,
                checksum.as_ref(),
                ttl,
            )?;
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
pub async fn resumable_status(
    state: &AppState,
    id: &str,
    caller: &Caller,
    request: ResumableStatusBody,
) -> Outcome {
    let reported = request.offset;
    let mut record = owned(state, id, caller)?;
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
    /// Parts' checksums, by part number: each URL is signed for its part's.
    #[serde(default)]
    pub checksums: BTreeMap<u32, Checksum>,
}

pub async fn sign_parts(
    state: &AppState,
    id: &str,
    caller: &Caller,
    base: &str,
    request: SignPartsBody,
) -> Outcome {
    let mut record = owned(state, id, caller)?;
    refuse_if_expired(&record)?;
    let (plan, upload_id) = multipart_plan(&record)?;
    if request.part_numbers.is_empty() || request.part_numbers.len() > 1_000 {
        return Err(ServiceError::invalid("sign 1 to 1000 parts at a time"));
    }
    if let Some(bad) = request.part_numbers.iter().find(|n| !(1..=plan.count()).contains(n)) {
        return Err(ServiceError::invalid(format!("part {bad} is outside 1..={}", plan.count())));
    }
    let checksums = request
        .checksums
        .iter()
        .map(|(&part, checksum)| Ok((part, claimed(checksum)?)))
        .collect::<Result<BTreeMap<u32, Checksum>, ServiceError>>()?;
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
                    state.store.presign_part(
                        base,
                        &record.session.id,
                        &key,
                        &upload_id,
                        part_number,
                        plan.piece(part_number).len,
                        checksums.get(&part_number),
                        ttl,
                    )?,
                    state.clock.now(),
                    ttl,
                ),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(BrokerReply { parts, ..reply(record) })
}

pub async fn list_parts(state: &AppState, id: &str, caller: &Caller) -> Outcome {
    let mut record = owned(state, id, caller)?;
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

pub async fn cancel(state: &AppState, id: &str, caller: &Caller) -> Outcome {
    let _writes = state.writes.lock(id).await;
    let mut record = owned(state, id, caller)?;
    record.session.transition(SessionState::Aborted)?;
    save(state, &mut record)?;
    discard_bytes(state, &record).await;
    tracing::info!(session = %record.session.id, "session aborted");
    Ok(reply(record))
}

/// Removes whatever a session that ended without an asset (cancelled,
/// failed, expired) left in the store: its object, multipart upload or
/// resumable upload. Failures are logged: the sweeper tries nothing twice,
/// but a store's own lifecycle rules may.
async fn discard_bytes(state: &AppState, record: &Record) {
    let session = &record.session;
    let key = session.upload_key.clone().unwrap_or_default();
    if let Some(upload_id) = &session.multipart_upload_id {
        if let Err(e) = state.store.abort_multipart(&key, upload_id).await {
            tracing::warn!(session = %session.id, "could not abort the multipart upload: {e}");
        }
    }
    if let Some(uri) = &session.session_uri {
        let cancelled = match (is_tus(session), &state.remote_tus, state.store.local()) {
            (true, Some(remote), _) => remote.terminate(uri.expose()).await,
            (true, None, Some(local)) => local.cancel_resumable(crate::tus::upload_id(uri.expose())).await,
            _ => state.store.cancel_resumable(uri.expose()).await,
        };
        if let Err(e) = cancelled {
            tracing::warn!(session = %session.id, "could not cancel the resumable session: {e}");
        }
    }
    if let Err(e) = state.store.delete(&key).await {
        tracing::warn!(session = %session.id, "could not delete the object of an ended session: {e}");
    }
}

/// Expires the open sessions whose time ran out and removes their bytes.
/// Returns how many sessions it expired.
pub async fn sweep(state: &AppState) -> Result<usize, ServiceError> {
    let mut expired = 0;
    for id in state.db.open_sessions_expired_at(unix(state.clock.now()))? {
        let _writes = state.writes.lock(&id).await;
        let record = load(state, &id)?;
        if record.session.state == SessionState::Expired {
            discard_bytes(state, &record).await;
            expired += 1;
        }
    }
    Ok(expired)
}
