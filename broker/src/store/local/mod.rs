//! The embedded local-disk object store. Its presigned URLs are really
//! signed (HMAC-SHA256) and really expire; it refuses in S3's XML error
//! dialect so clients read it like any S3-compatible store; and it serves
//! multipart uploads by S3's rules.

pub mod checksum;
mod multipart;
mod resumable;

use super::{Inspected, Inspector, StoreError};
use axum::body::Body;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use rindle_upload::wire::checksum::Checksum;
use rindle_upload::wire::checksum::ChecksumAlgorithm;
use rindle_upload::wire::s3::MAX_PARTS;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;
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
    /// How long a request body may send nothing before it is dropped.
    idle_timeout: Duration,
}

/// Which protocol a resumable upload speaks: each embedded endpoint
/// serves only its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// GCS-style resumable session (`/store-resumable/{id}`, signed).
    Gcs,
    /// tus upload (`/tus/{id}`).
    Tus,
}

/// What the embedded store keeps about a resumable session.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct ResumableMeta {
    /// The broker session whose bytes these are.
    pub session: String,
    pub protocol: Protocol,
    key: String,
    total: u64,
    pub complete: bool,
    /// tus uploads expire (the expiration extension); GCS-style sessions
    /// expire with their signed URI instead.
    #[serde(default)]
    expires_unix: Option<u64>,
}

/// What a presigned object PUT promises: all of it is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutGrant {
    /// The session the URL writes for: a write is accepted only while the
    /// session accepts bytes.
    pub session: String,
    pub key: String,
    pub length: u64,
    pub content_type: String,
    /// The checksums the body must have (`checksum::signed_form`), or "".
    pub checksum: String,
    pub expires_unix: u64,
}

/// What a presigned part PUT promises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartGrant {
    pub session: String,
    pub upload_id: String,
    pub part_number: u32,
    /// The part's planned size: no other body is accepted.
    pub length: u64,
    /// The checksums the body must have (`checksum::signed_form`), or "".
    pub checksum: String,
    pub expires_unix: u64,
}

/// A request body received whole into a temporary file, not yet in place.
/// Dropped before it is placed (a refusal, or a handler dropped with its
/// connection), the file is removed.
pub struct Received {
    file: TempFile,
    pub len: u64,
    /// SHA-256, hex: the embedded store's ETag.
    pub sha256: String,
}

struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        // Gone already when it was renamed into place.
        let _ = std::fs::remove_file(&self.0);
    }
}

fn io_refusal(e: std::io::Error) -> Refusal {
    Refusal::new(500, "InternalError", format!("store write failed: {e}"))
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
    id.len() <= 64 && is_safe_key(id) && !id.contains('/')
}

