//! Google Cloud Storage (or an emulator of its JSON API) for `resumable`
//! uploads: the broker opens the resumable session, reads its status,
//! cancels it, and verifies the finished object.

use super::{head_of, sniff_range, Inspected, Inspector, StoreError, Vouched};
use base64::Engine as _;
use gcp_auth::{CustomServiceAccount, TokenProvider};
use md5::Md5;
use rindle_upload::wire::checksum::{Checksum, ChecksumAlgorithm};
use rindle_upload::wire::gcs::{committed_offset, ContentRange};
use sha2::Digest;
use std::path::PathBuf;

const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";

pub struct GcsConfig {
    /// `https://storage.googleapis.com`, or an emulator's address.
    pub base_url: String,
    pub bucket: String,
    /// A service-account key file; none for an emulator.
    pub credentials: Option<PathBuf>,
}

pub struct GcsStore {
    base: String,
    bucket: String,
    auth: Option<CustomServiceAccount>,
    http: reqwest::Client,
}

fn encoded(name: &str) -> String {
    url::form_urlencoded::byte_serialize(name.as_bytes()).collect()
}

fn failed(operation: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::failed(format!("GCS {operation}: {e}"))
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectMetadata {
    size: String,
    md5_hash: Option<String>,
    crc32c: Option<String>,
}

impl GcsStore {
    pub fn new(config: GcsConfig) -> Result<Self, String> {
        let auth = match &config.credentials {
            Some(path) => {
                Some(CustomServiceAccount::from_file(path).map_err(|e| format!("GCS_CREDENTIALS: {e}"))?)
            }
            None => None,
        };
        Ok(GcsStore {
            base: config.base_url.trim_end_matches('/').to_owned(),
            bucket: config.bucket,
            auth,
            http: reqwest::Client::new(),
        })
    }

    async fn authorized(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, StoreError> {
        match &self.auth {
            Some(auth) => {
                let token = auth.token(&[SCOPE]).await.map_err(|e| failed("authorization", e))?;
                Ok(request.bearer_auth(token.as_str()))
            }
            None => Ok(request),
        }
    }

    fn object_path(&self, key: &str) -> String {
        format!("/storage/v1/b/{}/o/{}", encoded(&self.bucket), encoded(key))
    }

    pub fn media_url(&self, key: &str) -> String {
        format!("{}/download{}?alt=media", self.base, self.object_path(key))
    }

    /// Opens a resumable session; returns its URI (a bearer credential).
    /// GCS answers CORS on the session URI only for the `Origin` the
    /// opening request carried, so `origin` is the page's.
    pub async fn open_resumable(
        &self,
        key: &str,
        content_type: &str,
        total: u64,
        origin: Option<&str>,
    ) -> Result<String, StoreError> {
        let url = format!(
            "{}/upload/storage/v1/b/{}/o?uploadType=resumable&name={}",
            self.base,
            encoded(&self.bucket),
            encoded(key)
        );
        let mut request = self
            .http
            .post(url)
            .header("X-Upload-Content-Type", content_type)
            .header("X-Upload-Content-Length", total)
            .json(&serde_json::json!({ "name": key, "contentType": content_type }));
        if let Some(origin) = origin {
            request = request.header("Origin", origin);
        }
        let response = self
            .authorized(request)
            .await?
            .send()
            .await
            .map_err(|e| failed("open session", e.without_url()))?;
        if !response.status().is_success() {
            return Err(failed("open session", format!("answered {}", response.status().as_u16())));
        }
        let location = response.headers().get("location").and_then(|l| l.to_str().ok());
        location.map(str::to_owned).ok_or_else(|| failed("open session", "no Location in the answer"))
    }

    /// The committed offset of a session (the total once complete).
    pub async fn resumable_offset(&self, session_uri: &str, total: u64) -> Result<u64, StoreError> {
        let status = ContentRange::Status { total }.header_value();
        let response = self
            .http
            .put(session_uri)
            .header("Content-Range", status)
            .header("Content-Length", 0)
            .send()
            .await
            .map_err(|e| failed("status", e.without_url()))?;
        match response.status().as_u16() {
            200 | 201 => Ok(total),
            308 => {
                let range = response.headers().get("range").and_then(|r| r.to_str().ok());
                committed_offset(range, total).map_err(|e| failed("status", e.message))
            }
            other => Err(failed("status", format!("answered {other}"))),
        }
    }

    pub async fn cancel_resumable(&self, session_uri: &str) -> Result<(), StoreError> {
        let response =
            self.http.delete(session_uri).send().await.map_err(|e| failed("cancel", e.without_url()))?;
        match response.status().as_u16() {
            // GCS answers 499 to a cancelled session; gone is gone.
            200 | 204 | 404 | 410 | 499 => Ok(()),
            other => Err(failed("cancel", format!("answered {other}"))),
        }
    }

    /// The object's metadata: GCS computes CRC32C and MD5 as it stores an
    /// object (and refused the last chunk had the client's hash differed).
    pub async fn vouch(&self, key: &str, checksum: &Checksum) -> Result<Option<Vouched>, StoreError> {
        let Some(metadata) = self.metadata(key).await? else { return Ok(None) };
        let held = match checksum.algorithm {
            ChecksumAlgorithm::Crc32c => metadata.crc32c,
            ChecksumAlgorithm::Md5 => metadata.md5_hash,
            _ => None,
        };
        let Some(size) =
            metadata.size.parse().ok().filter(|_| held.as_deref() == Some(checksum.value.as_str()))
        else {
            return Ok(None);
        };
        let media =
            self.authorized(self.http.get(self.media_url(key)).header("range", sniff_range())).await?;
        let media = media.send().await.map_err(|e| failed("read object", e.without_url()))?;
        if !media.status().is_success() {
            return Err(failed("read object", format!("answered {}", media.status().as_u16())));
        }
        let head = head_of(media).await.map_err(|e| failed("read object", e.without_url()))?;
        Ok(Some(Vouched { size, head }))
    }

    async fn metadata(&self, key: &str) -> Result<Option<ObjectMetadata>, StoreError> {
        let metadata_url = format!("{}{}", self.base, self.object_path(key));
        let response = self.authorized(self.http.get(metadata_url)).await?.send().await;
        let response = response.map_err(|e| failed("object metadata", e.without_url()))?;
        if response.status().as_u16() == 404 {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(failed("object metadata", format!("answered {}", response.status().as_u16())));
        }
        response.json().await.map(Some).map_err(|e| failed("object metadata", e))
    }

    /// Reads the object back: its size and SHA-256, after checking the
    /// MD5 and CRC32C its metadata carries, when it carries them.
    pub async fn inspect(
        &self,
        key: &str,
        claimed: Option<ChecksumAlgorithm>,
    ) -> Result<Option<Inspected>, StoreError> {
        let Some(metadata) = self.metadata(key).await? else { return Ok(None) };
        let media = self.authorized(self.http.get(self.media_url(key))).await?.send().await;
        let mut media = media.map_err(|e| failed("read object", e.without_url()))?;
        if !media.status().is_success() {
            return Err(failed("read object", format!("answered {}", media.status().as_u16())));
        }
        let (mut inspector, mut md5, mut crc) = (Inspector::new(claimed), Md5::new(), 0u32);
        while let Some(chunk) = media.chunk().await.map_err(|e| failed("read object", e.without_url()))? {
            inspector.update(&chunk);
            md5.update(&chunk);
            crc = crc32c::crc32c_append(crc, &chunk);
        }
        let inspected = inspector.finish();
        let size = inspected.size;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        if metadata.size.parse::<u64>().ok() != Some(size) {
            return Err(failed("verify", format!("read {size} bytes, metadata says {}", metadata.size)));
        }
        if metadata.md5_hash.is_some_and(|expected| expected != b64(&md5.finalize())) {
            return Err(failed("verify", "the object's MD5 does not match its metadata"));
        }
        if metadata.crc32c.is_some_and(|expected| expected != b64(&crc.to_be_bytes())) {
            return Err(failed("verify", "the object's CRC32C does not match its metadata"));
        }
        Ok(Some(inspected))
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let url = format!("{}{}", self.base, self.object_path(key));
        let response = self.authorized(self.http.delete(url)).await?.send().await;
        let status = response.map_err(|e| failed("delete", e.without_url()))?.status().as_u16();
        match status {
            200 | 204 | 404 => Ok(()),
            other => Err(failed("delete", format!("answered {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::RawQuery;
    use axum::response::IntoResponse;
    use axum::routing::get;

    /// A GCS stand-in on a loopback port answering one object's metadata
    /// (JSON API) and media (`/download…?alt=media`).
    async fn serve(metadata: serde_json::Value, bytes: &'static [u8]) -> GcsStore {
        let app = axum::Router::new().fallback(get(move |RawQuery(query): RawQuery| async move {
            if query.as_deref() == Some("alt=media") {
                bytes.to_vec().into_response()
            } else {
                axum::Json(metadata.clone()).into_response()
            }
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        GcsStore::new(GcsConfig { base_url, bucket: "b".into(), credentials: None }).unwrap()
    }

    const BYTES: &[u8] = b"hello, gcs";

    fn metadata(size: &str, md5: &[u8], crc: u32) -> serde_json::Value {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        serde_json::json!({ "size": size, "md5Hash": b64(md5), "crc32c": b64(&crc.to_be_bytes()) })
    }

    #[tokio::test]
    async fn a_session_is_opened_for_the_pages_origin() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorded = std::sync::Arc::clone(&seen);
        let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
            let recorded = std::sync::Arc::clone(&recorded);
            async move {
                let origin = headers.get("origin").map(|o| o.to_str().unwrap().to_owned());
                recorded.lock().unwrap().push(origin);
                ([("location", "http://gcs.test/session/1")], "").into_response()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let gcs = GcsStore::new(GcsConfig { base_url, bucket: "b".into(), credentials: None }).unwrap();
        let uri = gcs.open_resumable("k", "text/plain", 5, Some("https://app.example")).await.unwrap();
        assert_eq!(uri, "http://gcs.test/session/1");
        gcs.open_resumable("k", "text/plain", 5, None).await.unwrap();
        assert_eq!(*seen.lock().unwrap(), [Some("https://app.example".to_owned()), None]);
    }

    #[tokio::test]
    async fn an_object_is_checked_against_its_md5_crc32c_and_size() {
        let md5 = Md5::digest(BYTES);
        let crc = crc32c::crc32c(BYTES);
        let good = serve(metadata("10", &md5, crc), BYTES).await;
        let inspected = good.inspect("k", None).await.unwrap().unwrap();
        assert_eq!((inspected.size, inspected.sha256), (10, hex::encode(sha2::Sha256::digest(BYTES))));
        assert_eq!(inspected.head, BYTES, "the first bytes are kept for sniffing");

        let bad_md5 = serve(metadata("10", &Md5::digest(b"other bytes"), crc), BYTES).await;
        assert!(bad_md5.inspect("k", None).await.unwrap_err().message.contains("MD5 does not match"));
        let bad_crc = serve(metadata("10", &md5, crc ^ 1), BYTES).await;
        assert!(bad_crc.inspect("k", None).await.unwrap_err().message.contains("CRC32C does not match"));
        let bad_size = serve(metadata("11", &md5, crc), BYTES).await;
        assert!(bad_size.inspect("k", None).await.unwrap_err().message.contains("metadata says 11"));
    }
}
