//! Upload options: the core type the engine reads, and the one place the
//! caller's options become it (defaults, ranges, `auto`, the merge with a
//! previous upload's record). The browser edge only converts JavaScript
//! values into `GivenOptions`; every rule is here and tested natively.

use crate::error::{shown, ErrorCode, UploadError};
use crate::multipart::{DEFAULT_CONCURRENCY, DEFAULT_PART_SIZE};
use crate::resumable::DEFAULT_CHUNK_SIZE;
use crate::retry::RetryPolicy;
use crate::session::UploadStrategy;
use crate::transport::ChecksumAlgorithm;

/// Which resumable protocol a `resumable` upload speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResumableProtocol {
    /// GCS resumable sessions (Rindle's `resumable_protocol` is absent).
    #[default]
    GcsResumable,
    /// tus 1.0 (`resumable_protocol: "tus"`).
    Tus,
}

impl ResumableProtocol {
    /// Its name in the broker protocol's `resumable_protocol`.
    pub fn wire_name(self) -> Option<&'static str> {
        match self {
            ResumableProtocol::GcsResumable => None,
            ResumableProtocol::Tus => Some("tus"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadOptions {
    pub filename: String,
    pub content_type: String,
    pub strategy: UploadStrategy,
    /// `resumable`: over GCS resumable sessions or tus 1.0.
    pub resumable_protocol: ResumableProtocol,
    /// `multipart`: the requested part size (it grows for huge files).
    pub part_size: u64,
    /// `multipart`: parts in flight at once.
    pub concurrency: usize,
    /// `resumable`: bytes per chunk (rounded to whole 256 KiB units).
    pub chunk_size: u64,
    /// tus: create the upload without its length (creation-defer-length)
    /// and send the length with the first PATCH.
    pub defer_length: bool,
    /// The checksum each piece is sent with and the store verifies (and
    /// the whole file's, given to the broker at completion); `None`: off.
    pub checksum: Option<ChecksumAlgorithm>,
    /// Continue this existing session instead of starting one.
    pub resume_session_id: Option<String>,
    /// `auto`: the strategies to try next, in order, when the broker does
    /// not offer the one before (`unsupported_strategy` at `initiate`).
    pub fallbacks: Vec<(UploadStrategy, ResumableProtocol)>,
    /// When a request has failed and when it is tried again (store
    /// requests and broker calls alike).
    pub retry: RetryPolicy,
}

impl UploadOptions {
    pub fn new(
        filename: impl Into<String>,
        content_type: impl Into<String>,
        strategy: UploadStrategy,
    ) -> Self {
        UploadOptions {
            filename: filename.into(),
            content_type: content_type.into(),
            strategy,
            resumable_protocol: ResumableProtocol::default(),
            part_size: DEFAULT_PART_SIZE,
            concurrency: DEFAULT_CONCURRENCY,
            chunk_size: DEFAULT_CHUNK_SIZE,
            defer_length: false,
            checksum: Some(ChecksumAlgorithm::Crc32c),
            resume_session_id: None,
            fallbacks: Vec::new(),
            retry: RetryPolicy::default(),
        }
    }

    /// The strategy's name as the JavaScript API spells it (`tus` is the
    /// `resumable` strategy over tus).
    pub fn strategy_name(&self) -> &'static str {
        match (self.strategy, self.resumable_protocol) {
            (UploadStrategy::Resumable, ResumableProtocol::Tus) => "tus",
            (strategy, _) => strategy.as_str(),
        }
    }
}

/// Options as a caller gave them, unchecked: numbers as JavaScript numbers,
/// `None` where not given.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GivenOptions {
    pub strategy: Option<String>,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub part_size: Option<f64>,
    pub concurrency: Option<f64>,
    pub chunk_size: Option<f64>,
    pub session_id: Option<String>,
    pub retry_delays: Option<Vec<f64>>,
    pub stall_timeout: Option<f64>,
    pub retry_budget: Option<f64>,
    pub defer_length: bool,
    /// "crc32c", "sha256", "md5" or "none".
    pub checksum: Option<String>,
    /// `auto.multipartAbove`: files larger than this go multipart first.
    pub multipart_above: Option<f64>,
}

/// What the file itself says.
pub struct FileFacts {
    pub name: Option<String>,
    pub content_type: String,
    pub size: u64,
}

/// Most parts in flight at once.
pub const MAX_CONCURRENCY: u64 = 64;

impl GivenOptions {
    /// Options given for this upload, filled in from `previous` (the record
    /// of an earlier upload being continued, whose strategy, part and chunk
    /// size and session must be kept), then from the file and the defaults.
    pub fn resolve(&self, previous: &GivenOptions, file: &FileFacts) -> Result<UploadOptions, UploadError> {
        let strategy_name = self.strategy.as_deref().or(previous.strategy.as_deref());
        let multipart_above =
            self.multipart_above.map_or(Ok(DEFAULT_PART_SIZE), |n| whole_number("auto.multipartAbove", n))?;
        let mut strategies = parse_strategy(strategy_name, file.size, multipart_above)?;
        let (strategy, resumable_protocol) = strategies.remove(0);
        let filename = self.filename.clone().or_else(|| file.name.clone()).unwrap_or_else(|| "blob".into());
        let content_type = self
            .content_type
            .clone()
            .or_else(|| Some(file.content_type.clone()).filter(|t| !t.is_empty()))
            .unwrap_or_else(|| "application/octet-stream".into());
        let defaults = UploadOptions::new(filename, content_type, strategy);
        let number = |key: &str, given: Option<f64>, default: u64| -> Result<u64, UploadError> {
            given.map_or(Ok(default), |n| whole_number(key, n))
        };
        let concurrency = number("concurrency", self.concurrency, defaults.concurrency as u64)?;
        if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
            return Err(invalid(format!("option `concurrency` must be 1 to {MAX_CONCURRENCY}")));
        }
        let retry_delays = match &self.retry_delays {
            None => defaults.retry.delays_ms.clone(),
            Some(delays) => {
                delays.iter().map(|&n| whole_number("retryDelays", n)).collect::<Result<_, _>>()?
            }
        };
        Ok(UploadOptions {
            resumable_protocol,
            part_size: number("partSize", self.part_size.or(previous.part_size), defaults.part_size)?,
            concurrency: concurrency as usize,
            chunk_size: number("chunkSize", self.chunk_size.or(previous.chunk_size), defaults.chunk_size)?,
            defer_length: self.defer_length,
            checksum: match self.checksum.as_deref() {
                None => defaults.checksum,
                Some("none") => None,
                Some(name @ ("crc32c" | "sha256" | "md5")) => ChecksumAlgorithm::named(name),
                Some(_) => {
                    return Err(invalid(
                        "option `checksum` is \"crc32c\", \"sha256\", \"md5\" or \"none\"".into(),
                    ))
                }
            },
            resume_session_id: self.session_id.clone().or_else(|| previous.session_id.clone()),
            fallbacks: strategies,
            retry: RetryPolicy {
                delays_ms: retry_delays,
                stall_timeout_ms: number(
                    "stallTimeout",
                    self.stall_timeout,
                    defaults.retry.stall_timeout_ms,
                )?,
                budget: number("retryBudget", self.retry_budget, defaults.retry.budget as u64)? as usize,
            },
            ..defaults
        })
    }
}

