//! `initiate`: a new session (and, for multipart, the store's upload), or
//! the one an earlier try with the same idempotency key created.

use super::{key_for, owned, reply, timestamp, AppState, Caller, Outcome, ServiceError};
use crate::db::Record;
use rindle_upload::broker::InitiateRequest;
use rindle_upload::multipart::{PartPlan, DEFAULT_PART_SIZE};
use rindle_upload::{ErrorCode, Session, SessionState, UploadStrategy};
use std::net::IpAddr;

/// `client`: the caller's address, for the rate of new sessions.
pub async fn initiate(
    state: &AppState,
    caller: &Caller,
    client: IpAddr,
    request: InitiateRequest,
) -> Outcome {
    if request.filename.is_empty() || request.filename.len() > 1024 {
        return Err(ServiceError::invalid("filename must be 1 to 1024 bytes"));
    }
    if !crate::config::is_media_type(&request.content_type) {
        return Err(ServiceError::invalid("content_type must be a media type such as text/plain"));
    }
    // Keys are the caller's own: another caller's key finds nothing.
    let idempotency_key = match &request.idempotency_key {
        Some(key) => {
            let plain = key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !(1..=128).contains(&key.len()) || !plain {
                return Err(ServiceError::invalid(
                    "idempotency_key must be 1-128 characters of [A-Za-z0-9_-]",
                ));
            }
            Some(format!("{}:{key}", caller.0))
        }
        None => None,
    };
    if let Some(key) = &idempotency_key {
        if let Some(id) = state.db.session_initiated_as(key)? {
            return initiated_before(state, &id, caller, &request);
        }
    }
    state.config.profile.check(request.byte_size, &request.content_type)?;
    // Only new sessions count: a retried initiate was answered above.
    let per_minute = state.config.limits.sessions_per_minute;
    if !state.limits.allow_session(client, super::unix(state.clock.now()), per_minute) {
        return Err(ServiceError::new(
            429,
            ErrorCode::RateLimited,
            "too many new sessions; try again in a minute",
        ));
    }
    let limit = state.config.limits.open_sessions;
    if state.db.open_sessions_of(&caller.0)? >= limit {
        return Err(ServiceError::new(
            429,
            ErrorCode::RateLimited,
            format!("at most {limit} unfinished sessions at once: finish or cancel one first"),
        ));
    }
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
        Some(_) => {
            Some(state.store.create_multipart(&key, &request.content_type, request.checksum_algorithm).await?)
        }
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
        owner: Some(caller.0.clone()),
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
            return initiated_before(state, &other, caller, &request_shape(&record));
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
        checksum_algorithm: None,
        idempotency_key: None,
    }
}

/// The answer to an `initiate` whose idempotency key created session `id`
/// before: that session, if the request is for the same file.
fn initiated_before(state: &AppState, id: &str, caller: &Caller, request: &InitiateRequest) -> Outcome {
    let record = owned(state, id, caller)?;
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
