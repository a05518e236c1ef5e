//! The engine: drives one upload through broker calls and store requests,
//! generic over the broker, transport, byte source and clock, so the same
//! code runs on XHR in the browser and on scripted fakes in native tests.

use crate::broker::{Asset, Broker, BrokerCall, InitiateRequest};
use crate::error::{ErrorCode, UploadError};
use crate::multipart::PartPlan;
use crate::progress::{Progress, ProgressSnapshot};
use crate::retry::RetryPolicy;
use crate::session::{MultipartPart, Session, UploadStrategy};
use crate::state::SessionState;
use crate::transport::{check_header, ByteSource, Clock, HttpRequest, HttpResponse, ProgressFn, Transport};
use futures::channel::oneshot;
use futures::future::{self, Either, FutureExt, Shared};
use std::cell::{Ref, RefCell};
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
    /// When failed requests are tried again.
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
}

/// Receives the engine's events as they happen, including from inside the
/// transport's progress callbacks (hence `Rc` and `'static`).
pub type EventSink = Rc<dyn Fn(Event<'_>)>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub session: Session,
    pub asset: Asset,
}

/// Asks a running upload to stop and the broker to discard it.
pub struct CancelHandle(oneshot::Sender<()>);

#[derive(Clone)]
pub struct CancelSignal(Shared<oneshot::Receiver<()>>);

pub fn cancellation() -> (CancelHandle, CancelSignal) {
    let (sender, receiver) = oneshot::channel();
    (CancelHandle(sender), CancelSignal(receiver.shared()))
}

impl CancelHandle {
    pub fn cancel(self) {
        // The upload may have finished and dropped its signal: nothing to stop.
        let _ = self.0.send(());
    }
}

impl CancelSignal {
    /// Resolves when cancel is asked for; never, if the handle is dropped.
    async fn requested(self) {
        if self.0.await.is_err() {
            future::pending::<()>().await;
        }
    }
}

pub struct Engine<B, T, C> {
    pub broker: B,
    pub transport: T,
    pub clock: C,
}

/// The upload's session and progress, and the one place events are emitted
/// from, so the state seen by callers always matches the record.
pub(crate) struct Tracker {
    session: RefCell<Option<Session>>,
    progress: Rc<RefCell<Progress>>,
    events: EventSink,
}

impl Tracker {
    fn new(total: u64, events: EventSink) -> Self {
        Tracker { session: RefCell::new(None), progress: Rc::new(RefCell::new(Progress::new(total))), events }
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
        cancel: CancelSignal,
    ) -> Result<Outcome, UploadError>
    where
        S: ByteSource<Slice = T::Body>,
    {
        let tracker = Tracker::new(source.size(), events);
        let result = self.run(source, options, &tracker, cancel).await;
        result.map_err(|e| e.in_state(tracker.state()))
    }

    async fn run<S>(
        &self,
        source: &S,
        options: &UploadOptions,
        tracker: &Tracker,
        cancel: CancelSignal,
    ) -> Result<Outcome, UploadError>
    where
        S: ByteSource<Slice = T::Body>,
    {
        let plan = check_options(options, source.size())?;
        // Until the bytes are stored, cancel wins: dropping the transfer
        // aborts whatever requests are in flight.
        let transfer = self.transfer(source, options, plan, tracker);
        let transferred = match future::select(pin!(cancel.requested()), pin!(transfer)).await {
            Either::Left(_) => None,
            Either::Right((result, _)) => Some(result),
        };
        match transferred {
            Some(finish) => self.verify(tracker, finish?).await,
            None => Err(self.abort(tracker).await),
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
        let call = match &options.resume_session_id {
            Some(session_id) => BrokerCall::Show { session_id: session_id.clone() },
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
        let reply = self.broker.call(&call).await?;
        let session = &reply.session;
        let resuming = options.resume_session_id.is_some();
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
                crate::presigned_put::transfer(self, source, tracker, &options.retry).await?;
                Ok(Finish::Complete)
            }
            Plan::Multipart(plan) => {
                let parts =
                    crate::multipart::transfer(self, source, tracker, plan, options, resuming).await?;
                Ok(Finish::CompleteMultipart(parts))
            }
            Plan::Resumable { chunk } => {
                crate::resumable::transfer(self, source, tracker, chunk, resuming, &options.retry).await?;
                Ok(Finish::Complete)
            }
            Plan::Tus => {
                crate::tus::transfer(self, source, tracker, options, resuming).await?;
                Ok(Finish::Complete)
            }
        }
    }

    /// Sends one request carrying `len` bytes of progress slot `slot`: its
    /// bytes count as sent while it runs; once the store's answer is a
    /// success, `accept` reads it and says how many bytes it acknowledged.
    pub(crate) async fn put<R>(
        &self,
        tracker: &Tracker,
        slot: u64,
        len: u64,
        request: HttpRequest<T::Body>,
        accept: impl FnOnce(&HttpResponse) -> Result<(R, u64), UploadError>,
    ) -> Result<R, UploadError> {
        let answer = self.transport.send(request, tracker.progress_for(slot, len)).await;
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
    pub(crate) async fn put_retrying<R, A>(
        &self,
        tracker: &Tracker,
        slot: u64,
        len: u64,
        policy: &RetryPolicy,
        request: impl Fn() -> HttpRequest<T::Body>,
        accept: A,
    ) -> Result<R, UploadError>
    where
        A: Fn(&HttpResponse) -> Result<(R, u64), UploadError>,
    {
        let mut attempt = 0;
        loop {
            match self.put(tracker, slot, len, request(), &accept).await {
                Err(e) if self.back_off(attempt, &e, policy).await => attempt += 1,
                done => return done,
            }
        }
    }

    /// Waits before retry `attempt` after `error`; `false` when the error is
    /// final or the retries are spent.
    pub(crate) async fn back_off(&self, attempt: usize, error: &UploadError, policy: &RetryPolicy) -> bool {
        match policy.delay(attempt, error, self.clock.random()) {
            Some(ms) => {
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
        let reply = self.broker.call(&call).await?;
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
            let _ = self.transport.send(delete, Rc::new(|_| {})).await;
        }
        let told = self.broker.call(&BrokerCall::Cancel { session_id: tracker.session_id() }).await;
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
