//! `multipart` (S3): parts planned by S3's rules, sent concurrently to
//! presigned part URLs the broker signs in batches, and completed by the
//! broker with their ETags.

use crate::broker::BrokerCall;
use crate::error::{ErrorCode, UploadError};
use crate::progress::Piece;
use crate::recovery::{send_signed, UrlSigner};
use crate::session::MultipartPart;
use crate::state::SessionState;
use crate::toolbox::{ActiveUpload, Io};
use crate::transport::{ChecksumAlgorithm, HttpResponse};
use crate::wire::checksum::Checksum;
use crate::wire::s3::{self, MAX_OBJECT_SIZE, MAX_PARTS, MAX_PART_SIZE, MIB, MIN_PART_SIZE};
use futures::{StreamExt, TryStreamExt};

/// Rindle's default.
pub const DEFAULT_PART_SIZE: u64 = 8 * MIB;
pub const DEFAULT_CONCURRENCY: usize = 4;

/// How a file of `total` bytes splits into parts numbered from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartPlan {
    pub total: u64,
    pub part_size: u64,
}

impl PartPlan {
    /// The one place S3's part rules live. A requested part size outside
    /// 5 MiB..=5 GiB is refused; one that would need more than 10,000 parts
    /// grows (in whole MiB) until the file fits.
    pub fn new(total: u64, requested_part_size: u64) -> Result<PartPlan, UploadError> {
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&requested_part_size) {
            return Err(UploadError::new(
                ErrorCode::InvalidRequest,
                format!("partSize {requested_part_size} is outside S3's 5 MiB to 5 GiB"),
            ));
        }
        if total > MAX_OBJECT_SIZE {
            return Err(UploadError::new(
                ErrorCode::FileTooLarge,
                format!("{total} bytes is over S3's 5 TiB object limit"),
            ));
        }
        let smallest_fitting = total.div_ceil(MAX_PARTS).next_multiple_of(MIB);
        Ok(PartPlan { total, part_size: requested_part_size.max(smallest_fitting) })
    }

    /// This plan with the part size the broker planned the session with, if
    /// it said one: part numbers mean the same on both sides.
    pub fn as_planned_by(self, broker_part_size: Option<u64>) -> Result<PartPlan, UploadError> {
        let Some(part_size) = broker_part_size.filter(|&size| size != self.part_size) else {
            return Ok(self);
        };
        match PartPlan::new(self.total, part_size) {
            Ok(plan) if plan.part_size == part_size => Ok(plan),
            _ => Err(UploadError::new(
                ErrorCode::BrokerMalformedResponse,
                format!("the broker's part size {part_size} breaks S3's part rules for this file"),
            )),
        }
    }

    /// At least one part: an empty file is one empty part.
    pub fn count(&self) -> u32 {
        self.total.div_ceil(self.part_size).max(1) as u32
    }

    /// The bytes of a part.
    pub fn piece(&self, part_number: u32) -> Piece {
        let start = (u64::from(part_number) - 1) * self.part_size;
        Piece::between(start, (start + self.part_size).min(self.total))
    }
}

/// Values by part number (0: a single URL's key): a slot per number, which
/// compiles to much less WebAssembly than a `BTreeMap` and costs at most a
/// slot for each of S3's 10,000 parts.
pub(crate) struct ByPart<T>(Vec<Option<T>>);

impl<T> Default for ByPart<T> {
    fn default() -> Self {
        ByPart(Vec::new())
    }
}

impl<T> ByPart<T> {
    pub fn get(&self, part: u32) -> Option<&T> {
        self.0.get(part as usize)?.as_ref()
    }

    pub fn get_mut(&mut self, part: u32) -> Option<&mut T> {
        self.0.get_mut(part as usize)?.as_mut()
    }

    pub fn insert(&mut self, part: u32, value: T) {
        let at = part as usize;
        if at >= self.0.len() {
            self.0.resize_with(at + 1, || None);
        }
        self.0[at] = Some(value);
    }

    pub fn remove(&mut self, part: u32) -> Option<T> {
        self.0.get_mut(part as usize)?.take()
    }

    /// The values, in part order.
    pub fn into_values(self) -> impl Iterator<Item = T> {
        self.0.into_iter().flatten()
    }
}

/// Sends every part the store does not hold yet; returns the complete part
/// list in part order, and the whole file's checksum when it comes from the
/// parts' (CRC32C combines; other algorithms would need another pass).
pub(crate) async fn transfer<I: Io>(
    upload: &ActiveUpload<'_, I>,
    plan: PartPlan,
    concurrency: usize,
    resuming: bool,
) -> Result<(Vec<MultipartPart>, Option<Checksum>), UploadError> {
    let plan = plan.as_planned_by(upload.planned_part_size())?;
    let mut parts = if resuming { stored_parts(upload, plan).await? } else { ByPart::default() };
    let pending: Vec<u32> = (1..=plan.count()).filter(|&n| parts.get(n).is_none()).collect();
    // What the store holds counts as acknowledged at once, in one report.
    upload.already_stored(plan.total - pending.iter().map(|&n| plan.piece(n).len).sum::<u64>());
    let signer = UrlSigner::parts(upload, &pending, concurrency, plan);
    if let Some(&first) = pending.first() {
        signer.sign_ahead(first).await?;
    }
    upload.transition(SessionState::Uploading)?;

    let mut sent = futures::stream::iter(pending.iter().copied())
        .map(|part_number| send_part(upload, &signer, plan, part_number))
        .buffer_unordered(concurrency.max(1));
    while let Some(part) = sent.try_next().await? {
        parts.insert(part.part_number, part);
    }
    drop(sent);
    upload.transition(SessionState::Uploaded)?;
    let mut known = signer.into_checksums();
    let checksum = whole_crc32c(upload, plan, &mut known).await?;
    // Each part goes to `multipart/complete` with its checksum (the store
    // may need it; the broker can verify from them).
    let parts = parts
        .into_values()
        .map(|part| MultipartPart { checksum: known.get(part.part_number).cloned(), ..part })
        .collect();
    Ok((parts, checksum))
}

