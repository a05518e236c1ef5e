//! The engine orchestrates one upload: it starts or continues the session,
//! hands the strategy's plan the request toolbox, lets pause and cancel win
//! until the bytes are stored, then verifies. It is generic over the
//! broker, transport, byte source and clock, so the same code runs on XHR
//! in the browser and on scripted fakes in native tests; it never matches
//! on a strategy (`strategy::Plan` does).

use crate::broker::{Asset, Broker, BrokerCall, BrokerReply};
use crate::error::{ErrorCode, UploadError};
use crate::queue::{Queue, Turn, Waiter};
use crate::session::Session;
use crate::state::SessionState;
use crate::strategy::Plan;
use crate::toolbox::{ActiveUpload, Io, Toolbox};
use crate::transport::{ByteSource, Clock, Transport};
use futures::channel::mpsc;
use futures::future::{self, Either};
use futures::StreamExt;
use std::cell::{Cell, OnceCell};
use std::pin::pin;

pub use crate::events::{Event, EventSink};
pub use crate::options::UploadOptions;

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
    /// Shared by the uploads that may not all transfer at once.
    pub queue: Queue,
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
        self.upload_from(self.queue.ask(), source, options, events, commands).await
    }

    /// `upload`, from a place in the queue taken when the caller asked
    /// (so the caller knows at once whether it waits).
    pub async fn upload_from<S>(
        &self,
        place: Result<Turn, Waiter>,
        source: &S,
        options: &UploadOptions,
        events: EventSink,
        commands: Commands,
    ) -> Result<Outcome, UploadError>
    where
        S: ByteSource<Slice = T::Body>,
    {
        let tools: Toolbox<'_, (B, T, C, S)> = Toolbox::new(
            &self.broker,
            &self.transport,
            &self.clock,
            source,
            events,
            options.retry.clone(),
            options.checksum,
        );
        let upload = OnceCell::new();
        let result = run(&tools, (&self.queue, place), options, &upload, commands).await;
        result.map_err(|e| e.in_state(upload.get().map(ActiveUpload::state)))
    }
}

/// Why a transfer stopped before its end.
enum Interrupted {
    Finished(Result<BrokerCall, UploadError>),
    Command(Command),
}

async fn run<'t, I: Io>(
    tools: &'t Toolbox<'t, I>,
    (queue, place): (&Queue, Result<Turn, Waiter>),
    options: &UploadOptions,
    upload: &OnceCell<ActiveUpload<'t, I>>,
    mut commands: Commands,
) -> Result<Outcome, UploadError> {
    let candidates = Plan::candidates(options, tools.source.size())?;
    // The plan of the session the broker opened (auto: the first it offers).
    let plan = Cell::new(candidates[0]);
    // One key for every `initiate` this upload makes (retries, and again
    // after a pause that came before the broker answered).
    let idempotency_key = tools.fresh_key();
    let mut place = Some(place);
    loop {
        // Until the bytes are stored, pause and cancel win: dropping the
        // transfer aborts whatever requests are in flight.
        let stopped = {
            let mut transfer = pin!(async {
                let _turn = turn(tools, place.take().unwrap_or_else(|| queue.ask())).await;
                transfer(tools, options, (&plan, &candidates), &idempotency_key, upload).await
            });
            loop {
                match future::select(pin!(commands.next()), transfer.as_mut()).await {
                    Either::Left((Command::Resume, _)) => continue,
                    Either::Left((command, _)) => break Interrupted::Command(command),
                    Either::Right((finish, _)) => break Interrupted::Finished(finish),
                }
            }
            // The transfer is dropped here, before waiting to resume.
        };
        let command = match stopped {
            Interrupted::Finished(finish) => {
                let finish = finish?;
                return match upload.get() {
                    Some(upload) => verify(upload, finish).await,
                    None => Err(UploadError::new(ErrorCode::Internal, "bytes stored without a session")),
                };
            }
            Interrupted::Command(command) => command,
        };
        if command == Command::Pause {
            (tools.events)(Event::Paused(true));
            let command = loop {
                match commands.next().await {
                    Command::Pause => continue,
                    command => break command,
                }
            };
            if command == Command::Resume {
                (tools.events)(Event::Paused(false));
                continue;
            }
        }
        return Err(abort(tools, plan.get(), upload.get()).await);
    }
}

