//! Recovery, in one place: what a failed store request means (`recovery_for`),
//! the one rule for when a signed URL is still fresh (the first 90 % of its
//! life), the one re-signing sender used by `presigned_put` and `multipart`,
//! and the one offset-resume driver used by GCS resumable and tus.

use crate::broker::{BrokerCall, SignedRequest};
use crate::error::{ErrorCode, UploadError};
use crate::multipart::{ByPart, PartPlan};
use crate::progress::Piece;
use crate::toolbox::{ActiveUpload, Io, PendingDigest};
use crate::transport::HttpResponse;
use crate::wire::checksum::{Checksum, ChecksumAlgorithm};
use futures::lock::Mutex;
use std::cell::RefCell;

/// A URL the store refused as expired is signed anew this many times per
/// piece before `url_expired` is reported.
const RESIGNS_AFTER_REFUSAL: usize = 1;
/// Tries in a row that moved a resumable upload's offset nowhere before it
/// gives up; also how often one piece the store refuses as corrupted is
/// sent again.
const TRIES_WITHOUT_PROGRESS: usize = 5;

/// How the pieces of a strategy are addressed, which decides what a failure
/// can be answered with.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pieces {
    /// Each piece has its own presigned URL (`presigned_put`, `multipart`).
    SignedUrls,
    /// Pieces go to one upload URL at the offset the store holds (GCS
    /// resumable, tus).
    Offsets,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// Wait out the policy's backoff, then go on (an offset upload asks the
    /// store where it stands first).
    BackOff,
    /// The store refused the URL as expired: sign it again, send at once.
    Resign,
    /// The store holds another offset than the request assumed, or refused
    /// a chunk that overlaps what it kept (a browser may resend a PUT on its
    /// own after a reset): ask it at once.
    AskOffset,
    /// The piece was corrupted on the way: send it again at once.
    Resend,
    Fail,
}

/// What a failed store request means.
pub(crate) fn recovery_for(error: &UploadError, pieces: Pieces) -> Recovery {
    match (error.code, pieces) {
        (ErrorCode::UrlExpired, Pieces::SignedUrls) => Recovery::Resign,
        (ErrorCode::UrlExpired, Pieces::Offsets) => Recovery::Fail,
        (ErrorCode::ChecksumMismatch, _) => Recovery::Resend,
        (ErrorCode::OffsetConflict, Pieces::Offsets) => Recovery::AskOffset,
        (ErrorCode::StoreRejected, Pieces::Offsets) if !error.retryable => Recovery::AskOffset,
        _ if error.retryable => Recovery::BackOff,
        _ => Recovery::Fail,
    }
}

/// A signed request and the moment after which it is too close to expiry
/// to start with, so a slow piece still finishes before the URL expires.
struct SignedUrl {
    request: SignedRequest,
    use_before_ms: f64,
    handed_out: bool,
}

impl SignedUrl {
    fn new(request: SignedRequest, signed_at_ms: f64) -> Self {
        let use_before_ms = request.expires_in.map_or(f64::INFINITY, |s| signed_at_ms + s as f64 * 900.0);
        SignedUrl { request, use_before_ms, handed_out: false }
    }
}

/// Hands out URLs in the first 90 % of their life, signing anew when one is
/// not: one URL from `sign` (`presigned_put`), or part URLs from
/// `signParts` in batches just ahead of need (`multipart`).
pub(crate) struct UrlSigner<'a, I: Io> {
    upload: &'a ActiveUpload<'a, I>,
    /// `multipart`: the part numbers to send, in order, how many are sent
    /// at once, and the plan; `None`: the one URL of `presigned_put`,
    /// keyed 0.
    parts: Option<(&'a [u32], usize, PartPlan)>,
    /// The checksums URLs are signed for, by key: computed once per piece
    /// (a URL signed again keeps its piece's).
    checksums: RefCell<ByPart<Checksum>>,
    /// Digests under way: of the batch being signed (hashed together), and
    /// of the next, hashed while this batch goes.
    ahead: RefCell<ByPart<PendingDigest<'a>>>,
    signed: RefCell<ByPart<SignedUrl>>,
    /// One signing call at a time, so concurrent parts share a batch.
    signing: Mutex<()>,
}

