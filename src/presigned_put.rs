//! `presigned_put`: one PUT of the whole file to a URL the broker signed.

use crate::broker::{Broker, BrokerCall, SignedRequest};
use crate::engine::{Engine, Tracker};
use crate::error::{ErrorCode, UploadError};
use crate::retry::RESIGNS;
use crate::state::SessionState;
use crate::store;
use crate::transport::{ByteSource, Clock, Transport};

/// The single request of this strategy occupies progress slot 0.
const SLOT: u64 = 0;

pub(crate) async fn transfer<B, T, C, S>(
    engine: &Engine<B, T, C>,
    source: &S,
    tracker: &Tracker,
) -> Result<(), UploadError>
where
    B: Broker,
    T: Transport,
    C: Clock,
    S: ByteSource<Slice = T::Body>,
{
    let total = source.size();
    let mut resigned = 0;
    loop {
        let (signed, signed_at) = sign(engine, tracker).await?;
        if tracker.state() != Some(SessionState::Uploading) {
            tracker.transition(SessionState::Uploading)?;
        }
        let sent = if engine.clock.now_ms() - signed_at >= signed.expires_in as f64 * 1000.0 {
            Err(UploadError::new(ErrorCode::UrlExpired, "the presigned URL expired before it could be used"))
        } else {
            let request = || signed.request_with(source.slice(0, total));
            let accept = |response: &_| store::check_answer(response).map(|()| ((), total));
            engine.put_retrying(source, tracker, SLOT, total, request, accept).await
        };
        match sent {
            Err(e) if e.code == ErrorCode::UrlExpired && resigned < RESIGNS => resigned += 1,
            Err(e) => return Err(e),
            Ok(()) => return tracker.transition(SessionState::Uploaded),
        }
    }
}

async fn sign<B: Broker, T: Transport, C: Clock>(
    engine: &Engine<B, T, C>,
    tracker: &Tracker,
) -> Result<(SignedRequest, f64), UploadError> {
    let reply = engine.call(tracker, &BrokerCall::Sign { session_id: tracker.session_id() }).await?;
    let signed_at = engine.clock.now_ms();
    tracker.adopt(reply.session)?;
    let signed = reply.upload.ok_or_else(|| {
        UploadError::new(ErrorCode::BrokerMalformedResponse, "sign: reply has no `upload` request")
    })?;
    Ok((signed, signed_at))
}
