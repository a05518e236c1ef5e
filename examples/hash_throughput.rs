//! Native hash throughput of src/digest.rs, one line of JSON per algorithm
//! (MiB/s over 256 MiB in 1 MiB windows, as the checksum worker feeds it).
//! bench/run.mjs prints it next to the same code in the browser's worker.

use rindle_upload::digest::Hasher;
use rindle_upload::transport::ChecksumAlgorithm;
use std::time::Instant;

fn main() {
    let window: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let windows = 256;
    for algorithm in [
        ChecksumAlgorithm::Crc32c,
        ChecksumAlgorithm::Md5,
        ChecksumAlgorithm::Sha1,
        ChecksumAlgorithm::Sha256,
    ] {
        let started = Instant::now();
        let mut hasher = Hasher::new(algorithm);
        for _ in 0..windows {
            hasher.update(&window);
        }
        let digest = hasher.finish();
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{{\"algorithm\":\"{}\",\"mibPerSecond\":{:.0},\"digestBytes\":{}}}",
            algorithm.name(),
            windows as f64 / seconds,
            digest.len()
        );
    }
}
