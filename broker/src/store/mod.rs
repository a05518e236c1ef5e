//! Where the bytes go: the embedded local-disk store (default) or a real
//! S3-compatible store, behind one set of operations the protocol needs.

pub mod local;
pub mod s3;

use local::{LocalStore, PartGrant, PutGrant};
use rindle_upload::session::MultipartPart;
use s3::S3Store;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A store operation that failed; the message is for people (it may end
/// up as a session's `failure_reason`) and never carries a credential.
#[derive(Debug)]
pub struct StoreError(pub String);

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError(format!("store I/O failed: {e}"))
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A presigned request the client sends as is.
pub struct Presigned {
    pub url: String,
    pub headers: BTreeMap<String, String>,
}

pub enum Store {
    Local(LocalStore),
    S3(S3Store),
}

fn unix_after(ttl: Duration) -> u64 {
    (SystemTime::now() + ttl).duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Store {
    /// `base` is the broker's own URL, where the embedded store is served.
    pub fn presign_put(
        &self,
        base: &str,
        key: &str,
        length: u64,
        content_type: &str,
        ttl: Duration,
    ) -> Presigned {
        let url = match self {
            Store::Local(local) => {
                let grant = PutGrant {
                    key: key.to_owned(),
                    length,
                    content_type: content_type.to_owned(),
                    expires_unix: unix_after(ttl),
                };
                format!("{base}{}", local.presign_put(&grant))
            }
            Store::S3(s3) => s3.presign_put(key, content_type, ttl),
        };
        Presigned { url, headers: BTreeMap::from([("Content-Type".to_owned(), content_type.to_owned())]) }
    }

    pub async fn create_multipart(&self, key: &str, content_type: &str) -> Result<String, StoreError> {
        match self {
            Store::Local(local) => local.create_multipart().await,
            Store::S3(s3) => s3.create_multipart(key, content_type).await,
        }
    }

    pub fn presign_part(
        &self,
        base: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        ttl: Duration,
    ) -> Presigned {
        let url = match self {
            Store::Local(local) => {
                let grant =
                    PartGrant { upload_id: upload_id.to_owned(), part_number, expires_unix: unix_after(ttl) };
                format!("{base}{}", local.presign_part(&grant))
            }
            Store::S3(s3) => s3.presign_part(key, upload_id, part_number, ttl),
        };
        Presigned { url, headers: BTreeMap::new() }
    }

    pub async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<MultipartPart>, StoreError> {
        match self {
            Store::Local(local) => local.list_parts(upload_id).await,
            Store::S3(s3) => s3.list_parts(key, upload_id).await,
        }
    }

    pub async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[MultipartPart],
    ) -> Result<(), StoreError> {
        match self {
            Store::Local(local) => local.complete_multipart(key, upload_id, parts).await,
            Store::S3(s3) => s3.complete_multipart(key, upload_id, parts).await,
        }
    }

    pub async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        match self {
            Store::Local(local) => local.abort_multipart(upload_id).await,
            Store::S3(s3) => s3.abort_multipart(key, upload_id).await,
        }
    }

    /// Size and SHA-256 (hex) of a stored object, or `None`.
    pub async fn inspect(&self, key: &str) -> Result<Option<(u64, String)>, StoreError> {
        match self {
            Store::Local(local) => local.inspect(key).await,
            Store::S3(s3) => s3.inspect(key).await,
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Store::Local(local) => local.delete(key).await,
            Store::S3(s3) => s3.delete(key).await,
        }
    }

    /// Where the stored object can be read.
    pub fn object_url(&self, base: &str, key: &str) -> String {
        match self {
            Store::Local(_) => format!("{base}/objects/{key}"),
            Store::S3(s3) => s3.presign_get(key, Duration::from_secs(3600)),
        }
    }

    pub fn local(&self) -> Option<&LocalStore> {
        match self {
            Store::Local(local) => Some(local),
            Store::S3(_) => None,
        }
    }
}
