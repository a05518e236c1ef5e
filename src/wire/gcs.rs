//! GCS resumable sessions' wire rules, shared by the client and the
//! embedded store: chunk sizes, `Content-Range` on requests, `Range` on a
//! `308`, and what an answer means.

use crate::error::{shown, ErrorCode, UploadError};
use crate::secret::Secret;
use crate::transport::{HttpRequest, HttpResponse};
use crate::wire::s3;

/// Every chunk but the last is a whole number of these.
pub const CHUNK_UNIT: u64 = 256 * 1024;

/// The chunk size used for a requested one: rounded down to whole 256 KiB
/// units, at least one unit.
pub fn chunk_size(requested: u64) -> u64 {
    (requested / CHUNK_UNIT).max(1) * CHUNK_UNIT
}

/// A request's `Content-Range`, as GCS's resumable protocol uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentRange {
    /// `bytes */total`: "how much do you have?" (or, with no bytes left to
    /// send, "that was all").
    Status { total: u64 },
    /// `bytes start-last/total`: a chunk of bytes `start..=last`.
    Chunk { start: u64, last: u64, total: u64 },
}

impl ContentRange {
    /// The header for sending bytes `start..end` of `total`; an empty range
    /// is a status query.
    pub fn for_bytes(start: u64, end: u64, total: u64) -> ContentRange {
        if end > start {
            ContentRange::Chunk { start, last: end - 1, total }
        } else {
            ContentRange::Status { total }
        }
    }

    pub fn header_value(&self) -> String {
        match self {
            ContentRange::Status { total } => format!("bytes */{total}"),
            ContentRange::Chunk { start, last, total } => format!("bytes {start}-{last}/{total}"),
        }
    }

    /// Parses a request header; anything malformed is `None`.
    pub fn parse(value: &str) -> Option<ContentRange> {
        let (range, total) = value.trim().strip_prefix("bytes ")?.split_once('/')?;
        let total = total.parse().ok()?;
        if range == "*" {
            return Some(ContentRange::Status { total });
        }
        let (start, last) = range.split_once('-')?;
        let (start, last): (u64, u64) = (start.parse().ok()?, last.parse().ok()?);
        (start <= last && last < total).then_some(ContentRange::Chunk { start, last, total })
    }
}

