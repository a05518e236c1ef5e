//! The embedded local-disk object store. Its presigned PUT URLs are really
//! signed (HMAC-SHA256 over method, key, length, content type and expiry)
//! and really expire; it refuses in S3's XML error dialect so clients read
//! it like any S3-compatible store.

use axum::body::Body;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct LocalStore {
    objects: PathBuf,
    incoming: PathBuf,
    secret: Vec<u8>,
}

/// What a presigned PUT URL promises: all of it is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutGrant {
    pub key: String,
    pub length: u64,
    pub content_type: String,
    pub expires_unix: u64,
}

/// A refusal, shaped like S3's: HTTP status, `<Code>`, `<Message>`.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Refusal { status, code, message: message.into() }
    }

    pub fn xml(&self) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{}</Code><Message>{}</Message></Error>",
            self.code, self.message
        )
    }
}

/// Keys are made by the broker; anything else is refused before the disk.
pub fn is_safe_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 512
        && key.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
}

impl LocalStore {
    /// Opens (creating) the store under `dir`; the signing secret is kept
    /// there so URLs stay valid across restarts.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let objects = dir.join("objects");
        let incoming = dir.join("incoming");
        std::fs::create_dir_all(&objects)?;
        std::fs::create_dir_all(&incoming)?;
        let secret_path = dir.join("signing.key");
        let secret = match std::fs::read(&secret_path) {
            Ok(secret) if secret.len() == 32 => secret,
            _ => {
                let mut secret = vec![0u8; 32];
                getrandom::fill(&mut secret).map_err(|e| std::io::Error::other(e.to_string()))?;
                std::fs::write(&secret_path, &secret)?;
                secret
            }
        };
        Ok(LocalStore { objects, incoming, secret })
    }

    fn mac(&self, grant: &PutGrant) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        let canonical =
            format!("PUT\n{}\n{}\n{}\n{}", grant.key, grant.length, grant.content_type, grant.expires_unix);
        mac.update(canonical.as_bytes());
        mac
    }

    fn signature(&self, grant: &PutGrant) -> String {
        hex::encode(self.mac(grant).finalize().into_bytes())
    }

    /// The query string that makes `grant` a presigned URL.
    pub fn presign_query(&self, grant: &PutGrant) -> String {
        format!("expires={}&len={}&sig={}", grant.expires_unix, grant.length, self.signature(grant))
    }

    /// Checks a PUT against its signature, expiry and declared headers.
    pub fn check_put(
        &self,
        key: &str,
        query: &PutQuery,
        content_type: &str,
        now_unix: u64,
    ) -> Result<PutGrant, Refusal> {
        if !is_safe_key(key) {
            return Err(Refusal::new(400, "InvalidArgument", "invalid object key"));
        }
        let grant = PutGrant {
            key: key.to_owned(),
            length: query.len,
            content_type: content_type.to_owned(),
            expires_unix: query.expires,
        };
        // verify_slice compares in constant time.
        let matches = hex::decode(&query.sig).is_ok_and(|sig| self.mac(&grant).verify_slice(&sig).is_ok());
        if !matches {
            return Err(Refusal::new(
                403,
                "SignatureDoesNotMatch",
                "the signature does not match this request",
            ));
        }
        if now_unix > grant.expires_unix {
            return Err(Refusal::new(403, "AccessDenied", "Request has expired"));
        }
        Ok(grant)
    }

    /// Streams `body` into the store under `grant.key`; the object appears
    /// only whole and only with exactly the signed length. Returns its
    /// SHA-256 (hex), used as the ETag.
    pub async fn write(&self, grant: &PutGrant, body: Body) -> Result<String, Refusal> {
        let temp = self.incoming.join(uuid::Uuid::new_v4().to_string());
        let result = self.write_to(&temp, grant, body).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        result
    }

    async fn write_to(&self, temp: &Path, grant: &PutGrant, body: Body) -> Result<String, Refusal> {
        let io = |e: std::io::Error| Refusal::new(500, "InternalError", format!("store write failed: {e}"));
        let mut file = tokio::fs::File::create(temp).await.map_err(io)?;
        let mut hasher = Sha256::new();
        let mut received: u64 = 0;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|_| Refusal::new(400, "IncompleteBody", "the request body was cut short"))?;
            received += chunk.len() as u64;
            if received > grant.length {
                return Err(Refusal::new(400, "EntityTooLarge", "the body is longer than the signed length"));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io)?;
        }
        if received != grant.length {
            return Err(Refusal::new(400, "IncompleteBody", "the body is shorter than the signed length"));
        }
        file.sync_all().await.map_err(io)?;
        let target = self.objects.join(&grant.key);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io)?;
        }
        tokio::fs::rename(temp, &target).await.map_err(io)?;
        Ok(hex::encode(hasher.finalize()))
    }

    /// Size and SHA-256 of a stored object, or `None` if there is none.
    pub async fn inspect(&self, key: &str) -> std::io::Result<Option<(u64, String)>> {
        if !is_safe_key(key) {
            return Ok(None);
        }
        let mut file = match tokio::fs::File::open(self.objects.join(key)).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buffer).await?;
            if n == 0 {
                break;
            }
            size += n as u64;
            hasher.update(&buffer[..n]);
        }
        Ok(Some((size, hex::encode(hasher.finalize()))))
    }

    pub async fn delete(&self, key: &str) -> std::io::Result<()> {
        if !is_safe_key(key) {
            return Ok(());
        }
        match tokio::fs::remove_file(self.objects.join(key)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    pub fn objects_dir(&self) -> &Path {
        &self.objects
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct PutQuery {
    pub expires: u64,
    pub len: u64,
    pub sig: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (LocalStore, PathBuf) {
        let dir = std::env::temp_dir().join(format!("rindle-store-{}", uuid::Uuid::new_v4()));
        (LocalStore::open(&dir).unwrap(), dir)
    }

    fn grant() -> PutGrant {
        PutGrant {
            key: "uploads/a/f.txt".into(),
            length: 5,
            content_type: "text/plain".into(),
            expires_unix: 1_000,
        }
    }

    fn query(store: &LocalStore, grant: &PutGrant) -> PutQuery {
        let sig = store.signature(grant);
        PutQuery { expires: grant.expires_unix, len: grant.length, sig }
    }

    #[test]
    fn a_valid_signature_passes_until_expiry() {
        let (store, _) = store();
        let g = grant();
        assert_eq!(store.check_put(&g.key, &query(&store, &g), "text/plain", 1_000), Ok(g.clone()));
        let err = store.check_put(&g.key, &query(&store, &g), "text/plain", 1_001).unwrap_err();
        assert_eq!(
            (err.status, err.code, err.message.as_str()),
            (403, "AccessDenied", "Request has expired")
        );
    }

    #[test]
    fn tampering_with_anything_signed_is_refused() {
        let (store, _) = store();
        let g = grant();
        let q = query(&store, &g);
        let refused = |key: &str, q: &PutQuery, ct: &str| store.check_put(key, q, ct, 0).unwrap_err().code;
        assert_eq!(refused("uploads/a/other.txt", &q, "text/plain"), "SignatureDoesNotMatch");
        assert_eq!(refused(&g.key, &q, "text/html"), "SignatureDoesNotMatch");
        assert_eq!(
            refused(&g.key, &PutQuery { len: 6, ..query(&store, &g) }, "text/plain"),
            "SignatureDoesNotMatch"
        );
        assert_eq!(
            refused(&g.key, &PutQuery { expires: 99_999, ..query(&store, &g) }, "text/plain"),
            "SignatureDoesNotMatch"
        );
        assert_eq!(
            refused(&g.key, &PutQuery { sig: "00".into(), ..query(&store, &g) }, "text/plain"),
            "SignatureDoesNotMatch"
        );
        assert_eq!(refused("../etc/passwd", &q, "text/plain"), "InvalidArgument");
    }

    #[test]
    fn keys_are_checked() {
        for good in ["a", "uploads/x-1/f.tar.gz"] {
            assert!(is_safe_key(good), "{good}");
        }
        for bad in ["", "/a", "a//b", "a/../b", "..", "a b", "a\\b", "ü"] {
            assert!(!is_safe_key(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn objects_appear_only_whole_and_with_the_signed_length() {
        let (store, dir) = store();
        let g = grant();
        assert_eq!(store.write(&g, Body::from("abcdef")).await.unwrap_err().code, "EntityTooLarge");
        assert_eq!(store.write(&g, Body::from("abc")).await.unwrap_err().code, "IncompleteBody");
        assert_eq!(store.inspect(&g.key).await.unwrap(), None);
        let etag = store.write(&g, Body::from("hello")).await.unwrap();
        let sha = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        assert_eq!(etag, sha);
        assert_eq!(store.inspect(&g.key).await.unwrap(), Some((5, sha.into())));
        assert_eq!(std::fs::read_dir(dir.join("incoming")).unwrap().count(), 0, "no temp files left");
        store.delete(&g.key).await.unwrap();
        assert_eq!(store.inspect(&g.key).await.unwrap(), None);
    }
}
