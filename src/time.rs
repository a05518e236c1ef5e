//! Timestamps on the clock's scale, milliseconds since the Unix epoch:
//! RFC 3339 (the session's times, as Rindle sends them) and HTTP dates
//! (`Retry-After`, tus `Upload-Expires`). In the browser the platform's
//! `Date.parse` reads both, so the package ships no date parser; natively
//! humantime and httpdate read them, each strictly in its own format.

/// `None` for anything that is not an RFC 3339 timestamp. One without a
/// zone (Ecto's NaiveDateTime, as a Phoenix app may serialise Rindle's
/// times) is UTC, as Ecto's timestamps are.
pub fn parse_ms(timestamp: &str) -> Option<f64> {
    let zoned = match timestamp.split_once('T') {
        Some((_, time)) if !time.is_empty() && !time.ends_with(['Z', 'z']) && !time.contains(['+', '-']) => {
            std::borrow::Cow::Owned([timestamp, "Z"].concat())
        }
        _ => std::borrow::Cow::Borrowed(timestamp),
    };
    #[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
    return since_epoch_ms(humantime::parse_rfc3339(&zoned).ok()?);
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    return browser_parse(&zoned);
}

/// `None` for anything that is not an HTTP date.
pub fn parse_http_date_ms(value: &str) -> Option<f64> {
    #[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
    return since_epoch_ms(httpdate::parse_http_date(value.trim()).ok()?);
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    return browser_parse(value.trim());
}

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
fn since_epoch_ms(at: std::time::SystemTime) -> Option<f64> {
    Some(at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as f64)
}

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
fn browser_parse(value: &str) -> Option<f64> {
    let ms = js_sys::Date::parse(value);
    (!value.is_empty() && !ms.is_nan()).then_some(ms)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_utc_timestamps() {
        assert_eq!(super::parse_ms("1970-01-01T00:00:01Z"), Some(1000.0));
        assert_eq!(super::parse_ms("2026-11-26T00:00:00.5Z"), Some(1_795_651_200_500.0));
        assert_eq!(super::parse_ms("2026-11-26T00:00:00+00:00"), Some(1_795_651_200_000.0));
        // NaiveDateTime (no zone) is UTC, with or without microseconds.
        assert_eq!(super::parse_ms("1970-01-01T00:00:01"), Some(1000.0));
        assert_eq!(super::parse_ms("2026-11-26T00:00:00.500000"), Some(1_795_651_200_500.0));
        assert_eq!(super::parse_ms("tomorrow"), None);
        assert_eq!(super::parse_ms(""), None);
    }

    #[test]
    fn parses_http_dates() {
        assert_eq!(super::parse_http_date_ms(" Thu, 01 Jan 1970 00:00:10 GMT "), Some(10_000.0));
        assert_eq!(super::parse_http_date_ms("2026-11-26T00:00:00Z"), None);
        assert_eq!(super::parse_http_date_ms("soon"), None);
    }
}
