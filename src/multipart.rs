//! `multipart` (S3): parts planned by S3's rules, sent concurrently to
//! presigned part URLs the broker signs in batches, and completed by the
//! broker with their ETags.

use crate::broker::{Broker, BrokerCall, SignedRequest};
use crate::engine::{Engine, Tracker, UploadOptions};
use crate::error::{ErrorCode, UploadError};
use crate::retry::RESIGNS;
use crate::session::MultipartPart;
use crate::state::SessionState;
use crate::store;
use crate::transport::{ByteSource, Clock, HttpResponse, Transport};
use futures::lock::Mutex;
use futures::{StreamExt, TryStreamExt};
use std::cell::RefCell;
use std::collections::BTreeMap;

pub const MIB: u64 = 1 << 20;
/// Every part but the last must be at least this large.
pub const MIN_PART_SIZE: u64 = 5 * MIB;
pub const MAX_PART_SIZE: u64 = 5 << 30;
pub const MAX_PARTS: u64 = 10_000;
pub const MAX_OBJECT_SIZE: u64 = 5 << 40;
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

    /// At least one part: an empty file is one empty part.
    pub fn count(&self) -> u32 {
        self.total.div_ceil(self.part_size).max(1) as u32
    }

    /// Byte range `[start, end)` of a part.
    pub fn range(&self, part_number: u32) -> (u64, u64) {
        let start = (u64::from(part_number) - 1) * self.part_size;
        (start, (start + self.part_size).min(self.total))
    }

    fn len(&self, part_number: u32) -> u64 {
        let (start, end) = self.range(part_number);
        end - start
    }
}

/// Hands out part URLs, signing them in batches just ahead of need.
struct PartSigner<'a, B, T, C> {
    engine: &'a Engine<B, T, C>,
    tracker: &'a Tracker,
    pending: &'a [u32],
    batch: usize,
    /// Signed requests not used yet, with the time after which they are
    /// too close to expiry to start with.
    signed: RefCell<BTreeMap<u32, (SignedRequest, f64)>>,
    /// One signing call at a time, so concurrent parts share a batch.
    signing: Mutex<()>,
}

impl<B: Broker, T: Transport, C: Clock> PartSigner<'_, B, T, C> {
    /// The signed request for a part: from the last batch if still fresh,
    /// otherwise from a new batch starting at this part.
    async fn request_for(&self, part_number: u32) -> Result<SignedRequest, UploadError> {
        let _one_at_a_time = self.signing.lock().await;
        let cached = self.signed.borrow_mut().remove(&part_number);
        match cached {
            Some((request, use_before)) if self.engine.clock.now_ms() < use_before => Ok(request),
            _ => {
                self.sign_batch_from(part_number).await?;
                let signed = self.signed.borrow_mut().remove(&part_number);
                Ok(signed.expect("check_reply: every part asked for is signed").0)
            }
        }
    }

    /// Signs the first batch before any part starts.
    async fn prefetch(&self, part_number: u32) -> Result<(), UploadError> {
        let _one_at_a_time = self.signing.lock().await;
        self.sign_batch_from(part_number).await
    }

    async fn sign_batch_from(&self, part_number: u32) -> Result<(), UploadError> {
        let from = self.pending.iter().position(|&n| n == part_number).unwrap_or(0);
        let part_numbers: Vec<u32> = self.pending[from..]
            .iter()
            .copied()
            .filter(|n| *n == part_number || !self.signed.borrow().contains_key(n))
            .take(self.batch)
            .collect();
        let session_id = self.tracker.session_id();
        let reply =
            self.engine.call(self.tracker, &BrokerCall::SignParts { session_id, part_numbers }).await?;
        let signed_at = self.engine.clock.now_ms();
        self.tracker.adopt(reply.session)?;
        let mut signed = self.signed.borrow_mut();
        for part in reply.parts {
            // Start a part only in the first 90 % of its URL's life, so a
            // slow part still finishes before the URL expires.
            let use_before = signed_at + part.upload.expires_in as f64 * 900.0;
            signed.insert(part.part_number, (part.upload, use_before));
        }
        Ok(())
    }
}

