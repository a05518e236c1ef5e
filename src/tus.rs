//! tus 1.0 (the resumable protocol Rindle's TusPlug speaks): the header
//! codec, pure and shared with the embedded tus server, and the upload
//! driver: discovery (OPTIONS), creation (POST, with upload or deferred
//! length), HEAD for the offset, chunked PATCHes with checksums,
//! expiration and termination.

use crate::broker::BrokerCall;
use crate::engine::UploadOptions;
use crate::error::{ErrorCode, UploadError};
use crate::progress::Piece;
use crate::recovery::{send_from_offset, Committed, OffsetStore};
use crate::secret::Secret;
use crate::state::SessionState;
use crate::store;
use crate::toolbox::{ActiveUpload, Io};
use crate::transport::{ByteSource, ChecksumAlgorithm, HttpRequest, HttpResponse};
use base64::Engine as _;
use std::cell::Cell;
use std::time::UNIX_EPOCH;

pub const TUS_VERSION: &str = "1.0.0";
pub const OFFSET_CONTENT_TYPE: &str = "application/offset+octet-stream";
/// Status a server answers when `Upload-Checksum` does not match the body.
pub const CHECKSUM_MISMATCH: u16 = 460;

fn malformed(what: &str, value: &str) -> UploadError {
    let shown: String = value.chars().take(40).collect();
    UploadError::new(
        ErrorCode::StoreMalformedResponse,
        format!("the tus server's {what} {shown:?} is malformed"),
    )
}

/// `Upload-Offset` / `Upload-Length`: a non-negative integer.
pub fn parse_size(name: &str, value: Option<&str>) -> Result<u64, UploadError> {
    let value = value.ok_or_else(|| {
        UploadError::new(ErrorCode::StoreMalformedResponse, format!("the tus server sent no {name}"))
    })?;
    let digits = value.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(name, value));
    }
    digits.parse().map_err(|_| malformed(name, value))
}

/// `Upload-Expires` (an HTTP date) in milliseconds since the Unix epoch.
pub fn parse_expires(value: &str) -> Result<f64, UploadError> {
    let at = httpdate::parse_http_date(value.trim()).map_err(|_| malformed("Upload-Expires", value))?;
    Ok(at.duration_since(UNIX_EPOCH).map_err(|_| malformed("Upload-Expires", value))?.as_millis() as f64)
}

/// `Upload-Metadata`: comma-separated `key base64(value)` pairs.
pub fn encode_metadata(pairs: &[(&str, &str)]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    pairs.iter().map(|(key, value)| format!("{key} {}", b64.encode(value))).collect::<Vec<_>>().join(",")
}

/// Decodes `Upload-Metadata` (for the embedded server); `None` if malformed.
pub fn decode_metadata(value: &str) -> Option<Vec<(String, String)>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    value
        .split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, encoded) = pair.split_once(' ').unwrap_or((pair, ""));
            let decoded = String::from_utf8(b64.decode(encoded.trim()).ok()?).ok()?;
            (!key.is_empty() && key.bytes().all(|b| b.is_ascii_graphic() && b != b','))
                .then(|| (key.to_owned(), decoded))
        })
        .collect()
}

/// `Upload-Checksum: <algorithm> <base64 digest>`.
pub fn checksum_header(algorithm: ChecksumAlgorithm, digest: &[u8]) -> String {
    format!("{} {}", algorithm.tus_name(), base64::engine::general_purpose::STANDARD.encode(digest))
}

/// Parses `Upload-Checksum` (for the embedded server).
pub fn parse_checksum(value: &str) -> Option<(ChecksumAlgorithm, Vec<u8>)> {
    let (name, digest) = value.trim().split_once(' ')?;
    let algorithm = ChecksumAlgorithm::from_tus_name(name)?;
    Some((algorithm, base64::engine::general_purpose::STANDARD.decode(digest.trim()).ok()?))
}

