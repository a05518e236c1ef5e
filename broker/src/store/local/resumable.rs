//! The embedded store's resumable uploads: GCS resumable sessions (chunks
//! with `Content-Range`, status queries) and tus uploads, sharing one
//! offset-committing core.

use super::{
    checksum, io_refusal, is_safe_id, LocalStore, Protocol, Received, Refusal, ResumableMeta, SignedQuery,
};
use crate::store::StoreError;
use rindle_upload::wire::checksum::Checksum;
use rindle_upload::wire::gcs::{ChunkAnswer, ContentRange, CHUNK_UNIT};
use std::path::PathBuf;

impl LocalStore {
    fn resumable_canonical(id: &str, expires_unix: u64) -> String {
        format!("RESUMABLE\n{id}\n{expires_unix}")
    }

    fn meta_path(&self, id: &str) -> PathBuf {
        self.resumable.join(format!("{id}.json"))
    }

    /// Opens a resumable session of broker session `session` for `total`
    /// bytes of `key`; returns the session URI's path and query (a bearer
    /// credential).
    pub async fn open_resumable(
        &self,
        session: &str,
        key: &str,
        total: u64,
        expires_unix: u64,
    ) -> Result<String, StoreError> {
        // The session expires with its signed URI, not on its own.
        let id = self.create_upload(session, Protocol::Gcs, key, total, None).await?;
        let sig = self.sign(&Self::resumable_canonical(&id, expires_unix));
        Ok(format!("/store-resumable/{id}?expires={expires_unix}&sig={sig}"))
    }

    pub fn check_resumable(&self, id: &str, query: &SignedQuery, now_unix: u64) -> Result<(), Refusal> {
        if !is_safe_id(id) {
            return Err(Refusal::new(400, "InvalidArgument", "invalid session id"));
        }
        self.check(&Self::resumable_canonical(id, query.expires), &query.sig, query.expires, now_unix)
    }

    async fn meta(&self, id: &str) -> Result<ResumableMeta, Refusal> {
        let missing = || Refusal::new(404, "NoSuchUpload", "the resumable session does not exist");
        if !is_safe_id(id) {
            return Err(missing());
        }
        let bytes = tokio::fs::read(self.meta_path(id)).await.map_err(|_| missing())?;
        serde_json::from_slice(&bytes).map_err(|_| Refusal::new(500, "InternalError", "unreadable session"))
    }

    /// A resumable upload of `protocol` (an upload of the other protocol
    /// does not exist for this endpoint).
    pub async fn resumable_meta(&self, id: &str, protocol: Protocol) -> Result<ResumableMeta, Refusal> {
        let meta = self.meta(id).await?;
        if meta.protocol != protocol {
            return Err(Refusal::new(404, "NoSuchUpload", "the resumable session does not exist"));
        }
        Ok(meta)
    }

    /// Answers a chunk (or a status query) by GCS's rules: a chunk starts
    /// at the committed offset, is a whole number of 256 KiB units unless
    /// it is the last, and arrives whole or not at all. `received` is the
    /// chunk's body; the last chunk completes the object only if the whole
    /// object has the digests `whole_object` claims (`x-goog-hash`).
    pub async fn resumable_put(
        &self,
        id: &str,
        meta: ResumableMeta,
        range: ContentRange,
        received: Option<Received>,
        whole_object: Vec<Checksum>,
    ) -> Result<ChunkAnswer, Refusal> {
        let refuse = |message: String| Refusal::new(400, "InvalidRange", message);
        let received = match range {
            ContentRange::Status { total } | ContentRange::Chunk { total, .. } if total != meta.total => {
                return Err(refuse(format!("the session is for {} bytes, not {total}", meta.total)));
            }
            _ if meta.complete => return Ok(ChunkAnswer::Complete),
            ContentRange::Status { .. } => None,
            ContentRange::Chunk { start, last, total } => {
                let len = last + 1 - start;
                if last + 1 != total && len % CHUNK_UNIT != 0 {
                    return Err(refuse("every chunk but the last must be a multiple of 256 KiB".into()));
                }
                let chunk = match received {
                    Some(chunk) if chunk.len == len => chunk,
                    _ => return Err(refuse("the body does not have the length Content-Range says".into())),
                };
                if last + 1 == total && !whole_object.is_empty() {
                    self.check_whole_object(id, &chunk, whole_object).await?;
                }
                Some((start, chunk))
            }
        };
        self.commit(id, meta, received, 400).await
    }

    /// Whether what is committed plus the last chunk has the claimed
    /// digests (GCS checks `x-goog-hash` against the whole object).
    async fn check_whole_object(
        &self,
        id: &str,
        last: &Received,
        claimed: Vec<Checksum>,
    ) -> Result<(), Refusal> {
        use tokio::io::AsyncReadExt;
        let mut verifier = checksum::Verifier::new(claimed);
        let mut buffer = vec![0u8; 1 << 20];
        for path in [self.resumable.join(format!("{id}.data")), last.file.0.clone()] {
            let mut file = tokio::fs::File::open(path).await.map_err(io_refusal)?;
            loop {
                let n = file.read(&mut buffer).await.map_err(io_refusal)?;
                if n == 0 {
                    break;
                }
                verifier.update(&buffer[..n]);
            }
        }
        verifier.check()
    }

