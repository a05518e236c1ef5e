//! Fault trials: the engine uploads through a fault-injecting proxy into
//! real stores (Garage for presigned PUT and multipart, gcp-storage-emulator
//! for GCS resumable, @tus/server for tus). Every upload meets faults of
//! each kind (cut mid-body, an error status, a delayed answer, a dropped
//! answer) at random requests and offsets, and must still complete with a
//! byte-identical object and leave no duplicate or orphaned object or part.
//!
//! Run by scripts/test.sh (`FAULT_TRIALS`, default 20 per strategy) and by
//! `npm run soak -- N`. `FAULT_SEED` replays a run; it is printed.
#![cfg(not(target_arch = "wasm32"))]

mod support;

use rindle_upload::engine::{controls, Engine, Event, EventSink, Outcome, UploadOptions};
use rindle_upload::progress::ProgressSnapshot;
use rindle_upload::queue::Queue;
use rindle_upload::retry::RetryPolicy;
use rindle_upload::{ErrorCode, UploadStrategy};
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};
use support::faults::{Fault, FaultProxy};
use support::*;

const MIB: u64 = 1 << 20;
/// Short waits, so hundreds of trials fit in minutes; the delays the proxy
/// injects straddle the stall timeout, so some answers arrive late and
/// some requests are given up as stalled.
const STALL_TIMEOUT_MS: u64 = 1_500;

fn trial_policy() -> RetryPolicy {
    RetryPolicy {
        delays_ms: vec![20, 50, 100, 200, 400, 800, 1_600, 3_200],
        stall_timeout_ms: STALL_TIMEOUT_MS,
        ..RetryPolicy::default()
    }
}

/// xorshift64: reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Fault `kind` (taken modulo the kinds there are: `STORE_FAULTS` in
    /// front of a store, `BROKER_FAULTS` in front of the broker).
    fn fault(&mut self, kind: usize, kinds: usize) -> Fault {
        match kind % kinds {
            0 => Fault::Cut { fraction: self.unit() },
            1 => Fault::Status([500, 502, 503, 408, 429][self.below(5) as usize]),
            2 => Fault::Delay(Duration::from_millis(200 + self.below(2_800))),
            3 => Fault::DropResponse,
            _ => Fault::Flip { at: self.unit() },
        }
    }
}

/// Every fault kind hits store requests; a broker call's body is not
/// flipped (its JSON carries no checksum: TLS guards it).
const STORE_FAULTS: usize = 5;
const BROKER_FAULTS: usize = 4;

/// One strategy's trials: the store behind the proxy, how the broker is
/// pointed at it, and the file sizes and requests its uploads make.
struct Trial {
    name: &'static str,
    strategy: UploadStrategy,
    tus: bool,
    /// Whether the store verifies each piece's checksum (Garage does; the
    /// GCS emulator ignores `x-goog-hash`, this @tus/server offers no
    /// checksum extension): there a flipped bit is refused and sent again,
    /// elsewhere the broker's verification fails the session.
    verifies_pieces: bool,
    /// Bytes per request (part or chunk); the file's size is 2 to 4 of them.
    piece: u64,
}

#[derive(Default)]
struct Tally {
    uploads: usize,
    bytes: u64,
    requests: usize,
    injected: BTreeMap<&'static str, usize>,
    /// Faults met by broker calls.
    broker_faults: usize,
    /// Uploads a flipped bit ended before completion (stores that do not
    /// verify pieces).
    refused_corruptions: usize,
    keys: Vec<String>,
    seconds: f64,
}

