//! Checksums a request claims for its body, verified by the embedded store
//! the way the real stores verify them: S3's `x-amz-checksum-crc32c`,
//! `x-amz-checksum-sha256` and `Content-MD5` on object and part PUTs (a
//! mismatch is `400 BadDigest`, nothing stored), GCS's `x-goog-hash`
//! (`crc32c=…,md5=…`) for the whole object on a resumable session's last
//! chunk.

use super::Refusal;
use axum::http::HeaderMap;
use rindle_upload::digest::Hasher;
use rindle_upload::wire::checksum::Checksum;
pub use rindle_upload::wire::checksum::ChecksumAlgorithm as Algorithm;

fn invalid(algorithm: Algorithm) -> Refusal {
    Refusal::new(400, "InvalidDigest", format!("the {} header is not a valid digest", algorithm.label()))
}

/// A checksum a request claims, if its value is a digest of the algorithm.
fn claimed(algorithm: Algorithm, value: &str) -> Result<Checksum, Refusal> {
    let checksum = Checksum { algorithm, value: value.trim().to_owned() };
    checksum.digest().map(|_| checksum).ok_or_else(|| invalid(algorithm))
}

/// How a grant signs the checksums a URL is for (`header:value`, joined):
/// a request must claim exactly those, so the store checks the bytes the
/// client hashed, not whatever a request says.
pub fn signed_form(claimed: &[Checksum]) -> String {
    let mut forms: Vec<String> =
        claimed.iter().map(|c| format!("{}:{}", c.algorithm.s3_header(), c.value)).collect();
    forms.sort();
    forms.join(",")
}

/// What an S3-style PUT claims, from its headers.
pub fn claimed_by_s3(headers: &HeaderMap) -> Result<Vec<Checksum>, Refusal> {
    let mut found = Vec::new();
    for algorithm in [Algorithm::Crc32c, Algorithm::Sha1, Algorithm::Sha256, Algorithm::Md5] {
        if let Some(value) = headers.get(algorithm.s3_header()) {
            found.push(claimed(algorithm, value.to_str().map_err(|_| invalid(algorithm))?)?);
        }
    }
    Ok(found)
}

/// What a GCS resumable request claims for the whole object (`x-goog-hash`).
pub fn claimed_by_gcs(headers: &HeaderMap) -> Result<Vec<Checksum>, Refusal> {
    let mut found = Vec::new();
    for value in headers.get_all("x-goog-hash") {
        let value = value.to_str().map_err(|_| invalid(Algorithm::Md5))?;
        for pair in value.split(',') {
            let (name, digest) = pair.trim().split_once('=').unwrap_or((pair.trim(), ""));
            let algorithm = match name {
                "crc32c" => Algorithm::Crc32c,
                "md5" => Algorithm::Md5,
                _ => return Err(Refusal::new(400, "InvalidDigest", "x-goog-hash names crc32c or md5")),
            };
            found.push(claimed(algorithm, digest)?);
        }
    }
    Ok(found)
}

/// Computes the claimed algorithms over a body, chunk by chunk.
pub struct Verifier {
    claimed: Vec<(Checksum, Hasher)>,
}

impl Verifier {
    pub fn new(claimed: Vec<Checksum>) -> Self {
        Verifier { claimed: claimed.into_iter().map(|c| (c.clone(), Hasher::new(c.algorithm))).collect() }
    }

    pub fn update(&mut self, chunk: &[u8]) {
        for (_, hasher) in &mut self.claimed {
            hasher.update(chunk);
        }
    }

    /// Refuses (`400 BadDigest`) when any claimed digest differs.
    pub fn check(self) -> Result<(), Refusal> {
        for (claimed, hasher) in self.claimed {
            if claimed.digest() != Some(hasher.finish()) {
                return Err(Refusal::new(
                    400,
                    "BadDigest",
                    format!(
                        "the {} you specified did not match the calculated checksum",
                        claimed.algorithm.label()
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use md5::Md5;
    use sha2::{Digest, Sha256};

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn known_answers() {
        // RFC 3720, appendix B.4: 32 bytes of zeros, and of 0xff.
        assert_eq!(crc32c::crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c::crc32c(&[0xffu8; 32]), 0x62a8_ab43);
        // NIST FIPS 180-2, "abc"; RFC 1321, "abc".
        assert_eq!(
            hex::encode(Sha256::digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hex::encode(Md5::digest(b"abc")), "900150983cd24fb0d6963f7d28e17f72");
    }

    fn verify(claimed: Vec<Checksum>, body: &[u8]) -> Result<(), Refusal> {
        let mut verifier = Verifier::new(claimed);
        for chunk in body.chunks(3) {
            verifier.update(chunk);
        }
        verifier.check()
    }

    #[test]
    fn s3_headers_are_verified_and_a_flipped_bit_is_refused() {
        let body = b"hello, store";
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-amz-checksum-crc32c",
            HeaderValue::from_str(&b64(&crc32c::crc32c(body).to_be_bytes())).unwrap(),
        );
        headers.insert("x-amz-checksum-sha256", HeaderValue::from_str(&b64(&Sha256::digest(body))).unwrap());
        headers.insert("content-md5", HeaderValue::from_str(&b64(&Md5::digest(body))).unwrap());
        let claimed = claimed_by_s3(&headers).unwrap();
        assert_eq!(claimed.len(), 3);
        assert!(verify(claimed.clone(), body).is_ok());
        let mut flipped = body.to_vec();
        flipped[4] ^= 0x01;
        let refused = verify(claimed, &flipped).unwrap_err();
        assert_eq!((refused.status, refused.code), (400, "BadDigest"));
        assert!(verify(vec![], &flipped).is_ok(), "nothing claimed, nothing checked");

        headers.insert("content-md5", HeaderValue::from_static("bm90IGEgZGlnZXN0"));
        assert_eq!(claimed_by_s3(&headers).unwrap_err().code, "InvalidDigest");
    }

    #[test]
    fn x_goog_hash_names_crc32c_and_md5() {
        let body = b"whole object";
        let value =
            format!("crc32c={},md5={}", b64(&crc32c::crc32c(body).to_be_bytes()), b64(&Md5::digest(body)));
        let mut headers = HeaderMap::new();
        headers.insert("x-goog-hash", HeaderValue::from_str(&value).unwrap());
        let claimed = claimed_by_gcs(&headers).unwrap();
        assert_eq!(
            claimed.iter().map(|c| c.algorithm).collect::<Vec<_>>(),
            [Algorithm::Crc32c, Algorithm::Md5]
        );
        assert!(verify(claimed.clone(), body).is_ok());
        assert_eq!(verify(claimed, b"whole objecT").unwrap_err().code, "BadDigest");
        headers.insert("x-goog-hash", HeaderValue::from_static("sha1=abc"));
        assert_eq!(claimed_by_gcs(&headers).unwrap_err().code, "InvalidDigest");
    }
}
