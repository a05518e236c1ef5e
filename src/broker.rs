//! The broker protocol, v1 (docs/broker-protocol.md): the calls a client
//! makes to the application's backend, their bodies and replies, and how an
//! HTTP answer is read. Transport-free: the browser edge sends these with
//! fetch or hands them to JavaScript callbacks; tests script them.

use crate::error::{shown, ErrorBody, ErrorCode, UploadError};
use crate::secret::Secret;
use crate::session::{MultipartPart, Session, UploadStrategy};
use crate::wire::checksum::{Checksum, ChecksumAlgorithm};
use crate::wire::routes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Sent in the `Rindle-Broker-Protocol` header of every HTTP call.
pub const PROTOCOL_VERSION: &str = "1";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitiateRequest {
    pub filename: String,
    pub content_type: String,
    pub byte_size: u64,
    pub upload_strategy: UploadStrategy,
    /// `tus` for tus uploads (`resumable` strategy); none for GCS sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumable_protocol: Option<String>,
    /// The part size the client plans with (`multipart` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_size: Option<u64>,
    /// `multipart`: the checksum every part will carry, so the store can be
    /// told at creation (S3 then keeps the parts' checksums, and a checksum
    /// of them for the object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_algorithm: Option<ChecksumAlgorithm>,
    /// The same for every try of one upload's `initiate`: a broker that
    /// has seen it answers with the session it created then, so a retried
    /// call whose answer was lost does not start a second session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// One call of the protocol; each maps to one `Rindle.Upload.Broker`
/// function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BrokerCall {
    Initiate(InitiateRequest),
    /// Reads a session, to resume it.
    Show {
        session_id: String,
    },
    /// `checksum`: of the whole file, for a presigned PUT: the URL is then
    /// signed for bytes that have it.
    Sign {
        session_id: String,
        checksum: Option<Checksum>,
    },
    /// Signs a batch of multipart part URLs, each for its part's checksum
    /// when given.
    SignParts {
        session_id: String,
        part_numbers: Vec<u32>,
        checksums: Vec<(u32, Checksum)>,
    },
    /// Asks which parts the store already holds (S3 ListParts); the reply's
    /// session carries them in `multipart_parts`.
    ListParts {
        session_id: String,
    },
    /// `checksum`: of the whole file, which the stored object must have.
    Complete {
        session_id: String,
        checksum: Option<Checksum>,
    },
    /// Reports the offset a resumable store has committed; the broker
    /// checks it with the store and records it as `last_known_offset`. A
    /// tus client also reports the upload URL it created.
    ResumableStatus {
        session_id: String,
        offset: u64,
        session_uri: Option<Secret>,
    },
    /// Completes a multipart upload with its part list, then verifies.
    CompleteMultipart {
        session_id: String,
        parts: Vec<MultipartPart>,
        checksum: Option<Checksum>,
    },
    Cancel {
        session_id: String,
    },
}

#[derive(Serialize, Default)]
struct CallBody<'a> {
    session_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    part_numbers: Option<&'a [u32]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parts: Option<&'a [MultipartPart]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_uri: Option<&'a Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    checksum: Option<&'a Checksum>,
    /// By part number (JSON object keys are strings).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    checksums: BTreeMap<String, &'a Checksum>,
}

