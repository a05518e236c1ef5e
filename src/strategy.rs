//! The four ways bytes move, as one plan decided before anything is sent:
//! every per-strategy decision the engine needs (what to ask `initiate`
//! for, how to transfer, how to finish, how to discard at the store) is
//! made here, so the engine itself never matches on a strategy.

use crate::broker::{BrokerCall, InitiateRequest};
use crate::error::{ErrorCode, UploadError};
use crate::multipart::PartPlan;
use crate::options::{ResumableProtocol, UploadOptions};
use crate::progress::Piece;
use crate::recovery::{Committed, OffsetStore};
use crate::session::{Session, UploadStrategy};
use crate::toolbox::{ActiveUpload, Io};
use crate::transport::{check_header, HttpRequest};
use crate::wire::gcs::chunk_size;

/// The upload URL of an offset-resumed strategy. One type for both, so the
/// offset driver is compiled once.
pub(crate) enum OffsetUpload<'a, I: Io> {
    Gcs(crate::resumable::GcsSession<'a, I>),
    Tus(crate::tus::TusUpload<'a, I>),
}

impl<I: Io> OffsetStore for OffsetUpload<'_, I> {
    async fn send_chunk(&self, piece: Piece) -> Result<Committed, UploadError> {
        match self {
            OffsetUpload::Gcs(gcs) => gcs.send_chunk(piece).await,
            OffsetUpload::Tus(tus) => tus.send_chunk(piece).await,
        }
    }

    async fn committed(&self) -> Result<Committed, UploadError> {
        match self {
            OffsetUpload::Gcs(gcs) => gcs.committed().await,
            OffsetUpload::Tus(tus) => tus.committed().await,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    PresignedPut,
    Multipart(PartPlan),
    Resumable { chunk: u64 },
    Tus { chunk: u64 },
}

impl Plan {
    /// The plans to try, in order: the options' strategy, then its `auto`
    /// fallbacks (leaving out any that cannot carry this file). Refuses
    /// what cannot work before anything is sent.
    pub fn candidates(options: &UploadOptions, size: u64) -> Result<Vec<Plan>, UploadError> {
        if options.filename.is_empty() {
            return Err(UploadError::new(ErrorCode::InvalidRequest, "filename must not be empty"));
        }
        check_header("Content-Type", &options.content_type)?;
        let first = Plan::of((options.strategy, options.resumable_protocol), options, size)?;
        let rest = options.fallbacks.iter().filter_map(|&strategy| Plan::of(strategy, options, size).ok());
        Ok(std::iter::once(first).chain(rest).collect())
    }

    fn of(
        (strategy, protocol): (UploadStrategy, ResumableProtocol),
        options: &UploadOptions,
        size: u64,
    ) -> Result<Plan, UploadError> {
        Ok(match strategy {
            UploadStrategy::PresignedPut => Plan::PresignedPut,
            UploadStrategy::Multipart => Plan::Multipart(PartPlan::new(size, options.part_size)?),
            UploadStrategy::Resumable => match protocol {
                ResumableProtocol::GcsResumable => Plan::Resumable { chunk: chunk_size(options.chunk_size) },
                ResumableProtocol::Tus => Plan::Tus { chunk: chunk_size(options.chunk_size) },
            },
        })
    }

    /// The `initiate` call that starts a session for this plan.
    pub fn initiate(&self, options: &UploadOptions, size: u64, idempotency_key: &str) -> BrokerCall {
        let (upload_strategy, protocol) = match self {
            Plan::PresignedPut => (UploadStrategy::PresignedPut, None),
            Plan::Multipart(_) => (UploadStrategy::Multipart, None),
            Plan::Resumable { .. } => (UploadStrategy::Resumable, None),
            Plan::Tus { .. } => (UploadStrategy::Resumable, ResumableProtocol::Tus.wire_name()),
        };
        BrokerCall::Initiate(InitiateRequest {
            filename: options.filename.clone(),
            content_type: options.content_type.clone(),
            byte_size: size,
            upload_strategy,
            resumable_protocol: protocol.map(str::to_owned),
            part_size: match self {
                Plan::Multipart(parts) => Some(parts.part_size),
                _ => None,
            },
            checksum_algorithm: options.checksum.filter(|_| matches!(self, Plan::Multipart(_))),
            idempotency_key: Some(idempotency_key.to_owned()),
        })
    }

    /// Moves the bytes the store does not hold yet; answers the broker call
    /// that finishes the session.
    pub async fn transfer<I: Io>(
        &self,
        upload: &ActiveUpload<'_, I>,
        options: &UploadOptions,
        resuming: bool,
    ) -> Result<BrokerCall, UploadError> {
        let session_id = upload.session_id();
        // The whole file's checksum goes to the broker at completion.
        let checksum = match *self {
            Plan::PresignedPut => crate::presigned_put::transfer(upload).await?,
            Plan::Multipart(plan) => {
                let (parts, checksum) =
                    crate::multipart::transfer(upload, plan, options.concurrency, resuming).await?;
                return Ok(BrokerCall::CompleteMultipart { session_id, parts, checksum });
            }
            Plan::Resumable { chunk } => crate::resumable::transfer(upload, chunk, resuming).await?,
            Plan::Tus { chunk } => crate::tus::transfer(upload, options, chunk, resuming).await?,
        };
        Ok(BrokerCall::Complete { session_id, checksum })
    }

    /// The request that discards a cancelled upload at the store, for the
    /// strategies whose store keeps an upload URL (GCS: DELETE the session
    /// URI; tus: termination).
    pub fn discard_at_store<B>(&self, session: &Session) -> Option<HttpRequest<B>> {
        let uri = session.session_uri.as_ref()?;
        match self {
            Plan::Resumable { .. } => {
                Some(HttpRequest { method: "DELETE", url: uri.clone(), headers: vec![], body: None })
            }
            Plan::Tus { .. } => Some(crate::tus::termination(uri)),
            Plan::PresignedPut | Plan::Multipart(_) => None,
        }
    }
}