fn run_trials(
    run: u64,
    trial: &Trial,
    broker_env: &[(&str, String)],
    proxy: &FaultProxy,
    count: usize,
    rng: &mut Rng,
) -> Tally {
    // Trials that fail on purpose leave sessions open; hundreds of them
    // (FAULT_TRIALS) must not meet the broker's per-owner limits.
    let limits = [("MAX_OPEN_SESSIONS", "1000000".to_owned()), ("SESSIONS_PER_MINUTE", "1000000".to_owned())];
    let broker = BrokerProcess::start(&[broker_env, &limits].concat());
    // The broker's calls go through a fault proxy too: a lost answer to
    // `initiate` must not start a second session (or multipart upload).
    let broker_proxy = FaultProxy::start_for_broker(&broker.url);
    let engine = Engine {
        broker: HttpBroker { endpoint: format!("{}/api/uploads", broker_proxy.url) },
        transport: ThreadTransport,
        clock: SystemClock,
        queue: Queue::unlimited(),
    };
    let mut tally = Tally::default();
    let started = Instant::now();
    for i in 0..count {
        let pieces = 2 + rng.below(3);
        let size = (pieces - 1) * trial.piece + 1 + rng.below(trial.piece);
        let data = random_bytes(size as usize, rng.next());
        let expected = hex(&Sha256::digest(&data));
        // One fault of this upload's kind on a request it is sure to make,
        // and a fault of any kind on each later request one time in four.
        // (tus: the first piece goes with the creation POST, which is not faulted.)
        let requests = match (trial.strategy, trial.tus) {
            (UploadStrategy::PresignedPut, _) => 1,
            (_, true) => pieces - 1,
            _ => pieces,
        };
        let first = rng.below(requests) as usize;
        let mut faults = BTreeMap::from([(first, rng.fault(i, STORE_FAULTS))]);
        for later in first + 1..first + 4 {
            if rng.below(4) == 0 {
                let kind = rng.below(STORE_FAULTS as u64) as usize;
                faults.insert(later, rng.fault(kind, STORE_FAULTS));
            }
        }
        proxy.plan(faults.clone());
        // The first broker call (`initiate`) meets a fault of each kind in
        // turn; a later call one time in four.
        let mut broker_faults = BTreeMap::from([(0, rng.fault(i + 1, BROKER_FAULTS))]);
        if rng.below(4) == 0 {
            let (call, kind) = (1 + rng.below(3) as usize, rng.below(BROKER_FAULTS as u64) as usize);
            broker_faults.insert(call, rng.fault(kind, BROKER_FAULTS));
        }
        broker_proxy.plan(broker_faults.clone());

        let mut options = UploadOptions::new(
            format!("trial-{}-{run}-{i}.bin", trial.name),
            "application/octet-stream",
            trial.strategy,
        );
        options.part_size = trial.piece;
        options.chunk_size = trial.piece;
        if trial.tus {
            options.resumable_protocol = rindle_upload::options::ResumableProtocol::Tus;
        }
        options.concurrency = 3;
        options.retry = trial_policy();
        let (_control, commands) = controls();
        let progress = Rc::new(RefCell::new(Vec::new()));
        let result = futures::executor::block_on(engine.upload(
            &Bytes(data),
            &options,
            progress_checker(&progress),
            commands,
        ));
        let (injected, seen) = proxy.report();
        let (broker_injected, _) = broker_proxy.report();
        let label = format!("{} trial {i} [replay: {}]", trial.name, replay(run));
        let flipped = injected.iter().any(|f| matches!(f, Fault::Flip { .. }));
        tally.uploads += 1;
        tally.bytes += size;
        tally.requests += seen;
        tally.broker_faults += broker_injected.len();
        for fault in &injected {
            *tally.injected.entry(fault.kind()).or_default() += 1;
        }
        if flipped && !trial.verifies_pieces {
            // Corrupted bytes the store took: never completed.
            let error = result.err().unwrap_or_else(|| panic!("{label}: completed with a flipped bit"));
            assert!(
                matches!(error.code, ErrorCode::VerificationFailed | ErrorCode::ChecksumMismatch),
                "{label}: a flipped bit ends {:?}: {error}",
                error.code
            );
            tally.refused_corruptions += 1;
            continue;
        }
        let outcome: Outcome = result.unwrap_or_else(|e| {
            panic!(
                "{} trial {i} ({size} bytes, faults {faults:?}, injected {injected:?}, \
                 broker faults {broker_injected:?}) failed: {e} [replay: {}]",
                trial.name,
                replay(run)
            )
        });
        assert!(!injected.is_empty(), "{label}: no fault was injected ({faults:?})");
        // At most this many bytes are in flight at once: the whole file for
        // presigned PUT, `concurrency` parts for multipart, one chunk else.
        let in_flight = match trial.strategy {
            UploadStrategy::PresignedPut => size,
            UploadStrategy::Multipart => options.concurrency as u64 * trial.piece,
            UploadStrategy::Resumable => trial.piece,
        };
        assert_progress_sound(&progress.borrow(), size, in_flight, &label);
        assert_eq!(outcome.asset.byte_size, size, "{label}");
        // No SHA-256 where the broker took the store's word for the checksum.
        if let Some(sha256) = &outcome.asset.sha256 {
            assert_eq!(sha256, &expected, "{label}");
        }
        assert_eq!(download_sha256(&outcome.asset.url), (size, expected), "{label}: read back");

        tally.keys.push(outcome.asset.key);
    }
    tally.seconds = started.elapsed().as_secs_f64();
    tally
}

