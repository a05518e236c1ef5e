//! Typed errors: a code a program can switch on, a message a person can
//! read, whether retrying may help, and the session state it happened in.
//!
//! The same codes travel in the broker protocol's error bodies and in the
//! embedded store's refusals, so the broker and the client share this enum.

use crate::state::SessionState;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The caller passed options or input the library cannot use.
    InvalidRequest,
    /// The strategy is not one this build can upload with.
    UnsupportedStrategy,
    /// The file has no bytes and the profile does not accept empty files.
    FileEmpty,
    /// The file is larger than the profile allows.
    FileTooLarge,
    /// The profile does not accept this content type.
    ContentTypeNotAllowed,
    /// The broker knows no such session.
    SessionNotFound,
    /// The session's time ran out (the session is now `expired`).
    SessionExpired,
    /// A state change the transition table forbids.
    IllegalTransition,
    /// The broker could not be reached (network error, CORS, DNS).
    BrokerUnreachable,
    /// The broker answered something that does not follow the protocol.
    BrokerMalformedResponse,
    /// The broker refused with a code this client does not know.
    BrokerRejected,
    /// The broker failed on its side (5xx).
    BrokerServerError,
    /// The presigned URL's time ran out before or while it was used.
    UrlExpired,
    /// The store refused the URL's signature.
    SignatureInvalid,
    /// The store refused the request for another reason (4xx).
    StoreRejected,
    /// The store failed on its side (5xx).
    StoreServerError,
    /// The store answered 2xx but without what the protocol requires.
    StoreMalformedResponse,
    /// The connection to the store failed or was cut.
    NetworkError,
    /// The file could not be read, or changed since the upload began.
    FileChanged,
    /// The store found the chunk's checksum wrong (corrupted on the way).
    ChecksumMismatch,
    /// The store holds another offset than the request assumed (tus 409).
    OffsetConflict,
    /// The broker checked the stored object and refused it.
    VerificationFailed,
    /// The broker did not accept the caller's credentials (bearer token).
    Unauthorized,
    /// The broker refused more sessions for now (a rate or a count limit).
    RateLimited,
    /// The upload was cancelled by the caller.
    Aborted,
    /// A bug: something that should not happen did.
    Internal,
}

impl ErrorCode {
    /// Every code, for reading one off the wire (kept in step with the enum
    /// by hand: each is tested against serde's name for it).
    pub const ALL: [ErrorCode; 26] = [
        ErrorCode::InvalidRequest,
        ErrorCode::UnsupportedStrategy,
        ErrorCode::FileEmpty,
        ErrorCode::FileTooLarge,
        ErrorCode::ContentTypeNotAllowed,
        ErrorCode::SessionNotFound,
        ErrorCode::SessionExpired,
        ErrorCode::IllegalTransition,
        ErrorCode::BrokerUnreachable,
        ErrorCode::BrokerMalformedResponse,
        ErrorCode::BrokerRejected,
        ErrorCode::BrokerServerError,
        ErrorCode::UrlExpired,
        ErrorCode::SignatureInvalid,
        ErrorCode::StoreRejected,
        ErrorCode::StoreServerError,
        ErrorCode::StoreMalformedResponse,
        ErrorCode::NetworkError,
        ErrorCode::FileChanged,
        ErrorCode::ChecksumMismatch,
        ErrorCode::OffsetConflict,
        ErrorCode::VerificationFailed,
        ErrorCode::Unauthorized,
        ErrorCode::RateLimited,
        ErrorCode::Aborted,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::UnsupportedStrategy => "unsupported_strategy",
            ErrorCode::FileEmpty => "file_empty",
            ErrorCode::FileTooLarge => "file_too_large",
            ErrorCode::ContentTypeNotAllowed => "content_type_not_allowed",
            ErrorCode::SessionNotFound => "session_not_found",
            ErrorCode::SessionExpired => "session_expired",
            ErrorCode::IllegalTransition => "illegal_transition",
            ErrorCode::BrokerUnreachable => "broker_unreachable",
            ErrorCode::BrokerMalformedResponse => "broker_malformed_response",
            ErrorCode::BrokerRejected => "broker_rejected",
            ErrorCode::BrokerServerError => "broker_server_error",
            ErrorCode::UrlExpired => "url_expired",
            ErrorCode::SignatureInvalid => "signature_invalid",
            ErrorCode::StoreRejected => "store_rejected",
            ErrorCode::StoreServerError => "store_server_error",
            ErrorCode::StoreMalformedResponse => "store_malformed_response",
            ErrorCode::NetworkError => "network_error",
            ErrorCode::FileChanged => "file_changed",
            ErrorCode::ChecksumMismatch => "checksum_mismatch",
            ErrorCode::OffsetConflict => "offset_conflict",
            ErrorCode::VerificationFailed => "verification_failed",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Aborted => "aborted",
            ErrorCode::Internal => "internal",
        }
    }

    /// Whether trying the same thing again may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::BrokerUnreachable
                | ErrorCode::BrokerServerError
                | ErrorCode::StoreServerError
                | ErrorCode::NetworkError
                | ErrorCode::UrlExpired
                | ErrorCode::ChecksumMismatch
                | ErrorCode::OffsetConflict
                | ErrorCode::RateLimited
        )
    }

    /// Parses a code received from a broker or store; codes this client does
    /// not know are kept as `BrokerRejected` by the caller.
    pub fn from_wire(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|known| known.as_str() == code)
    }
}