/// The query of a presigned object or part PUT.
#[derive(Debug, serde::Deserialize)]
pub struct WriteQuery {
    pub session: String,
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
    pub fn open(dir: &Path, idle_timeout: Duration) -> std::io::Result<Self> {
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
                crate::private_file::write(&secret_path, &secret)?;
                secret
            }
        };
        Ok(LocalStore {
            objects,
            incoming,
            multipart,
            resumable,
            secret,
            committing: Default::default(),
            idle_timeout,
        })
    }

    fn mac(&self, canonical: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(canonical.as_bytes());
        mac
    }

    fn put_canonical(grant: &PutGrant) -> String {
        let PutGrant { session, key, length, content_type, checksum, expires_unix } = grant;
        format!("PUT\n{session}\n{key}\n{length}\n{content_type}\n{checksum}\n{expires_unix}")
    }

    fn part_canonical(grant: &PartGrant) -> String {
        let PartGrant { session, upload_id, part_number, length, checksum, expires_unix } = grant;
        format!("PART\n{session}\n{upload_id}\n{part_number}\n{length}\n{checksum}\n{expires_unix}")
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
        let PutGrant { session, key, length, expires_unix, .. } = grant;
        format!("/store/{key}?session={session}&expires={expires_unix}&len={length}&sig={sig}")
    }

    /// The URL path and query that make `grant` a presigned part PUT.
    pub fn presign_part(&self, grant: &PartGrant) -> String {
        let sig = self.sign(&Self::part_canonical(grant));
        let PartGrant { session, upload_id, part_number, length, expires_unix, .. } = grant;
        format!("/store-parts/{upload_id}/{part_number}?session={session}&expires={expires_unix}&len={length}&sig={sig}")
    }

    /// Checks an object PUT against its signature, expiry and headers
    /// (`checksum`: the request's claimed checksums, `checksum::signed_form`).
    pub fn check_put(
        &self,
        key: &str,
        query: &WriteQuery,
        content_type: &str,
        checksum: &str,
        now_unix: u64,
    ) -> Result<PutGrant, Refusal> {
        if !is_safe_key(key) {
            return Err(Refusal::new(400, "InvalidArgument", "invalid object key"));
        }
        let grant = PutGrant {
            session: query.session.clone(),
            key: key.to_owned(),
            length: query.len,
            content_type: content_type.to_owned(),
            checksum: checksum.to_owned(),
            expires_unix: query.expires,
        };
        self.check(&Self::put_canonical(&grant), &query.sig, grant.expires_unix, now_unix)?;
        Ok(grant)
    }

    pub fn check_part(
        &self,
        upload_id: &str,
        part_number: u32,
        query: &WriteQuery,
        checksum: &str,
        now_unix: u64,
    ) -> Result<PartGrant, Refusal> {
        if !is_safe_id(upload_id) || !(1..=MAX_PARTS).contains(&u64::from(part_number)) {
            return Err(Refusal::new(400, "InvalidArgument", "invalid upload id or part number"));
        }
        let grant = PartGrant {
            session: query.session.clone(),
            upload_id: upload_id.to_owned(),
            part_number,
            length: query.len,
            checksum: checksum.to_owned(),
            expires_unix: query.expires,
        };
        self.check(&Self::part_canonical(&grant), &query.sig, grant.expires_unix, now_unix)?;
        if !self.multipart.join(upload_id).is_dir() {
            return Err(Refusal::new(404, "NoSuchUpload", "the multipart upload does not exist"));
        }
        Ok(grant)
    }

    /// Receives a whole body of at most `max` bytes (exactly `exact` when
    /// given) into a temporary file, refusing it (`BadDigest`) unless it has
    /// every `claimed` checksum. A body that sends nothing for the idle
    /// timeout is dropped.
    pub async fn receive(
        &self,
        body: Body,
        max: u64,
        exact: Option<u64>,
        claimed: Vec<Checksum>,
    ) -> Result<Received, Refusal> {
        let mut verifier = checksum::Verifier::new(claimed);
        let temp = TempFile(self.incoming.join(uuid::Uuid::new_v4().to_string()));
        let mut file = tokio::fs::File::create(&temp.0).await.map_err(io_refusal)?;
        let mut hasher = Sha256::new();
        let mut received: u64 = 0;
        let mut stream = body.into_data_stream();
        loop {
            let next = tokio::time::timeout(self.idle_timeout, stream.next()).await.map_err(|_| {
                Refusal::new(408, "RequestTimeout", "the request body sent nothing for too long")
            })?;
            let Some(chunk) = next else { break };
            let chunk =
                chunk.map_err(|_| Refusal::new(400, "IncompleteBody", "the request body was cut short"))?;
            received += chunk.len() as u64;
            if received > max {
                return Err(Refusal::new(400, "EntityTooLarge", "the body is longer than allowed"));
            }
            hasher.update(&chunk);
            verifier.update(&chunk);
            file.write_all(&chunk).await.map_err(io_refusal)?;
        }
        if exact.is_some_and(|exact| exact != received) {
            return Err(Refusal::new(400, "IncompleteBody", "the body is shorter than the signed length"));
        }
        verifier.check()?;
        file.sync_all().await.map_err(io_refusal)?;
        Ok(Received { file: temp, len: received, sha256: hex::encode(hasher.finalize()) })
    }

    /// Places a received object under `key`, once: a second write with the
    /// same bytes (a retried PUT whose answer was lost) is answered as the
    /// first; other bytes are refused, never overwriting.
    pub async fn place_object(&self, received: Received, key: &str) -> Result<String, Refusal> {
        if let Some(stored) =
            self.inspect(key, None).await.map_err(|e| Refusal::new(500, "InternalError", e.message))?
        {
            if stored.sha256 == received.sha256 {
                return Ok(stored.sha256);
            }
            return Err(Refusal::new(
                412,
                "PreconditionFailed",
                "an object was already stored for this upload; it is not overwritten",
            ));
        }
        let target = self.objects.join(key);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io_refusal)?;
        }
        tokio::fs::rename(&received.file.0, target).await.map_err(io_refusal)?;
        Ok(received.sha256)
    }

    /// Places a received part; a part sent again replaces the earlier one.
    /// The upload must still exist (an aborted one is not recreated).
    pub async fn place_part(&self, received: Received, grant: &PartGrant) -> Result<String, Refusal> {
        let gone = || Refusal::new(404, "NoSuchUpload", "the multipart upload does not exist");
        let earlier = self.part_files(&grant.upload_id).await.map_err(|_| gone())?;
        let dir = self.multipart.join(&grant.upload_id);
        let named = dir.join(format!("{:05}-{}", grant.part_number, received.sha256));
        tokio::fs::rename(&received.file.0, &named).await.map_err(|_| gone())?;
        for (number, old) in earlier {
            if number == grant.part_number && old != named {
                tokio::fs::remove_file(old).await.map_err(io_refusal)?;
            }
        }
        Ok(received.sha256)
    }

    /// What a stored object holds, or `None` if there is none.
    pub async fn inspect(
        &self,
        key: &str,
        claimed: Option<ChecksumAlgorithm>,
    ) -> Result<Option<Inspected>, StoreError> {
        if !is_safe_key(key) {
            return Ok(None);
        }
        let mut file = match tokio::fs::File::open(self.objects.join(key)).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut inspector = Inspector::new(claimed);
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buffer).await?;
            if n == 0 {
                break;
            }
            inspector.update(&buffer[..n]);
        }
        Ok(Some(inspector.finish()))
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

    /// Where a stored object's file is, to serve it.
    pub fn object_path(&self, key: &str) -> Option<PathBuf> {
        is_safe_key(key).then(|| self.objects.join(key))
    }

    /// Temporary files older than `age`: bodies a crash left behind.
    pub async fn remove_stale_temp_files(&self, age: Duration) -> Result<usize, StoreError> {
        let mut removed = 0;
        let mut entries = tokio::fs::read_dir(&self.incoming).await?;
        while let Some(entry) = entries.next_entry().await? {
            let modified = entry.metadata().await?.modified()?;
            if modified.elapsed().is_ok_and(|elapsed| elapsed > age) {
                tokio::fs::remove_file(entry.path()).await?;
                removed += 1;
            }
        }
        Ok(removed)
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
        (LocalStore::open(&dir, Duration::from_secs(5)).unwrap(), dir)
    }

    fn grant() -> PutGrant {
        PutGrant {
            session: "s1".into(),
            key: "uploads/a/f.txt".into(),
            length: 5,
            content_type: "text/plain".into(),
            checksum: String::new(),
            expires_unix: 1_000,
        }
    }

    fn query(store: &LocalStore, grant: &PutGrant) -> WriteQuery {
        let sig = store.sign(&LocalStore::put_canonical(grant));
        WriteQuery { session: grant.session.clone(), expires: grant.expires_unix, len: grant.length, sig }
    }

    #[test]
    fn a_valid_signature_passes_until_expiry() {
        let (store, _) = store();
        let g = grant();
        assert_eq!(store.check_put(&g.key, &query(&store, &g), "text/plain", "", 1_000), Ok(g.clone()));
        let err = store.check_put(&g.key, &query(&store, &g), "text/plain", "", 1_001).unwrap_err();
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
        let refused =
            |key: &str, q: &WriteQuery, ct: &str| store.check_put(key, q, ct, "", 0).unwrap_err().code;
        let unsigned_checksum = store.check_put(&g.key, &q, "text/plain", "content-md5:AAAA", 0).unwrap_err();
        assert_eq!(unsigned_checksum.code, "SignatureDoesNotMatch", "a checksum the broker did not sign");
        assert_eq!(refused("uploads/a/other.txt", &q, "text/plain"), "SignatureDoesNotMatch");
        assert_eq!(refused(&g.key, &q, "text/html"), "SignatureDoesNotMatch");
        assert_eq!(
            refused(&g.key, &WriteQuery { len: 6, ..query(&store, &g) }, "text/plain"),
            "SignatureDoesNotMatch"
        );
        let later = WriteQuery { expires: 99_999, ..query(&store, &g) };
        assert_eq!(refused(&g.key, &later, "text/plain"), "SignatureDoesNotMatch");
        let other_session = WriteQuery { session: "s2".into(), ..query(&store, &g) };
        assert_eq!(refused(&g.key, &other_session, "text/plain"), "SignatureDoesNotMatch");
        let forged = WriteQuery { sig: "00".into(), ..query(&store, &g) };
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

    /// Writes `body` as the object of grant `g`, as the PUT handler does.
    async fn put(store: &LocalStore, g: &PutGrant, body: &'static str) -> Result<String, Refusal> {
        let received = store.receive(Body::from(body), g.length, Some(g.length), vec![]).await?;
        store.place_object(received, &g.key).await
    }

    fn temp_files(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("incoming")).unwrap().count()
    }

    #[tokio::test]
    async fn objects_appear_only_whole_with_the_signed_length_and_once() {
        let (store, dir) = store();
        let g = grant();
        assert_eq!(put(&store, &g, "abcdef").await.unwrap_err().code, "EntityTooLarge");
        assert_eq!(put(&store, &g, "abc").await.unwrap_err().code, "IncompleteBody");
        assert_eq!(store.inspect(&g.key, None).await.unwrap(), None);
        let etag = put(&store, &g, "hello").await.unwrap();
        let sha = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        assert_eq!(etag, sha);
        let stored = store.inspect(&g.key, None).await.unwrap().unwrap();
        assert_eq!(
            (stored.size, stored.sha256.as_str(), stored.head.as_slice()),
            (5, sha, b"hello".as_slice())
        );
        assert_eq!(put(&store, &g, "hello").await.unwrap(), sha, "the same bytes again: a retried PUT");
        let refused = put(&store, &g, "HELLO").await.unwrap_err();
        assert_eq!((refused.status, refused.code), (412, "PreconditionFailed"), "never overwritten");
        assert_eq!(store.inspect(&g.key, None).await.unwrap().unwrap().sha256, sha);
        assert_eq!(temp_files(&dir), 0, "no temp files left");
        store.delete(&g.key).await.unwrap();
        assert_eq!(store.inspect(&g.key, None).await.unwrap(), None);
    }

    /// A body whose bytes the test sends.
    fn streamed() -> (futures::channel::mpsc::Sender<Result<axum::body::Bytes, std::io::Error>>, Body) {
        let (sender, receiver) = futures::channel::mpsc::channel(4);
        (sender, Body::from_stream(receiver))
    }

    #[tokio::test]
    async fn a_body_dropped_midway_leaves_no_temp_file() {
        let (store, dir) = store();
        let (mut sender, body) = streamed();
        futures::SinkExt::send(&mut sender, Ok(axum::body::Bytes::from_static(b"he"))).await.unwrap();
        let receiving = store.receive(body, 5, Some(5), vec![]);
        // The handler's future is dropped, as when its connection goes.
        let dropped = tokio::time::timeout(Duration::from_millis(100), receiving).await;
        assert!(dropped.is_err(), "still waiting for the rest");
        assert_eq!(temp_files(&dir), 0);
    }

    #[tokio::test]
    async fn a_body_that_sends_nothing_for_the_idle_timeout_is_dropped() {
        let dir = std::env::temp_dir().join(format!("rindle-store-{}", uuid::Uuid::new_v4()));
        let store = LocalStore::open(&dir, Duration::from_millis(50)).unwrap();
        let (_sender, body) = streamed();
        let refused = store.receive(body, 5, Some(5), vec![]).await.err().unwrap();
        assert_eq!((refused.status, refused.code), (408, "RequestTimeout"));
        assert_eq!(temp_files(&dir), 0);
    }

    fn part_grant(upload_id: &str, part_number: u32) -> PartGrant {
        PartGrant {
            session: "s1".into(),
            upload_id: upload_id.into(),
            part_number,
            length: 0,
            checksum: String::new(),
            expires_unix: 1_000,
        }
    }

    async fn put_part(
        store: &LocalStore,
        upload_id: &str,
        part_number: u32,
        body: Vec<u8>,
    ) -> Result<String, Refusal> {
        let received = store.receive(Body::from(body), u64::MAX, None, vec![]).await?;
        store.place_part(received, &part_grant(upload_id, part_number)).await
    }

    #[tokio::test]
    async fn multipart_follows_s3_rules() {
        let (store, _) = store();
        let id = store.create_multipart().await.unwrap();
        let big = vec![1u8; MIN_PART_SIZE as usize];
        let e1 = put_part(&store, &id, 1, vec![9u8; 10]).await.unwrap();
        let e1_again = put_part(&store, &id, 1, big.clone()).await.unwrap();
        assert_ne!(e1, e1_again);
        let e2 = put_part(&store, &id, 2, b"tail".to_vec()).await.unwrap();
        let listed = store.list_parts(&id).await.unwrap();
        assert_eq!(
            listed,
            vec![
                MultipartPart {
                    part_number: 1,
                    etag: format!("\"{e1_again}\""),
                    size: Some(MIN_PART_SIZE),
                    checksum: None
                },
                MultipartPart { part_number: 2, etag: format!("\"{e2}\""), size: Some(4), checksum: None },
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
        let stored = store.inspect("k/obj", None).await.unwrap().unwrap();
        assert_eq!(
            (stored.size, stored.sha256),
            (expected.len() as u64, hex::encode(Sha256::digest(&expected)))
        );
        assert_eq!(store.open_multipart_uploads(), 0, "completing removes the parts");
    }

    #[tokio::test]
    async fn small_parts_before_the_last_are_refused_and_abort_removes_parts() {
        let (store, _) = store();
        let id = store.create_multipart().await.unwrap();
        put_part(&store, &id, 1, b"small".to_vec()).await.unwrap();
        put_part(&store, &id, 2, b"tail".to_vec()).await.unwrap();
        let listed = store.list_parts(&id).await.unwrap();
        let refused = store.complete_multipart("k/obj", &id, &listed).await.unwrap_err();
        assert_eq!(refused.message, "part 1 is smaller than 5 MiB");
        assert_eq!(store.open_multipart_uploads(), 1);
        store.abort_multipart(&id).await.unwrap();
        assert_eq!(store.open_multipart_uploads(), 0);
        assert!(store.list_parts(&id).await.is_err());
        let late = put_part(&store, &id, 3, b"late".to_vec()).await.unwrap_err();
        assert_eq!(late.code, "NoSuchUpload", "a part arriving after the abort is refused");
        assert_eq!(store.open_multipart_uploads(), 0, "and does not recreate the upload");
    }

    #[test]
    fn part_urls_are_signed_and_need_an_open_upload() {
        let (store, _) = store();
        let path = store.presign_part(&part_grant("nope", 3));
        let sig = path.rsplit("sig=").next().unwrap().to_owned();
        let q = WriteQuery { session: "s1".into(), expires: 1_000, len: 0, sig };
        assert_eq!(store.check_part("nope", 3, &q, "", 0).unwrap_err().code, "NoSuchUpload");
        let resized = WriteQuery {
            len: 1,
            ..WriteQuery { session: "s1".into(), expires: 1_000, len: 0, sig: q.sig.clone() }
        };
        assert_eq!(
            store.check_part("nope", 3, &resized, "", 0).unwrap_err().code,
            "SignatureDoesNotMatch",
            "the size is signed"
        );
        assert_eq!(store.check_part("nope", 4, &q, "", 0).unwrap_err().code, "SignatureDoesNotMatch");
        assert_eq!(store.check_part("nope", 3, &q, "", 1_001).unwrap_err().code, "AccessDenied");
        assert_eq!(store.check_part("../x", 3, &q, "", 0).unwrap_err().code, "InvalidArgument");
    }
}
