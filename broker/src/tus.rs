//! Where a tus session's bytes go: the embedded tus server (the broker
//! pre-creates each upload, as Rindle's LiveView helper does) or an
//! external tus server the client creates uploads on (`TUS_ENDPOINT`).

use crate::store::local::LocalStore;
use crate::store::StoreError;
use rindle_upload::wire::tus::{parse_size, TUS_VERSION};
use sha2::{Digest, Sha256};

/// The id at the end of an upload URL (`…/tus/{id}`).
pub fn upload_id(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or_default().rsplit('/').next().unwrap_or_default()
}

fn failed(operation: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::failed(format!("tus {operation}: {e}"))
}

/// An external tus server, reached over HTTP.
pub struct RemoteTus {
    pub endpoint: String,
    http: reqwest::Client,
}

impl RemoteTus {
    pub fn new(endpoint: String) -> Self {
        RemoteTus { endpoint, http: reqwest::Client::new() }
    }

    /// Only upload URLs on the configured server are accepted from a
    /// client: the broker will send requests to them.
    pub fn owns(&self, url: &str) -> bool {
        let base = self.endpoint.trim_end_matches('/');
        url.strip_prefix(base).is_some_and(|rest| rest.starts_with('/') && !rest.contains(".."))
    }

    /// HEAD: (offset, length).
    pub async fn head(&self, url: &str) -> Result<(u64, Option<u64>), StoreError> {
        let response = self.http.head(url).header("Tus-Resumable", TUS_VERSION).send().await;
        let response = response.map_err(|e| failed("HEAD", e.without_url()))?;
        if !response.status().is_success() {
            return Err(failed("HEAD", format!("answered {}", response.status().as_u16())));
        }
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok());
        let offset =
            parse_size("Upload-Offset", header("upload-offset")).map_err(|e| failed("HEAD", e.message))?;
        let length = header("upload-length").and_then(|v| v.parse().ok());
        Ok((offset, length))
    }

    pub async fn terminate(&self, url: &str) -> Result<(), StoreError> {
        let response = self.http.delete(url).header("Tus-Resumable", TUS_VERSION).send().await;
        let status = response.map_err(|e| failed("DELETE", e.without_url()))?.status().as_u16();
        match status {
            200 | 204 | 404 | 410 => Ok(()),
            other => Err(failed("DELETE", format!("answered {other}"))),
        }
    }

    /// Size and SHA-256 of a finished upload, read back with GET; `None`
    /// while it is incomplete.
    pub async fn inspect(&self, url: &str) -> Result<Option<(u64, String)>, StoreError> {
        match self.head(url).await? {
            (offset, Some(length)) if offset == length => {}
            _ => return Ok(None),
        }
        let response = self.http.get(url).header("Tus-Resumable", TUS_VERSION).send().await;
        let mut response = response.map_err(|e| failed("GET", e.without_url()))?;
        if !response.status().is_success() {
            return Err(failed("GET", format!("answered {}", response.status().as_u16())));
        }
        let (mut hasher, mut size) = (Sha256::new(), 0u64);
        while let Some(chunk) = response.chunk().await.map_err(|e| failed("GET", e.without_url()))? {
            size += chunk.len() as u64;
            hasher.update(&chunk);
        }
        Ok(Some((size, hex::encode(hasher.finalize()))))
    }
}

/// The embedded tus server's view used by the broker.
pub async fn embedded_offset(local: &LocalStore, url: &str) -> Result<u64, StoreError> {
    local.resumable_offset(upload_id(url)).await
}