/// The committed offset a `308` reports: `Range: bytes=0-N` is N+1 bytes;
/// no `Range` means nothing is committed.
pub fn committed_offset(range: Option<&str>, total: u64) -> Result<u64, UploadError> {
    let Some(range) = range else { return Ok(0) };
    let malformed = || {
        UploadError::new(
            ErrorCode::StoreMalformedResponse,
            ["the store's Range header ", &shown(range), " is malformed"].concat(),
        )
    };
    let last: u64 =
        range.trim().strip_prefix("bytes=0-").and_then(|last| last.parse().ok()).ok_or_else(malformed)?;
    match last.checked_add(1) {
        Some(committed) if committed <= total => Ok(committed),
        _ => Err(malformed()),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkAnswer {
    /// `200`/`201`: the object is complete.
    Complete,
    /// `308`: this many bytes are committed.
    Committed(u64),
}

/// Reads the store's answer to a chunk or a status query.
pub fn read_answer(response: &HttpResponse, total: u64) -> Result<ChunkAnswer, UploadError> {
    match response.status {
        200 | 201 => Ok(ChunkAnswer::Complete),
        308 => committed_offset(response.header("range"), total).map(ChunkAnswer::Committed),
        404 | 410 => Err(UploadError::new(
            ErrorCode::SessionExpired,
            "the store no longer knows the resumable session (it expired or was cancelled)",
        )),
        // GCS: "Provided CRC32C … doesn't match calculated CRC32C …".
        400 if response.body.contains("doesn't match calculated") => Err(UploadError::new(
            ErrorCode::ChecksumMismatch,
            "the store refused the object's checksum (x-goog-hash)",
        )),
        _ => s3::check_answer(response).and_then(|()| {
            Err(UploadError::new(
                ErrorCode::StoreMalformedResponse,
                format!("the store answered {} to a resumable chunk", response.status),
            ))
        }),
    }
}

pub fn chunk_request<B>(uri: &Secret, range: ContentRange, body: Option<B>) -> HttpRequest<B> {
    HttpRequest {
        method: "PUT",
        url: uri.clone(),
        headers: vec![("Content-Range".to_owned(), range.header_value())],
        body,
    }
}

impl ChunkAnswer {
    /// The `Range` header a `308` carries for this many committed bytes
    /// (none when nothing is committed).
    pub fn range_header(committed: u64) -> Option<String> {
        committed.checked_sub(1).map(|last| format!("bytes=0-{last}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_object_hash_is_a_checksum_mismatch() {
        let refused = HttpResponse {
            status: 400,
            headers: vec![],
            body: "Provided CRC32C \"AAAAAA==\" doesn't match calculated CRC32C \"ipE2qg==\".".into(),
        };
        assert_eq!(read_answer(&refused, 10).unwrap_err().code, ErrorCode::ChecksumMismatch);
        let embedded = HttpResponse {
            status: 400,
            headers: vec![],
            body: "<Error><Code>BadDigest</Code></Error>".into(),
        };
        assert_eq!(read_answer(&embedded, 10).unwrap_err().code, ErrorCode::ChecksumMismatch);
    }

    #[test]
    fn chunk_sizes_follow_the_256_kib_rule() {
        assert_eq!(chunk_size(8 << 20), 8 << 20);
        assert_eq!(chunk_size(CHUNK_UNIT + 1), CHUNK_UNIT);
        assert_eq!(chunk_size(3 * CHUNK_UNIT - 1), 2 * CHUNK_UNIT);
        assert_eq!(chunk_size(0), CHUNK_UNIT);
        assert_eq!(chunk_size(1), CHUNK_UNIT);
    }

    #[test]
    fn content_range_round_trips() {
        for range in [
            ContentRange::Status { total: 0 },
            ContentRange::Status { total: 10 },
            ContentRange::Chunk { start: 0, last: 262_143, total: 600_000 },
            ContentRange::Chunk { start: 262_144, last: 599_999, total: 600_000 },
        ] {
            assert_eq!(ContentRange::parse(&range.header_value()), Some(range));
        }
        assert_eq!(ContentRange::for_bytes(0, 262_144, 600_000).header_value(), "bytes 0-262143/600000");
        assert_eq!(ContentRange::for_bytes(0, 0, 0).header_value(), "bytes */0");
    }

    #[test]
    fn malformed_content_ranges_are_refused() {
        for bad in [
            "",
            "bytes",
            "bytes */",
            "bytes */-1",
            "bytes 5-4/10",
            "bytes 0-10/10",
            "bytes a-b/10",
            "items 0-1/2",
            "bytes 0-1",
            "bytes 0-1/2/3",
            "bytes 18446744073709551615-18446744073709551615/18446744073709551615",
        ] {
            assert_eq!(ContentRange::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn committed_offsets_from_range() {
        assert_eq!(committed_offset(None, 10), Ok(0));
        assert_eq!(committed_offset(Some("bytes=0-4"), 10), Ok(5));
        assert_eq!(committed_offset(Some("bytes=0-9"), 10), Ok(10));
        for bad in
            ["bytes=0-10", "bytes=1-4", "bytes=0-", "0-4", "bytes=0-x", "bytes=0-18446744073709551615", ""]
        {
            let err = committed_offset(Some(bad), 10).unwrap_err();
            assert_eq!(err.code, ErrorCode::StoreMalformedResponse, "{bad:?}");
        }
        let long = format!("bytes=0-{}", "9".repeat(10_000));
        assert!(committed_offset(Some(&long), 10).unwrap_err().message.len() < 120);
    }

    #[test]
    fn range_headers_round_trip() {
        assert_eq!(ChunkAnswer::range_header(0), None);
        for committed in [1, 5, 10] {
            let header = ChunkAnswer::range_header(committed).unwrap();
            assert_eq!(committed_offset(Some(&header), 10), Ok(committed));
        }
    }

    #[test]
    fn answers() {
        let answer = |status, range: Option<&str>| {
            let headers = range.map(|r| vec![("range".to_owned(), r.to_owned())]).unwrap_or_default();
            read_answer(&HttpResponse { status, headers, body: String::new() }, 10)
        };
        assert_eq!(answer(200, None), Ok(ChunkAnswer::Complete));
        assert_eq!(answer(201, None), Ok(ChunkAnswer::Complete));
        assert_eq!(answer(308, None), Ok(ChunkAnswer::Committed(0)));
        assert_eq!(answer(308, Some("bytes=0-6")), Ok(ChunkAnswer::Committed(7)));
        assert_eq!(answer(404, None).unwrap_err().code, ErrorCode::SessionExpired);
        assert_eq!(answer(503, None).unwrap_err().code, ErrorCode::StoreServerError);
        assert_eq!(answer(400, None).unwrap_err().code, ErrorCode::StoreRejected);
        assert_eq!(answer(204, None).unwrap_err().code, ErrorCode::StoreMalformedResponse);
    }
}
