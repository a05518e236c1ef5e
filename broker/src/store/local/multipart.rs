//! The embedded store's multipart uploads, by S3's rules: parts kept apart
//! until completion, which checks the part list and joins them.

use super::{is_safe_id, LocalStore, TempFile};
use crate::store::StoreError;
use rindle_upload::session::MultipartPart;
use rindle_upload::wire::s3::MIN_PART_SIZE;
use std::path::PathBuf;

impl LocalStore {
    pub async fn create_multipart(&self) -> Result<String, StoreError> {
        let upload_id = uuid::Uuid::new_v4().to_string();
        tokio::fs::create_dir_all(self.multipart.join(&upload_id)).await?;
        Ok(upload_id)
    }

    /// The stored parts' files, by part number.
    pub(super) async fn part_files(&self, upload_id: &str) -> Result<Vec<(u32, PathBuf)>, StoreError> {
        if !is_safe_id(upload_id) {
            return Err(StoreError::refused("invalid upload id"));
        }
        let mut files = Vec::new();
        let mut entries = match tokio::fs::read_dir(self.multipart.join(upload_id)).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::not_found("the multipart upload does not exist"))
            }
            Err(e) => return Err(e.into()),
        };
        while let Some(entry) = entries.next_entry().await? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(number) = name.split_once('-').and_then(|(n, _)| n.parse().ok()) {
                files.push((number, entry.path()));
            }
        }
        files.sort();
        Ok(files)
    }

    pub async fn list_parts(&self, upload_id: &str) -> Result<Vec<MultipartPart>, StoreError> {
        let mut parts = Vec::new();
        for (part_number, path) in self.part_files(upload_id).await? {
            let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            let etag = format!("\"{}\"", name.split_once('-').map_or("", |(_, etag)| etag));
            let size = tokio::fs::metadata(&path).await?.len();
            parts.push(MultipartPart { part_number, etag, size: Some(size), checksum: None });
        }
        Ok(parts)
    }

    /// Joins the listed parts into the object, by S3's rules: part numbers
    /// ascending, each ETag matching the stored part, every part but the
    /// last at least 5 MiB. Refusals are reasons a person can read.
    pub async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[MultipartPart],
    ) -> Result<(), StoreError> {
        let stored = self.part_files(upload_id).await?;
        if parts.is_empty() {
            return Err(StoreError::refused("the part list is empty"));
        }
        if parts.windows(2).any(|w| w[0].part_number >= w[1].part_number) {
            return Err(StoreError::refused("the part list is not in ascending part order"));
        }
        let mut files = Vec::with_capacity(parts.len());
        for (index, part) in parts.iter().enumerate() {
            let want = part.etag.trim_matches('"');
            let Some((_, path)) = stored.iter().find(|(n, _)| *n == part.part_number) else {
                return Err(StoreError::refused(format!("part {} was never stored", part.part_number)));
            };
            let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            if name.split_once('-').map(|(_, etag)| etag) != Some(want) {
                return Err(StoreError::failed(format!(
                    "part {}'s ETag does not match the stored part",
                    part.part_number
                )));
            }
            let size = tokio::fs::metadata(path).await?.len();
            if index + 1 < parts.len() && size < MIN_PART_SIZE {
                return Err(StoreError::refused(format!("part {} is smaller than 5 MiB", part.part_number)));
            }
            files.push(path.clone());
        }
        let temp = TempFile(self.incoming.join(uuid::Uuid::new_v4().to_string()));
        let mut joined = tokio::fs::File::create(&temp.0).await?;
        for path in files {
            let mut part = tokio::fs::File::open(path).await?;
            tokio::io::copy(&mut part, &mut joined).await?;
        }
        joined.sync_all().await?;
        let target = self.objects.join(key);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::rename(&temp.0, target).await?;
        self.abort_multipart(upload_id).await
    }

    pub async fn abort_multipart(&self, upload_id: &str) -> Result<(), StoreError> {
        if !is_safe_id(upload_id) {
            return Err(StoreError::refused("invalid upload id"));
        }
        match tokio::fs::remove_dir_all(self.multipart.join(upload_id)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}
