//! `complete` and `multipart/complete`: the session goes to `verifying`,
//! the stored object is checked against the session and the profile, and
//! the session ends `completed` with its asset or `failed` with a reason.

use super::{
    discard_bytes, is_tus, multipart_plan, owned, refuse_if_expired, reply, save, timestamp, AppState,
    Caller, Outcome, ServiceError,
};
use crate::db::Record;
use crate::store::Inspected;
use rindle_upload::broker::Asset;
use rindle_upload::session::MultipartPart;
use rindle_upload::wire::checksum::{Checksum, ChecksumAlgorithm};
use rindle_upload::SessionState;
use serde::Deserialize;

/// Moves a session to `verifying`, or answers that verification already
/// ended: a retried `complete` (its first answer lost) gets the same
/// `completed` or `failed` session as the first.
fn begin_verifying(state: &AppState, record: &mut Record) -> Result<bool, ServiceError> {
    if matches!(record.session.state, SessionState::Completed | SessionState::Failed) {
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

/// Ends a verifying session: `completed` with its asset, or `failed` with
/// its bytes removed from the store.
async fn finish(state: &AppState, mut record: Record, verified: Result<Asset, String>) -> Outcome {
    let failed = verified.is_err();
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
    if failed {
        discard_bytes(state, &record).await;
    }
    Ok(reply(record))
}

/// What `complete` may carry: the checksum of the whole file as the client
/// read it, which the stored object must have.
#[derive(Default, Deserialize)]
pub struct CompleteBody {
    #[serde(default)]
    pub checksum: Option<Checksum>,
}

/// A whole-object checksum the broker can check: CRC32C, MD5 or SHA-256,
/// a digest of the algorithm's length.
fn check_whole(checksum: Option<&Checksum>) -> Result<(), ServiceError> {
    let Some(checksum) = checksum else { return Ok(()) };
    let known = !matches!(checksum.algorithm, ChecksumAlgorithm::Sha1);
    if !known || checksum.digest().is_none() {
        return Err(ServiceError::invalid("checksum must be a crc32c, md5 or sha256 digest, in base64"));
    }
    Ok(())
}

pub async fn complete(
    state: &AppState,
    id: &str,
    caller: &Caller,
    base: &str,
    request: CompleteBody,
) -> Outcome {
    check_whole(request.checksum.as_ref())?;
    let _writes = state.writes.lock(id).await;
    let mut record = owned(state, id, caller)?;
    if !begin_verifying(state, &mut record)? {
        return Ok(reply(record));
    }
    let verified = verify(state, &record, base, request.checksum.as_ref()).await;
    finish(state, record, verified).await
}

#[derive(Deserialize)]
pub struct CompleteMultipartBody {
    pub parts: Vec<MultipartPart>,
    /// As in `complete`.
    #[serde(default)]
    pub checksum: Option<Checksum>,
}

pub async fn complete_multipart(
    state: &AppState,
    id: &str,
    caller: &Caller,
    base: &str,
    request: CompleteMultipartBody,
) -> Outcome {
    check_whole(request.checksum.as_ref())?;
    let _writes = state.writes.lock(id).await;
    let mut record = owned(state, id, caller)?;
    let (_, upload_id) = multipart_plan(&record)?;
    if !begin_verifying(state, &mut record)? {
        return Ok(reply(record));
    }
    let key = record.session.upload_key.clone().unwrap_or_default();
    let verified = match state.store.complete_multipart(&key, &upload_id, &request.parts).await {
        Ok(()) => {
            record.session.multipart_parts = request.parts;
            verify(state, &record, base, request.checksum.as_ref()).await
        }
        // `finish` removes the parts of the failed session.
        Err(refused) => Err(refused.message),
    };
    finish(state, record, verified).await
}

/// Checks the stored object against the session, the profile and the
/// client's checksum of the whole file. Where the store holds that
/// checksum itself (it verified the bytes as they were written), its word
/// is taken and the object is not read back; the asset then has no SHA-256
/// unless the client's checksum was one.
async fn verify(
    state: &AppState,
    record: &Record,
    base: &str,
    checksum: Option<&Checksum>,
) -> Result<Asset, String> {
    let session = &record.session;
    let key = session.upload_key.clone().unwrap_or_default();
    let remote = state.remote_tus.as_ref().filter(|_| is_tus(session));
    let vouched = match (remote, checksum) {
        (None, Some(checksum)) => {
            state.store.vouch(&key, checksum, &session.multipart_parts).await.ok().flatten()
        }
        _ => None,
    };
    let (size, head, sha256) = match vouched {
        Some(vouched) => {
            let sha256 = checksum
                .filter(|c| c.algorithm == ChecksumAlgorithm::Sha256)
                .and_then(Checksum::digest)
                .map(hex::encode);
            (vouched.size, vouched.head, sha256)
        }
        None => {
            let stored = read_back(state, remote, session, &key, checksum).await?;
            (stored.size, stored.head, Some(stored.sha256))
        }
    };
    let declared = session.upload_length.unwrap_or(0);
    if size != declared {
        return Err(format!("stored {size} bytes, but the session declared {declared}"));
    }
    let profile = &state.config.profile;
    profile.check(size, &record.content_type).map_err(|e| e.message)?;
    profile.check_content(&record.content_type, &head).map_err(|e| e.message)?;
    // An external tus server's upload URL also writes: page code gets the
    // broker's read-only download route instead.
    let url = match remote {
        Some(_) => format!("{base}/objects/{key}"),
        None => state.store.object_url(base, &key, &record.content_type),
    };
    Ok(Asset {
        id: session.asset_id.clone().unwrap_or_default(),
        url,
        key,
        byte_size: size,
        content_type: record.content_type.clone(),
        sha256,
    })
}

/// Reads the stored object back and compares it with the client's checksum.
async fn read_back(
    state: &AppState,
    remote: Option<&crate::tus::RemoteTus>,
    session: &rindle_upload::session::Session,
    key: &str,
    checksum: Option<&Checksum>,
) -> Result<Inspected, String> {
    let uri = session.session_uri.as_ref().map(|u| u.expose().to_owned()).unwrap_or_default();
    let inspected = match remote {
        Some(remote) => remote.inspect(&uri, checksum.map(|c| c.algorithm)).await,
        None => state.store.inspect(key, checksum.map(|c| c.algorithm)).await,
    };
    let stored = match inspected {
        Ok(Some(found)) => found,
        Ok(None) => return Err("no object was stored for this session".into()),
        Err(e) => return Err(format!("the stored object could not be read: {e}")),
    };
    if let Some(checksum) = checksum.filter(|checksum| !stored.matches(checksum)) {
        return Err(format!(
            "the stored object's {} does not match the one the client computed of the file",
            checksum.algorithm.label()
        ));
    }
    Ok(stored)
}