    /// A tus PATCH (its body received, and checked against its
    /// `Upload-Checksum`, by `receive`): the upload is live and unfinished
    /// (a finished upload takes no more bytes) and the chunk starts at the
    /// committed offset (else 409).
    pub async fn tus_patch(
        &self,
        id: &str,
        meta: ResumableMeta,
        offset: u64,
        received: Received,
    ) -> Result<ChunkAnswer, Refusal> {
        if meta.complete {
            return Err(completed());
        }
        self.commit(id, meta, Some((offset, received)), 409).await
    }

    /// Appends a received chunk if it starts at the committed offset (else
    /// refuses with `conflict`), and completes the object when whole.
    async fn commit(
        &self,
        id: &str,
        meta: ResumableMeta,
        received: Option<(u64, Received)>,
        conflict: u16,
    ) -> Result<ChunkAnswer, Refusal> {
        let data = self.resumable.join(format!("{id}.data"));
        let io = io_refusal;
        let _committing = self.committing.lock().await;
        // Read again under the lock: a concurrent chunk may have finished it.
        let meta = ResumableMeta { complete: self.meta(id).await?.complete, ..meta };
        if meta.complete {
            return if received.is_some() { Err(completed()) } else { Ok(ChunkAnswer::Complete) };
        }
        let committed = self.committed(id).await?;
        if let Some((start, chunk)) = received {
            if start != committed {
                let message = format!("the chunk starts at {start}, but {committed} bytes are committed");
                return Err(Refusal::new(conflict, "InvalidRange", message));
            }
            let mut appended = tokio::fs::OpenOptions::new().append(true).open(&data).await.map_err(io)?;
            tokio::io::copy(&mut tokio::fs::File::open(&chunk.file.0).await.map_err(io)?, &mut appended)
                .await
                .map_err(io)?;
            appended.sync_all().await.map_err(io)?;
        }
        let committed = self.committed(id).await?;
        if committed < meta.total {
            return Ok(ChunkAnswer::Committed(committed));
        }
        let target = self.objects.join(&meta.key);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io)?;
        }
        tokio::fs::rename(&data, target).await.map_err(io)?;
        tokio::fs::write(&data, b"").await.map_err(io)?;
        let done = ResumableMeta { complete: true, ..meta };
        tokio::fs::write(self.meta_path(id), serde_json::to_vec(&done).expect("meta serializes"))
            .await
            .map_err(io)?;
        Ok(ChunkAnswer::Complete)
    }

    /// Bytes committed so far (the total once complete).
    async fn committed(&self, id: &str) -> Result<u64, Refusal> {
        let meta = self.meta(id).await?;
        if meta.complete {
            return Ok(meta.total);
        }
        match tokio::fs::metadata(self.resumable.join(format!("{id}.data"))).await {
            Ok(data) => Ok(data.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Refusal::new(404, "NoSuchUpload", "the resumable session does not exist"))
            }
            Err(e) => Err(io_refusal(e)),
        }
    }

    /// Creates the tus upload of broker session `session` (the broker
    /// pre-creates each one; the embedded server has no anonymous
    /// creation); returns its id.
    pub async fn create_tus(
        &self,
        session: &str,
        key: &str,
        total: u64,
        expires_unix: u64,
    ) -> Result<String, StoreError> {
        self.create_upload(session, Protocol::Tus, key, total, Some(expires_unix)).await
    }

    /// A new, empty resumable upload; returns its id.
    async fn create_upload(
        &self,
        session: &str,
        protocol: Protocol,
        key: &str,
        total: u64,
        expires_unix: Option<u64>,
    ) -> Result<String, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        let meta = ResumableMeta {
            session: session.to_owned(),
            protocol,
            key: key.to_owned(),
            total,
            complete: false,
            expires_unix,
        };
        tokio::fs::write(self.resumable.join(format!("{id}.data")), b"").await?;
        tokio::fs::write(self.meta_path(&id), serde_json::to_vec(&meta).expect("meta serializes")).await?;
        Ok(id)
    }

    /// A tus upload that exists and has not expired (410 Gone once it has).
    pub async fn live_tus_meta(&self, id: &str, now_unix: u64) -> Result<ResumableMeta, Refusal> {
        let meta = self.resumable_meta(id, Protocol::Tus).await?;
        if meta.expires_unix.is_some_and(|at| now_unix > at) {
            return Err(Refusal::new(410, "Gone", "the upload has expired"));
        }
        Ok(meta)
    }

    /// For tus HEAD: (offset, length, expiry).
    pub async fn tus_head(&self, id: &str, now_unix: u64) -> Result<(u64, u64, Option<u64>), Refusal> {
        let meta = self.live_tus_meta(id, now_unix).await?;
        Ok((self.committed(id).await?, meta.total, meta.expires_unix))
    }

    /// The committed offset (the total once complete), for the broker; an
    /// upload that is gone is `NotFound`.
    pub async fn resumable_offset(&self, id: &str) -> Result<u64, StoreError> {
        self.committed(id).await.map_err(|r| match r.status {
            404 => StoreError::not_found("the resumable upload no longer exists at the store"),
            _ => StoreError::failed(r.message),
        })
    }

    /// Removes a resumable upload and what it received (not a completed
    /// object).
    pub async fn cancel_resumable(&self, id: &str) -> Result<(), StoreError> {
        if !is_safe_id(id) {
            return Err(StoreError::refused("invalid session id"));
        }
        for file in [self.meta_path(id), self.resumable.join(format!("{id}.data"))] {
            match tokio::fs::remove_file(file).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        Ok(())
    }
}

fn completed() -> Refusal {
    Refusal::new(403, "UploadComplete", "the upload is complete and takes no more bytes")
}
