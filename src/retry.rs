//! When to try a failed request again: exponential backoff with full
//! jitter, the server's `Retry-After` honoured, a bounded number of tries.

use crate::error::{ErrorCode, UploadError};

/// When a request has failed and when it is tried again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The scheduled wait before each retry, in milliseconds; as many
    /// retries as entries.
    pub delays_ms: Vec<u64>,
    /// A request that reports no progress for this long is aborted and
    /// counts as a network failure; 0 never gives up on a request.
    pub stall_timeout_ms: u64,
    /// Retries allowed over the whole upload, whatever request they are
    /// for: a connection that keeps failing ends the upload.
    pub budget: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            delays_ms: vec![1_000, 3_000, 5_000, 10_000, 20_000],
            stall_timeout_ms: 30_000,
            budget: 100,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (from 0) after `error`, or
    /// `None` if the error is final or the retries are spent. `random` in
    /// [0, 1) spreads clients out (full jitter); a `Retry-After` the server
    /// sent is waited out in full.
    pub fn delay(&self, attempt: usize, error: &UploadError, random: f64) -> Option<u64> {
        // An expired URL is answered by signing again, not by waiting.
        if !error.retryable || error.code == ErrorCode::UrlExpired {
            return None;
        }
        let scheduled = *self.delays_ms.get(attempt)?;
        let jittered = (scheduled as f64 * random.clamp(0.0, 1.0)) as u64;
        Some(jittered.max(error.retry_after_ms.unwrap_or(0)))
    }
}

/// `Retry-After` in milliseconds: delta seconds, or an HTTP date relative
/// to `now_ms` (milliseconds since the Unix epoch).
pub fn parse_retry_after(value: &str, now_ms: f64) -> Option<u64> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return seconds.checked_mul(1_000);
    }
    let at = crate::time::parse_http_date_ms(value)?;
    Some((at - now_ms).max(0.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: ErrorCode) -> UploadError {
        UploadError::new(code, "x")
    }

    #[test]
    fn backoff_with_full_jitter_and_a_bounded_count() {
        let policy = RetryPolicy { delays_ms: vec![1_000, 4_000], ..RetryPolicy::default() };
        let network = error(ErrorCode::NetworkError);
        assert_eq!(policy.delay(0, &network, 0.5), Some(500));
        assert_eq!(policy.delay(1, &network, 0.25), Some(1_000));
        assert_eq!(policy.delay(2, &network, 0.5), None, "retries spent");
        assert_eq!(policy.delay(0, &network, 0.0), Some(0));
    }

    #[test]
    fn final_errors_and_expired_urls_are_not_waited_on() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay(0, &error(ErrorCode::SignatureInvalid), 0.5), None);
        assert_eq!(policy.delay(0, &error(ErrorCode::UrlExpired), 0.5), None);
    }

    #[test]
    fn retry_after_is_honoured() {
        let throttled = UploadError { retry_after_ms: Some(7_000), ..error(ErrorCode::StoreRejected) };
        let throttled = UploadError { retryable: true, ..throttled };
        assert_eq!(RetryPolicy::default().delay(0, &throttled, 0.1), Some(7_000));
        assert_eq!(parse_retry_after("3", 0.0), Some(3_000));
        assert_eq!(parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT", 4_000.0), Some(6_000));
        assert_eq!(parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT", 99_000.0), Some(0));
        assert_eq!(parse_retry_after("soon", 0.0), None);
    }
}