impl<'a, I: Io> UrlSigner<'a, I> {
    /// `checksum`: the whole file's, which the URL is signed for.
    pub fn single(upload: &'a ActiveUpload<'a, I>, checksum: Option<Checksum>) -> Self {
        let signer = UrlSigner {
            upload,
            parts: None,
            checksums: RefCell::default(),
            ahead: RefCell::default(),
            signed: RefCell::default(),
            signing: Mutex::new(()),
        };
        if let Some(checksum) = checksum {
            signer.checksums.borrow_mut().insert(0, checksum);
        }
        signer
    }

    pub fn parts(
        upload: &'a ActiveUpload<'a, I>,
        pending: &'a [u32],
        concurrency: usize,
        plan: PartPlan,
    ) -> Self {
        UrlSigner {
            upload,
            parts: Some((pending, concurrency.max(1), plan)),
            checksums: RefCell::default(),
            ahead: RefCell::default(),
            signed: RefCell::default(),
            signing: Mutex::new(()),
        }
    }

    /// The checksums computed, by part number.
    pub fn into_checksums(self) -> ByPart<Checksum> {
        self.checksums.into_inner()
    }

    /// Part `part`'s checksum, computed the first time it is asked for
    /// (or hashed ahead).
    async fn part_checksum(&self, part: u32, plan: PartPlan) -> Result<Option<Checksum>, UploadError> {
        if let Some(known) = self.checksums.borrow().get(part) {
            return Ok(Some(known.clone()));
        }
        let Some(algorithm) = self.upload.tools.checksum else { return Ok(None) };
        let ahead = self.ahead.borrow_mut().remove(part);
        let computed = match ahead {
            Some(pending) => Some(Checksum::of_digest(algorithm, &pending.await?)),
            None => self.upload.tools.checksum_of(plan.piece(part)).await?,
        };
        if let Some(checksum) = &computed {
            self.checksums.borrow_mut().insert(part, checksum.clone());
        }
        Ok(computed)
    }

    /// Starts hashing `parts` whose checksums are not known or under way:
    /// started together, they share the checksum workers.
    fn hash_ahead(&self, parts: impl Iterator<Item = u32>, plan: PartPlan, algorithm: ChecksumAlgorithm) {
        let mut ahead = self.ahead.borrow_mut();
        for part in parts {
            if ahead.get(part).is_none() && self.checksums.borrow().get(part).is_none() {
                ahead.insert(part, self.upload.tools.digest_ahead(plan.piece(part), algorithm));
            }
        }
    }

    /// Signs the URLs starting at `key` before any byte moves.
    pub async fn sign_ahead(&self, key: u32) -> Result<(), UploadError> {
        let _one_at_a_time = self.signing.lock().await;
        self.sign_from(key).await
    }

    /// Whether `key`'s URL is fresh; `None` if none is held.
    fn is_fresh(&self, key: u32) -> Option<bool> {
        let now = self.upload.tools.now_ms();
        self.signed.borrow().get(key).map(|url| now < url.use_before_ms)
    }

    fn hand_out(&self, key: u32) -> Option<SignedRequest> {
        let mut signed = self.signed.borrow_mut();
        let url = signed.get_mut(key)?;
        url.handed_out = true;
        Some(url.request.clone())
    }

    /// A fresh URL for `key` (a part number; 0 for the single URL). One that
    /// aged while its piece was retried is signed anew; one that was too old
    /// before its first use (the broker signs too short a life) is
    /// `url_expired`. `refused`: the store refused the last one as expired,
    /// so it is signed anew whatever its clock says.
    pub async fn url_for(&self, key: u32, refused: bool) -> Result<SignedRequest, UploadError> {
        let expired_before_use =
            || UploadError::new(ErrorCode::UrlExpired, "the presigned URL expired before it could be used");
        let _one_at_a_time = self.signing.lock().await;
        if refused {
            self.signed.borrow_mut().remove(key);
        }
        let unused = self.signed.borrow().get(key).is_some_and(|url| !url.handed_out);
        match self.is_fresh(key) {
            Some(true) => return self.hand_out(key).ok_or_else(expired_before_use),
            Some(false) if unused => return Err(expired_before_use()),
            _ => self.sign_from(key).await?,
        }
        match self.is_fresh(key) {
            Some(true) => self.hand_out(key).ok_or_else(expired_before_use),
            _ => Err(expired_before_use()),
        }
    }