/// What an `OPTIONS` request tells about a tus server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Discovery {
    pub versions: Vec<String>,
    pub extensions: Vec<String>,
    pub max_size: Option<u64>,
    pub checksum_algorithms: Vec<String>,
}

fn list(value: Option<&str>) -> Vec<String> {
    value.unwrap_or_default().split(',').map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned).collect()
}

impl Discovery {
    pub fn from_response(response: &HttpResponse) -> Result<Discovery, UploadError> {
        let max_size = match response.header("tus-max-size") {
            Some(value) => Some(parse_size("Tus-Max-Size", Some(value))?),
            None => None,
        };
        Ok(Discovery {
            versions: list(response.header("tus-version")),
            extensions: list(response.header("tus-extension")),
            max_size,
            checksum_algorithms: list(response.header("tus-checksum-algorithm")),
        })
    }

    pub fn supports(&self, extension: &str) -> bool {
        self.extensions.iter().any(|e| e == extension)
    }

    /// The strongest checksum both sides know, if the server offers any.
    pub fn checksum(&self) -> Option<ChecksumAlgorithm> {
        if !self.supports("checksum") {
            return None;
        }
        [ChecksumAlgorithm::Sha256, ChecksumAlgorithm::Sha1]
            .into_iter()
            .find(|a| self.checksum_algorithms.iter().any(|name| name.eq_ignore_ascii_case(a.tus_name())))
    }
}

/// The upload URL from a creation answer's `Location`: used as given when
/// absolute; a path is taken on the creation endpoint's origin.
pub fn upload_url(endpoint: &Secret, location: &str) -> Result<Secret, UploadError> {
    let location = location.trim();
    if location.starts_with("https://") || location.starts_with("http://") {
        Ok(Secret::new(location))
    } else if location.starts_with('/') && !location.starts_with("//") {
        Ok(Secret::new(format!("{}{location}", endpoint.origin())))
    } else {
        Err(UploadError::new(
            ErrorCode::StoreMalformedResponse,
            "the tus server's Location is not a usable URL",
        ))
    }
}

fn tus_request<B>(
    method: &'static str,
    url: &Secret,
    mut headers: Vec<(String, String)>,
    body: Option<B>,
) -> HttpRequest<B> {
    headers.insert(0, ("Tus-Resumable".to_owned(), TUS_VERSION.to_owned()));
    HttpRequest { method, url: url.clone(), headers, body }
}

/// The tus server's answer must be a success carrying `Tus-Resumable`; a
/// 404/410 means the upload is gone.
fn check(response: &HttpResponse) -> Result<(), UploadError> {
    match response.status {
        404 | 410 => {
            Err(UploadError::new(ErrorCode::SessionExpired, "the tus server no longer has this upload"))
        }
        409 => Err(UploadError::new(ErrorCode::OffsetConflict, "the tus server holds another offset")),
        CHECKSUM_MISMATCH => {
            Err(UploadError::new(ErrorCode::ChecksumMismatch, "the tus server refused the chunk's checksum"))
        }
        _ => store::check_answer(response),
    }
}

/// Where the bytes go and how: the upload URL once known, and what the
/// server offers.
struct TusUpload<'a, I: Io> {
    upload: &'a ActiveUpload<'a, I>,
    discovery: Discovery,
    url: Secret,
    /// creation-defer-length: the next PATCH still has to send the length.
    length_deferred: Cell<bool>,
}

impl<I: Io> TusUpload<'_, I> {
    /// Ends the upload as `expired` if the server says its time is up.
    fn check_expiry(&self, response: &HttpResponse) -> Result<(), UploadError> {
        if let Some(value) = response.header("upload-expires") {
            if parse_expires(value)? <= self.upload.tools.now_ms() {
                self.upload.transition(SessionState::Expired)?;
                return Err(UploadError::new(ErrorCode::SessionExpired, "the tus upload has expired"));
            }
        }
        Ok(())
    }

    fn at(&self, offset: u64) -> Committed {
        Committed { offset, complete: offset >= self.upload.total() && !self.length_deferred.get() }
    }

    async fn report(&self, offset: u64) -> Result<(), UploadError> {
        let call = BrokerCall::ResumableStatus {
            session_id: self.upload.session_id(),
            offset,
            session_uri: Some(self.url.clone()),
        };
        self.upload.ask(&call).await.map(drop)
    }
}

