//! The small traits the engine is generic over (transport, byte source,
//! clock), the plain request/response values they exchange, and the header
//! rules shared by every transport.

use crate::error::{shown, ErrorCode, UploadError};
use crate::secret::Secret;
use std::rc::Rc;

/// A request to the object store. The body is the byte source's slice type
/// (a `Blob` in the browser), so file bytes never pass through the engine.
pub struct HttpRequest<B> {
    pub method: &'static str,
    pub url: Secret,
    pub headers: Vec<(String, String)>,
    pub body: Option<B>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportError {
    /// The connection failed or was cut (XHR `error`, CORS refusal).
    Network,
    /// The request took longer than the transport allows.
    Timeout,
}

impl From<TransportError> for UploadError {
    fn from(error: TransportError) -> Self {
        let message = match error {
            TransportError::Network => "the connection to the store failed or was cut",
            TransportError::Timeout => "the request to the store timed out",
        };
        UploadError::new(ErrorCode::NetworkError, message)
    }
}

/// Called with the number of body bytes this request has sent so far.
pub type ProgressFn = Rc<dyn Fn(u64)>;

/// Sends one request with upload progress. Dropping the returned future
/// must abort the request: that is how pause and cancel stop bytes.
#[allow(async_fn_in_trait)]
pub trait Transport {
    type Body;
    async fn send(
        &self,
        request: HttpRequest<Self::Body>,
        progress: ProgressFn,
    ) -> Result<HttpResponse, TransportError>;

    /// Whether the network may be reachable (the browser's `navigator.onLine`).
    fn is_online(&self) -> bool {
        true
    }

    /// Resolves once the network is back (the browser's `online` event).
    async fn online(&self) {}
}

pub use crate::wire::checksum::ChecksumAlgorithm;

/// The bytes to upload, handed out as slices the transport can send.
#[allow(async_fn_in_trait)]
pub trait ByteSource {
    type Slice;
    fn size(&self) -> u64;
    fn slice(&self, start: u64, end: u64) -> Self::Slice;
    /// The digest of bytes `start..end` (computed where the bytes are: in
    /// the browser, by Web Crypto, without copying them into WASM).
    async fn digest(
        &self,
        start: u64,
        end: u64,
        algorithm: ChecksumAlgorithm,
    ) -> Result<Vec<u8>, UploadError>;

    /// Fails with `file_changed` if the file can no longer be read as it
    /// was when the upload began; checked before each request's bytes.
    async fn check_unchanged(&self) -> Result<(), UploadError> {
        Ok(())
    }
}

/// Time, timers and the randomness retries spread out with.
#[allow(async_fn_in_trait)]
pub trait Clock {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> f64;
    async fn sleep(&self, ms: u64);
    /// A number in [0, 1).
    fn random(&self) -> f64;
}

/// A header a broker asked us to send must be a valid HTTP token and value:
/// anything else could smuggle headers or break the request.
pub fn check_header(name: &str, value: &str) -> Result<(), UploadError> {
    let name_ok = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    let value_ok = value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80);
    if name_ok && value_ok {
        Ok(())
    } else {
        Err(UploadError::new(
            ErrorCode::InvalidRequest,
            ["header ", &shown(name), " has a name or value HTTP forbids"].concat(),
        ))
    }
}

/// Parses the block `XMLHttpRequest.getAllResponseHeaders()` returns.
pub fn parse_header_block(raw: &str) -> Vec<(String, String)> {
    raw.split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .filter(|(name, _)| !name.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_rules() {
        assert!(check_header("Content-Type", "image/png; charset=x").is_ok());
        assert!(check_header("x-amz-checksum-sha256", "abc+/=").is_ok());
        for (name, value) in
            [("", "v"), ("Bad Name", "v"), ("X", "a\r\nInjected: 1"), ("X", "nul\0"), ("Ü", "v")]
        {
            assert_eq!(check_header(name, value).unwrap_err().code, ErrorCode::InvalidRequest, "{name:?}");
        }
    }

    #[test]
    fn header_block_parsing() {
        let parsed =
            parse_header_block("ETag: \"abc\"\r\ncontent-length: 0\r\nX-Odd:  a:b \r\nno-colon\r\n\r\n");
        assert_eq!(
            parsed,
            vec![
                ("etag".into(), "\"abc\"".into()),
                ("content-length".into(), "0".into()),
                ("x-odd".into(), "a:b".into())
            ]
        );
        let response = HttpResponse { status: 200, headers: parsed, body: String::new() };
        assert_eq!(response.header("ETag"), Some("\"abc\""));
        assert_eq!(response.header("missing"), None);
        assert!(parse_header_block("").is_empty());
    }
}
