//! Where the bytes go: the embedded local-disk store (default) or a real
//! S3-compatible store, behind one set of operations the protocol needs.

pub mod gcs;
pub mod local;
pub mod s3;

use gcs::GcsStore;
use local::checksum::signed_form;
use local::{LocalStore, PartGrant, PutGrant};
use rindle_upload::digest::Hasher;
use rindle_upload::session::{MultipartPart, UploadStrategy};
use rindle_upload::wire::checksum::{Checksum, ChecksumAlgorithm};
use s3::S3Store;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What kind of failure a store operation met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The object or upload does not exist.
    NotFound,
    /// The store refused what it was asked (a bad part list, a strategy it
    /// does not offer): asking again will not help.
    Refused,
    /// The store could not be reached or failed on its side.
    Failed,
}

/// A store operation that failed; the message is for people (it may end
/// up as a session's `failure_reason`) and never carries a credential.
#[derive(Debug)]
pub struct StoreError {
    pub kind: StoreErrorKind,
    pub message: String,
}

impl StoreError {
    pub fn failed(message: impl Into<String>) -> Self {
        StoreError { kind: StoreErrorKind::Failed, message: message.into() }
    }

    pub fn refused(message: impl Into<String>) -> Self {
        StoreError { kind: StoreErrorKind::Refused, message: message.into() }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        StoreError { kind: StoreErrorKind::NotFound, message: message.into() }
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::failed(format!("store I/O failed: {e}"))
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What verification learns of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    pub size: u64,
    pub sha256: String,
    /// The object's digest by the algorithm the client claimed one of, if
    /// it was asked for (and is not SHA-256, which is always computed).
    pub claimed: Option<Vec<u8>>,
    /// The object's first bytes, for content sniffing.
    pub head: Vec<u8>,
}

/// How many first bytes verification keeps for sniffing.
pub const SNIFF_BYTES: usize = 4096;

/// Reads an object once, chunk by chunk, into what verification needs:
/// its size, SHA-256 (the asset's), first bytes, and the digest by
/// `claimed`, the algorithm of the client's checksum.
pub struct Inspector {
    sha256: Hasher,
    claimed: Option<Hasher>,
    size: u64,
    head: Vec<u8>,
}

impl Inspector {
    pub fn new(claimed: Option<ChecksumAlgorithm>) -> Self {
        let claimed = claimed.filter(|&a| a != ChecksumAlgorithm::Sha256).map(Hasher::new);
        Inspector { sha256: Hasher::new(ChecksumAlgorithm::Sha256), claimed, size: 0, head: Vec::new() }
    }

    pub fn update(&mut self, chunk: &[u8]) {
        self.size += chunk.len() as u64;
        self.sha256.update(chunk);
        if let Some(claimed) = &mut self.claimed {
            claimed.update(chunk);
        }
        let room = SNIFF_BYTES.saturating_sub(self.head.len());
        self.head.extend_from_slice(&chunk[..room.min(chunk.len())]);
    }

    pub fn finish(self) -> Inspected {
        Inspected {
            size: self.size,
            sha256: hex::encode(self.sha256.finish()),
            claimed: self.claimed.map(Hasher::finish),
            head: self.head,
        }
    }
}

impl Inspected {
    /// Whether the object has the digest a client computed of it (the
    /// object inspected for that checksum's algorithm).
    pub fn matches(&self, checksum: &Checksum) -> bool {
        let Some(claimed) = checksum.digest() else { return false };
        match checksum.algorithm {
            ChecksumAlgorithm::Sha256 => hex::encode(claimed) == self.sha256,
            _ => self.claimed.as_ref() == Some(&claimed),
        }
    }
}

/// What a store says of an object without reading it back, when it holds
/// the client's checksum (one it verified as the bytes were written): its
/// size, and its first bytes for content sniffing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vouched {
    pub size: u64,
    pub head: Vec<u8>,
}

/// The `Range` header that asks for the first `SNIFF_BYTES` of an object.
fn sniff_range() -> String {
    format!("bytes=0-{}", SNIFF_BYTES - 1)
}

/// The first `SNIFF_BYTES` of a response body, without reading the rest.
async fn head_of(mut response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut head = Vec::new();
    while head.len() < SNIFF_BYTES {
        let Some(chunk) = response.chunk().await? else { break };
        head.extend_from_slice(&chunk[..chunk.len().min(SNIFF_BYTES - head.len())]);
    }
    Ok(head)
}

