//! The engine: drives one upload through broker calls and store requests,
//! generic over the broker, transport, byte source and clock, so the same
//! code runs on XHR in the browser and on scripted fakes in native tests.

use crate::broker::{Asset, Broker, BrokerCall, BrokerReply, InitiateRequest};
use crate::error::{ErrorCode, UploadError};
use crate::multipart::PartPlan;
use crate::progress::{Progress, ProgressSnapshot};
use crate::retry::RetryPolicy;
use crate::session::{MultipartPart, Session, UploadStrategy};
use crate::state::SessionState;
use crate::transport::{
    check_header, ByteSource, Clock, HttpRequest, HttpResponse, ProgressFn, Transport, TransportError,
};
use futures::channel::mpsc;
use futures::future::{self, Either};
use futures::StreamExt;
use std::cell::{Cell, Ref, RefCell};
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadOptions {
    pub filename: String,
    pub content_type: String,
    pub strategy: UploadStrategy,
    /// `multipart`: the requested part size (it grows for huge files).
    pub part_size: u64,
    /// `multipart`: parts in flight at once.
    pub concurrency: usize,
    /// `resumable`: bytes per chunk (rounded to whole 256 KiB units).
    pub chunk_size: u64,
    /// `resumable` over tus 1.0 rather than GCS resumable sessions.
    pub tus: bool,
    /// tus: create the upload without its length (creation-defer-length)
    /// and send the length with the first PATCH.
    pub defer_length: bool,
    /// Continue this existing session instead of starting one.
    pub resume_session_id: Option<String>,
    /// When a request has failed and when it is tried again (store
    /// requests and broker calls alike).
    pub retry: RetryPolicy,
}

impl UploadOptions {
    pub fn new(
        filename: impl Into<String>,
        content_type: impl Into<String>,
        strategy: UploadStrategy,
    ) -> Self {
        UploadOptions {
            filename: filename.into(),
            content_type: content_type.into(),
            strategy,
            part_size: crate::multipart::DEFAULT_PART_SIZE,
            concurrency: crate::multipart::DEFAULT_CONCURRENCY,
            chunk_size: crate::resumable::DEFAULT_CHUNK_SIZE,
            tus: false,
            defer_length: false,
            resume_session_id: None,
            retry: RetryPolicy::default(),
        }
    }
}

#[derive(Debug)]
pub enum Event<'a> {
    StateChanged {
        from: Option<SessionState>,
        to: SessionState,
        session: &'a Session,
    },
    Progress(ProgressSnapshot),
    /// A multipart part is stored (its ETag read).
    PartStored {
        part_number: u32,
        etag: &'a str,
        size: u64,
    },
    /// The upload was paused (`true`) or resumed (`false`). Rindle's table
    /// has no paused state: the session keeps its state meanwhile.
    Paused(bool),
}

