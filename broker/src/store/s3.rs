//! A real S3-compatible store (AWS S3, Garage, MinIO…): requests are
//! signed with SigV4 by rusty-s3 and sent with reqwest.

use super::{head_of, sniff_range, Inspected, Inspector, StoreError, StoreErrorKind, Vouched};
use rindle_upload::session::MultipartPart;
use rindle_upload::wire::checksum::{Checksum, ChecksumAlgorithm};
use rusty_s3::actions::{CompleteMultipartUploadResponse, CreateMultipartUpload, ListParts};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use std::time::Duration;

/// How long the broker's own signed calls to the store stay valid.
const CALL_TTL: Duration = Duration::from_secs(60);

pub struct S3Config {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub path_style: bool,
}

pub struct S3Store {
    bucket: Bucket,
    credentials: Credentials,
    http: reqwest::Client,
}

impl S3Store {
    pub fn new(config: S3Config) -> Result<Self, String> {
        let endpoint = config.endpoint.parse().map_err(|e| format!("S3_ENDPOINT is not a URL: {e}"))?;
        let style = if config.path_style { UrlStyle::Path } else { UrlStyle::VirtualHost };
        let bucket = Bucket::new(endpoint, style, config.bucket, config.region)
            .map_err(|e| format!("S3 bucket configuration: {e}"))?;
        Ok(S3Store {
            bucket,
            credentials: Credentials::new(config.access_key_id, config.secret_access_key),
            http: reqwest::Client::new(),
        })
    }

    /// Content-Type and Content-Length are signed: the store refuses any
    /// other type or size. (The browser sets Content-Length itself, so it
    /// is signed but not among the headers handed to the client.)
    /// A checksum header given is signed too: the store verifies the
    /// bytes against it.
    pub fn presign_put(
        &self,
        key: &str,
        length: u64,
        content_type: &str,
        checksum: Option<&(String, String)>,
        ttl: Duration,
    ) -> String {
        let mut action = self.bucket.put_object(Some(&self.credentials), key);
        action.headers_mut().insert("content-type", content_type.to_owned());
        action.headers_mut().insert("content-length", length.to_string());
        if let Some((name, value)) = checksum {
            action.headers_mut().insert(name.to_ascii_lowercase(), value.clone());
        }
        action.sign(ttl).to_string()
    }