/// An untrusted value (a header, an option, a store's answer) as a message
/// shows it: its first 40 characters, quoted, control characters and
/// quotes as `?`.
pub fn shown(value: &str) -> String {
    let mut quoted = String::from('"');
    quoted.extend(value.chars().take(40).map(|c| if c.is_control() || c == '"' { '?' } else { c }));
    quoted.push('"');
    quoted
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadError {
    pub code: ErrorCode,
    /// For people. Never contains a presigned URL or session URI.
    pub message: String,
    pub retryable: bool,
    /// The session state when the error happened; `None` before the broker
    /// created the session.
    pub state: Option<SessionState>,
    /// How long the server asked us to wait (`Retry-After`), if it did.
    pub retry_after_ms: Option<u64>,
}

impl UploadError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        UploadError {
            code,
            message: message.into(),
            retryable: code.is_retryable(),
            state: None,
            retry_after_ms: None,
        }
    }

    pub fn in_state(mut self, state: Option<SessionState>) -> Self {
        if self.state.is_none() {
            self.state = state;
        }
        self
    }
}

impl fmt::Display for UploadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for UploadError {}

/// The error body of the broker protocol and the embedded store:
/// `{"error": {"code": "...", "message": "...", "retryable": false}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub retryable: bool,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code: code.as_str().to_owned(),
                message: message.into(),
                retryable: code.is_retryable(),
            },
        }
    }

    /// The typed error this body stands for. A code this client does not
    /// know becomes `fallback` with the received code kept in the message.
    pub fn into_error(self, fallback: ErrorCode) -> UploadError {
        match ErrorCode::from_wire(&self.error.code) {
            Some(code) => UploadError::new(code, self.error.message),
            None => UploadError {
                retryable: self.error.retryable,
                ..UploadError::new(fallback, format!("{} ({})", self.error.message, self.error.code))
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_parses_back_from_its_wire_name() {
        let codes = ErrorCode::ALL;
        for code in codes {
            assert_eq!(ErrorCode::from_wire(code.as_str()), Some(code));
            assert_eq!(serde_json::to_string(&code).unwrap(), format!("\"{code}\""));
        }
        assert_eq!(ErrorCode::from_wire("no_such_code"), None);
    }

    #[test]
    fn untrusted_values_are_shown_quoted_short_and_on_one_line() {
        assert_eq!(shown("ftp"), "\"ftp\"");
        assert_eq!(shown("a\r\nSet-Cookie: \"x\""), "\"a??Set-Cookie: ?x?\"");
        assert_eq!(shown(&"é".repeat(100)).chars().count(), 42);
    }

    #[test]
    fn unknown_broker_codes_fall_back_but_keep_the_code_for_people() {
        let body: ErrorBody = serde_json::from_str(
            r#"{"error":{"code":"quota_exceeded","message":"Monthly quota used","retryable":true}}"#,
        )
        .unwrap();
        let err = body.into_error(ErrorCode::BrokerRejected);
        assert_eq!(err.code, ErrorCode::BrokerRejected);
        assert!(err.retryable);
        assert_eq!(err.message, "Monthly quota used (quota_exceeded)");
    }

    #[test]
    fn known_codes_take_their_own_retryability() {
        let err = ErrorBody::new(ErrorCode::FileTooLarge, "too big").into_error(ErrorCode::BrokerRejected);
        assert_eq!(err.code, ErrorCode::FileTooLarge);
        assert!(!err.retryable);
    }
}
