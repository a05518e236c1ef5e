//! Timestamps from the server (RFC 3339, as Rindle sends them) on the
//! clock's scale: milliseconds since the Unix epoch.

use std::time::UNIX_EPOCH;

/// `None` for anything that is not an RFC 3339 UTC timestamp.
pub fn parse_ms(timestamp: &str) -> Option<f64> {
    let at = humantime::parse_rfc3339(timestamp).ok()?;
    Some(at.duration_since(UNIX_EPOCH).ok()?.as_millis() as f64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_utc_timestamps() {
        assert_eq!(super::parse_ms("1970-01-01T00:00:01Z"), Some(1000.0));
        assert_eq!(super::parse_ms("2026-11-26T00:00:00.5Z"), Some(1_795_651_200_500.0));
        assert_eq!(super::parse_ms("tomorrow"), None);
        assert_eq!(super::parse_ms(""), None);
    }
}