    pub fn presign_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        length: u64,
        checksum: Option<&(String, String)>,
        ttl: Duration,
    ) -> String {
        let part = u16::try_from(part_number).unwrap_or(u16::MAX);
        let mut action = self.bucket.upload_part(Some(&self.credentials), key, part, upload_id);
        action.headers_mut().insert("content-length", length.to_string());
        if let Some((name, value)) = checksum {
            action.headers_mut().insert(name.to_ascii_lowercase(), value.clone());
        }
        action.sign(ttl).to_string()
    }

    /// A read URL whose answer carries the verified type, and is an
    /// attachment unless the type is safe to show inline.
    pub fn presign_get(&self, key: &str, content_type: &str, ttl: Duration) -> String {
        let mut action = self.bucket.get_object(Some(&self.credentials), key);
        action.query_mut().insert("response-content-type", content_type.to_owned());
        action
            .query_mut()
            .insert("response-content-disposition", crate::downloads::disposition(content_type).to_owned());
        action.sign(ttl).to_string()
    }

    /// Sends a signed request; a non-2xx answer becomes a readable error
    /// naming the operation and S3's code (never the signed URL).
    async fn send(
        &self,
        operation: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, StoreError> {
        let response = request.send().await.map_err(|e| {
            StoreError::failed(format!("S3 {operation}: request failed: {}", e.without_url()))
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        let code = rindle_upload::wire::s3::error_code(&body).unwrap_or_default();
        let message = format!("S3 {operation} answered {status} {code}").trim_end().to_owned();
        Err(match status {
            404 => StoreError::not_found(message),
            400..=499 => StoreError::refused(message),
            _ => StoreError::failed(message),
        })
    }

    /// With `checksum` CRC32C the upload keeps each part's CRC32C and the
    /// object a checksum of them (its parts must then all carry one).
    pub async fn create_multipart(
        &self,
        key: &str,
        content_type: &str,
        checksum: Option<ChecksumAlgorithm>,
    ) -> Result<String, StoreError> {
        let crc32c = checksum == Some(ChecksumAlgorithm::Crc32c);
        let mut action = self.bucket.create_multipart_upload(Some(&self.credentials), key);
        action.headers_mut().insert("content-type", content_type.to_owned());
        if crc32c {
            action.headers_mut().insert("x-amz-checksum-algorithm", "CRC32C");
        }
        let mut request = self.http.post(action.sign(CALL_TTL)).header("content-type", content_type);
        if crc32c {
            request = request.header("x-amz-checksum-algorithm", "CRC32C");
        }
        let response = self.send("CreateMultipartUpload", request).await?;
        let body = response
            .text()
            .await
            .map_err(|e| StoreError::failed(format!("S3 CreateMultipartUpload: {e}")))?;
        let parsed = CreateMultipartUpload::parse_response(&body)
            .map_err(|e| StoreError::failed(format!("S3 CreateMultipartUpload: unreadable answer: {e}")))?;
        Ok(parsed.upload_id().to_owned())
    }

    pub async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<MultipartPart>, StoreError> {
        let mut parts = Vec::new();
        let mut marker = None;
        loop {
            let mut action = self.bucket.list_parts(Some(&self.credentials), key, upload_id);
            if let Some(marker) = marker {
                action.set_part_number_marker(marker);
            }
            let response = self.send("ListParts", self.http.get(action.sign(CALL_TTL))).await?;
            let body = response.text().await.map_err(|e| StoreError::failed(format!("S3 ListParts: {e}")))?;
            let page = ListParts::parse_response(&body)
                .map_err(|e| StoreError::failed(format!("S3 ListParts: unreadable answer: {e}")))?;
            parts.extend(page.parts.iter().map(|p| MultipartPart {
                part_number: u32::from(p.number),
                etag: p.etag.clone(),
                size: Some(p.size),
                checksum: None,
            }));
            match page.next_part_number_marker {
                Some(next) if !page.parts.is_empty() && Some(next) != marker => marker = Some(next),
                _ => return Ok(parts),
            }
        }
    }

    pub async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[MultipartPart],
    ) -> Result<(), StoreError> {
        // S3's body numbers ETags from 1; the list must be exactly 1..=n.
        if parts.iter().enumerate().any(|(i, p)| p.part_number as usize != i + 1) {
            return Err(StoreError::refused("the part list must number parts 1, 2, 3… without gaps"));
        }
        let etags = parts.iter().map(|p| p.etag.as_str());
        let action = self.bucket.complete_multipart_upload(Some(&self.credentials), key, upload_id, etags);
        let url = action.sign(CALL_TTL);
        let response =
            self.send("CompleteMultipartUpload", self.http.post(url).body(complete_body(parts))).await?;
        // S3 may answer 200 and still fail: the body says which.
        let body = response
            .text()
            .await
            .map_err(|e| StoreError::failed(format!("S3 CompleteMultipartUpload: {e}")))?;
        CompleteMultipartUploadResponse::parse(&body)
            .map(|_| ())
            .map_err(|_| StoreError::refused("S3 CompleteMultipartUpload refused the part list"))
    }

    pub async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        let url = self.bucket.abort_multipart_upload(Some(&self.credentials), key, upload_id).sign(CALL_TTL);
        self.send("AbortMultipartUpload", self.http.delete(url)).await.map(|_| ())
    }

    /// Reads the object back to measure and hash it.
    pub async fn inspect(
        &self,
        key: &str,
        claimed: Option<ChecksumAlgorithm>,
    ) -> Result<Option<Inspected>, StoreError> {
        let url = self.bucket.get_object(Some(&self.credentials), key).sign(CALL_TTL);
        let mut response = match self.send("GetObject", self.http.get(url)).await {
            Ok(response) => response,
            Err(e) if e.kind == StoreErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut inspector = Inspector::new(claimed);
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| StoreError::failed(format!("S3 GetObject: read failed: {}", e.without_url())))?
        {
            inspector.update(&chunk);
        }
        Ok(Some(inspector.finish()))
    }

    /// `HeadObject` with the checksum mode on: S3 answers the checksum it
    /// verified on a single PUT, or for a multipart object the CRC32C of
    /// its parts' CRC32Cs (`…-N`). That one holds when it is the CRC32C of
    /// `parts`' checksums (each verified by S3 as the part was stored) and
    /// those combine into the client's checksum of the whole file.
    pub async fn vouch(
        &self,
        key: &str,
        checksum: &Checksum,
        parts: &[MultipartPart],
    ) -> Result<Option<Vouched>, StoreError> {
        let expected = match parts {
            [] => checksum.value.clone(),
            parts => match composite_crc32c(checksum, parts) {
                Some(composite) => composite,
                None => return Ok(None),
            },
        };
        let header = checksum.algorithm.s3_header();
        if !header.starts_with("x-amz-checksum-") {
            return Ok(None);
        }
        let mut action = self.bucket.head_object(Some(&self.credentials), key);
        action.headers_mut().insert("x-amz-checksum-mode", "ENABLED");
        let request = self.http.head(action.sign(CALL_TTL)).header("x-amz-checksum-mode", "ENABLED");
        let response = match self.send("HeadObject", request).await {
            Ok(response) => response,
            Err(e) if e.kind == StoreErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let text = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok());
        let size = text("content-length").and_then(|v| v.parse().ok());
        let (Some(size), true) = (size, text(header) == Some(expected.as_str())) else {
            return Ok(None);
        };
        let mut action = self.bucket.get_object(Some(&self.credentials), key);
        action.headers_mut().insert("range", sniff_range());
        let request = self.http.get(action.sign(CALL_TTL)).header("range", sniff_range());
        let response = self.send("GetObject", request).await?;
        let head = head_of(response)
            .await
            .map_err(|e| StoreError::failed(format!("S3 GetObject: read failed: {}", e.without_url())))?;
        Ok(Some(Vouched { size, head }))
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let url = self.bucket.delete_object(Some(&self.credentials), key).sign(CALL_TTL);
        self.send("DeleteObject", self.http.delete(url)).await.map(|_| ())
    }
}

