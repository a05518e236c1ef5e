//! The embedded local-disk object store. Its presigned URLs are really
//! signed (HMAC-SHA256) and really expire; it refuses in S3's XML error
//! dialect so clients read it like any S3-compatible store; and it serves
//! multipart uploads by S3's rules.

mod multipart;
mod resumable;

use super::StoreError;
use axum::body::Body;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use rindle_upload::wire::s3::{MAX_PARTS, MAX_PART_SIZE};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct LocalStore {
    objects: PathBuf,
    incoming: PathBuf,
    multipart: PathBuf,
    resumable: PathBuf,
    secret: Vec<u8>,
    /// Serializes the commit step of resumable chunks (bodies are received
    /// without it).
    committing: tokio::sync::Mutex<()>,
}

/// What the embedded store keeps about a resumable session.
#[derive(serde::Serialize, serde::Deserialize)]
struct ResumableMeta {
    key: String,
    total: u64,
    complete: bool,
    /// tus uploads expire (the expiration extension); GCS-style sessions
    /// expire with their signed URI instead.
    #[serde(default)]
    expires_unix: Option<u64>,
}

/// What a presigned object PUT promises: all of it is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutGrant {
    pub key: String,
    pub length: u64,
    pub content_type: String,
    pub expires_unix: u64,
}

/// What a presigned part PUT promises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartGrant {
    pub upload_id: String,
    pub part_number: u32,
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

/// Keys and upload ids are made by the broker; anything else is refused
/// before the disk.
pub fn is_safe_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 512
        && key.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
}

fn is_safe_id(id: &str) -> bool {
    is_safe_key(id) && !id.contains('/')
}

#[derive(Debug, serde::Deserialize)]
pub struct PutQuery {
    pub expires: u64,
    pub len: u64,
    pub sig: String,
}

#[derive(Debug, serde::Deserialize)]
pub struct SignedQuery {
    pub expires: u64,
    pub sig: String,
}

