//! S3's wire rules, shared by the client and the reference broker: the
//! multipart limits, and reading a store's answer in S3's XML error dialect
//! (`<Error><Code>..</Code><Message>..</Message>`), which the embedded
//! store speaks too.

use crate::error::{ErrorCode, UploadError};
use crate::transport::HttpResponse;

pub const MIB: u64 = 1 << 20;
/// Every part but the last must be at least this large.
pub const MIN_PART_SIZE: u64 = 5 * MIB;
pub const MAX_PART_SIZE: u64 = 5 << 30;
pub const MAX_PARTS: u64 = 10_000;
pub const MAX_OBJECT_SIZE: u64 = 5 << 40;

/// The `<Code>` of an S3 error body, if it has one.
pub fn error_code(body: &str) -> Option<&str> {
    xml_element(body, "Code")
}

/// `Ok` for 2xx; otherwise the typed error the answer stands for.
pub fn check_answer(response: &HttpResponse) -> Result<(), UploadError> {
    let status = response.status;
    if (200..300).contains(&status) {
        return Ok(());
    }
    let code = error_code(&response.body).unwrap_or_default();
    let message = xml_element(&response.body, "Message").unwrap_or_default();
    let lower = message.to_ascii_lowercase();
    let (error_code, retryable) = match (status, code) {
        // S3 says 403 "Request has expired"; Garage 400 "... too old ...".
        (400 | 403, _) if lower.contains("expired") || lower.contains("too old") => {
            (ErrorCode::UrlExpired, true)
        }
        (_, "SignatureDoesNotMatch") => (ErrorCode::SignatureInvalid, false),
        // The bytes do not have the checksum the URL was signed for (AWS:
        // BadDigest; Garage: InvalidDigest): corrupted on the way.
        (400, "BadDigest" | "InvalidDigest") => (ErrorCode::ChecksumMismatch, true),
        (408 | 429, _) => (ErrorCode::StoreRejected, true),
        (500.., _) => (ErrorCode::StoreServerError, true),
        _ => (ErrorCode::StoreRejected, false),
    };
    let detail = match (code, message) {
        ("", "") => String::new(),
        (code, "") => format!(": {code}"),
        (code, message) => format!(": {code}: {message}"),
    };
    Err(UploadError { retryable, ..UploadError::new(error_code, format!("store answered {status}{detail}")) })
}

/// The text of the first `<name>` element, trimmed and cut short; `None` if
/// absent. Tolerates anything: the body may not be XML at all.
fn xml_element<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = body.find(&open)? + open.len();
    let end = start + body[start..].find("</")?;
    let text = body[start..end].trim();
    Some(text.char_indices().nth(200).map_or(text, |(i, _)| &text[..i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Result<(), UploadError> {
        check_answer(&HttpResponse { status, headers: vec![], body: body.into() })
    }

    fn s3_error(code: &str, message: &str) -> String {
        format!("<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>")
    }

    #[test]
    fn success_is_any_2xx() {
        assert!(answer(200, "").is_ok());
        assert!(answer(204, "").is_ok());
    }

    #[test]
    fn a_digest_mismatch_is_a_checksum_mismatch_to_resend() {
        for code in ["BadDigest", "InvalidDigest"] {
            let error = answer(400, &s3_error(code, "the checksum did not match")).unwrap_err();
            assert_eq!((error.code, error.retryable), (ErrorCode::ChecksumMismatch, true), "{code}");
        }
    }

    #[test]
    fn expiry_in_both_dialects() {
        for (status, body) in [
            (403, s3_error("AccessDenied", "Request has expired")),
            (400, s3_error("InvalidRequest", "Date is too old")),
        ] {
            let err = answer(status, &body).unwrap_err();
            assert_eq!((err.code, err.retryable), (ErrorCode::UrlExpired, true), "{body}");
        }
    }

    #[test]
    fn other_refusals() {
        let err = answer(403, &s3_error("SignatureDoesNotMatch", "bad sig")).unwrap_err();
        assert_eq!(err.code, ErrorCode::SignatureInvalid);
        assert_eq!(err.message, "store answered 403: SignatureDoesNotMatch: bad sig");
        let err = answer(503, "").unwrap_err();
        assert_eq!((err.code, err.retryable), (ErrorCode::StoreServerError, true));
        assert_eq!(err.message, "store answered 503");
        let err = answer(429, "").unwrap_err();
        assert_eq!((err.code, err.retryable), (ErrorCode::StoreRejected, true));
        let err = answer(404, "<html><Code>").unwrap_err();
        assert_eq!((err.code, err.retryable), (ErrorCode::StoreRejected, false));
    }

    #[test]
    fn hostile_bodies_do_not_panic_and_stay_short() {
        let long = format!("<Error><Code>X</Code><Message>{}</Message></Error>", "é".repeat(10_000));
        assert!(answer(400, &long).unwrap_err().message.chars().count() < 260);
        for body in ["<Code>", "<Code></Code", "</Code><Code>", "\u{0}<Message>\u{ffff}"] {
            assert!(answer(400, body).is_err());
        }
    }
}