impl<I: Io> OffsetStore for TusUpload<'_, I> {
    /// One PATCH of the piece.
    async fn send_chunk(&self, piece: Piece) -> Result<Committed, UploadError> {
        let source = self.upload.tools.source;
        let mut headers = vec![
            ("Content-Type".to_owned(), OFFSET_CONTENT_TYPE.to_owned()),
            ("Upload-Offset".to_owned(), piece.start.to_string()),
        ];
        if self.length_deferred.get() {
            headers.push(("Upload-Length".to_owned(), self.upload.total().to_string()));
        }
        if let Some(algorithm) = self.discovery.checksum() {
            let digest = source.digest(piece.start, piece.end(), algorithm).await?;
            headers.push(("Upload-Checksum".to_owned(), checksum_header(algorithm, &digest)));
        }
        let request = tus_request("PATCH", &self.url, headers, Some(self.upload.body(piece)));
        let offset = self
            .upload
            .put(piece, request, |response| {
                check(response)?;
                self.check_expiry(response)?;
                let committed = parse_size("Upload-Offset", response.header("upload-offset"))?;
                Ok((committed, committed.saturating_sub(piece.start)))
            })
            .await?;
        self.length_deferred.set(false);
        Ok(self.at(offset))
    }

    /// HEAD: the offset the server holds, told to the broker too.
    async fn committed(&self) -> Result<Committed, UploadError> {
        let head = || async {
            let response =
                self.upload.tools.send_bodiless(tus_request("HEAD", &self.url, vec![], None)).await?;
            check(&response)?;
            self.check_expiry(&response)?;
            let offset = parse_size("Upload-Offset", response.header("upload-offset"))?;
            self.report(offset).await?;
            Ok(self.at(offset))
        };
        self.upload.tools.retrying(head).await
    }
}

/// Sends the file with tus, from the offset the server holds.
pub(crate) async fn transfer<I: Io>(
    upload: &ActiveUpload<'_, I>,
    options: &UploadOptions,
    resuming: bool,
) -> Result<(), UploadError> {
    let total = upload.total();
    let chunk = crate::resumable::chunk_size(options.chunk_size);
    if upload.state() == SessionState::Initialized {
        // The broker either pre-creates the upload (session_uri) or hands
        // out the creation endpoint (`upload`, a POST).
        let reply = upload.ask(&BrokerCall::Sign { session_id: upload.session_id() }).await?;
        if reply.session.session_uri.is_none() {
            let endpoint = reply.upload.map(|u| u.url).ok_or_else(|| {
                UploadError::new(
                    ErrorCode::BrokerMalformedResponse,
                    "sign: a tus session came without a tus URL",
                )
            })?;
            return create_and_send(upload, endpoint, options, chunk).await;
        }
    }
    let url = upload.session().session_uri.clone().ok_or_else(|| {
        UploadError::new(ErrorCode::BrokerMalformedResponse, "a tus session came without its upload URL")
    })?;
    let discovery = discover(upload, &url).await?;
    check_size(&discovery, total)?;
    let tus = TusUpload { upload, discovery, url, length_deferred: Cell::new(false) };
    if resuming {
        upload.begin_resuming()?;
    }
    let at = tus.committed().await?;
    upload.already_stored(at.offset);
    send_from(&tus, at, chunk).await
}

