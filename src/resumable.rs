//! `resumable` (GCS resumable sessions): chunks PUT to the session URI with
//! `Content-Range`, the store's `308` + `Range` telling how much it
//! committed, and a status query (`Content-Range: bytes */total`) after an
//! interruption. The header rules are in `wire::gcs`.

use crate::broker::BrokerCall;
use crate::error::{ErrorCode, UploadError};
use crate::progress::Piece;
use crate::recovery::{send_from_offset, Committed, OffsetStore};
use crate::secret::Secret;
use crate::state::SessionState;
use crate::strategy::OffsetUpload;
use crate::toolbox::{ActiveUpload, Io, PendingChecksum};
use crate::wire::checksum::Checksum;
use crate::wire::gcs::{chunk_request, read_answer, ChunkAnswer, ContentRange};
use crate::wire::s3::MIB;

pub const DEFAULT_CHUNK_SIZE: u64 = 8 * MIB;

fn as_committed(answer: ChunkAnswer, total: u64) -> Committed {
    match answer {
        ChunkAnswer::Complete => Committed { offset: total, complete: true },
        ChunkAnswer::Committed(offset) => Committed { offset, complete: false },
    }
}

/// A GCS resumable session: chunks and status queries to its URI.
pub(crate) struct GcsSession<'a, I: Io> {
    upload: &'a ActiveUpload<'a, I>,
    uri: Secret,
    /// The whole file's checksum, hashed from the start while chunks go:
    /// the last chunk carries it (`x-goog-hash`) and the store completes
    /// the object only if it holds.
    whole: Option<PendingChecksum<'a>>,
}

impl<I: Io> GcsSession<'_, I> {
    pub async fn send_chunk(&self, piece: Piece) -> Result<Committed, UploadError> {
        let total = self.upload.total();
        let range = ContentRange::for_bytes(piece.start, piece.end(), total);
        let body = self.upload.body(piece);
        let mut request = chunk_request(&self.uri, range, Some(body));
        if let Some(pending) = self.whole.as_ref().filter(|_| piece.end() == total) {
            if let Some(hash) = pending.checksum().await?.goog_hash() {
                request.headers.push(("x-goog-hash".to_owned(), hash));
            }
        }
        self.upload
            .send_piece(piece, request, |response| {
                let committed = as_committed(read_answer(response, total)?, total);
                let kept =
                    if committed.complete { piece.len } else { committed.offset.saturating_sub(piece.start) };
                Ok((committed, kept))
            })
            .await
    }

    /// The status query (`Content-Range: bytes */total`); the broker is
    /// told the offset so the session's `last_known_offset` follows.
    pub async fn committed(&self) -> Result<Committed, UploadError> {
        let total = self.upload.total();
        self.upload
            .tools
            .retrying(|| async {
                let request = chunk_request(&self.uri, ContentRange::Status { total }, None);
                let response = self.upload.tools.send_bodiless(request).await?;
                let committed = as_committed(read_answer(&response, total)?, total);
                let status = BrokerCall::ResumableStatus {
                    session_id: self.upload.session_id(),
                    offset: committed.offset,
                    session_uri: None,
                };
                self.upload.ask(&status).await?;
                Ok(committed)
            })
            .await
    }
}

/// Sends the file's bytes from the store's committed offset to the end;
/// answers the whole file's checksum, for `complete`.
pub(crate) async fn transfer<I: Io>(
    upload: &ActiveUpload<'_, I>,
    chunk: u64,
    resuming: bool,
) -> Result<Option<Checksum>, UploadError> {
    if upload.state() == SessionState::Initialized {
        // For a resumable session, signing opens the session at the store.
        upload.ask(&BrokerCall::Sign { session_id: upload.session_id(), checksum: None }).await?;
    }
    let (uri, expires_at) = {
        let session = upload.session();
        (session.session_uri.clone(), session.session_uri_expires_at.clone())
    };
    let uri = uri.ok_or_else(|| {
        UploadError::new(
            ErrorCode::BrokerMalformedResponse,
            "sign: a resumable session came without its session_uri",
        )
    })?;
    if expires_at.as_deref().and_then(crate::time::parse_ms).is_some_and(|at| at <= upload.tools.now_ms()) {
        upload.transition(SessionState::Expired)?;
        return Err(UploadError::new(ErrorCode::SessionExpired, "the resumable session's URI has expired"));
    }
    let whole = upload.tools.checksum_ahead(Piece::between(0, upload.total()));
    let session = OffsetUpload::Gcs(GcsSession { upload, uri, whole: whole.clone() });
    let mut at = Committed { offset: 0, complete: false };
    if resuming {
        upload.begin_resuming()?;
        at = session.committed().await?;
        // Every byte already there (the answer to the last chunk was lost).
        at.complete |= at.offset == upload.total() && at.offset > 0;
    }
    upload.already_stored(at.offset);
    upload.transition(SessionState::Uploading)?;
    send_from_offset(upload, &session, at, chunk).await?;
    upload.transition(SessionState::Uploaded)?;
    match whole {
        Some(pending) => pending.checksum().await.map(Some),
        None => Ok(None),
    }
}