/// The `CompleteMultipartUpload` body: each part's ETag, and its CRC32C
/// when it was sent with one (an upload created for CRC32C needs them).
fn complete_body(parts: &[MultipartPart]) -> String {
    let mut body = String::from("<CompleteMultipartUpload>");
    for part in parts {
        let etag = part.etag.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        body += &format!("<Part><ETag>{etag}</ETag><PartNumber>{}</PartNumber>", part.part_number);
        if let Some(crc) = part.checksum.as_ref().filter(|c| c.algorithm == ChecksumAlgorithm::Crc32c) {
            if crc.digest().is_some() {
                body += &format!("<ChecksumCRC32C>{}</ChecksumCRC32C>", crc.value);
            }
        }
        body += "</Part>";
    }
    body + "</CompleteMultipartUpload>"
}

/// What S3 reports as a multipart object's CRC32C (the CRC32C of its parts'
/// CRC32Cs, then `-` and their count), when `parts`' CRC32Cs and sizes
/// combine into the client's `whole` checksum; `None` otherwise.
fn composite_crc32c(whole: &Checksum, parts: &[MultipartPart]) -> Option<String> {
    if whole.algorithm != ChecksumAlgorithm::Crc32c {
        return None;
    }
    let mut digests = Vec::with_capacity(parts.len() * 4);
    let mut pieces = Vec::with_capacity(parts.len());
    for part in parts {
        let crc = part.checksum.as_ref().filter(|c| c.algorithm == ChecksumAlgorithm::Crc32c)?.digest()?;
        let crc: [u8; 4] = crc.try_into().ok()?;
        digests.extend_from_slice(&crc);
        pieces.push((u32::from_be_bytes(crc), part.size?));
    }
    let combined = rindle_upload::digest::crc32c_of_pieces(pieces).to_be_bytes();
    if whole.digest()?.as_slice() != combined.as_slice() {
        return None;
    }
    let of_parts = Checksum::of_digest(ChecksumAlgorithm::Crc32c, &crc32c::crc32c(&digests).to_be_bytes());
    Some(format!("{}-{}", of_parts.value, parts.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(number: u32, bytes: &[u8]) -> MultipartPart {
        let crc = crc32c::crc32c(bytes).to_be_bytes();
        MultipartPart {
            part_number: number,
            etag: format!("\"e{number}\""),
            size: Some(bytes.len() as u64),
            checksum: Some(Checksum::of_digest(ChecksumAlgorithm::Crc32c, &crc)),
        }
    }

    #[test]
    fn a_multipart_objects_checksum_is_expected_only_from_parts_that_make_the_file() {
        let file: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let parts = [part(1, &file[..12_000]), part(2, &file[12_000..])];
        let whole = Checksum::of_digest(ChecksumAlgorithm::Crc32c, &crc32c::crc32c(&file).to_be_bytes());
        let digests: Vec<u8> =
            parts.iter().flat_map(|p| p.checksum.as_ref().unwrap().digest().unwrap()).collect();
        let of_parts =
            Checksum::of_digest(ChecksumAlgorithm::Crc32c, &crc32c::crc32c(&digests).to_be_bytes());
        assert_eq!(composite_crc32c(&whole, &parts), Some(format!("{}-2", of_parts.value)));

        let other = Checksum::of_digest(ChecksumAlgorithm::Crc32c, &crc32c::crc32c(b"other").to_be_bytes());
        assert_eq!(composite_crc32c(&other, &parts), None, "parts of another file");
        let unchecked = [parts[0].clone(), MultipartPart { checksum: None, ..parts[1].clone() }];
        assert_eq!(composite_crc32c(&whole, &unchecked), None, "a part without its CRC32C");
        let body = complete_body(&parts);
        assert!(body.starts_with(
            "<CompleteMultipartUpload><Part><ETag>\"e1\"</ETag><PartNumber>1</PartNumber><ChecksumCRC32C>"
        ));
        assert!(body.ends_with("</ChecksumCRC32C></Part></CompleteMultipartUpload>"), "{body}");
    }
}