async fn discover<I: Io>(upload: &ActiveUpload<'_, I>, url: &Secret) -> Result<Discovery, UploadError> {
    let options = || async {
        let response = upload.tools.send_bodiless(tus_request("OPTIONS", url, vec![], None)).await?;
        store::check_answer(&response)?;
        Ok(response)
    };
    let response = upload.tools.retrying(options).await?;
    let discovery = Discovery::from_response(&response)?;
    if !discovery.versions.iter().any(|v| v == TUS_VERSION) {
        return Err(UploadError::new(ErrorCode::StoreRejected, "the tus server does not speak tus 1.0.0"));
    }
    Ok(discovery)
}

fn check_size(discovery: &Discovery, total: u64) -> Result<(), UploadError> {
    match discovery.max_size {
        Some(max) if total > max => Err(UploadError::new(
            ErrorCode::FileTooLarge,
            format!("the tus server accepts at most {max} bytes; the file has {total}"),
        )),
        _ => Ok(()),
    }
}

/// Creation: POST to the endpoint (with the first chunk when the server
/// offers creation-with-upload), then PATCH the rest.
async fn create_and_send<I: Io>(
    upload: &ActiveUpload<'_, I>,
    endpoint: Secret,
    options: &UploadOptions,
    chunk: u64,
) -> Result<(), UploadError> {
    let total = upload.total();
    let discovery = discover(upload, &endpoint).await?;
    check_size(&discovery, total)?;
    let defer = options.defer_length && discovery.supports("creation-defer-length");
    let metadata = encode_metadata(&[("filename", &options.filename), ("filetype", &options.content_type)]);
    let mut headers = vec![("Upload-Metadata".to_owned(), metadata)];
    headers.push(if defer {
        ("Upload-Defer-Length".to_owned(), "1".to_owned())
    } else {
        ("Upload-Length".to_owned(), total.to_string())
    });
    let with_upload = !defer && discovery.supports("creation-with-upload") && total > 0;
    let first = Piece::between(0, if with_upload { chunk.min(total) } else { 0 });
    if with_upload {
        headers.push(("Content-Type".to_owned(), OFFSET_CONTENT_TYPE.to_owned()));
    }
    let body = with_upload.then(|| upload.body(first));
    upload.transition(SessionState::Uploading)?;
    let request = tus_request("POST", &endpoint, headers, body);
    let (url, offset) = upload
        .put(first, request, |response| {
            store::check_answer(response)?;
            let location = response.header("location").ok_or_else(|| {
                UploadError::new(ErrorCode::StoreMalformedResponse, "the tus server created no Location")
            })?;
            let url = upload_url(&endpoint, location)?;
            let offset = match response.header("upload-offset") {
                Some(value) => parse_size("Upload-Offset", Some(value))?,
                None => 0,
            };
            Ok(((url, offset), offset))
        })
        .await?;
    let tus = TusUpload { upload, discovery, url, length_deferred: Cell::new(defer) };
    tus.report(offset).await?;
    send_from(&tus, tus.at(offset), chunk).await
}

async fn send_from<I: Io>(tus: &TusUpload<'_, I>, at: Committed, chunk: u64) -> Result<(), UploadError> {
    if tus.upload.state() != SessionState::Uploading {
        tus.upload.transition(SessionState::Uploading)?;
    }
    send_from_offset(tus.upload, tus, at, chunk).await?;
    tus.upload.transition(SessionState::Uploaded)
}