    async fn sign_from(&self, key: u32) -> Result<(), UploadError> {
        let session_id = self.upload.session_id();
        let Some((pending, concurrency, plan)) = self.parts else {
            let checksum = self.checksums.borrow().get(0).cloned();
            let reply = self.upload.ask(&BrokerCall::Sign { session_id, checksum }).await?;
            let request = reply.upload.ok_or_else(|| {
                UploadError::new(ErrorCode::BrokerMalformedResponse, "sign: reply has no `upload` request")
            })?;
            let signed_at = self.upload.tools.now_ms();
            self.signed.borrow_mut().insert(key, SignedUrl::new(request, signed_at));
            return Ok(());
        };
        // A call signs twice the parts in flight, so that URLs are ready
        // before they are needed. The first, when parts are hashed before
        // they are signed, signs only those sent at once: the bytes start
        // after hashing those, not the whole batch.
        let per_call = (concurrency * 2).min(100);
        let first = pending.first() == Some(&key) && self.signed.borrow().get(key).is_none();
        let first_hashed = first && self.upload.tools.checksum.is_some();
        let batch = if first_hashed { concurrency.min(100) } else { per_call };
        let from = pending.iter().position(|&n| n == key).unwrap_or(0);
        let part_numbers: Vec<u32> = pending[from..]
            .iter()
            .copied()
            .filter(|&n| n == key || self.is_fresh(n) != Some(true))
            .take(batch)
            .collect();
        if let Some(algorithm) = self.upload.tools.checksum {
            self.hash_ahead(part_numbers.iter().copied(), plan, algorithm);
        }
        let mut checksums = Vec::new();
        for &part in &part_numbers {
            if let Some(checksum) = self.part_checksum(part, plan).await? {
                checksums.push((part, checksum));
            }
        }
        let reply = self.upload.ask(&BrokerCall::SignParts { session_id, part_numbers, checksums }).await?;
        if let (Some(algorithm), Some(&last)) =
            (self.upload.tools.checksum, reply.parts.iter().map(|p| &p.part_number).max())
        {
            // The next batch is hashed while this one goes.
            let after = pending.iter().position(|&n| n == last).map_or(pending.len(), |i| i + 1);
            self.hash_ahead(pending[after..].iter().copied().take(per_call), plan, algorithm);
        }
        let signed_at = self.upload.tools.now_ms();
        let mut signed = self.signed.borrow_mut();
        for part in reply.parts {
            signed.insert(part.part_number, SignedUrl::new(part.upload, signed_at));
        }
        Ok(())
    }
}

/// Sends `piece` to the URL `signer` holds for `key`, until the store takes
/// it: every attempt starts with a fresh URL (so a retry after a network
/// error never reuses a URL past its life), a URL refused as expired is
/// signed again, other failures that may pass are backed off.
pub(crate) async fn send_signed<I: Io, R>(
    signer: &UrlSigner<'_, I>,
    key: u32,
    piece: Piece,
    accept: impl Fn(&HttpResponse) -> Result<(R, u64), UploadError>,
) -> Result<R, UploadError> {
    let upload = signer.upload;
    let (mut tries, mut resigned, mut resent, mut refused) = (0, 0, 0, false);
    loop {
        let attempt = async {
            let signed = signer.url_for(key, refused).await?;
            upload.send_piece(piece, signed.request_with(upload.body(piece)), &accept).await
        };
        let error = match attempt.await {
            Ok(read) => return Ok(read),
            Err(e) => e,
        };
        match recovery_for(&error, Pieces::SignedUrls) {
            Recovery::Resign if resigned < RESIGNS_AFTER_REFUSAL => {
                (resigned, refused) = (resigned + 1, true)
            }
            // Corrupted on the way (the store checked the signed checksum):
            // the same bytes again, to the same URL.
            Recovery::Resend if resent < TRIES_WITHOUT_PROGRESS && upload.tools.spend_retry() => {
                (resent, refused) = (resent + 1, false)
            }
            Recovery::BackOff if upload.tools.back_off(&mut tries, &error).await => refused = false,
            _ => return Err(error),
        }
    }
}

/// Where an offset upload stands: the bytes the store holds, and whether it
/// has taken the whole upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Committed {
    pub offset: u64,
    pub complete: bool,
}