/// A presigned request the client sends as is.
pub struct Presigned {
    pub url: String,
    pub headers: BTreeMap<String, String>,
}

pub enum Store {
    Local(LocalStore),
    S3(S3Store),
    /// Boxed: its authentication state is several times the others' size.
    Gcs(Box<GcsStore>),
}

fn unix_after(ttl: Duration) -> u64 {
    (SystemTime::now() + ttl).duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The header a checksum travels in to an S3-style store, and its value.
fn checksum_header(checksum: Option<&Checksum>) -> Option<(String, String)> {
    checksum.map(|c| (c.algorithm.s3_header().to_owned(), c.value.clone()))
}

fn not_offered() -> StoreError {
    StoreError::refused("this store does not offer that strategy")
}

impl Store {
    /// The strategies this store serves (the embedded store serves all).
    pub fn offers(&self, strategy: UploadStrategy) -> bool {
        match self {
            Store::Local(_) => true,
            Store::S3(_) => strategy != UploadStrategy::Resumable,
            Store::Gcs(_) => strategy == UploadStrategy::Resumable,
        }
    }

    /// `base` is the broker's own URL, where the embedded store is served.
    /// The URL holds only for exactly `length` bytes of `content_type`, and
    /// with `checksum` only for bytes that have it (the header is signed
    /// and handed to the client).
    #[allow(clippy::too_many_arguments)]
    pub fn presign_put(
        &self,
        base: &str,
        session: &str,
        key: &str,
        length: u64,
        content_type: &str,
        checksum: Option<&Checksum>,
        ttl: Duration,
    ) -> Result<Presigned, StoreError> {
        let url = match self {
            Store::Local(local) => {
                let grant = PutGrant {
                    session: session.to_owned(),
                    key: key.to_owned(),
                    length,
                    content_type: content_type.to_owned(),
                    checksum: signed_form(checksum.map(std::slice::from_ref).unwrap_or_default()),
                    expires_unix: unix_after(ttl),
                };
                format!("{base}{}", local.presign_put(&grant))
            }
            Store::S3(s3) => {
                s3.presign_put(key, length, content_type, checksum_header(checksum).as_ref(), ttl)
            }
            Store::Gcs(_) => return Err(not_offered()),
        };
        let mut headers = BTreeMap::from([("Content-Type".to_owned(), content_type.to_owned())]);
        headers.extend(checksum_header(checksum));
        Ok(Presigned { url, headers })
    }

    /// `checksum`: the one every part will carry.
    pub async fn create_multipart(
        &self,
        key: &str,
        content_type: &str,
        checksum: Option<ChecksumAlgorithm>,
    ) -> Result<String, StoreError> {
        match self {
            Store::Local(local) => local.create_multipart().await,
            Store::S3(s3) => s3.create_multipart(key, content_type, checksum).await,
            Store::Gcs(_) => Err(not_offered()),
        }
    }

    /// The URL holds only for a body of exactly `length` bytes (the plan's
    /// size of that part), with `checksum` if given.
    #[allow(clippy::too_many_arguments)]
    pub fn presign_part(
        &self,
        base: &str,
        session: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        length: u64,
        checksum: Option<&Checksum>,
        ttl: Duration,
    ) -> Result<Presigned, StoreError> {
        let url = match self {
            Store::Local(local) => {
                let grant = PartGrant {
                    session: session.to_owned(),
                    upload_id: upload_id.to_owned(),
                    part_number,
                    length,
                    checksum: signed_form(checksum.map(std::slice::from_ref).unwrap_or_default()),
                    expires_unix: unix_after(ttl),
                };
                format!("{base}{}", local.presign_part(&grant))
            }
            Store::S3(s3) => {
                s3.presign_part(key, upload_id, part_number, length, checksum_header(checksum).as_ref(), ttl)
            }
            Store::Gcs(_) => return Err(not_offered()),
        };
        Ok(Presigned { url, headers: checksum_header(checksum).into_iter().collect() })
    }

    pub async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<MultipartPart>, StoreError> {
        match self {
            Store::Local(local) => local.list_parts(upload_id).await,
            Store::S3(s3) => s3.list_parts(key, upload_id).await,
            Store::Gcs(_) => Err(not_offered()),
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
            Store::Gcs(_) => Err(not_offered()),
        }
    }

    pub async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        match self {
            Store::Local(local) => local.abort_multipart(upload_id).await,
            Store::S3(s3) => s3.abort_multipart(key, upload_id).await,
            Store::Gcs(_) => Err(not_offered()),
        }
    }

    /// What a stored object holds, or `None`; `claimed`: the algorithm
    /// of a checksum to compare it with.
    pub async fn inspect(
        &self,
        key: &str,
        claimed: Option<ChecksumAlgorithm>,
    ) -> Result<Option<Inspected>, StoreError> {
        match self {
            Store::Local(local) => local.inspect(key, claimed).await,
            Store::S3(s3) => s3.inspect(key, claimed).await,
            Store::Gcs(gcs) => gcs.inspect(key, claimed).await,
        }
    }

    /// The object, if the store itself holds `checksum` for it (S3's
    /// checksum of a single PUT or of a multipart object's parts, GCS's
    /// CRC32C and MD5); `None` when it
    /// cannot say or says another: verification then reads the object.
    /// `parts`: a multipart object's, as completed.
    pub async fn vouch(
        &self,
        key: &str,
        checksum: &Checksum,
        parts: &[MultipartPart],
    ) -> Result<Option<Vouched>, StoreError> {
        match self {
            Store::Local(_) => Ok(None),
            Store::S3(s3) => s3.vouch(key, checksum, parts).await,
            Store::Gcs(gcs) => gcs.vouch(key, checksum).await,
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Store::Local(local) => local.delete(key).await,
            Store::S3(s3) => s3.delete(key).await,
            Store::Gcs(gcs) => gcs.delete(key).await,
        }
    }

    /// Where the stored object can be read: a URL that only reads, served
    /// as `content_type` and as an attachment unless it is safe inline.
    pub fn object_url(&self, base: &str, key: &str, content_type: &str) -> String {
        match self {
            Store::Local(_) => format!("{base}/objects/{key}"),
            Store::S3(s3) => s3.presign_get(key, content_type, Duration::from_secs(3600)),
            Store::Gcs(gcs) => gcs.media_url(key),
        }
    }

    /// Opens a resumable session for `total` bytes, for a page on `origin`;
    /// returns its URI.
    #[allow(clippy::too_many_arguments)]
    pub async fn open_resumable(
        &self,
        base: &str,
        session: &str,
        key: &str,
        content_type: &str,
        total: u64,
        origin: Option<&str>,
        ttl: Duration,
    ) -> Result<String, StoreError> {
        match self {
            Store::Local(local) => {
                Ok(format!("{base}{}", local.open_resumable(session, key, total, unix_after(ttl)).await?))
            }
            Store::Gcs(gcs) => gcs.open_resumable(key, content_type, total, origin).await,
            Store::S3(_) => Err(not_offered()),
        }
    }

    /// The bytes a resumable session has committed (the total once done).
    pub async fn resumable_offset(&self, session_uri: &str, total: u64) -> Result<u64, StoreError> {
        match self {
            Store::Local(local) => local.resumable_offset(local_resumable_id(session_uri)).await,
            Store::Gcs(gcs) => gcs.resumable_offset(session_uri, total).await,
            Store::S3(_) => Err(not_offered()),
        }
    }

    pub async fn cancel_resumable(&self, session_uri: &str) -> Result<(), StoreError> {
        match self {
            Store::Local(local) => local.cancel_resumable(local_resumable_id(session_uri)).await,
            Store::Gcs(gcs) => gcs.cancel_resumable(session_uri).await,
            Store::S3(_) => Err(not_offered()),
        }
    }

    pub fn local(&self) -> Option<&LocalStore> {
        match self {
            Store::Local(local) => Some(local),
            Store::S3(_) | Store::Gcs(_) => None,
        }
    }
}

/// The session id inside an embedded-store session URI
/// (`…/store-resumable/{id}?…`).
fn local_resumable_id(session_uri: &str) -> &str {
    let path = session_uri.split('?').next().unwrap_or_default();
    path.rsplit('/').next().unwrap_or_default()
}