/// Termination: asks the tus server to discard the upload.
pub(crate) fn termination<B>(url: &Secret) -> HttpRequest<B> {
    tus_request("DELETE", url, vec![], None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(headers: &[(&str, &str)]) -> HttpResponse {
        HttpResponse {
            status: 204,
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            body: String::new(),
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("Upload-Offset", Some("0")), Ok(0));
        assert_eq!(parse_size("Upload-Offset", Some(" 1048576 ")), Ok(1_048_576));
        for bad in ["", "-1", "+5", "1e3", "0x10", "１", "18446744073709551616", "5 5"] {
            let err = parse_size("Upload-Offset", Some(bad)).unwrap_err();
            assert_eq!(err.code, ErrorCode::StoreMalformedResponse, "{bad:?}");
        }
        assert_eq!(parse_size("Upload-Offset", None).unwrap_err().code, ErrorCode::StoreMalformedResponse);
    }

    #[test]
    fn expiry_dates() {
        assert_eq!(parse_expires("Thu, 01 Jan 1970 00:00:01 GMT"), Ok(1000.0));
        for bad in ["tomorrow", "", "2026-11-26T00:00:00Z"] {
            assert_eq!(parse_expires(bad).unwrap_err().code, ErrorCode::StoreMalformedResponse);
        }
    }

    #[test]
    fn metadata_round_trips_and_hostile_values_are_refused() {
        let encoded = encode_metadata(&[("filename", "résumé 1.pdf"), ("filetype", "application/pdf")]);
        assert_eq!(encoded, "filename csOpc3Vtw6kgMS5wZGY=,filetype YXBwbGljYXRpb24vcGRm");
        assert_eq!(
            decode_metadata(&encoded).unwrap(),
            vec![("filename".into(), "résumé 1.pdf".into()), ("filetype".into(), "application/pdf".into())]
        );
        assert_eq!(decode_metadata("empty"), Some(vec![("empty".into(), String::new())]));
        for bad in ["filename !!!", "filename /w==,", "fi\u{7f}le YQ=="] {
            assert_eq!(decode_metadata(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn checksums() {
        let header = checksum_header(ChecksumAlgorithm::Sha1, &[0xde, 0xad]);
        assert_eq!(header, "sha1 3q0=");
        assert_eq!(parse_checksum(&header), Some((ChecksumAlgorithm::Sha1, vec![0xde, 0xad])));
        assert_eq!(parse_checksum("md5 3q0="), None);
        assert_eq!(parse_checksum("sha256 not-base64!"), None);
        assert_eq!(parse_checksum("sha256"), None);
    }

    #[test]
    fn discovery() {
        let found = Discovery::from_response(&response(&[
            ("tus-version", "1.0.0,0.2.2"),
            ("tus-extension", "creation,creation-with-upload,termination,checksum,expiration"),
            ("tus-max-size", "1073741824"),
            ("tus-checksum-algorithm", "md5,sha1,sha256"),
        ]))
        .unwrap();
        assert_eq!(found.versions, ["1.0.0", "0.2.2"]);
        assert!(found.supports("creation-with-upload") && !found.supports("concatenation"));
        assert_eq!(found.max_size, Some(1 << 30));
        assert_eq!(found.checksum(), Some(ChecksumAlgorithm::Sha256));
        let sha1_only = Discovery { checksum_algorithms: vec!["SHA1".into()], ..found.clone() };
        assert_eq!(sha1_only.checksum(), Some(ChecksumAlgorithm::Sha1));
        let no_extension = Discovery { extensions: vec![], ..found };
        assert_eq!(no_extension.checksum(), None);
        let bad = Discovery::from_response(&response(&[("tus-max-size", "lots")]));
        assert_eq!(bad.unwrap_err().code, ErrorCode::StoreMalformedResponse);
    }

    #[test]
    fn locations_are_used_as_given() {
        let endpoint = Secret::new("https://tus.example:1080/files/");
        let absolute = "https://cdn.example/files/abc?token=x%2Fy";
        assert_eq!(upload_url(&endpoint, absolute).unwrap().expose(), absolute);
        assert_eq!(
            upload_url(&endpoint, "/files/abc").unwrap().expose(),
            "https://tus.example:1080/files/abc"
        );
        for bad in ["abc", "//evil.example/x", "javascript:alert(1)", ""] {
            assert_eq!(
                upload_url(&endpoint, bad).unwrap_err().code,
                ErrorCode::StoreMalformedResponse,
                "{bad:?}"
            );
        }
    }
}