/// The strategies to try, in order: the one named, or for "auto" (or
/// none) every strategy, presigned PUT first up to `multipart_above` bytes
/// and multipart first above (a store without it gets the next it offers).
fn parse_strategy(
    name: Option<&str>,
    size: u64,
    multipart_above: u64,
) -> Result<Vec<(UploadStrategy, ResumableProtocol)>, UploadError> {
    let (gcs, tus) = (ResumableProtocol::GcsResumable, ResumableProtocol::Tus);
    let (put, multipart, resumable) =
        (UploadStrategy::PresignedPut, UploadStrategy::Multipart, UploadStrategy::Resumable);
    Ok(match name {
        None | Some("auto") if size > multipart_above => {
            vec![(multipart, gcs), (resumable, gcs), (resumable, tus), (put, gcs)]
        }
        None | Some("auto") => vec![(put, gcs), (multipart, gcs), (resumable, gcs), (resumable, tus)],
        Some("presigned_put") => vec![(put, gcs)],
        Some("multipart") => vec![(multipart, gcs)],
        Some("resumable") => vec![(resumable, gcs)],
        Some("tus") => vec![(resumable, tus)],
        Some(other) => {
            return Err(invalid(["unknown strategy ", &shown(other)].concat()));
        }
    })
}

/// Largest integer a JavaScript number holds exactly.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// A whole number from 0 to 2^53 − 1 (what a JavaScript number holds
/// exactly): the one rule for numeric options and reply fields.
pub(crate) fn exact_whole(n: f64) -> Option<u64> {
    (n.fract() == 0.0 && (0.0..=MAX_SAFE_INTEGER).contains(&n)).then_some(n as u64)
}

