//! The request toolbox the engine hands every strategy: the broker, the
//! transport, the clock and the byte source (their trait bounds written
//! once, in `Io`), broker calls checked and retried, store requests with a
//! stall watchdog, the retry budget, and `ActiveUpload`: one upload's
//! session record and progress, which exist from the broker's first reply.

use crate::broker::{Broker, BrokerCall, BrokerReply};
use crate::error::{ErrorCode, UploadError};
use crate::events::{Event, EventSink, PieceState};
use crate::progress::{Piece, Progress};
use crate::retry::RetryPolicy;
use crate::session::Session;
use crate::state::SessionState;
use crate::transport::{
    ByteSource, ChecksumAlgorithm, Clock, HttpRequest, HttpResponse, ProgressFn, Transport, TransportError,
};
use crate::wire::checksum::Checksum;
use futures::future::{self, Either, LocalBoxFuture, Shared};
use futures::FutureExt;
use std::cell::{Cell, Ref, RefCell};
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

/// How long a request that failed for the network is given for the browser
/// to say it went offline (Chromium fails the request first) before the
/// failure is final.
const OFFLINE_NOTICE_MS: u64 = 500;

/// The I/O an upload runs on; implemented once for every combination the
/// engine is built with, so strategies name one type parameter.
pub(crate) trait Io {
    type Body;
    type Broker: Broker;
    type Transport: Transport<Body = Self::Body>;
    type Clock: Clock;
    type Source: ByteSource<Slice = Self::Body>;
}

impl<B: Broker, T: Transport, C: Clock, S: ByteSource<Slice = T::Body>> Io for (B, T, C, S) {
    type Body = T::Body;
    type Broker = B;
    type Transport = T;
    type Clock = C;
    type Source = S;
}

/// A digest being computed, shared by whoever awaits it.
pub(crate) type PendingDigest<'a> = Shared<LocalBoxFuture<'a, Result<Vec<u8>, UploadError>>>;

/// A checksum by the upload's algorithm, being computed (`checksum_ahead`).
#[derive(Clone)]
pub(crate) struct PendingChecksum<'a> {
    algorithm: ChecksumAlgorithm,
    digest: PendingDigest<'a>,
}

impl PendingChecksum<'_> {
    pub async fn checksum(&self) -> Result<Checksum, UploadError> {
        Ok(Checksum::of_digest(self.algorithm, &self.digest.clone().await?))
    }
}

pub(crate) struct Toolbox<'a, I: Io> {
    pub broker: &'a I::Broker,
    pub transport: &'a I::Transport,
    pub clock: &'a I::Clock,
    pub source: &'a I::Source,
    pub events: EventSink,
    pub policy: RetryPolicy,
    /// The checksum pieces are sent with; `None`: off.
    pub checksum: Option<ChecksumAlgorithm>,
    /// Retries spent so far by every request of the upload, against the
    /// policy's budget.
    retries_spent: Cell<usize>,
}

impl<'a, I: Io> Toolbox<'a, I> {
    pub fn new(
        broker: &'a I::Broker,
        transport: &'a I::Transport,
        clock: &'a I::Clock,
        source: &'a I::Source,
        events: EventSink,
        policy: RetryPolicy,
        checksum: Option<ChecksumAlgorithm>,
    ) -> Self {
        Toolbox { broker, transport, clock, source, events, policy, checksum, retries_spent: Cell::new(0) }
    }

