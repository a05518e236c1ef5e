//! `presigned_put`: one PUT of the whole file to a URL the broker signed.

use crate::broker::{Broker, BrokerCall};
use crate::engine::{Engine, Tracker};
use crate::error::{ErrorCode, UploadError};
use crate::state::SessionState;
use crate::store;
use crate::transport::{ByteSource, Clock, HttpRequest, Transport};

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
    let reply = engine.broker.call(&BrokerCall::Sign { session_id: tracker.session_id() }).await?;
    let signed_at = engine.clock.now_ms();
    tracker.adopt(reply.session)?;
    let signed = reply.upload.ok_or_else(|| {
        UploadError::new(ErrorCode::BrokerMalformedResponse, "sign: reply has no `upload` request")
    })?;
    tracker.transition(SessionState::Uploading)?;

    if engine.clock.now_ms() - signed_at >= signed.expires_in as f64 * 1000.0 {
        return Err(UploadError::new(
            ErrorCode::UrlExpired,
            "the presigned URL expired before it could be used",
        ));
    }
    let total = source.size();
    let request = HttpRequest {
        method: "PUT",
        url: signed.url,
        headers: signed.headers.into_iter().collect(),
        body: Some(source.slice(0, total)),
    };
    engine
        .put(tracker, SLOT, total, request, |response| store::check_answer(response).map(|()| ((), total)))
        .await?;
    tracker.transition(SessionState::Uploaded)
}