/// What the offset-resume driver asks of an upload URL; implemented once,
/// by `strategy::OffsetUpload` (a GCS session or a tus upload), so the
/// driver is compiled once.
#[allow(async_fn_in_trait)]
pub(crate) trait OffsetStore {
    /// Sends `piece`; answers where the store stands after it.
    async fn send_chunk(&self, piece: Piece) -> Result<Committed, UploadError>;
    /// Asks the store where it stands (and tells the broker), retrying
    /// failures that may pass.
    async fn committed(&self) -> Result<Committed, UploadError>;
}

/// Sends chunks of `chunk` bytes from `at` until the store holds the whole
/// upload, asking it where it stands after every interruption.
pub(crate) async fn send_from_offset<I: Io>(
    upload: &ActiveUpload<'_, I>,
    store: &impl OffsetStore,
    mut at: Committed,
    chunk: u64,
) -> Result<(), UploadError> {
    let total = upload.total();
    // Tries in a row that moved nothing; also the backoff's attempt number
    // (a failure while offline counts none: `back_off` waits for the network).
    let mut fruitless = 0;
    while !at.complete {
        let piece = Piece::between(at.offset, (at.offset + chunk).min(total));
        let error = match store.send_chunk(piece).await {
            Ok(next) => {
                fruitless = if next.offset > at.offset { 0 } else { fruitless + 1 };
                at = next;
                if fruitless >= TRIES_WITHOUT_PROGRESS {
                    return Err(keeps_refusing());
                }
                continue;
            }
            Err(e) => e,
        };
        let recovery = recovery_for(&error, Pieces::Offsets);
        match recovery {
            Recovery::Resend | Recovery::AskOffset => fruitless += 1,
            Recovery::BackOff if upload.tools.back_off(&mut fruitless, &error).await => {}
            _ => return Err(error),
        }
        if fruitless >= TRIES_WITHOUT_PROGRESS {
            // A refused checksum stays what it is; refusals to go on are
            // summed up.
            return Err(if recovery == Recovery::AskOffset { keeps_refusing() } else { error });
        }
        if recovery == Recovery::Resend {
            continue;
        }
        let before = at.offset;
        at = match store.committed().await {
            Ok(committed) => committed,
            // Some stores forget an upload once they finalized its object:
            // after the last byte went out unanswered, the broker's
            // verification judges whether it landed.
            Err(gone) if gone.code == ErrorCode::SessionExpired && piece.end() == total => {
                upload.acked(piece, piece.len);
                Committed { offset: total, complete: true }
            }
            Err(e) => return Err(e),
        };
        upload.already_stored(at.offset.saturating_sub(before));
        if at.offset > before {
            fruitless = 0;
        }
    }
    Ok(())
}

fn keeps_refusing() -> UploadError {
    UploadError::new(ErrorCode::StoreRejected, "the store keeps refusing to take more bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: ErrorCode, retryable: bool) -> UploadError {
        UploadError { retryable, ..UploadError::new(code, "x") }
    }

    #[test]
    fn what_each_failure_means() {
        use Pieces::*;
        let cases = [
            (error(ErrorCode::UrlExpired, true), SignedUrls, Recovery::Resign),
            (error(ErrorCode::UrlExpired, true), Offsets, Recovery::Fail),
            (error(ErrorCode::NetworkError, true), SignedUrls, Recovery::BackOff),
            (error(ErrorCode::NetworkError, true), Offsets, Recovery::BackOff),
            (error(ErrorCode::StoreServerError, true), Offsets, Recovery::BackOff),
            (error(ErrorCode::ChecksumMismatch, true), Offsets, Recovery::Resend),
            (error(ErrorCode::ChecksumMismatch, true), SignedUrls, Recovery::Resend),
            (error(ErrorCode::OffsetConflict, true), Offsets, Recovery::AskOffset),
            (error(ErrorCode::StoreRejected, false), Offsets, Recovery::AskOffset),
            (error(ErrorCode::StoreRejected, false), SignedUrls, Recovery::Fail),
            (error(ErrorCode::SignatureInvalid, false), SignedUrls, Recovery::Fail),
            (error(ErrorCode::FileChanged, false), Offsets, Recovery::Fail),
        ];
        for (error, pieces, expected) in cases {
            assert_eq!(recovery_for(&error, pieces), expected, "{:?}", error.code);
        }
    }
}