    /// Starts the digest of `piece` now and answers it later: in the browser
    /// the checksum worker hashes while pieces go, so the hash is ready (or
    /// nearly) when it is needed.
    pub fn digest_ahead(&'a self, piece: Piece, algorithm: ChecksumAlgorithm) -> PendingDigest<'a> {
        let pending = self.source.digest(piece.start, piece.end(), algorithm).boxed_local().shared();
        // One poll hands the work over (to the worker, in the browser).
        let _ = pending.clone().now_or_never();
        pending
    }

    /// `checksum_of`, started now and answered later (`digest_ahead`);
    /// `None` when checksums are off.
    pub fn checksum_ahead(&'a self, piece: Piece) -> Option<PendingChecksum<'a>> {
        let algorithm = self.checksum?;
        Some(PendingChecksum { algorithm, digest: self.digest_ahead(piece, algorithm) })
    }

    /// The checksum of `piece` by the upload's algorithm (computed by the
    /// byte source, where the bytes are); `None` when checksums are off.
    pub async fn checksum_of(&self, piece: Piece) -> Result<Option<Checksum>, UploadError> {
        let Some(algorithm) = self.checksum else { return Ok(None) };
        let digest = self.source.digest(piece.start, piece.end(), algorithm).await?;
        Ok(Some(Checksum::of_digest(algorithm, &digest)))
    }

    pub fn now_ms(&self) -> f64 {
        self.clock.now_ms()
    }

    /// A key no other upload uses: the time, a count of the keys this
    /// program made, and 52 random bits (hex digits joined by `-`).
    pub fn fresh_key(&self) -> String {
        static MADE: AtomicU64 = AtomicU64::new(0);
        let count = MADE.fetch_add(1, Ordering::Relaxed);
        let random = (self.clock.random() * (1u64 << 52) as f64) as u64;
        format!("{:x}-{count:x}-{random:013x}", self.clock.now_ms() as u64)
    }

    /// A broker call, its reply checked against what the call must return
    /// (the one place replies are validated), tried again after errors that
    /// may pass.
    pub async fn call(&self, call: &BrokerCall) -> Result<BrokerReply, UploadError> {
        self.retrying(|| async {
            let reply = self.broker.call(call).await?;
            call.check_reply(&reply)?;
            Ok(reply)
        })
        .await
    }

    /// Runs `attempt` again after errors that may pass (network, 5xx, 408,
    /// 429), with the policy's backoff, until it succeeds or fails for good.
    pub async fn retrying<R, F>(&self, mut attempt: impl FnMut() -> F) -> Result<R, UploadError>
    where
        F: Future<Output = Result<R, UploadError>>,
    {
        let mut tries = 0;
        loop {
            match attempt().await {
                Err(e) if self.back_off(&mut tries, &e).await => {}
                done => return done,
            }
        }
    }

    /// Counts one retry that needs no wait (a piece sent again at once);
    /// `false` when the budget is spent.
    pub fn spend_retry(&self) -> bool {
        let spent = self.retries_spent.get();
        if spent >= self.policy.budget {
            return false;
        }
        self.retries_spent.set(spent + 1);
        true
    }

    /// Waits before trying again after `error`; `false` when the error is
    /// final or the retries are spent. A failure while the browser is
    /// offline spends no retry: it waits until the network is back (and one
    /// that would be final is given `OFFLINE_NOTICE_MS` to turn out so).
    pub async fn back_off(&self, attempt: &mut usize, error: &UploadError) -> bool {
        let connection_lost = matches!(error.code, ErrorCode::NetworkError | ErrorCode::BrokerUnreachable);
        if connection_lost && !self.transport.is_online() {
            self.transport.online().await;
            return true;
        }
        let budget_left = self.retries_spent.get() < self.policy.budget;
        let delay = if budget_left { self.policy.delay(*attempt, error, self.clock.random()) } else { None };
        if let Some(ms) = delay {
            *attempt += 1;
            self.retries_spent.set(self.retries_spent.get() + 1);
            self.clock.sleep(ms).await;
            return true;
        }
        // The browser can report the network gone a moment after a request
        // failed for it: look once more before failing for good.
        if connection_lost {
            self.clock.sleep(OFFLINE_NOTICE_MS).await;
            if !self.transport.is_online() {
                self.transport.online().await;
                return true;
            }
        }
        false
    }

    /// Sends one request to the store; one that reports no progress for the
    /// policy's stall timeout is aborted (dropped) and fails as a timeout.
    pub async fn send(
        &self,
        request: HttpRequest<I::Body>,
        progress: ProgressFn,
    ) -> Result<HttpResponse, TransportError> {
        let stall_ms = self.policy.stall_timeout_ms;
        if stall_ms == 0 {
            return self.transport.send(request, progress).await;
        }
        let reports = Rc::new(Cell::new(0u64));
        let counted: ProgressFn = {
            let reports = Rc::clone(&reports);
            Rc::new(move |sent| {
                reports.set(reports.get() + 1);
                progress(sent)
            })
        };
        // Looks a few times per timeout, so a stall is caught within 1.25×.
        let clock = self.clock;
        let watchdog = async move {
            let (mut seen, mut since) = (0, clock.now_ms());
            loop {
                clock.sleep(stall_ms.div_ceil(4)).await;
                let now = clock.now_ms();
                if reports.get() != seen {
                    (seen, since) = (reports.get(), now);
                } else if now - since >= stall_ms as f64 {
                    return;
                }
            }
        };
        match future::select(pin!(self.transport.send(request, counted)), pin!(watchdog)).await {
            Either::Left((answer, _)) => answer,
            Either::Right(_) => Err(TransportError::Timeout),
        }
    }

    /// A request that carries no file bytes (status query, HEAD, OPTIONS).
    pub async fn send_bodiless(&self, request: HttpRequest<I::Body>) -> Result<HttpResponse, UploadError> {
        Ok(self.send(request, Rc::new(|_| {})).await?)
    }
}

/// One upload once the broker has answered: its session record (the
/// server's truth, adopted through the transition table) and its progress.
/// Every event the caller sees is emitted from here, so the state it sees
/// always matches the record.
pub(crate) struct ActiveUpload<'a, I: Io> {
    pub tools: &'a Toolbox<'a, I>,
    session: RefCell<Session>,
    /// The part size the broker last said it planned with.
    planned_part_size: Cell<Option<u64>>,
    progress: Rc<RefCell<Progress>>,
}

impl<'a, I: Io> ActiveUpload<'a, I> {
    /// Starts from the broker's first record (`initialized`, or the stored
    /// state of a session being resumed).
    pub fn new(tools: &'a Toolbox<'a, I>, first: BrokerReply) -> Self {
        let upload = ActiveUpload {
            tools,
            session: RefCell::new(first.session),
            planned_part_size: Cell::new(first.part_size),
            progress: Rc::new(RefCell::new(Progress::new(tools.source.size()))),
        };
        upload.emit_state(None);
        upload
    }