/// Records every progress report.
fn progress_checker(seen: &Rc<RefCell<Vec<ProgressSnapshot>>>) -> EventSink {
    let seen = Rc::clone(seen);
    Rc::new(move |event| {
        if let Event::Progress(snapshot) = event {
            seen.borrow_mut().push(snapshot);
        }
    })
}

/// Retried and resent bytes are never counted twice: progress only grows,
/// acknowledged never passes sent, sent never runs ahead of acknowledged
/// by more than can be in flight (so a cut request's bytes stop counting),
/// and both end at the size. Checked at every report.
fn assert_progress_sound(seen: &[ProgressSnapshot], size: u64, in_flight: u64, trial: &str) {
    for p in seen {
        assert!(p.bytes_sent - p.bytes_acked <= in_flight, "{trial}: more in flight than {in_flight}: {p:?}");
    }
    for pair in seen.windows(2) {
        assert!(
            pair[1].bytes_sent >= pair[0].bytes_sent && pair[1].bytes_acked >= pair[0].bytes_acked,
            "{trial}: progress went back: {pair:?}"
        );
    }
    assert!(seen.iter().all(|p| p.bytes_acked <= p.bytes_sent && p.bytes_sent <= size), "{trial}: {seen:?}");
    let last = seen.last().expect("progress was reported");
    assert_eq!((last.bytes_sent, last.bytes_acked), (size, size), "{trial}: progress ends at the size");
}

fn trial_count() -> usize {
    std::env::var("FAULT_TRIALS").ok().and_then(|n| n.parse().ok()).unwrap_or(20)
}

/// How to replay a run: the seed fixes each upload's size and bytes and its
/// fault plan (which request of the upload is faulted, and how). It does
/// not fix timing: the order in which concurrent requests reach the proxy,
/// and so which of them a planned fault meets, can differ.
fn replay(seed: u64) -> String {
    format!("FAULT_SEED={seed} fixes sizes, bytes and fault plans, not the order of concurrent requests")
}

