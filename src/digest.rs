//! The checksums' arithmetic: the streamed `Hasher` of every algorithm
//! (the `rindle-upload-checksum` crate, which the browser loads as its own
//! module), and CRC32C's combination of pieces' checksums into the whole
//! object's.

use crate::transport::ChecksumAlgorithm;
use rindle_upload_checksum::Algorithm;
pub use rindle_upload_checksum::{digest_of, Hasher};

impl From<ChecksumAlgorithm> for Algorithm {
    fn from(algorithm: ChecksumAlgorithm) -> Algorithm {
        match algorithm {
            ChecksumAlgorithm::Crc32c => Algorithm::Crc32c,
            ChecksumAlgorithm::Md5 => Algorithm::Md5,
            ChecksumAlgorithm::Sha1 => Algorithm::Sha1,
            ChecksumAlgorithm::Sha256 => Algorithm::Sha256,
        }
    }
}

/// The CRC32C of consecutive pieces, from each piece's CRC32C and length:
/// the whole object's checksum without reading it again.
pub fn crc32c_of_pieces(pieces: impl IntoIterator<Item = (u32, u64)>) -> u32 {
    pieces.into_iter().fold(0, |whole, (crc, len)| crc32c::crc32c_combine(whole, crc, len as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_pieces_give_the_whole_objects_checksum() {
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for algorithm in [
            ChecksumAlgorithm::Crc32c,
            ChecksumAlgorithm::Md5,
            ChecksumAlgorithm::Sha1,
            ChecksumAlgorithm::Sha256,
        ] {
            let mut hasher = Hasher::new(algorithm);
            bytes.chunks(4096).for_each(|window| hasher.update(window));
            assert_eq!(hasher.finish(), digest_of(algorithm, &bytes), "{algorithm:?}");
        }
        let pieces = bytes.chunks(30_000).map(|p| (crc32c::crc32c(p), p.len() as u64));
        assert_eq!(crc32c_of_pieces(pieces), crc32c::crc32c(&bytes));
        assert_eq!(crc32c_of_pieces([]), crc32c::crc32c(b""));
    }
}