fn whole_number(key: &str, n: f64) -> Result<u64, UploadError> {
    exact_whole(n).ok_or_else(|| invalid(format!("option `{key}` must be a whole number of at least 0")))
}

fn invalid(message: String) -> UploadError {
    UploadError::new(ErrorCode::InvalidRequest, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(size: u64) -> FileFacts {
        FileFacts { name: Some("a.bin".into()), content_type: String::new(), size }
    }

    fn resolve(given: GivenOptions) -> Result<UploadOptions, UploadError> {
        given.resolve(&GivenOptions::default(), &file(10))
    }

    #[test]
    fn defaults() {
        let options = resolve(GivenOptions::default()).unwrap();
        let (gcs, tus) = (ResumableProtocol::GcsResumable, ResumableProtocol::Tus);
        assert_eq!(
            options,
            UploadOptions {
                fallbacks: vec![
                    (UploadStrategy::Multipart, gcs),
                    (UploadStrategy::Resumable, gcs),
                    (UploadStrategy::Resumable, tus)
                ],
                ..UploadOptions::new("a.bin", "application/octet-stream", UploadStrategy::PresignedPut)
            }
        );
        assert_eq!(options.strategy_name(), "presigned_put");
        let nameless = GivenOptions::default()
            .resolve(
                &GivenOptions::default(),
                &FileFacts { name: None, content_type: "text/plain".into(), size: 0 },
            )
            .unwrap();
        assert_eq!((nameless.filename.as_str(), nameless.content_type.as_str()), ("blob", "text/plain"));
    }

    #[test]
    fn auto_is_presigned_put_up_to_one_default_part() {
        let strategy = |size, name: Option<&str>| {
            let given = GivenOptions { strategy: name.map(str::to_owned), ..GivenOptions::default() };
            given.resolve(&GivenOptions::default(), &file(size)).map(|o| o.strategy_name())
        };
        assert_eq!(strategy(DEFAULT_PART_SIZE, None), Ok("presigned_put"));
        assert_eq!(strategy(DEFAULT_PART_SIZE + 1, None), Ok("multipart"));
        assert_eq!(strategy(DEFAULT_PART_SIZE + 1, Some("auto")), Ok("multipart"));
        assert_eq!(strategy(1, Some("tus")), Ok("tus"));
        assert_eq!(strategy(1, Some("resumable")), Ok("resumable"));
        assert_eq!(strategy(1, Some("ftp")).unwrap_err().code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn auto_goes_multipart_above_its_threshold_and_falls_back_on_what_the_broker_offers() {
        let (gcs, tus) = (ResumableProtocol::GcsResumable, ResumableProtocol::Tus);
        let (put, multipart, resumable) =
            (UploadStrategy::PresignedPut, UploadStrategy::Multipart, UploadStrategy::Resumable);
        let order = |size, multipart_above: Option<f64>, name: Option<&str>| {
            let given = GivenOptions {
                strategy: name.map(str::to_owned),
                multipart_above,
                ..GivenOptions::default()
            };
            let options = given.resolve(&GivenOptions::default(), &file(size)).unwrap();
            [vec![(options.strategy, options.resumable_protocol)], options.fallbacks].concat()
        };
        assert_eq!(
            order(1001, Some(1000.0), None),
            [(multipart, gcs), (resumable, gcs), (resumable, tus), (put, gcs)]
        );
        assert_eq!(
            order(1000, Some(1000.0), Some("auto")),
            [(put, gcs), (multipart, gcs), (resumable, gcs), (resumable, tus)]
        );
        assert_eq!(order(1, Some(0.0), None)[0], (multipart, gcs));
        // A strategy named is the only one tried.
        assert_eq!(order(1001, Some(1000.0), Some("multipart")), [(multipart, gcs)]);
        assert_eq!(order(1, None, Some("tus")), [(resumable, tus)]);
    }

    #[test]
    fn every_number_follows_one_rule() {
        for bad in [-1.0, 1.5, f64::NAN, f64::INFINITY, MAX_SAFE_INTEGER + 2.0] {
            let cases = [
                GivenOptions { part_size: Some(bad), ..GivenOptions::default() },
                GivenOptions { chunk_size: Some(bad), ..GivenOptions::default() },
                GivenOptions { stall_timeout: Some(bad), ..GivenOptions::default() },
                GivenOptions { retry_budget: Some(bad), ..GivenOptions::default() },
                GivenOptions { multipart_above: Some(bad), ..GivenOptions::default() },
                GivenOptions { retry_delays: Some(vec![10.0, bad]), ..GivenOptions::default() },
                GivenOptions { concurrency: Some(bad), ..GivenOptions::default() },
            ];
            for given in cases {
                let err = resolve(given.clone()).unwrap_err();
                assert_eq!(err.code, ErrorCode::InvalidRequest, "{given:?}");
            }
        }
        for out_of_range in [0.0, 65.0] {
            let err = resolve(GivenOptions { concurrency: Some(out_of_range), ..GivenOptions::default() });
            assert!(err.unwrap_err().message.contains("1 to 64"));
        }
        let given = GivenOptions {
            concurrency: Some(64.0),
            retry_delays: Some(vec![]),
            stall_timeout: Some(0.0),
            retry_budget: Some(3.0),
            ..GivenOptions::default()
        };
        let options = resolve(given).unwrap();
        assert_eq!(options.concurrency, 64);
        assert_eq!(options.retry, RetryPolicy { delays_ms: vec![], stall_timeout_ms: 0, budget: 3 });
    }

    #[test]
    fn a_previous_upload_supplies_what_its_session_needs() {
        let previous = GivenOptions {
            strategy: Some("tus".into()),
            part_size: Some(16.0 * 1048576.0),
            chunk_size: Some(262144.0),
            session_id: Some("s1".into()),
            ..GivenOptions::default()
        };
        let continued = GivenOptions::default().resolve(&previous, &file(DEFAULT_PART_SIZE * 4)).unwrap();
        assert_eq!(continued.strategy_name(), "tus");
        assert_eq!((continued.part_size, continued.chunk_size), (16 << 20, 262_144));
        assert_eq!(continued.resume_session_id.as_deref(), Some("s1"));
        let own = GivenOptions { chunk_size: Some(524288.0), ..GivenOptions::default() };
        assert_eq!(own.resolve(&previous, &file(1)).unwrap().chunk_size, 524_288, "what is given wins");
    }
}
