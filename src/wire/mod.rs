//! Each protocol's wire rules, in one place for the client and the
//! reference broker alike: S3 (limits, error answers), GCS resumable
//! (`Content-Range`, `Range`), tus 1.0 (headers, metadata, checksums) and
//! the broker protocol's routes and replies.

pub mod broker_json;
pub mod checksum;
pub mod gcs;
pub mod routes;
pub mod s3;
pub mod tus;