/// The turn to transfer; `Queued` events frame the wait, if there is one.
/// Dropped while waiting (paused, cancelled), it leaves the line.
async fn turn<I: Io>(tools: &Toolbox<'_, I>, place: Result<Turn, Waiter>) -> Turn {
    struct Waiting<'a>(&'a EventSink);
    impl Drop for Waiting<'_> {
        fn drop(&mut self) {
            (self.0)(Event::Queued(false));
        }
    }
    match place {
        Ok(turn) => turn,
        Err(waiter) => {
            (tools.events)(Event::Queued(true));
            let _waiting = Waiting(&tools.events);
            waiter.wait().await
        }
    }
}

/// Starts the session (or continues one: after a pause, or the one the
/// options name), then moves the bytes; answers the call that finishes.
async fn transfer<'t, I: Io>(
    tools: &'t Toolbox<'t, I>,
    options: &UploadOptions,
    (plan, candidates): (&Cell<Plan>, &[Plan]),
    idempotency_key: &str,
    slot: &OnceCell<ActiveUpload<'t, I>>,
) -> Result<BrokerCall, UploadError> {
    let size = tools.source.size();
    let (upload, resuming) = match slot.get() {
        // Paused earlier: the store is asked again what it holds.
        Some(upload) => {
            upload.restart_progress();
            upload.ask(&BrokerCall::Show { session_id: upload.session_id() }).await?;
            (upload, true)
        }
        None => {
            let reply = match &options.resume_session_id {
                Some(session_id) => tools.call(&BrokerCall::Show { session_id: session_id.clone() }).await?,
                None => initiate(tools, options, (plan, candidates), idempotency_key).await?,
            };
            let session = &reply.session;
            let resuming = options.resume_session_id.is_some();
            if resuming
                && (session.upload_strategy != options.strategy
                    // Rindle's sessions may carry no length: the file's is taken.
                    || session.upload_length.is_some_and(|length| length != size))
            {
                return Err(UploadError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "the file does not match session {} ({size} bytes, {})",
                        session.id,
                        options.strategy.as_str()
                    ),
                ));
            }
            (slot.get_or_init(|| ActiveUpload::new(tools, reply)), resuming)
        }
    };
    plan.get().transfer(upload, options, resuming).await
}

/// Opens the session with the first candidate plan the broker offers.
async fn initiate<I: Io>(
    tools: &Toolbox<'_, I>,
    options: &UploadOptions,
    (plan, candidates): (&Cell<Plan>, &[Plan]),
    idempotency_key: &str,
) -> Result<BrokerReply, UploadError> {
    let size = tools.source.size();
    // `Plan::candidates` always has the options' own strategy first.
    let mut answered = tools.call(&candidates[0].initiate(options, size, idempotency_key)).await;
    for &fallback in &candidates[1..] {
        if !matches!(&answered, Err(refused) if refused.code == ErrorCode::UnsupportedStrategy) {
            break;
        }
        plan.set(fallback);
        answered = tools.call(&fallback.initiate(options, size, idempotency_key)).await;
    }
    answered
}

async fn verify<I: Io>(upload: &ActiveUpload<'_, I>, finish: BrokerCall) -> Result<Outcome, UploadError> {
    upload.transition(SessionState::Verifying)?;
    let reply = upload.ask(&finish).await?;
    let session = reply.session;
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

/// Tells the store and the broker to discard the session, after the
/// transfer stopped.
async fn abort<I: Io>(
    tools: &Toolbox<'_, I>,
    plan: Plan,
    upload: Option<&ActiveUpload<'_, I>>,
) -> UploadError {
    let cancelled = |detail: &str| UploadError::new(ErrorCode::Aborted, format!("upload cancelled{detail}"));
    let Some(upload) = upload.filter(|u| u.state().can_transition_to(SessionState::Aborted)) else {
        return cancelled("");
    };
    let discard = plan.discard_at_store(&upload.session());
    if let Some(request) = discard {
        let _ = tools.send_bodiless(request).await;
    }
    match upload.ask(&BrokerCall::Cancel { session_id: upload.session_id() }).await {
        Ok(_) => cancelled(""),
        Err(e) => cancelled(&format!(", but the broker was not told: {}", e.message)),
    }
}
