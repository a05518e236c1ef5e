//! A fault-injecting HTTP/1.1 proxy on a loopback port, for trials of the
//! engine against real stores and the broker. Requests with a body whose
//! method the proxy faults (PUT and PATCH in front of a store: the ones
//! carrying file bytes; POST in front of the broker: its calls) are
//! numbered from 0 per plan; the plan says which of them fail and how.
//! Every other request (status queries, HEAD, the broker's own calls to
//! the store) passes untouched. One request per connection: both sides are
//! told `Connection: close`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// Forward this share of the body, then cut both connections.
    Cut { fraction: f64 },
    /// Answer this status without forwarding (the store never sees it).
    Status(u16),
    /// Forward, then hold the store's answer this long before relaying it.
    Delay(Duration),
    /// Forward, then close the client's connection without an answer: the
    /// store has the bytes, the client saw a reset.
    DropResponse,
    /// Forward the body with one bit flipped at this share of it (its
    /// length unchanged): corruption on the way.
    Flip { at: f64 },
}

impl Fault {
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Cut { .. } => "cut",
            Fault::Status(_) => "status",
            Fault::Delay(_) => "delay",
            Fault::DropResponse => "drop-response",
            Fault::Flip { .. } => "flip",
        }
    }
}

#[derive(Default)]
struct Plan {
    faults: BTreeMap<usize, Fault>,
    data_requests: usize,
    injected: Vec<Fault>,
}

/// Mends the headers of an upstream's answer before they are relayed
/// (for a known bug of a test server).
pub type Mend = fn(&mut Vec<(String, String)>);

pub struct FaultProxy {
    pub url: String,
    plan: Arc<Mutex<Plan>>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// Starts a proxy in front of a store at `upstream` (`http://host:port`).
    pub fn start(upstream: &str, mend: Option<Mend>) -> FaultProxy {
        FaultProxy::faulting(upstream, &["PUT", "PATCH"], mend)
    }

    /// Starts a proxy in front of a broker: its calls (POST) are faulted.
    pub fn start_for_broker(upstream: &str) -> FaultProxy {
        FaultProxy::faulting(upstream, &["POST"], None)
    }

    fn faulting(upstream: &str, methods: &'static [&'static str], mend: Option<Mend>) -> FaultProxy {
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let plan = Arc::new(Mutex::new(Plan::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (plan_for_loop, stop_for_loop) = (Arc::clone(&plan), Arc::clone(&stop));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop_for_loop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let (plan, upstream) = (Arc::clone(&plan_for_loop), upstream.clone());
                std::thread::spawn(move || {
                    let _ = relay(client, &upstream, &plan, methods, mend);
                });
            }
        });
        FaultProxy { url, plan, stop }
    }

    /// Replaces the plan: `faults[i]` hits the i-th byte-carrying request
    /// from now on.
    pub fn plan(&self, faults: BTreeMap<usize, Fault>) {
        *self.plan.lock().unwrap() = Plan { faults, ..Plan::default() };
    }

    /// The faults injected under the current plan, and how many
    /// byte-carrying requests it saw.
    pub fn report(&self) -> (Vec<Fault>, usize) {
        let plan = self.plan.lock().unwrap();
        (plan.injected.clone(), plan.data_requests)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

/// A request or response head: the start line and headers, as read.
struct Head {
    start: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn read(reader: &mut impl BufRead) -> std::io::Result<Head> {
        let mut start = String::new();
        reader.read_line(&mut start)?;
        if start.is_empty() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_owned(), value.trim().to_owned()));
            }
        }
        Ok(Head { start: start.trim_end().to_owned(), headers })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn content_length(&self) -> Option<u64> {
        self.header("content-length").and_then(|v| v.parse().ok())
    }

    /// The head as sent on, with `Connection: close`.
    fn closing(&self) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.start);
        for (name, value) in &self.headers {
            if !name.eq_ignore_ascii_case("connection") && !name.eq_ignore_ascii_case("keep-alive") {
                out.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        out.push_str("Connection: close\r\n\r\n");
        out.into_bytes()
    }
}

fn relay(
    client: TcpStream,
    upstream: &str,
    plan: &Mutex<Plan>,
    methods: &[&str],
    mend: Option<Mend>,
) -> std::io::Result<()> {
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut to_client = client;
    let request = Head::read(&mut from_client)?;
    let method = request.start.split(' ').next().unwrap_or_default().to_owned();
    let length = request.content_length().unwrap_or(0);
    assert!(
        request.header("transfer-encoding").is_none(),
        "the fault proxy relays Content-Length bodies only"
    );
    let fault = if methods.contains(&method.as_str()) && length > 0 {
        let mut plan = plan.lock().unwrap();
        let index = plan.data_requests;
        plan.data_requests += 1;
        let fault = plan.faults.get(&index).copied();
        plan.injected.extend(fault);
        fault
    } else {
        None
    };

    if let Some(Fault::Status(status)) = fault {
        std::io::copy(&mut (&mut from_client).take(length), &mut std::io::sink())?;
        let answer = format!(
            "HTTP/1.1 {status} Injected\r\nContent-Length: 0\r\nRetry-After: 0\r\nConnection: close\r\n\r\n"
        );
        to_client.write_all(answer.as_bytes())?;
        return to_client.shutdown(Shutdown::Both);
    }

    let mut to_store = TcpStream::connect(upstream)?;
    to_store.write_all(&request.closing())?;
    let forwarded = match fault {
        Some(Fault::Cut { fraction }) => ((length as f64 * fraction) as u64).min(length.saturating_sub(1)),
        _ => length,
    };
    match fault {
        Some(Fault::Flip { at }) => {
            let mut body = Vec::with_capacity(length as usize);
            (&mut from_client).take(length).read_to_end(&mut body)?;
            let flipped = ((length as f64 * at) as usize).min(body.len().saturating_sub(1));
            if let Some(byte) = body.get_mut(flipped) {
                *byte ^= 0x10;
            }
            to_store.write_all(&body)?;
        }
        _ => {
            std::io::copy(&mut (&mut from_client).take(forwarded), &mut to_store)?;
        }
    }
    if forwarded < length {
        let _ = to_store.shutdown(Shutdown::Both);
        return to_client.shutdown(Shutdown::Both);
    }

    let mut from_store = BufReader::new(to_store);
    let mut response = Head::read(&mut from_store)?;
    if let Some(mend) = mend {
        mend(&mut response.headers);
    }
    let status: u16 = response.start.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut body = Vec::new();
    let bodiless = method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status);
    if !bodiless {
        match response.content_length() {
            Some(len) => (&mut from_store).take(len).read_to_end(&mut body)?,
            None => from_store.read_to_end(&mut body)?,
        };
    }
    match fault {
        Some(Fault::DropResponse) => return to_client.shutdown(Shutdown::Both),
        Some(Fault::Delay(wait)) => std::thread::sleep(wait),
        _ => {}
    }
    // A chunked body was read to the end with its framing: relayed as is.
    to_client.write_all(&response.closing())?;
    to_client.write_all(&body)?;
    to_client.shutdown(Shutdown::Both)
}
