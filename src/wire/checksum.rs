//! Checksums of pieces and objects as the protocols carry them: the broker
//! protocol's `{ "algorithm", "value" }` (value: base64 of the digest, as
//! S3 and GCS write them), and the S3 header each one travels in. The
//! store verifies the header; the broker signs it into the URL.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumKind {
    Crc32c,
    Sha256,
    Md5,
}

impl ChecksumKind {
    /// The header S3 verifies this checksum in.
    pub fn s3_header(self) -> &'static str {
        match self {
            ChecksumKind::Crc32c => "x-amz-checksum-crc32c",
            ChecksumKind::Sha256 => "x-amz-checksum-sha256",
            ChecksumKind::Md5 => "content-md5",
        }
    }

    pub fn digest_len(self) -> usize {
        match self {
            ChecksumKind::Crc32c => 4,
            ChecksumKind::Md5 => 16,
            ChecksumKind::Sha256 => 32,
        }
    }

    /// For people: "CRC32C", "SHA-256", "MD5".
    pub fn label(self) -> &'static str {
        match self {
            ChecksumKind::Crc32c => "CRC32C",
            ChecksumKind::Sha256 => "SHA-256",
            ChecksumKind::Md5 => "MD5",
        }
    }
}

/// A checksum a client computed, of one piece (sent when signing it) or of
/// the whole object (sent at completion).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksum {
    pub algorithm: ChecksumKind,
    /// Base64 of the digest (a CRC32C big-endian).
    pub value: String,
}

impl Checksum {
    pub fn of_digest(algorithm: ChecksumKind, digest: &[u8]) -> Checksum {
        Checksum { algorithm, value: base64::engine::general_purpose::STANDARD.encode(digest) }
    }

    /// The digest, if `value` is base64 of one of the algorithm's length.
    pub fn digest(&self) -> Option<Vec<u8>> {
        let digest = base64::engine::general_purpose::STANDARD.decode(self.value.trim()).ok()?;
        (digest.len() == self.algorithm.digest_len()).then_some(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_base64_digests_of_the_algorithms_length() {
        let crc = Checksum::of_digest(ChecksumKind::Crc32c, &[0x8a, 0x91, 0x36, 0xaa]);
        assert_eq!(crc.value, "ipE2qg==");
        assert_eq!(crc.digest(), Some(vec![0x8a, 0x91, 0x36, 0xaa]));
        assert_eq!(Checksum { algorithm: ChecksumKind::Md5, value: crc.value.clone() }.digest(), None);
        assert_eq!(Checksum { algorithm: ChecksumKind::Crc32c, value: "not base64!".into() }.digest(), None);
        let json = serde_json::to_value(&crc).unwrap();
        assert_eq!(json, serde_json::json!({"algorithm": "crc32c", "value": "ipE2qg=="}));
        assert_eq!(ChecksumKind::Md5.s3_header(), "content-md5");
    }
}