    pub fn session(&self) -> Ref<'_, Session> {
        self.session.borrow()
    }

    pub fn session_id(&self) -> String {
        self.session.borrow().id.clone()
    }

    pub fn state(&self) -> SessionState {
        self.session.borrow().state
    }

    pub fn planned_part_size(&self) -> Option<u64> {
        self.planned_part_size.get()
    }

    pub fn total(&self) -> u64 {
        self.tools.source.size()
    }

    /// The file's bytes of `piece`, as the transport sends them.
    pub fn body(&self, piece: Piece) -> I::Body {
        self.tools.source.slice(piece.start, piece.end())
    }

    /// Takes the server's record.
    pub fn adopt(&self, server: Session) -> Result<(), UploadError> {
        let from = self.session.borrow_mut().adopt(server)?;
        if from.is_some() {
            self.emit_state(from);
        }
        Ok(())
    }

    /// A broker call about this session; the record in the reply is adopted.
    pub async fn ask(&self, call: &BrokerCall) -> Result<BrokerReply, UploadError> {
        let reply = self.tools.call(call).await?;
        self.adopt(reply.session.clone())?;
        if reply.part_size.is_some() {
            self.planned_part_size.set(reply.part_size);
        }
        Ok(reply)
    }

    /// A change the client itself observed (bytes started, bytes landed).
    pub fn transition(&self, to: SessionState) -> Result<(), UploadError> {
        let from = self.session.borrow_mut().transition(to)?;
        if from.is_some() {
            self.emit_state(from);
        }
        Ok(())
    }