impl LocalStore {
    /// Opens (creating) the store under `dir`; the signing secret is kept
    /// there so URLs stay valid across restarts.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let objects = dir.join("objects");
        let incoming = dir.join("incoming");
        let multipart = dir.join("multipart");
        let resumable = dir.join("resumable");
        for sub in [&objects, &incoming, &multipart, &resumable] {
            std::fs::create_dir_all(sub)?;
        }
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
        Ok(LocalStore { objects, incoming, multipart, resumable, secret, committing: Default::default() })
    }

    fn mac(&self, canonical: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(canonical.as_bytes());
        mac
    }

    fn put_canonical(grant: &PutGrant) -> String {
        format!("PUT\n{}\n{}\n{}\n{}", grant.key, grant.length, grant.content_type, grant.expires_unix)
    }

    fn part_canonical(grant: &PartGrant) -> String {
        format!("PART\n{}\n{}\n{}", grant.upload_id, grant.part_number, grant.expires_unix)
    }

    fn sign(&self, canonical: &str) -> String {
        hex::encode(self.mac(canonical).finalize().into_bytes())
    }

    /// Checks a signature (in constant time) and then the expiry.
    fn check(&self, canonical: &str, sig: &str, expires_unix: u64, now_unix: u64) -> Result<(), Refusal> {
        let matches = hex::decode(sig).is_ok_and(|sig| self.mac(canonical).verify_slice(&sig).is_ok());
        if !matches {
            return Err(Refusal::new(
                403,
                "SignatureDoesNotMatch",
                "the signature does not match this request",
            ));
        }
        if now_unix > expires_unix {
            return Err(Refusal::new(403, "AccessDenied", "Request has expired"));
        }
        Ok(())
    }

    /// The URL path and query that make `grant` a presigned object PUT.
    pub fn presign_put(&self, grant: &PutGrant) -> String {
        let sig = self.sign(&Self::put_canonical(grant));
        format!("/store/{}?expires={}&len={}&sig={sig}", grant.key, grant.expires_unix, grant.length)
    }

    /// The URL path and query that make `grant` a presigned part PUT.
    pub fn presign_part(&self, grant: &PartGrant) -> String {
        let sig = self.sign(&Self::part_canonical(grant));
        format!(
            "/store-parts/{}/{}?expires={}&sig={sig}",
            grant.upload_id, grant.part_number, grant.expires_unix
        )
    }

    /// Checks an object PUT against its signature, expiry and headers.
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
        self.check(&Self::put_canonical(&grant), &query.sig, grant.expires_unix, now_unix)?;
        Ok(grant)
    }

    pub fn check_part(
        &self,
        upload_id: &str,
        part_number: u32,
        query: &SignedQuery,
        now_unix: u64,
    ) -> Result<PartGrant, Refusal> {
        if !is_safe_id(upload_id) || !(1..=MAX_PARTS).contains(&u64::from(part_number)) {
            return Err(Refusal::new(400, "InvalidArgument", "invalid upload id or part number"));
        }
        let grant = PartGrant { upload_id: upload_id.to_owned(), part_number, expires_unix: query.expires };
        self.check(&Self::part_canonical(&grant), &query.sig, grant.expires_unix, now_unix)?;
        if !self.multipart.join(upload_id).is_dir() {
            return Err(Refusal::new(404, "NoSuchUpload", "the multipart upload does not exist"));
        }
        Ok(grant)
    }

    /// Streams `body` into the store under `grant.key`; the object appears
    /// only whole and only with exactly the signed length. Returns its
    /// SHA-256 (hex), used as the ETag.
    pub async fn write_object(&self, grant: &PutGrant, body: Body) -> Result<String, Refusal> {
        let target = self.objects.join(&grant.key);
        self.write(body, grant.length, Some(grant.length), &target).await
    }

    /// Streams a part; a part sent again replaces the earlier one.
    pub async fn write_part(&self, grant: &PartGrant, body: Body) -> Result<String, Refusal> {
        let dir = self.multipart.join(&grant.upload_id);
        let etag =
            self.write(body, MAX_PART_SIZE, None, &dir.join(format!("{}.new", grant.part_number))).await?;
        let io = |e: std::io::Error| Refusal::new(500, "InternalError", format!("store write failed: {e}"));
        for (number, old) in
            self.part_files(&grant.upload_id).await.map_err(|e| io(std::io::Error::other(e.message)))?
        {
            if number == grant.part_number {
                tokio::fs::remove_file(old).await.map_err(io)?;
            }
        }
        let named = dir.join(format!("{:05}-{etag}", grant.part_number));
        tokio::fs::rename(dir.join(format!("{}.new", grant.part_number)), named).await.map_err(io)?;
        Ok(etag)
    }

    async fn write(
        &self,
        body: Body,
        max: u64,
        exact: Option<u64>,
        target: &Path,
    ) -> Result<String, Refusal> {
        let temp = self.incoming.join(uuid::Uuid::new_v4().to_string());
        let result = self.write_to(&temp, body, max, exact, target).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        result
    }

    async fn write_to(
        &self,
        temp: &Path,
        body: Body,
        max: u64,
        exact: Option<u64>,
        target: &Path,
    ) -> Result<String, Refusal> {
        let io = |e: std::io::Error| Refusal::new(500, "InternalError", format!("store write failed: {e}"));
        let mut file = tokio::fs::File::create(temp).await.map_err(io)?;
        let mut hasher = Sha256::new();
        let mut received: u64 = 0;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|_| Refusal::new(400, "IncompleteBody", "the request body was cut short"))?;
            received += chunk.len() as u64;
            if received > max {
                return Err(Refusal::new(400, "EntityTooLarge", "the body is longer than allowed"));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io)?;
        }
        if exact.is_some_and(|exact| exact != received) {
            return Err(Refusal::new(400, "IncompleteBody", "the body is shorter than the signed length"));
        }
        file.sync_all().await.map_err(io)?;
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io)?;
        }
        tokio::fs::rename(temp, target).await.map_err(io)?;
        Ok(hex::encode(hasher.finalize()))
    }

    /// Size and SHA-256 of a stored object, or `None` if there is none.
    pub async fn inspect(&self, key: &str) -> Result<Option<(u64, String)>, StoreError> {
        if !is_safe_key(key) {
            return Ok(None);
        }
        let mut file = match tokio::fs::File::open(self.objects.join(key)).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
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

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        if !is_safe_key(key) {
            return Ok(());
        }
        match tokio::fs::remove_file(self.objects.join(key)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    pub fn objects_dir(&self) -> &Path {
        &self.objects
    }

    /// Multipart uploads begun and neither completed nor aborted.
    #[cfg(test)]
    pub fn open_multipart_uploads(&self) -> usize {
        std::fs::read_dir(&self.multipart).map_or(0, |entries| entries.count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rindle_upload::session::MultipartPart;
    use rindle_upload::wire::s3::MIN_PART_SIZE;

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
        let sig = store.sign(&LocalStore::put_canonical(grant));
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
        let later = PutQuery { expires: 99_999, ..query(&store, &g) };
        assert_eq!(refused(&g.key, &later, "text/plain"), "SignatureDoesNotMatch");
        let forged = PutQuery { sig: "00".into(), ..query(&store, &g) };
        assert_eq!(refused(&g.key, &forged, "text/plain"), "SignatureDoesNotMatch");
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
        assert_eq!(store.write_object(&g, Body::from("abcdef")).await.unwrap_err().code, "EntityTooLarge");
        assert_eq!(store.write_object(&g, Body::from("abc")).await.unwrap_err().code, "IncompleteBody");
        assert_eq!(store.inspect(&g.key).await.unwrap(), None);
        let etag = store.write_object(&g, Body::from("hello")).await.unwrap();
        let sha = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        assert_eq!(etag, sha);
        assert_eq!(store.inspect(&g.key).await.unwrap(), Some((5, sha.into())));
        assert_eq!(std::fs::read_dir(dir.join("incoming")).unwrap().count(), 0, "no temp files left");
        store.delete(&g.key).await.unwrap();
        assert_eq!(store.inspect(&g.key).await.unwrap(), None);
    }

    fn part_grant(upload_id: &str, part_number: u32) -> PartGrant {
        PartGrant { upload_id: upload_id.into(), part_number, expires_unix: 1_000 }
    }

    #[tokio::test]
    async fn multipart_follows_s3_rules() {
        let (store, _) = store();
        let id = store.create_multipart().await.unwrap();
        let big = vec![1u8; MIN_PART_SIZE as usize];
        let e1 = store.write_part(&part_grant(&id, 1), Body::from(vec![9u8; 10])).await.unwrap();
        let e1_again = store.write_part(&part_grant(&id, 1), Body::from(big.clone())).await.unwrap();
        assert_ne!(e1, e1_again);
        let e2 = store.write_part(&part_grant(&id, 2), Body::from("tail")).await.unwrap();
        let listed = store.list_parts(&id).await.unwrap();
        assert_eq!(
            listed,
            vec![
                MultipartPart { part_number: 1, etag: format!("\"{e1_again}\""), size: Some(MIN_PART_SIZE) },
                MultipartPart { part_number: 2, etag: format!("\"{e2}\""), size: Some(4) },
            ],
            "a part sent again replaces the earlier one"
        );
        let reversed = vec![listed[1].clone(), listed[0].clone()];
        let refused = store.complete_multipart("k/obj", &id, &reversed).await.unwrap_err();
        assert_eq!(refused.message, "the part list is not in ascending part order");
        let mut wrong_etag = listed.clone();
        wrong_etag[0].etag = format!("\"{e1}\"");
        assert!(store
            .complete_multipart("k/obj", &id, &wrong_etag)
            .await
            .unwrap_err()
            .message
            .contains("ETag"));

        store.complete_multipart("k/obj", &id, &listed).await.unwrap();
        let mut expected = big;
        expected.extend_from_slice(b"tail");
        let (size, sha) = store.inspect("k/obj").await.unwrap().unwrap();
        assert_eq!((size, sha), (expected.len() as u64, hex::encode(Sha256::digest(&expected))));
        assert_eq!(store.open_multipart_uploads(), 0, "completing removes the parts");
    }

    #[tokio::test]
    async fn small_parts_before_the_last_are_refused_and_abort_removes_parts() {
        let (store, _) = store();
        let id = store.create_multipart().await.unwrap();
        store.write_part(&part_grant(&id, 1), Body::from("small")).await.unwrap();
        store.write_part(&part_grant(&id, 2), Body::from("tail")).await.unwrap();
        let listed = store.list_parts(&id).await.unwrap();
        let refused = store.complete_multipart("k/obj", &id, &listed).await.unwrap_err();
        assert_eq!(refused.message, "part 1 is smaller than 5 MiB");
        assert_eq!(store.open_multipart_uploads(), 1);
        store.abort_multipart(&id).await.unwrap();
        assert_eq!(store.open_multipart_uploads(), 0);
        assert!(store.list_parts(&id).await.is_err());
    }

    #[test]
    fn part_urls_are_signed_and_need_an_open_upload() {
        let (store, _) = store();
        let path = store.presign_part(&part_grant("nope", 3));
        let sig = path.rsplit("sig=").next().unwrap().to_owned();
        let q = SignedQuery { expires: 1_000, sig };
        assert_eq!(store.check_part("nope", 3, &q, 0).unwrap_err().code, "NoSuchUpload");
        assert_eq!(store.check_part("nope", 4, &q, 0).unwrap_err().code, "SignatureDoesNotMatch");
        assert_eq!(store.check_part("nope", 3, &q, 1_001).unwrap_err().code, "AccessDenied");
        assert_eq!(store.check_part("../x", 3, &q, 0).unwrap_err().code, "InvalidArgument");
    }
}
