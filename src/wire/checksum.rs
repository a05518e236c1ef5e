//! Checksums as the protocols carry them: the algorithms, the broker
//! protocol's `{ "algorithm", "value" }` (value: base64 of the digest, as
//! S3 and GCS write them), and the header each travels in to an S3-style
//! store. The store verifies the header; the broker signs it into the URL.

use base64ct::{Base64, Encoding as _};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumAlgorithm {
    Crc32c,
    Md5,
    Sha1,
    Sha256,
}

impl ChecksumAlgorithm {
    /// The name in JSON, in tus's `Upload-Checksum` and in options.
    pub fn name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32c => "crc32c",
            ChecksumAlgorithm::Md5 => "md5",
            ChecksumAlgorithm::Sha1 => "sha1",
            ChecksumAlgorithm::Sha256 => "sha256",
        }
    }

    pub fn named(name: &str) -> Option<ChecksumAlgorithm> {
        [
            ChecksumAlgorithm::Crc32c,
            ChecksumAlgorithm::Md5,
            ChecksumAlgorithm::Sha1,
            ChecksumAlgorithm::Sha256,
        ]
        .into_iter()
        .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    /// The header S3 verifies this checksum in.
    pub fn s3_header(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32c => "x-amz-checksum-crc32c",
            ChecksumAlgorithm::Md5 => "content-md5",
            ChecksumAlgorithm::Sha1 => "x-amz-checksum-sha1",
            ChecksumAlgorithm::Sha256 => "x-amz-checksum-sha256",
        }
    }

    pub fn digest_len(self) -> usize {
        match self {
            ChecksumAlgorithm::Crc32c => 4,
            ChecksumAlgorithm::Md5 => 16,
            ChecksumAlgorithm::Sha1 => 20,
            ChecksumAlgorithm::Sha256 => 32,
        }
    }

    /// For people: "CRC32C", "MD5", "SHA-1", "SHA-256".
    pub fn label(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32c => "CRC32C",
            ChecksumAlgorithm::Md5 => "MD5",
            ChecksumAlgorithm::Sha1 => "SHA-1",
            ChecksumAlgorithm::Sha256 => "SHA-256",
        }
    }
}

/// A checksum a client computed, of one piece (sent when signing it) or of
/// the whole object (sent at completion).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksum {
    pub algorithm: ChecksumAlgorithm,
    /// Base64 of the digest (a CRC32C big-endian).
    pub value: String,
}

impl Checksum {
    pub fn of_digest(algorithm: ChecksumAlgorithm, digest: &[u8]) -> Checksum {
        Checksum { algorithm, value: Base64::encode_string(digest) }
    }

    /// The digest, if `value` is base64 of one of the algorithm's length.
    pub fn digest(&self) -> Option<Vec<u8>> {
        let digest = Base64::decode_vec(self.value.trim()).ok()?;
        (digest.len() == self.algorithm.digest_len()).then_some(digest)
    }

    /// `x-goog-hash`'s form (`crc32c=…`), for the algorithms GCS verifies.
    pub fn goog_hash(&self) -> Option<String> {
        matches!(self.algorithm, ChecksumAlgorithm::Crc32c | ChecksumAlgorithm::Md5)
            .then(|| format!("{}={}", self.algorithm.name(), self.value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_base64_digests_of_the_algorithms_length() {
        let crc = Checksum::of_digest(ChecksumAlgorithm::Crc32c, &[0x8a, 0x91, 0x36, 0xaa]);
        assert_eq!(crc.value, "ipE2qg==");
        assert_eq!(crc.digest(), Some(vec![0x8a, 0x91, 0x36, 0xaa]));
        assert_eq!(crc.goog_hash().as_deref(), Some("crc32c=ipE2qg=="));
        assert_eq!(Checksum { algorithm: ChecksumAlgorithm::Md5, value: crc.value.clone() }.digest(), None);
        assert_eq!(
            Checksum { algorithm: ChecksumAlgorithm::Crc32c, value: "not base64!".into() }.digest(),
            None
        );
        let json = serde_json::to_value(&crc).unwrap();
        assert_eq!(json, serde_json::json!({"algorithm": "crc32c", "value": "ipE2qg=="}));
        assert_eq!(ChecksumAlgorithm::Md5.s3_header(), "content-md5");
        assert_eq!(ChecksumAlgorithm::named("SHA256"), Some(ChecksumAlgorithm::Sha256));
        assert_eq!(ChecksumAlgorithm::named("sha512"), None);
    }
}