impl BrokerCall {
    /// The call's name: also the name of the JavaScript callback that may
    /// replace it.
    pub fn name(&self) -> &'static str {
        match self {
            BrokerCall::Initiate(_) => "initiate",
            BrokerCall::Show { .. } => "show",
            BrokerCall::Sign { .. } => "sign",
            BrokerCall::SignParts { .. } => "signParts",
            BrokerCall::ListParts { .. } => "listParts",
            BrokerCall::Complete { .. } => "complete",
            BrokerCall::ResumableStatus { .. } => "resumableStatus",
            BrokerCall::CompleteMultipart { .. } => "completeMultipart",
            BrokerCall::Cancel { .. } => "cancel",
        }
    }

    pub fn session_id(&self) -> Option<&str> {
        match self {
            BrokerCall::Initiate(_) => None,
            BrokerCall::Show { session_id }
            | BrokerCall::Sign { session_id, .. }
            | BrokerCall::SignParts { session_id, .. }
            | BrokerCall::ListParts { session_id }
            | BrokerCall::ResumableStatus { session_id, .. }
            | BrokerCall::Complete { session_id, .. }
            | BrokerCall::CompleteMultipart { session_id, .. }
            | BrokerCall::Cancel { session_id } => Some(session_id),
        }
    }

    /// `GET` for `show`, which has no body; `POST` for every other call.
    pub fn method(&self) -> &'static str {
        match self {
            BrokerCall::Show { .. } => "GET",
            _ => "POST",
        }
    }

    /// The path below the broker endpoint.
    pub fn path(&self) -> String {
        let route = match self {
            BrokerCall::Initiate(_) => routes::INITIATE,
            BrokerCall::Show { .. } => routes::SHOW,
            BrokerCall::Sign { .. } => routes::SIGN,
            BrokerCall::SignParts { .. } => routes::SIGN_PARTS,
            BrokerCall::ListParts { .. } => routes::LIST_PARTS,
            BrokerCall::ResumableStatus { .. } => routes::RESUMABLE_STATUS,
            BrokerCall::Complete { .. } => routes::COMPLETE,
            BrokerCall::CompleteMultipart { .. } => routes::COMPLETE_MULTIPART,
            BrokerCall::Cancel { .. } => routes::CANCEL,
        };
        routes::path(route, self.session_id().unwrap_or_default())
    }

    /// Serializes the request body with the serializer of the caller's
    /// choosing (the browser writes it with `wire::broker_json::call_body`,
    /// tested to give the same JSON).
    pub fn serialize_body<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut body = CallBody { session_id: self.session_id().unwrap_or_default(), ..CallBody::default() };
        match self {
            BrokerCall::Initiate(request) => return request.serialize(serializer),
            BrokerCall::Sign { checksum, .. } | BrokerCall::Complete { checksum, .. } => {
                body.checksum = checksum.as_ref();
            }
            BrokerCall::SignParts { part_numbers, checksums, .. } => {
                body.part_numbers = Some(part_numbers);
                for (part, checksum) in checksums {
                    body.checksums.insert(part.to_string(), checksum);
                }
            }
            BrokerCall::CompleteMultipart { parts, checksum, .. } => {
                body.parts = Some(parts);
                body.checksum = checksum.as_ref();
            }
            BrokerCall::ResumableStatus { offset, session_uri, .. } => {
                body.offset = Some(*offset);
                body.session_uri = session_uri.as_ref();
            }
            _ => {}
        }
        body.serialize(serializer)
    }

    /// Checks a reply against what this call must return, beyond its shape.
    pub fn check_reply(&self, reply: &BrokerReply) -> Result<(), UploadError> {
        reply.session.validate()?;
        if self.session_id().is_some_and(|id| id != reply.session.id) {
            return Err(malformed(format!("{}: reply is for another session", self.name())));
        }
        match self {
            BrokerCall::Initiate(request)
                if reply.session.upload_length.is_some_and(|len| len != request.byte_size) =>
            {
                return Err(malformed("initiate: session upload_length differs from the file size"));
            }
            // A presigned upload comes as `upload`; a resumable session's
            // URI comes in the session record.
            BrokerCall::Sign { .. } => match (&reply.upload, &reply.session.session_uri) {
                (Some(signed), _) => signed.validate()?,
                (None, Some(uri)) if uri.expose().starts_with("http") => {}
                _ => return Err(malformed("sign: reply has neither an `upload` request nor a session_uri")),
            },
            BrokerCall::SignParts { part_numbers, .. } => {
                // The parts asked for are distinct: as many signed, each
                // asked one among them, is exactly those.
                let signed = |n: &u32| reply.parts.iter().any(|p| p.part_number == *n);
                if reply.parts.len() != part_numbers.len() || !part_numbers.iter().all(signed) {
                    return Err(malformed("signParts: reply does not sign exactly the parts asked for"));
                }
                for part in &reply.parts {
                    part.upload.validate()?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Every broker reply carries the session; some carry more.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerReply {
    pub session: Session,
    /// The request that moves the bytes (from `sign`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<SignedRequest>,
    /// Signed part uploads (from `signParts`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<SignedPart>,
    /// The stored object, once the session is `completed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset: Option<Asset>,
    /// `multipart`: the part size the broker planned the session with; the
    /// client plans with it too (a resumed upload may ask for another).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_size: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedPart {
    pub part_number: u32,
    pub upload: SignedRequest,
}

/// A presigned request: whoever holds it may write, so the URL is a secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRequest {
    pub method: String,
    pub url: Secret,
    /// Headers the client must send as signed (e.g. `Content-Type`); a JSON
    /// object on the wire.
    #[serde(default, with = "header_object")]
    pub headers: Vec<(String, String)>,
    /// Absolute expiry on the server's clock, for people.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Seconds of validity from the moment of the reply; the client times
    /// with this, so a wrong client clock does not matter. Unknown when
    /// absent (Rindle sends none): the URL is used until the store refuses
    /// it as expired, then signed again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
}

impl SignedRequest {
    /// The request that sends `body` as signed: its URL and its headers.
    pub fn request_with<B>(&self, body: B) -> crate::transport::HttpRequest<B> {
        crate::transport::HttpRequest {
            method: "PUT",
            url: self.url.clone(),
            headers: self.headers.clone(),
            body: Some(body),
        }
    }

    fn validate(&self) -> Result<(), UploadError> {
        // PUT to a presigned URL; POST to a tus creation endpoint.
        if self.method != "PUT" && self.method != "POST" {
            return Err(malformed(["sign: method ", &shown(&self.method), " is not PUT"].concat()));
        }
        let url = self.url.expose();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(malformed("signed upload url is not an http(s) URL"));
        }
        for (name, value) in &self.headers {
            crate::transport::check_header(name, value)
                .map_err(|e| malformed(format!("sign: {}", e.message)))?;
        }
        Ok(())
    }
}

/// `SignedRequest::headers`, a list read and written as a JSON object (the
/// browser build then has no B-tree code: it reads replies field by field).
mod header_object {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(headers: &[(String, String)], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(headers.iter().map(|(name, value)| (name, value)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<(String, String)>, D::Error> {
        let object = std::collections::BTreeMap::<String, String>::deserialize(deserializer)?;
        Ok(object.into_iter().collect())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asset {
    pub id: String,
    pub key: String,
    pub byte_size: u64,
    pub content_type: String,
    /// The broker's SHA-256 of the stored object (hex), when it computed one:
    /// the reference broker does, Rindle's assets carry none.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Where the stored bytes can be read back.
    pub url: String,
}

/// A session URI given as a path (a tus upload URL from Rindle's TusPlug
/// `Location`) is on the broker's origin: resolved against `endpoint`, the
/// broker's base URL (a relative one is on the page's origin already).
pub fn resolve_session_uri(reply: &mut BrokerReply, endpoint: &str) {
    let Some(uri) = reply.session.session_uri.as_mut() else { return };
    if uri.expose().starts_with('/') && !uri.expose().starts_with("//") {
        let origin = Secret::new(endpoint).origin().to_owned();
        *uri = Secret::new([origin.as_str(), uri.expose()].concat());
    }
}

/// Reads a decoded reply body (from HTTP or from a JavaScript callback): it
/// must have the protocol's shape. What it says is checked by the engine
/// (`check_reply`), whatever `Broker` brought it.
pub fn read_reply<E: std::fmt::Display>(
    call: &BrokerCall,
    parsed: Result<BrokerReply, E>,
) -> Result<BrokerReply, UploadError> {
    parsed.map_err(|e| malformed(format!("{}: {}", call.name(), without_quoted_values(&e.to_string()))))
}

/// Reads a broker's HTTP answer. `parse_reply` and `parse_error` decode the
/// body with whatever JSON decoder the caller has.
pub fn read_http_answer<E: std::fmt::Display>(
    call: &BrokerCall,
    status: u16,
    parse_reply: impl FnOnce() -> Result<BrokerReply, E>,
    parse_error: impl FnOnce() -> Result<ErrorBody, E>,
) -> Result<BrokerReply, UploadError> {
    if (200..300).contains(&status) {
        return read_reply(call, parse_reply());
    }
    let fallback = if status >= 500 { ErrorCode::BrokerServerError } else { ErrorCode::BrokerRejected };
    // A timeout or a rate limit (408, 429) passes, like a server failure.
    let passes = status >= 500 || status == 408 || status == 429;
    let error = match parse_error() {
        Ok(body) => body.into_error(fallback),
        Err(_) if passes => UploadError::new(fallback, format!("{}: broker answered {status}", call.name())),
        Err(e) => malformed(format!("{}: broker answered {status} without an error body ({e})", call.name())),
    };
    Err(UploadError { retryable: error.retryable || passes, ..error })
}

/// Decoders quote the offending value in their messages ("invalid type:
/// string \"https://...\""), and that value may be a presigned URL.
fn without_quoted_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for (i, piece) in message.split('"').enumerate() {
        out.push_str(if i % 2 == 0 { piece } else { "…" });
    }
    out
}

fn malformed(message: impl Into<String>) -> UploadError {
    UploadError::new(ErrorCode::BrokerMalformedResponse, message)
}

/// The broker, as the engine sees it: one call at a time.
#[allow(async_fn_in_trait)]
pub trait Broker {
    async fn call(&self, call: &BrokerCall) -> Result<BrokerReply, UploadError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::SessionState;

    /// An HTTP answer read and checked as the engine does.
    fn json_answer(call: &BrokerCall, status: u16, body: &str) -> Result<BrokerReply, UploadError> {
        let reply =
            read_http_answer(call, status, || serde_json::from_str(body), || serde_json::from_str(body))?;
        call.check_reply(&reply)?;
        Ok(reply)
    }

    const SIGNED: &str = r#"{"session":{"id":"s1","state":"signed","upload_strategy":"presigned_put","upload_length":3},
        "upload":{"method":"PUT","url":"http://127.0.0.1:8080/store/k?sig=SECRET","headers":{"Content-Type":"text/plain"},
                  "expires_at":"2026-11-26T00:15:00Z","expires_in":900}}"#;

    fn sign() -> BrokerCall {
        BrokerCall::Sign { session_id: "s1".into(), checksum: None }
    }

    #[test]
    fn routes_and_bodies() {
        let initiate = BrokerCall::Initiate(InitiateRequest {
            filename: "a.txt".into(),
            content_type: "text/plain".into(),
            byte_size: 3,
            upload_strategy: UploadStrategy::PresignedPut,
            resumable_protocol: None,
            part_size: None,
            checksum_algorithm: None,
            idempotency_key: None,
        });
        assert_eq!(initiate.path(), "");
        assert_eq!(sign().path(), "/s1/sign");
        assert_eq!(BrokerCall::Complete { session_id: "s1".into(), checksum: None }.path(), "/s1/complete");
        assert_eq!(BrokerCall::Cancel { session_id: "s1".into() }.path(), "/s1/cancel");
        let body = initiate.serialize_body(serde_json::value::Serializer).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"filename":"a.txt","content_type":"text/plain","byte_size":3,"upload_strategy":"presigned_put"})
        );
        assert_eq!(
            sign().serialize_body(serde_json::value::Serializer).unwrap(),
            serde_json::json!({"session_id":"s1"})
        );
        let crc =
            Checksum { algorithm: crate::transport::ChecksumAlgorithm::Crc32c, value: "ipE2qg==".into() };
        let parts = BrokerCall::SignParts {
            session_id: "s1".into(),
            part_numbers: vec![1, 2],
            checksums: vec![(1, crc.clone()), (2, crc.clone())],
        };
        let checksum = serde_json::json!({"algorithm": "crc32c", "value": "ipE2qg=="});
        assert_eq!(
            parts.serialize_body(serde_json::value::Serializer).unwrap(),
            serde_json::json!({"session_id": "s1", "part_numbers": [1, 2], "checksums": {"1": checksum, "2": checksum}})
        );
        let complete = BrokerCall::Complete { session_id: "s1".into(), checksum: Some(crc) };
        assert_eq!(
            complete.serialize_body(serde_json::value::Serializer).unwrap(),
            serde_json::json!({"session_id": "s1", "checksum": checksum})
        );
    }

    #[test]
    fn a_good_sign_reply_is_read() {
        let reply = json_answer(&sign(), 200, SIGNED).unwrap();
        assert_eq!(reply.session.state, SessionState::Signed);
        let upload = reply.upload.unwrap();
        assert_eq!(upload.expires_in, Some(900));
        assert_eq!(upload.headers, [("Content-Type".to_owned(), "text/plain".to_owned())]);
    }

    /// As a Phoenix app serialises Rindle's session (no `upload_length`
    /// from its initiate functions, naive timestamps) and its signed
    /// requests (no expiry). (Rindle's other shapes are made the protocol's
    /// in the browser edge: src/web/broker.rs.)
    #[test]
    fn rindles_sessions_and_unexpiring_urls_are_read() {
        let body = r#"{"session":{"id":"s1","state":"signed","upload_strategy":"presigned_put",
            "upload_length":null,"expires_at":"2026-12-01T09:00:00","inserted_at":"2026-12-01T08:00:00.123456"},
            "upload":{"url":"https://bucket.example/k?X-Amz-Signature=SECRET","method":"PUT"}}"#;
        let reply = json_answer(&sign(), 200, body).unwrap();
        assert_eq!(reply.upload.unwrap().expires_in, None);
        assert_eq!(reply.session.upload_length, None);
        assert_eq!(
            crate::time::parse_ms(reply.session.expires_at.as_deref().unwrap()),
            Some(1_796_115_600_000.0)
        );
    }

    #[test]
    fn a_session_uri_given_as_a_path_is_on_the_brokers_origin() {
        let with_uri = |uri: &str| {
            let mut reply: BrokerReply = serde_json::from_str(SIGNED).unwrap();
            reply.session.session_uri = Some(Secret::new(uri));
            reply
        };
        for (uri, endpoint, resolved) in [
            (
                "/uploads/tus/abc?token=T",
                "https://app.example/api/uploads",
                "https://app.example/uploads/tus/abc?token=T",
            ),
            ("/uploads/tus/abc", "/api/uploads", "/uploads/tus/abc"),
            ("https://tus.example/files/abc", "https://app.example/api", "https://tus.example/files/abc"),
            ("//evil.example/x", "https://app.example/api", "//evil.example/x"),
        ] {
            let mut reply = with_uri(uri);
            resolve_session_uri(&mut reply, endpoint);
            assert_eq!(reply.session.session_uri.unwrap().expose(), resolved, "{uri} on {endpoint}");
        }
    }

    #[test]
    fn malformed_replies_are_typed_and_never_echo_the_url() {
        let cases = [
            "not json",
            "{}",
            r#"{"session":null}"#,
            r#"{"session":{"id":"s1","state":"signed","upload_strategy":"presigned_put"}}"#,
            &SIGNED.replace("\"PUT\"", "\"GET\""),
            &SIGNED.replace("http://127.0.0.1:8080", "javascript:alert(1)//"),
            &SIGNED.replace("text/plain\"}", "text/plain\\r\\nX-Evil: 1\"}"),
            &SIGNED.replace("\"expires_in\":900", "\"expires_in\":-5"),
            &SIGNED.replace("\"id\":\"s1\"", "\"id\":\"s2\""),
            r#"{"session":{"id":"s1","state":"signed","upload_strategy":"presigned_put"},"upload":"http://h/?sig=SECRET"}"#,
        ];
        for body in cases {
            let err = json_answer(&sign(), 200, body).unwrap_err();
            assert_eq!(err.code, ErrorCode::BrokerMalformedResponse, "{body}");
            assert!(!err.message.contains("SECRET"), "{}", err.message);
        }
    }

    #[test]
    fn timeouts_and_rate_limits_from_the_broker_are_tried_again() {
        for status in [408, 429] {
            let err = json_answer(&sign(), status, "").unwrap_err();
            assert_eq!((err.code, err.retryable), (ErrorCode::BrokerRejected, true), "{status}");
            let coded = json_answer(&sign(), status, r#"{"error":{"code":"slow_down","message":"later"}}"#);
            assert!(coded.unwrap_err().retryable, "{status} with a body");
        }
        assert!(!json_answer(&sign(), 400, "").unwrap_err().retryable);
    }

    #[test]
    fn initiate_reply_must_match_the_file_size() {
        let call = BrokerCall::Initiate(InitiateRequest {
            filename: "a".into(),
            content_type: "text/plain".into(),
            byte_size: 4,
            upload_strategy: UploadStrategy::PresignedPut,
            resumable_protocol: None,
            part_size: None,
            checksum_algorithm: None,
            idempotency_key: None,
        });
        let body = r#"{"session":{"id":"s1","state":"initialized","upload_strategy":"presigned_put","upload_length":3}}"#;
        assert_eq!(json_answer(&call, 201, body).unwrap_err().code, ErrorCode::BrokerMalformedResponse);
    }

    #[test]
    fn error_answers_keep_the_brokers_code() {
        let body = r#"{"error":{"code":"file_too_large","message":"over 80 MiB","retryable":false}}"#;
        let err = json_answer(&sign(), 413, body).unwrap_err();
        assert_eq!((err.code, err.retryable), (ErrorCode::FileTooLarge, false));
        assert_eq!(err.message, "over 80 MiB");

        let err = json_answer(&sign(), 502, "<html>Bad Gateway</html>").unwrap_err();
        assert_eq!((err.code, err.retryable), (ErrorCode::BrokerServerError, true));

        let err = json_answer(&sign(), 404, "<html>nope</html>").unwrap_err();
        assert_eq!(err.code, ErrorCode::BrokerMalformedResponse);
    }
}