    /// Enters `resuming` when the session has not started sending yet; an
    /// upload resumed after a pause is already `uploading` and stays so.
    pub fn begin_resuming(&self) -> Result<(), UploadError> {
        match self.state() {
            SessionState::Signed => self.transition(SessionState::Resuming),
            _ => Ok(()),
        }
    }

    fn emit_state(&self, from: Option<SessionState>) {
        let session = self.session.borrow();
        (self.tools.events)(Event::StateChanged { from, to: session.state, session: &session });
    }

    /// A progress callback for the request carrying `piece`.
    fn progress_for(&self, piece: Piece) -> ProgressFn {
        let progress = Rc::clone(&self.progress);
        let events = Rc::clone(&self.tools.events);
        Rc::new(move |sent| {
            let changed = progress.borrow_mut().sent(piece, sent);
            if let Some(snapshot) = changed {
                events(Event::Progress(snapshot));
            }
        })
    }

    /// The store holds `bytes` that this run did not send (found on resume,
    /// or reported after an interruption).
    pub fn already_stored(&self, bytes: u64) {
        let changed = self.progress.borrow_mut().already_stored(bytes);
        self.show(changed);
    }

    /// The store kept `bytes` of `piece` although its answer was lost.
    pub fn acked(&self, piece: Piece, bytes: u64) {
        let changed = self.progress.borrow_mut().acked(piece, bytes);
        self.show(changed);
    }

    fn show(&self, changed: Option<crate::progress::ProgressSnapshot>) {
        if let Some(snapshot) = changed {
            (self.tools.events)(Event::Progress(snapshot));
        }
    }

    /// Forgets what this run counted before the store is asked again
    /// (after a pause); what is shown never goes back.
    pub fn restart_progress(&self) {
        self.progress.borrow_mut().restart();
    }

    /// Sends one request carrying `piece`: its bytes count as sent while it
    /// runs; once the store's answer is a success, `accept` reads it and
    /// says how many bytes it acknowledged. The file is checked first, so a
    /// changed file is never sent.
    pub async fn send_piece<R>(
        &self,
        piece: Piece,
        request: HttpRequest<I::Body>,
        accept: impl FnOnce(&HttpResponse) -> Result<(R, u64), UploadError>,
    ) -> Result<R, UploadError> {
        self.tools.source.check_unchanged().await?;
        let mut watch = PieceWatch::sending(&self.tools.events, piece);
        let answer = self.tools.send(request, self.progress_for(piece)).await;
        let retry_after = answer
            .as_ref()
            .ok()
            .and_then(|response| response.header("retry-after"))
            .and_then(|value| crate::retry::parse_retry_after(value, self.tools.now_ms()));
        match answer.map_err(UploadError::from).and_then(|response| accept(&response)) {
            Ok((read, acknowledged)) => {
                watch.ended(PieceState::Stored, Piece { len: acknowledged, ..piece });
                self.acked(piece, acknowledged);
                Ok(read)
            }
            Err(e) => {
                watch.ended(PieceState::Failed, piece);
                self.progress.borrow_mut().dropped(piece);
                Err(UploadError { retry_after_ms: retry_after, ..e })
            }
        }
    }

    pub fn part_stored(&self, part_number: u32, etag: &str, size: u64) {
        (self.tools.events)(Event::PartStored { part_number, etag, size });
    }
}

/// Reports a piece's request: `Sending` now, then how it ended; dropped
/// unended (the upload paused or cancelled mid-request), `Stopped`.
struct PieceWatch<'e> {
    events: &'e EventSink,
    piece: Piece,
    ended: bool,
}

impl<'e> PieceWatch<'e> {
    fn sending(events: &'e EventSink, piece: Piece) -> Self {
        events(Event::Piece { piece, state: PieceState::Sending });
        PieceWatch { events, piece, ended: false }
    }

    fn ended(&mut self, state: PieceState, piece: Piece) {
        self.ended = true;
        (self.events)(Event::Piece { piece, state });
    }
}

impl Drop for PieceWatch<'_> {
    fn drop(&mut self) {
        if !self.ended {
            (self.events)(Event::Piece { piece: self.piece, state: PieceState::Stopped });
        }
    }
}