fn seed() -> u64 {
    let seed = std::env::var("FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    println!("FAULT_SEED={seed}");
    seed
}

/// A child process that prints "listening on <url>" (or is polled until
/// it answers); killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_tus_server(directory: &std::path::Path) -> Server {
    let mut child = Command::new("node")
        .arg(format!("{}/tests/servers/tus-server.mjs", env!("CARGO_MANIFEST_DIR")))
        .arg(directory)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("node starts the tus server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().rsplit(' ').next().unwrap_or_default().to_owned();
    assert!(url.starts_with("http://"), "the tus server did not start: {line:?}");
    Server { child, url }
}

const GCS_BUCKET: &str = "rindle-faults";

/// gcp-storage-emulator answers a status query on a session holding no
/// bytes with `Range: bytes=0-0` (one byte), where GCS sends no Range. No
/// trial ever commits exactly one byte, so that header is dropped.
fn mend_emulator_range(headers: &mut Vec<(String, String)>) {
    headers.retain(|(name, value)| !(name.eq_ignore_ascii_case("range") && value == "bytes=0-0"));
}

fn start_gcs_emulator() -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("gcp-storage-emulator")
        .args(["start", "--port", &port.to_string(), "-H", "127.0.0.1", "--default-bucket", GCS_BUCKET])
        .args(["--in-memory", "-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gcp-storage-emulator is installed (scripts/setup.sh)");
    let url = format!("http://127.0.0.1:{port}");
    let server = Server { child, url };
    for _ in 0..200 {
        if ureq::get(&format!("{}/storage/v1/b/{GCS_BUCKET}", server.url)).call().is_ok() {
            return server;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("gcp-storage-emulator did not start");
}

fn s3_env(endpoint: &str) -> Vec<(&'static str, String)> {
    let mut env: Vec<(&'static str, String)> =
        ["S3_REGION", "S3_BUCKET", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY", "S3_PATH_STYLE"]
            .into_iter()
            .map(|name| {
                (
                    name,
                    std::env::var(name)
                        .unwrap_or_else(|_| panic!("{name} is not set: start scripts/garage.sh")),
                )
            })
            .collect();
    env.push(("S3_ENDPOINT", endpoint.to_owned()));
    env
}

/// The bucket's objects and unfinished multipart uploads, read by the AWS
/// SDK (tests/servers/s3-inventory.mjs).
fn s3_inventory() -> (Vec<String>, Vec<String>) {
    let output = Command::new("node")
        .arg(format!("{}/tests/servers/s3-inventory.mjs", env!("CARGO_MANIFEST_DIR")))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("node lists the bucket");
    assert!(output.status.success(), "s3-inventory: {}", String::from_utf8_lossy(&output.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let keys =
        listed["objects"].as_array().unwrap().iter().map(|o| o["key"].as_str().unwrap().to_owned()).collect();
    let uploads =
        listed["uploads"].as_array().unwrap().iter().map(|u| u.as_str().unwrap().to_owned()).collect();
    (keys, uploads)
}

/// The store holds what it held before plus exactly one object per
/// completed upload: no duplicate, no orphan, anywhere in the bucket.
fn assert_store_gained_exactly(
    run: u64,
    store: &str,
    before: &[String],
    after: &[String],
    completed: &[String],
) {
    let before: std::collections::BTreeSet<&String> = before.iter().collect();
    let mut gained: Vec<&String> = after.iter().filter(|k| !before.contains(k)).collect();
    gained.sort();
    let mut completed: Vec<&String> = completed.iter().collect();
    completed.sort();
    assert_eq!(
        gained,
        completed,
        "{store}: one object per upload, no duplicate or orphan [replay: {}]",
        replay(run)
    );
    assert!(before.iter().all(|k| after.contains(k)), "{store}: an object that was there before is gone");
}

/// Every object name in the emulator's bucket.
fn gcs_inventory(emulator: &str) -> Vec<String> {
    let listing = ureq::get(&format!("{emulator}/storage/v1/b/{GCS_BUCKET}/o")).call();
    let listed: serde_json::Value =
        serde_json::from_str(&listing.unwrap().body_mut().read_to_string().unwrap()).unwrap();
    listed["items"]
        .as_array()
        .map_or(vec![], |items| items.iter().map(|o| o["name"].as_str().unwrap().to_owned()).collect())
}

fn print_table(rows: &[(Trial, Tally)]) {
    println!();
    println!("| strategy | uploads | MiB | store requests with bytes | cut | status | delay | drop-response | flip | flips refused before completion | broker-call faults | all completed byte-identical | orphans | seconds |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|");
    for (trial, tally) in rows {
        let injected = |kind| tally.injected.get(kind).copied().unwrap_or(0);
        println!(
            "| {} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | yes | 0 | {:.1} |",
            trial.name,
            tally.uploads,
            tally.bytes as f64 / MIB as f64,
            tally.requests,
            injected("cut"),
            injected("status"),
            injected("delay"),
            injected("drop-response"),
            injected("flip"),
            tally.refused_corruptions,
            tally.broker_faults,
            tally.seconds
        );
    }
}

#[test]
#[ignore = "needs Garage, gcp-storage-emulator and @tus/server: run by scripts/test.sh and scripts/soak.sh"]
fn uploads_through_random_faults_complete_byte_identical_without_orphans() {
    let count = trial_count();
    let run = seed();
    let mut rng = Rng(run);
    let mut rows = Vec::new();

    let garage = std::env::var("S3_ENDPOINT").expect("S3_ENDPOINT is not set: start scripts/garage.sh");
    let s3_proxy = FaultProxy::start(&garage, None);
    // The whole bucket is compared before and after, not only keys named
    // after the trials: a second object or upload anywhere is an orphan.
    let (keys_before, unfinished_before) = s3_inventory();
    for trial in [
        Trial {
            name: "presigned_put",
            strategy: UploadStrategy::PresignedPut,
            tus: false,
            verifies_pieces: true,
            piece: 4 * MIB,
        },
        Trial {
            name: "multipart",
            strategy: UploadStrategy::Multipart,
            tus: false,
            verifies_pieces: true,
            piece: 5 * MIB,
        },
    ] {
        let tally = run_trials(run, &trial, &s3_env(&s3_proxy.url), &s3_proxy, count, &mut rng);
        rows.push((trial, tally));
    }
    let (keys, unfinished) = s3_inventory();
    let completed: Vec<String> = rows.iter().flat_map(|(_, tally)| tally.keys.iter().cloned()).collect();
    assert_store_gained_exactly(run, "S3", &keys_before, &keys, &completed);
    assert_eq!(unfinished, unfinished_before, "multipart uploads left unfinished [replay: {}]", replay(run));

    let emulator = start_gcs_emulator();
    let gcs_proxy = FaultProxy::start(&emulator.url, Some(mend_emulator_range));
    let trial = Trial {
        name: "resumable",
        strategy: UploadStrategy::Resumable,
        tus: false,
        verifies_pieces: false,
        piece: MIB,
    };
    let env = [("GCS_BUCKET", GCS_BUCKET.to_owned()), ("GCS_BASE_URL", gcs_proxy.url.clone())];
    let names_before = gcs_inventory(&emulator.url);
    let tally = run_trials(run, &trial, &env, &gcs_proxy, count, &mut rng);
    assert_store_gained_exactly(run, "GCS", &names_before, &gcs_inventory(&emulator.url), &tally.keys);
    rows.push((trial, tally));

    let directory = std::env::temp_dir().join(format!("rindle-tus-faults-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let tus_server = start_tus_server(&directory);
    let tus_proxy = FaultProxy::start(&tus_server.url, None);
    let trial = Trial {
        name: "tus",
        strategy: UploadStrategy::Resumable,
        tus: true,
        verifies_pieces: false,
        piece: MIB,
    };
    let env = [("TUS_ENDPOINT", format!("{}/files", tus_proxy.url))];
    let tally = run_trials(run, &trial, &env, &tus_proxy, count, &mut rng);
    let uploads: Vec<_> = std::fs::read_dir(&directory)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_none())
        .collect();
    // A session a flipped bit failed has its upload terminated by the broker.
    assert_eq!(uploads.len(), tally.keys.len(), "tus: one upload per completed trial, none created twice");
    drop(tus_server);
    let _ = std::fs::remove_dir_all(&directory);
    rows.push((trial, tally));

    print_table(&rows);
}
