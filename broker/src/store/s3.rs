//! A real S3-compatible store (AWS S3, Garage, MinIO…): requests are
//! signed with SigV4 by rusty-s3 and sent with reqwest.

use super::{head_of, Inspected, Inspector, StoreError, StoreErrorKind, Vouched, SNIFF_BYTES};
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

    pub async fn create_multipart(&self, key: &str, content_type: &str) -> Result<String, StoreError> {
        let mut action = self.bucket.create_multipart_upload(Some(&self.credentials), key);
        action.headers_mut().insert("content-type", content_type.to_owned());
        let url = action.sign(CALL_TTL);
        let response = self
            .send("CreateMultipartUpload", self.http.post(url).header("content-type", content_type))
            .await?;
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
        let response = self.send("CompleteMultipartUpload", self.http.post(url).body(action.body())).await?;
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
    /// verified on a single PUT (a multipart object's is a checksum of its
    /// parts' checksums, which the client's is not: read back).
    pub async fn vouch(&self, key: &str, checksum: &Checksum) -> Result<Option<Vouched>, StoreError> {
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
        let (Some(size), true) = (size, text(header) == Some(checksum.value.as_str())) else {
            return Ok(None);
        };
        let mut action = self.bucket.get_object(Some(&self.credentials), key);
        action.headers_mut().insert("range", format!("bytes=0-{}", SNIFF_BYTES - 1));
        let request =
            self.http.get(action.sign(CALL_TTL)).header("range", format!("bytes=0-{}", SNIFF_BYTES - 1));
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
