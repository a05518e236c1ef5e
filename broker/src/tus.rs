//! Where a tus session's bytes go: the embedded tus server (the broker
//! pre-creates each upload, as Rindle's LiveView helper does) or an
//! external tus server the client creates uploads on (`TUS_ENDPOINT`).

use crate::store::local::LocalStore;
use crate::store::{Inspected, Inspector, StoreError};
use rindle_upload::wire::checksum::ChecksumAlgorithm;
use rindle_upload::wire::tus::{parse_size, TUS_VERSION};

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
    /// client: the broker will send requests to them. Both are normalised
    /// first (`%2e%2e` is `..`), and encoded separators are refused.
    pub fn owns(&self, url: &str) -> bool {
        let (Ok(base), Ok(url)) = (url::Url::parse(&self.endpoint), url::Url::parse(url)) else {
            return false;
        };
        let path = url.path().to_ascii_lowercase();
        let base_path = base.path().trim_end_matches('/');
        url.origin() == base.origin()
            && url.query().is_none()
            && !path.contains("%2f")
            && !path.contains("%5c")
            && !path.contains("%2e")
            && url
                .path()
                .strip_prefix(base_path)
                .is_some_and(|rest| rest.len() > 1 && rest.starts_with('/') && !rest[1..].contains('/'))
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
    pub async fn inspect(
        &self,
        url: &str,
        claimed: Option<ChecksumAlgorithm>,
    ) -> Result<Option<Inspected>, StoreError> {
        match self.head(url).await? {
            (offset, Some(length)) if offset == length => {}
            _ => return Ok(None),
        }
        let mut response = self.download(url).await?;
        let mut inspector = Inspector::new(claimed);
        while let Some(chunk) = response.chunk().await.map_err(|e| failed("GET", e.without_url()))? {
            inspector.update(&chunk);
        }
        Ok(Some(inspector.finish()))
    }

    /// GET of a finished upload's bytes, for the broker's download route.
    pub async fn download(&self, url: &str) -> Result<reqwest::Response, StoreError> {
        let response = self.http.get(url).header("Tus-Resumable", TUS_VERSION).send().await;
        let response = response.map_err(|e| failed("GET", e.without_url()))?;
        if !response.status().is_success() {
            return Err(failed("GET", format!("answered {}", response.status().as_u16())));
        }
        Ok(response)
    }
}

/// The embedded tus server's view used by the broker.
pub async fn embedded_offset(local: &LocalStore, url: &str) -> Result<u64, StoreError> {
    local.resumable_offset(upload_id(url)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_upload_urls_on_the_configured_server_are_owned() {
        let tus = RemoteTus::new("http://tus.test:1080/files".into());
        assert!(tus.owns("http://tus.test:1080/files/abc123"));
        for hostile in [
            "http://tus.test:1080/files/../admin",
            "http://tus.test:1080/files/%2e%2e/admin",
            "http://tus.test:1080/files/%2E%2E/admin",
            "http://tus.test:1080/files/a%2f..%2fb",
            "http://tus.test:1080/files/a/b",
            "http://tus.test:1080/files/",
            "http://tus.test:1080/filesx/abc",
            "http://tus.test:1080/files/abc?x=1",
            "http://tus.test:1081/files/abc",
            "http://evil.test/files/abc",
            "http://tus.test:1080@evil.test/files/abc",
            "not a url",
        ] {
            assert!(!tus.owns(hostile), "{hostile}");
        }
    }
}
