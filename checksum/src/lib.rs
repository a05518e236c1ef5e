//! rindle-upload's hashing, streamed: one `Hasher` for every algorithm
//! (RustCrypto's `md-5`, `sha1`, `sha2`, and the `crc32c` crate), fed in
//! windows so a file is never whole in memory. Its own crate so that the
//! page's WebAssembly carries none of it: the checksum Workers load this
//! crate's module (feature `module`, `pkg/checksum.js`), and so does a page
//! that cannot start a Worker, when it first needs a checksum.

use sha2::Digest as _;

#[cfg(all(feature = "module", target_arch = "wasm32"))]
mod module;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Crc32c,
    Md5,
    Sha1,
    Sha256,
}

pub enum Hasher {
    Crc32c(u32),
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl Hasher {
    pub fn new(algorithm: impl Into<Algorithm>) -> Hasher {
        match algorithm.into() {
            Algorithm::Crc32c => Hasher::Crc32c(0),
            Algorithm::Md5 => Hasher::Md5(md5::Md5::new()),
            Algorithm::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Crc32c(crc) => *crc = crc32c::crc32c_append(*crc, bytes),
            Hasher::Md5(h) => h.update(bytes),
            Hasher::Sha1(h) => h.update(bytes),
            Hasher::Sha256(h) => h.update(bytes),
        }
    }

    /// The digest (a CRC32C as 4 bytes big-endian, as S3 and GCS write it).
    pub fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Crc32c(crc) => crc.to_be_bytes().to_vec(),
            Hasher::Md5(h) => h.finalize().to_vec(),
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
        }
    }
}

/// The digest of `bytes`.
pub fn digest_of(algorithm: impl Into<Algorithm>, bytes: &[u8]) -> Vec<u8> {
    let mut hasher = Hasher::new(algorithm);
    hasher.update(bytes);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn known_answers() {
        // RFC 3720, appendix B.4.
        assert_eq!(hex(&digest_of(Algorithm::Crc32c, &[0u8; 32])), "8a9136aa");
        assert_eq!(hex(&digest_of(Algorithm::Crc32c, &[0xffu8; 32])), "62a8ab43");
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(hex(&digest_of(Algorithm::Crc32c, &ascending)), "46dd794e");
        // NIST FIPS 180-4 examples ("abc"); RFC 1321 ("abc").
        assert_eq!(
            hex(&digest_of(Algorithm::Sha256, b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hex(&digest_of(Algorithm::Sha1, b"abc")), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(hex(&digest_of(Algorithm::Md5, b"abc")), "900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn windows_give_the_whole_digest() {
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for algorithm in [Algorithm::Crc32c, Algorithm::Md5, Algorithm::Sha1, Algorithm::Sha256] {
            let mut hasher = Hasher::new(algorithm);
            bytes.chunks(4096).for_each(|window| hasher.update(window));
            assert_eq!(hasher.finish(), digest_of(algorithm, &bytes), "{algorithm:?}");
        }
    }
}