/// Sends every part the store does not hold yet; returns the complete part
/// list in part order.
pub(crate) async fn transfer<B, T, C, S>(
    engine: &Engine<B, T, C>,
    source: &S,
    tracker: &Tracker,
    plan: PartPlan,
    options: &UploadOptions,
    resuming: bool,
) -> Result<Vec<MultipartPart>, UploadError>
where
    B: Broker,
    T: Transport,
    C: Clock,
    S: ByteSource<Slice = T::Body>,
{
    let stored = if resuming { stored_parts(engine, tracker, plan).await? } else { BTreeMap::new() };
    // What the store holds counts as acknowledged at once, in one report
    // (progress slot 0 is never a part's).
    tracker.acked(0, stored.keys().map(|&n| plan.len(n)).sum());
    let pending: Vec<u32> = (1..=plan.count()).filter(|n| !stored.contains_key(n)).collect();
    let signer = PartSigner {
        engine,
        tracker,
        pending: &pending,
        batch: (options.concurrency * 2).clamp(1, 100),
        signed: RefCell::default(),
        signing: Mutex::new(()),
    };
    if let Some(&first) = pending.first() {
        signer.prefetch(first).await?;
    }
    tracker.transition(SessionState::Uploading)?;

    let sent: Vec<MultipartPart> = futures::stream::iter(pending.iter().copied())
        .map(|part_number| send_part(engine, source, tracker, &signer, plan, part_number))
        .buffer_unordered(options.concurrency.max(1))
        .try_collect()
        .await?;
    let mut parts: Vec<MultipartPart> = stored.into_values().chain(sent).collect();
    parts.sort_by_key(|p| p.part_number);
    tracker.transition(SessionState::Uploaded)?;
    Ok(parts)
}

/// On resume: the parts the store already holds (ListParts through the
/// broker), kept only where they match this file's plan.
async fn stored_parts<B: Broker, T: Transport, C: Clock>(
    engine: &Engine<B, T, C>,
    tracker: &Tracker,
    plan: PartPlan,
) -> Result<BTreeMap<u32, MultipartPart>, UploadError> {
    tracker.begin_resuming()?;
    let reply = engine.call(tracker, &BrokerCall::ListParts { session_id: tracker.session_id() }).await?;
    let listed = reply.session.multipart_parts.clone();
    tracker.adopt(reply.session)?;
    Ok(listed
        .into_iter()
        .filter(|p| (1..=plan.count()).contains(&p.part_number))
        .filter(|p| p.size.is_none_or(|size| size == plan.len(p.part_number)))
        .map(|p| (p.part_number, p))
        .collect())
}

async fn send_part<B, T, C, S>(
    engine: &Engine<B, T, C>,
    source: &S,
    tracker: &Tracker,
    signer: &PartSigner<'_, B, T, C>,
    plan: PartPlan,
    part_number: u32,
) -> Result<MultipartPart, UploadError>
where
    B: Broker,
    T: Transport,
    C: Clock,
    S: ByteSource<Slice = T::Body>,
{
    let (start, end) = plan.range(part_number);
    let accept = |response: &HttpResponse| {
        store::check_answer(response)?;
        let etag = response.header("etag").filter(|etag| !etag.is_empty()).map(str::to_owned);
        etag.map(|etag| (etag, end - start)).ok_or_else(|| {
            UploadError::new(
                ErrorCode::StoreMalformedResponse,
                format!(
                    "part {part_number} was stored but its ETag is not readable: \
                     the bucket's CORS rule must expose the ETag header"
                ),
            )
        })
    };
    // A URL that expired on the way is signed anew.
    let mut resigned = 0;
    let etag = loop {
        let signed = signer.request_for(part_number).await?;
        let request = || signed.request_with(source.slice(start, end));
        match engine.put_retrying(source, tracker, u64::from(part_number), end - start, request, accept).await
        {
            Err(e) if e.code == ErrorCode::UrlExpired && resigned < RESIGNS => resigned += 1,
            done => break done?,
        }
    };
    tracker.part_stored(part_number, &etag, end - start);
    Ok(MultipartPart { part_number, etag, size: Some(end - start) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_at_the_boundaries() {
        let plan = |total| PartPlan::new(total, DEFAULT_PART_SIZE).unwrap();
        assert_eq!((plan(0).count(), plan(0).range(1)), (1, (0, 0)));
        assert_eq!((plan(1).count(), plan(1).range(1)), (1, (0, 1)));

        let exactly_min = PartPlan::new(5 * MIB, MIN_PART_SIZE).unwrap();
        assert_eq!((exactly_min.count(), exactly_min.range(1)), (1, (0, 5 * MIB)));
        let one_over = PartPlan::new(5 * MIB + 1, MIN_PART_SIZE).unwrap();
        assert_eq!(one_over.count(), 2);
        assert_eq!(one_over.range(2), (5 * MIB, 5 * MIB + 1));

        let big = plan(200 * MIB);
        assert_eq!(big.count(), 25);
        assert_eq!(big.range(25), (192 * MIB, 200 * MIB));
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
        assert_eq!(largest.range(largest.count()).1, MAX_OBJECT_SIZE);
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
