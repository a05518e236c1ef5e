//! Native stand-ins for the browser edge, for driving the engine against
//! real servers in `cargo test`: a thread-per-request HTTP transport and a
//! JSON broker client (both ureq), byte sources in memory, and the
//! reference broker started as a child process.
#![allow(dead_code)] // each test crate uses its own subset

pub mod faults;

use rindle_upload::broker::{read_http_answer, Broker, BrokerCall, BrokerReply};
use rindle_upload::transport::{
    ByteSource, ChecksumAlgorithm, Clock, HttpRequest, HttpResponse, ProgressFn, Transport, TransportError,
};
use rindle_upload::{ErrorCode, UploadError};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

/// Answers come back as they are: no status is an error and no redirect
/// is followed (GCS answers 308 for "resume incomplete").
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).max_redirects(0).build().into()
}

/// Each request runs on its own thread, so parts really go concurrently.
/// The body is streamed, and progress is reported as the sending thread
/// reads it (as XHR reports upload progress), so a cut body has reported
/// part of its bytes and a long body is not taken for a stalled one.
pub struct ThreadTransport;

/// Hands the body to ureq in pieces, telling how much has been read.
struct CountingReader {
    body: std::io::Cursor<Vec<u8>>,
    sent: futures::channel::mpsc::UnboundedSender<u64>,
}

impl std::io::Read for CountingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let limit = buf.len().min(64 << 10);
        let read = self.body.read(&mut buf[..limit])?;
        let _ = self.sent.unbounded_send(self.body.position());
        Ok(read)
    }
}

impl Transport for ThreadTransport {
    type Body = Vec<u8>;

    async fn send(
        &self,
        request: HttpRequest<Vec<u8>>,
        progress: ProgressFn,
    ) -> Result<HttpResponse, TransportError> {
        use futures::StreamExt;
        let (done, answer) = futures::channel::oneshot::channel();
        let (sent, mut reports) = futures::channel::mpsc::unbounded();
        let url = request.url.expose().to_owned();
        let body = request.body;
        let headers = request.headers;
        let method = request.method;
        std::thread::spawn(move || {
            let mut builder = ureq::http::Request::builder().method(method).uri(&url);
            for (name, value) in &headers {
                builder = builder.header(name, value);
            }
            // A request without a body says so (`Content-Length: 0`).
            let body = body.unwrap_or_default();
            builder = builder.header("content-length", body.len());
            let reader = CountingReader { body: std::io::Cursor::new(body), sent };
            let request = builder.body(ureq::SendBody::from_owned_reader(reader));
            let result = request.map_err(|_| TransportError::Network).and_then(|request| {
                let mut response = agent().run(request).map_err(|_| TransportError::Network)?;
                Ok(HttpResponse {
                    status: response.status().as_u16(),
                    headers: response
                        .headers()
                        .iter()
                        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
                        .collect(),
                    body: response.body_mut().read_to_string().unwrap_or_default(),
                })
            });
            let _ = done.send(result);
        });
        // Progress reports end when the thread drops its sender.
        while let Some(bytes) = reports.next().await {
            progress(bytes);
        }
        answer.await.map_err(|_| TransportError::Network)?
    }
}

/// The owner cookie of the one person these tests upload as (the
/// reference broker binds each session to its creator's cookie).
const OWNER_COOKIE: &str = "rindle_owner=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The broker protocol over HTTP with JSON, as the browser edge speaks it.
pub struct HttpBroker {
    pub endpoint: String,
}

impl Broker for HttpBroker {
    async fn call(&self, call: &BrokerCall) -> Result<BrokerReply, UploadError> {
        let url = format!("{}{}", self.endpoint, call.path());
        let unreachable = |e: ureq::Error| UploadError::new(ErrorCode::BrokerUnreachable, e.to_string());
        let mut response = if call.method() == "GET" {
            agent().get(&url).header("cookie", OWNER_COOKIE).call().map_err(unreachable)?
        } else {
            let body = call.serialize_body(serde_json::value::Serializer).unwrap();
            agent()
                .post(&url)
                .header("content-type", "application/json")
                .header("cookie", OWNER_COOKIE)
                .send(body.to_string())
                .map_err(unreachable)?
        };
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        read_http_answer(call, status, || serde_json::from_str(&text), || serde_json::from_str(&text))
    }
}

/// A file in memory; slices are copies, digests RustCrypto's.
pub struct Bytes(pub Vec<u8>);

impl ByteSource for Bytes {
    type Slice = Vec<u8>;
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn slice(&self, start: u64, end: u64) -> Vec<u8> {
        self.0[start as usize..end as usize].to_vec()
    }
    async fn digest(
        &self,
        start: u64,
        end: u64,
        algorithm: ChecksumAlgorithm,
    ) -> Result<Vec<u8>, UploadError> {
        Ok(rindle_upload::digest::digest_of(algorithm, &self.0[start as usize..end as usize]))
    }
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> f64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64() * 1000.0
    }
    /// A timer thread, so other futures (requests, the stall watchdog) run
    /// meanwhile.
    async fn sleep(&self, ms: u64) {
        let (done, elapsed) = futures::channel::oneshot::channel();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(ms));
            let _ = done.send(());
        });
        let _ = elapsed.await;
    }
    fn random(&self) -> f64 {
        0.5
    }
}

/// Bytes that do not repeat (xorshift), so a deduplicating store stores
/// them all.
pub fn random_bytes(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The reference broker (target/release/rindle-broker, built by
/// scripts/build.sh) on a free port; stopped when dropped.
pub struct BrokerProcess {
    child: Child,
    pub url: String,
    data_dir: std::path::PathBuf,
}

impl BrokerProcess {
    pub fn start(env: &[(&str, String)]) -> BrokerProcess {
        let root = env!("CARGO_MANIFEST_DIR");
        let binary = format!("{root}/target/release/rindle-broker");
        let data_dir =
            std::env::temp_dir().join(format!("rindle-native-{}-{}", std::process::id(), rand_suffix()));
        let mut command = Command::new(&binary);
        // The store is what `env` says, not what the test run inherited.
        for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("S3_") || n.starts_with("GCS_")) {
            command.env_remove(name);
        }
        let mut child = command
            .current_dir(root)
            .env("PORT", "0")
            .env("DATA_DIR", &data_dir)
            .env("RUST_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{binary} could not start ({e}); run scripts/build.sh first"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.trim().rsplit(' ').next().unwrap_or_default().to_owned();
        assert!(url.starts_with("http://"), "the broker did not start: {line:?}");
        BrokerProcess { child, url, data_dir }
    }
}

fn rand_suffix() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Downloads `url` and returns (length, SHA-256 hex).
pub fn download_sha256(url: &str) -> (u64, String) {
    use sha2::{Digest, Sha256};
    let mut response = agent().get(url).call().unwrap();
    assert_eq!(response.status().as_u16(), 200, "GET stored object");
    let bytes = response.body_mut().with_config().limit(u64::MAX).read_to_vec().unwrap();
    (bytes.len() as u64, hex(&Sha256::digest(&bytes)))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