/// The whole file's CRC32C from its parts' (parts a resumed upload found
/// stored are checksummed now, into `known`), when the upload's checksum
/// is CRC32C.
async fn whole_crc32c<I: Io>(
    upload: &ActiveUpload<'_, I>,
    plan: PartPlan,
    known: &mut ByPart<Checksum>,
) -> Result<Option<Checksum>, UploadError> {
    if upload.tools.checksum != Some(ChecksumAlgorithm::Crc32c) {
        return Ok(None);
    }
    let mut pieces = Vec::with_capacity(plan.count() as usize);
    for part in 1..=plan.count() {
        if known.get(part).is_none() {
            if let Some(checksum) = upload.tools.checksum_of(plan.piece(part)).await? {
                known.insert(part, checksum);
            }
        }
        let crc = known.get(part).and_then(|c| c.digest()).and_then(|d| <[u8; 4]>::try_from(d).ok());
        let Some(crc) = crc else { return Ok(None) };
        pieces.push((u32::from_be_bytes(crc), plan.piece(part).len));
    }
    let whole = crate::digest::crc32c_of_pieces(pieces);
    Ok(Some(Checksum::of_digest(ChecksumAlgorithm::Crc32c, &whole.to_be_bytes())))
}

/// On resume: the parts the store already holds (ListParts through the
/// broker), kept only where they match this file's plan.
async fn stored_parts<I: Io>(
    upload: &ActiveUpload<'_, I>,
    plan: PartPlan,
) -> Result<ByPart<MultipartPart>, UploadError> {
    upload.begin_resuming()?;
    let reply = upload.ask(&BrokerCall::ListParts { session_id: upload.session_id() }).await?;
    let mut stored = ByPart::default();
    for part in reply.session.multipart_parts {
        let planned = (1..=plan.count()).contains(&part.part_number);
        if planned && part.size.is_none_or(|size| size == plan.piece(part.part_number).len) {
            stored.insert(part.part_number, part);
        }
    }
    Ok(stored)
}

async fn send_part<I: Io>(
    upload: &ActiveUpload<'_, I>,
    signer: &UrlSigner<'_, I>,
    plan: PartPlan,
    part_number: u32,
) -> Result<MultipartPart, UploadError> {
    let piece = plan.piece(part_number);
    let accept = |response: &HttpResponse| {
        s3::check_answer(response)?;
        let etag = response.header("etag").filter(|etag| !etag.is_empty()).map(str::to_owned);
        etag.map(|etag| (etag, piece.len)).ok_or_else(|| {
            UploadError::new(
                ErrorCode::StoreMalformedResponse,
                format!(
                    "part {part_number} was stored but its ETag is not readable: \
                     the bucket's CORS rule must expose the ETag header"
                ),
            )
        })
    };
    let etag = send_signed(signer, part_number, piece, accept).await?;
    upload.part_stored(part_number, &etag, piece.len);
    Ok(MultipartPart { part_number, etag, size: Some(piece.len), checksum: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_at_the_boundaries() {
        let plan = |total| PartPlan::new(total, DEFAULT_PART_SIZE).unwrap();
        assert_eq!((plan(0).count(), plan(0).piece(1)), (1, Piece::between(0, 0)));
        assert_eq!((plan(1).count(), plan(1).piece(1)), (1, Piece::between(0, 1)));

        let exactly_min = PartPlan::new(5 * MIB, MIN_PART_SIZE).unwrap();
        assert_eq!((exactly_min.count(), exactly_min.piece(1)), (1, Piece::between(0, 5 * MIB)));
        let one_over = PartPlan::new(5 * MIB + 1, MIN_PART_SIZE).unwrap();
        assert_eq!(one_over.count(), 2);
        assert_eq!(one_over.piece(2), Piece::between(5 * MIB, 5 * MIB + 1));

        let big = plan(200 * MIB);
        assert_eq!(big.count(), 25);
        assert_eq!(big.piece(25), Piece::between(192 * MIB, 200 * MIB));
    }

    #[test]
    fn part_size_grows_past_ten_thousand_parts() {
        let at_limit = PartPlan::new(10_000 * DEFAULT_PART_SIZE, DEFAULT_PART_SIZE).unwrap();
        assert_eq!((at_limit.part_size, at_limit.count()), (DEFAULT_PART_SIZE, 10_000));
        let over = PartPlan::new(10_000 * DEFAULT_PART_SIZE + 1, DEFAULT_PART_SIZE).unwrap();
        assert_eq!((over.part_size, over.count()), (9 * MIB, 8_889));
        let largest = PartPlan::new(MAX_OBJECT_SIZE, DEFAULT_PART_SIZE).unwrap();
        assert!(largest.count() as u64 <= MAX_PARTS);
        assert!(largest.part_size <= MAX_PART_SIZE);
        assert_eq!(largest.piece(largest.count()).end(), MAX_OBJECT_SIZE);
    }

    #[test]
    fn impossible_plans_are_typed_errors() {
        assert_eq!(
            PartPlan::new(MAX_OBJECT_SIZE + 1, DEFAULT_PART_SIZE).unwrap_err().code,
            ErrorCode::FileTooLarge
        );
        assert_eq!(PartPlan::new(10, MIN_PART_SIZE - 1).unwrap_err().code, ErrorCode::InvalidRequest);
        assert_eq!(PartPlan::new(10, MAX_PART_SIZE + 1).unwrap_err().code, ErrorCode::InvalidRequest);
    }
}