/// Receives the engine's events as they happen, including from inside the
/// transport's progress callbacks (hence `Rc` and `'static`).
pub type EventSink = Rc<dyn Fn(Event<'_>)>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub session: Session,
    pub asset: Asset,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Command {
    Pause,
    Resume,
    Cancel,
}

/// Pauses, resumes or cancels a running upload. Pause stops sending and
/// keeps everything the store holds; only cancel tells the store and the
/// broker to discard.
#[derive(Clone)]
pub struct Control(mpsc::UnboundedSender<Command>);

/// The engine's end of a `Control`.
pub struct Commands(mpsc::UnboundedReceiver<Command>);

pub fn controls() -> (Control, Commands) {
    let (sender, receiver) = mpsc::unbounded();
    (Control(sender), Commands(receiver))
}

impl Control {
    // A finished upload has dropped its end: there is nothing to control.
    pub fn pause(&self) {
        let _ = self.0.unbounded_send(Command::Pause);
    }

    pub fn resume(&self) {
        let _ = self.0.unbounded_send(Command::Resume);
    }

    pub fn cancel(&self) {
        let _ = self.0.unbounded_send(Command::Cancel);
    }
}

impl Commands {
    /// The next command; never resolves once every `Control` is dropped.
    async fn next(&mut self) -> Command {
        match self.0.next().await {
            Some(command) => command,
            None => future::pending().await,
        }
    }
}

pub struct Engine<B, T, C> {
    pub broker: B,
    pub transport: T,
    pub clock: C,
}

/// The upload's session and progress, and the one place events are emitted
/// from, so the state seen by callers always matches the record; also its
/// retry policy and the retries spent, which every request of the upload
/// shares.
pub(crate) struct Tracker {
    session: RefCell<Option<Session>>,
    progress: Rc<RefCell<Progress>>,
    events: EventSink,
    policy: RetryPolicy,
    /// Retries spent so far, against the policy's budget.
    retries: Cell<usize>,
}

impl Tracker {
    fn new(total: u64, events: EventSink, policy: RetryPolicy) -> Self {
        Tracker {
            session: RefCell::new(None),
            progress: Rc::new(RefCell::new(Progress::new(total))),
            events,
            policy,
            retries: Cell::new(0),
        }
    }

    pub(crate) fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    pub(crate) fn state(&self) -> Option<SessionState> {
        self.session.borrow().as_ref().map(|s| s.state)
    }

    /// Reads the current record (the session exists once the broker answered).
    pub(crate) fn with_session<R>(&self, read: impl FnOnce(&Session) -> R) -> R {
        read(self.session.borrow().as_ref().expect("the session exists after initiate"))
    }

    pub(crate) fn session_id(&self) -> String {
        self.session.borrow().as_ref().map(|s| s.id.clone()).unwrap_or_default()
    }

    /// Takes the server's record (the first one starts the session).
    pub(crate) fn adopt(&self, server: Session) -> Result<(), UploadError> {
        let from = {
            let mut slot = self.session.borrow_mut();
            match slot.as_mut() {
                None => {
                    *slot = Some(server);
                    None
                }
                Some(local) => match local.adopt(server)? {
                    None => return Ok(()),
                    changed => changed,
                },
            }
        };
        self.emit_state(from);
        Ok(())
    }

    /// Enters `resuming` when the session has not started sending yet; an
    /// upload resumed after a pause is already `uploading` and stays so.
    pub(crate) fn begin_resuming(&self) -> Result<(), UploadError> {
        match self.state() {
            Some(SessionState::Signed) => self.transition(SessionState::Resuming),
            _ => Ok(()),
        }
    }

    /// A change the client itself observed (bytes started, bytes landed).
    pub(crate) fn transition(&self, to: SessionState) -> Result<(), UploadError> {
        let from = match self.session.borrow_mut().as_mut() {
            Some(session) => session.transition(to)?,
            None => return Err(UploadError::new(ErrorCode::Internal, "transition before a session exists")),
        };
        if from.is_some() {
            self.emit_state(from);
        }
        Ok(())
    }

    fn emit_state(&self, from: Option<SessionState>) {
        let session = Ref::map(self.session.borrow(), |s| s.as_ref().expect("session set before emitting"));
        (self.events)(Event::StateChanged { from, to: session.state, session: &session });
    }

    /// A progress callback for one request in `slot` of `len` bytes.
    pub(crate) fn progress_for(&self, slot: u64, len: u64) -> ProgressFn {
        let progress = Rc::clone(&self.progress);
        let events = Rc::clone(&self.events);
        Rc::new(move |sent| {
            let changed = progress.borrow_mut().sent(slot, sent, len);
            if let Some(snapshot) = changed {
                events(Event::Progress(snapshot));
            }
        })
    }

    pub(crate) fn acked(&self, slot: u64, len: u64) {
        let changed = self.progress.borrow_mut().acked(slot, len);
        if let Some(snapshot) = changed {
            (self.events)(Event::Progress(snapshot));
        }
    }

    pub(crate) fn dropped(&self, slot: u64) {
        self.progress.borrow_mut().dropped(slot);
    }

    /// Forgets what this run counted before the store is asked again
    /// (after a pause); what is shown never goes back.
    fn restart_progress(&self) {
        self.progress.borrow_mut().restart();
    }

    fn paused(&self, paused: bool) {
        (self.events)(Event::Paused(paused));
    }

    pub(crate) fn part_stored(&self, part_number: u32, etag: &str, size: u64) {
        (self.events)(Event::PartStored { part_number, etag, size });
    }
}

/// How the broker is asked to finish once the bytes are stored.
enum Finish {
    Complete,
    CompleteMultipart(Vec<MultipartPart>),
}

impl<B: Broker, T: Transport, C: Clock> Engine<B, T, C> {
    /// Uploads `source` from a new session to `completed`, or fails with a
    /// typed error carrying the state it happened in.
    pub async fn upload<S>(
        &self,
        source: &S,
        options: &UploadOptions,
        events: EventSink,
        commands: Commands,
    ) -> Result<Outcome, UploadError>
    where
        S: ByteSource<Slice = T::Body>,
    {
        let tracker = Tracker::new(source.size(), events, options.retry.clone());
        let result = self.run(source, options, &tracker, commands).await;
        result.map_err(|e| e.in_state(tracker.state()))
    }

    async fn run<S>(
        &self,
        source: &S,
        options: &UploadOptions,
        tracker: &Tracker,
        mut commands: Commands,
    ) -> Result<Outcome, UploadError>
    where
        S: ByteSource<Slice = T::Body>,
    {
        let plan = check_options(options, source.size())?;
        loop {
            // Until the bytes are stored, pause and cancel win: dropping the
            // transfer aborts whatever requests are in flight.
            let command = {
                let mut transfer = pin!(self.transfer(source, options, plan, tracker));
                loop {
                    match future::select(pin!(commands.next()), transfer.as_mut()).await {
                        Either::Left((Command::Resume, _)) => continue,
                        Either::Left((command, _)) => break command,
                        Either::Right((finish, _)) => return self.verify(tracker, finish?).await,
                    }
                }
                // The transfer is dropped here, before waiting to resume.
            };
            if command == Command::Pause {
                tracker.paused(true);
                let command = loop {
                    match commands.next().await {
                        Command::Pause => continue,
                        command => break command,
                    }
                };
                if command == Command::Resume {
                    tracker.paused(false);
                    continue;
                }
            }
            return Err(self.abort(tracker).await);
        }
    }

    async fn transfer<S>(
        &self,
        source: &S,
        options: &UploadOptions,
        plan: Plan,
        tracker: &Tracker,
    ) -> Result<Finish, UploadError>
    where
        S: ByteSource<Slice = T::Body>,
    {
        let size = source.size();
        // A session this upload already has (it was paused), or the one to
        // continue, is resumed from what the server holds.
        let known = tracker.state().map(|_| tracker.session_id());
        if known.is_some() {
            tracker.restart_progress();
        }
        let resuming = known.is_some() || options.resume_session_id.is_some();
        let call = match known.or_else(|| options.resume_session_id.clone()) {
            Some(session_id) => BrokerCall::Show { session_id },
            None => BrokerCall::Initiate(InitiateRequest {
                filename: options.filename.clone(),
                content_type: options.content_type.clone(),
                byte_size: size,
                upload_strategy: options.strategy,
                resumable_protocol: matches!(plan, Plan::Tus).then(|| "tus".to_owned()),
                part_size: match plan {
                    Plan::Multipart(parts) => Some(parts.part_size),
                    _ => None,
                },
            }),
        };
        let reply = self.call(tracker, &call).await?;
        let session = &reply.session;
        if resuming && (session.upload_strategy != options.strategy || session.upload_length != Some(size)) {
            return Err(UploadError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "the file does not match session {} ({size} bytes, {:?})",
                    session.id, options.strategy
                ),
            ));
        }
        tracker.adopt(reply.session)?;
        match plan {
            Plan::PresignedPut => {
                crate::presigned_put::transfer(self, source, tracker).await?;
                Ok(Finish::Complete)
            }
            Plan::Multipart(plan) => {
                let parts =
                    crate::multipart::transfer(self, source, tracker, plan, options, resuming).await?;
                Ok(Finish::CompleteMultipart(parts))
            }
            Plan::Resumable { chunk } => {
                crate::resumable::transfer(self, source, tracker, chunk, resuming).await?;
                Ok(Finish::Complete)
            }
            Plan::Tus => {
                crate::tus::transfer(self, source, tracker, options, resuming).await?;
                Ok(Finish::Complete)
            }
        }
    }

    /// A broker call, tried again after errors that may pass (unreachable,
    /// 5xx) with the policy's backoff.
    pub(crate) async fn call(
        &self,
        tracker: &Tracker,
        call: &BrokerCall,
    ) -> Result<BrokerReply, UploadError> {
        self.retrying(tracker, || self.broker.call(call)).await
    }

    /// Runs `attempt` again after errors that may pass (network, 5xx, 408,
    /// 429), with the policy's backoff, until it succeeds or fails for good.
    pub(crate) async fn retrying<R, F>(
        &self,
        tracker: &Tracker,
        mut attempt: impl FnMut() -> F,
    ) -> Result<R, UploadError>
    where
        F: Future<Output = Result<R, UploadError>>,
    {
        let mut tries = 0;
        loop {
            match attempt().await {
                Err(e) if self.back_off(tracker, &mut tries, &e).await => {}
                done => return done,
            }
        }
    }

    /// Sends one request to the store; one that reports no progress for the
    /// policy's stall timeout is aborted (dropped) and fails as a timeout.
    pub(crate) async fn send(
        &self,
        tracker: &Tracker,
        request: HttpRequest<T::Body>,
        progress: ProgressFn,
    ) -> Result<HttpResponse, TransportError> {
        let stall_ms = tracker.policy().stall_timeout_ms;
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
        let clock = &self.clock;
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

    /// Sends one request carrying `len` bytes of progress slot `slot`: its
    /// bytes count as sent while it runs; once the store's answer is a
    /// success, `accept` reads it and says how many bytes it acknowledged.
    /// The file is checked first, so a changed file is never sent.
    pub(crate) async fn put<R, S: ByteSource>(
        &self,
        source: &S,
        tracker: &Tracker,
        slot: u64,
        len: u64,
        request: HttpRequest<T::Body>,
        accept: impl FnOnce(&HttpResponse) -> Result<(R, u64), UploadError>,
    ) -> Result<R, UploadError> {
        source.check_unchanged().await?;
        let answer = self.send(tracker, request, tracker.progress_for(slot, len)).await;
        let retry_after = answer
            .as_ref()
            .ok()
            .and_then(|response| response.header("retry-after"))
            .and_then(|value| crate::retry::parse_retry_after(value, self.clock.now_ms()));
        match answer.map_err(UploadError::from).and_then(|response| accept(&response)) {
            Ok((read, acknowledged)) => {
                tracker.acked(slot, acknowledged);
                Ok(read)
            }
            Err(e) => {
                tracker.dropped(slot);
                Err(UploadError { retry_after_ms: retry_after, ..e })
            }
        }
    }

    /// `put`, tried again after errors that may pass (network, 5xx, 408,
    /// 429), with the policy's backoff. `request` makes a fresh request per
    /// try (a body is used up by sending it).
    pub(crate) async fn put_retrying<R, A, S: ByteSource>(
        &self,
        source: &S,
        tracker: &Tracker,
        slot: u64,
        len: u64,
        request: impl Fn() -> HttpRequest<T::Body>,
        accept: A,
    ) -> Result<R, UploadError>
    where
        A: Fn(&HttpResponse) -> Result<(R, u64), UploadError>,
    {
        self.retrying(tracker, || self.put(source, tracker, slot, len, request(), &accept)).await
    }

    /// Waits before trying again after `error`; `false` when the error is
    /// final or the retries are spent. A failure while the browser is
    /// offline spends no retry: it waits until the network is back.
    pub(crate) async fn back_off(&self, tracker: &Tracker, attempt: &mut usize, error: &UploadError) -> bool {
        let connection_lost = matches!(error.code, ErrorCode::NetworkError | ErrorCode::BrokerUnreachable);
        if connection_lost && !self.transport.is_online() {
            self.transport.online().await;
            return true;
        }
        if tracker.retries.get() >= tracker.policy().budget {
            return false;
        }
        match tracker.policy().delay(*attempt, error, self.clock.random()) {
            Some(ms) => {
                *attempt += 1;
                tracker.retries.set(tracker.retries.get() + 1);
                self.clock.sleep(ms).await;
                true
            }
            None => false,
        }
    }

    async fn verify(&self, tracker: &Tracker, finish: Finish) -> Result<Outcome, UploadError> {
        tracker.transition(SessionState::Verifying)?;
        let session_id = tracker.session_id();
        let call = match finish {
            Finish::Complete => BrokerCall::Complete { session_id },
            Finish::CompleteMultipart(parts) => BrokerCall::CompleteMultipart { session_id, parts },
        };
        let reply = self.call(tracker, &call).await?;
        let session = reply.session.clone();
        tracker.adopt(reply.session)?;
        match (session.state, reply.asset) {
            (SessionState::Completed, Some(asset)) => Ok(Outcome { session, asset }),
            (SessionState::Completed, None) => Err(UploadError::new(
                ErrorCode::BrokerMalformedResponse,
                "complete: a completed session came without its asset",
            )),
            (SessionState::Failed, _) => Err(UploadError::new(
                ErrorCode::VerificationFailed,
                session.failure_reason.unwrap_or_else(|| "the broker refused the stored object".into()),
            )),
            (state, _) => Err(UploadError::new(
                ErrorCode::BrokerMalformedResponse,
                format!("complete: session is {state}, neither completed nor failed"),
            )),
        }
    }

    /// Tells the broker to discard the session, after the transfer stopped.
    async fn abort(&self, tracker: &Tracker) -> UploadError {
        let cancelled =
            |detail: &str| UploadError::new(ErrorCode::Aborted, format!("upload cancelled{detail}"));
        if !tracker.state().is_some_and(|s| s.can_transition_to(SessionState::Aborted)) {
            return cancelled("");
        }
        // A resumable upload is discarded at the store by its own URI
        // (tus: termination).
        let (session_uri, tus) =
            tracker.with_session(|s| (s.session_uri.clone(), s.resumable_protocol.as_deref() == Some("tus")));
        if let Some(uri) = session_uri {
            let delete = if tus {
                crate::tus::termination(&uri)
            } else {
                HttpRequest { method: "DELETE", url: uri, headers: vec![], body: None }
            };
            let _ = self.send(tracker, delete, Rc::new(|_| {})).await;
        }
        let told = self.call(tracker, &BrokerCall::Cancel { session_id: tracker.session_id() }).await;
        match told.and_then(|reply| tracker.adopt(reply.session)) {
            Ok(()) => cancelled(""),
            Err(e) => cancelled(&format!(", but the broker was not told: {}", e.message)),
        }
    }
}

/// How the bytes will move, decided before anything is sent.
#[derive(Clone, Copy)]
enum Plan {
    PresignedPut,
    Multipart(PartPlan),
    Resumable { chunk: u64 },
    Tus,
}

/// Refuses what cannot work before anything is sent.
fn check_options(options: &UploadOptions, size: u64) -> Result<Plan, UploadError> {
    if options.filename.is_empty() {
        return Err(UploadError::new(ErrorCode::InvalidRequest, "filename must not be empty"));
    }
    check_header("Content-Type", &options.content_type)?;
    Ok(match options.strategy {
        UploadStrategy::PresignedPut => Plan::PresignedPut,
        UploadStrategy::Multipart => Plan::Multipart(PartPlan::new(size, options.part_size)?),
        UploadStrategy::Resumable if options.tus => Plan::Tus,
        UploadStrategy::Resumable => {
            Plan::Resumable { chunk: crate::resumable::chunk_size(options.chunk_size) }
        }
    })
}
