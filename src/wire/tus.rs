//! tus 1.0's wire rules, shared by the client and the embedded tus server:
//! headers and their values, metadata, checksums, discovery, the upload URL
//! from a creation answer, and what a server's answer means.

use crate::error::{shown, ErrorCode, UploadError};
use crate::secret::Secret;
use crate::transport::{ChecksumAlgorithm, HttpRequest, HttpResponse};
use crate::wire::s3;
use base64ct::{Base64, Encoding as _};

pub const TUS_VERSION: &str = "1.0.0";
pub const OFFSET_CONTENT_TYPE: &str = "application/offset+octet-stream";
/// Status a server answers when `Upload-Checksum` does not match the body.
pub const CHECKSUM_MISMATCH: u16 = 460;

fn malformed(what: &str, value: &str) -> UploadError {
    UploadError::new(
        ErrorCode::StoreMalformedResponse,
        ["the tus server's ", what, " ", &shown(value), " is malformed"].concat(),
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
    crate::time::parse_http_date_ms(value).ok_or_else(|| malformed("Upload-Expires", value))
}

/// `Upload-Metadata`: comma-separated `key base64(value)` pairs.
pub fn encode_metadata(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(key, value)| format!("{key} {}", Base64::encode_string(value.as_bytes())))
        .collect::<Vec<_>>()
        .join(",")
}

/// Decodes `Upload-Metadata` (for the embedded server); `None` if malformed.
pub fn decode_metadata(value: &str) -> Option<Vec<(String, String)>> {
    value
        .split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, encoded) = pair.split_once(' ').unwrap_or((pair, ""));
            let decoded = String::from_utf8(Base64::decode_vec(encoded.trim()).ok()?).ok()?;
            (!key.is_empty() && key.bytes().all(|b| b.is_ascii_graphic() && b != b','))
                .then(|| (key.to_owned(), decoded))
        })
        .collect()
}

/// The algorithm's name in `Tus-Checksum-Algorithm` and `Upload-Checksum`.
/// `Upload-Checksum: <algorithm> <base64 digest>`.
pub fn checksum_header(algorithm: ChecksumAlgorithm, digest: &[u8]) -> String {
    format!("{} {}", algorithm.name(), Base64::encode_string(digest))
}

/// Parses `Upload-Checksum` (for the embedded server).
pub fn parse_checksum(value: &str) -> Option<(ChecksumAlgorithm, Vec<u8>)> {
    let (name, digest) = value.trim().split_once(' ')?;
    let algorithm = ChecksumAlgorithm::named(name)?;
    Some((algorithm, Base64::decode_vec(digest.trim()).ok()?))
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

    /// The checksum to send with each PATCH: `preferred` if the server
    /// offers it, else the strongest it offers; none if it offers none (or
    /// checksums are off: `preferred` is `None`).
    pub fn checksum(&self, preferred: Option<ChecksumAlgorithm>) -> Option<ChecksumAlgorithm> {
        let preferred = preferred?;
        if !self.supports("checksum") {
            return None;
        }
        let offered = |a: ChecksumAlgorithm| {
            self.checksum_algorithms.iter().any(|name| name.eq_ignore_ascii_case(a.name()))
        };
        std::iter::once(preferred)
            .chain([
                ChecksumAlgorithm::Sha256,
                ChecksumAlgorithm::Sha1,
                ChecksumAlgorithm::Md5,
                ChecksumAlgorithm::Crc32c,
            ])
            .find(|&a| offered(a))
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

pub fn tus_request<B>(
    method: &'static str,
    url: &Secret,
    mut headers: Vec<(String, String)>,
    body: Option<B>,
) -> HttpRequest<B> {
    headers.insert(0, ("Tus-Resumable".to_owned(), TUS_VERSION.to_owned()));
    HttpRequest { method, url: url.clone(), headers, body }
}

/// The tus server's answer must be a success carrying `Tus-Resumable`; a
/// 404/410 means the upload is gone, a 401 that the token in its URL
/// expired (Rindle's TusPlug).
pub fn check(response: &HttpResponse) -> Result<(), UploadError> {
    match response.status {
        404 | 410 => {
            Err(UploadError::new(ErrorCode::SessionExpired, "the tus server no longer has this upload"))
        }
        401 => Err(UploadError::new(ErrorCode::SessionExpired, "the tus upload's token has expired")),
        409 => Err(UploadError::new(ErrorCode::OffsetConflict, "the tus server holds another offset")),
        CHECKSUM_MISMATCH => {
            Err(UploadError::new(ErrorCode::ChecksumMismatch, "the tus server refused the chunk's checksum"))
        }
        _ => s3::check_answer(response),
    }
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
    fn answers_are_typed() {
        let answer = |status| check(&HttpResponse { status, ..response(&[("Tus-Resumable", "1.0.0")]) });
        let code = |status| answer(status).unwrap_err().code;
        assert!(answer(204).is_ok());
        assert_eq!(
            [code(401), code(404), code(410), code(409), code(460)],
            [
                ErrorCode::SessionExpired,
                ErrorCode::SessionExpired,
                ErrorCode::SessionExpired,
                ErrorCode::OffsetConflict,
                ErrorCode::ChecksumMismatch
            ]
        );
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
        assert_eq!(parse_checksum("sha512 3q0="), None);
        assert_eq!(parse_checksum("crc32c 3q0="), Some((ChecksumAlgorithm::Crc32c, vec![0xde, 0xad])));
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
        let crc = Some(ChecksumAlgorithm::Crc32c);
        assert_eq!(found.checksum(crc), Some(ChecksumAlgorithm::Sha256), "crc32c not offered: the strongest");
        assert_eq!(
            found.checksum(Some(ChecksumAlgorithm::Md5)),
            Some(ChecksumAlgorithm::Md5),
            "the one asked for"
        );
        assert_eq!(found.checksum(None), None, "checksums off");
        let sha1_only = Discovery { checksum_algorithms: vec!["SHA1".into()], ..found.clone() };
        assert_eq!(sha1_only.checksum(crc), Some(ChecksumAlgorithm::Sha1));
        let with_crc =
            Discovery { checksum_algorithms: vec!["sha1".into(), "crc32c".into()], ..found.clone() };
        assert_eq!(with_crc.checksum(crc), Some(ChecksumAlgorithm::Crc32c));
        let no_extension = Discovery { extensions: vec![], ..found };
        assert_eq!(no_extension.checksum(crc), None);
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
