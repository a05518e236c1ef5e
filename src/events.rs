//! What an upload tells its caller as it happens: state changes, progress,
//! pieces sent and stored, pause and resume.

use crate::progress::{Piece, ProgressSnapshot};
use crate::session::Session;
use crate::state::SessionState;
use std::rc::Rc;

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
    /// A store request carrying `piece` (a part, a chunk, or the whole file)
    /// started, or ended: every `Sending` is followed by one ending.
    Piece {
        piece: Piece,
        state: PieceState,
    },
    /// The upload was paused (`true`) or resumed (`false`). Rindle's table
    /// has no paused state: the session keeps its state meanwhile.
    Paused(bool),
    /// The upload waits for a turn to transfer (`true`), or stopped waiting
    /// (`false`: its turn came, or it was paused or cancelled meanwhile).
    Queued(bool),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PieceState {
    Sending,
    /// The store took the request; `piece` is what it acknowledged (an
    /// offset store may keep less than was sent).
    Stored,
    /// The request failed; the piece is sent again if the error may pass.
    Failed,
    /// The upload was paused or cancelled while the request ran.
    Stopped,
}

impl PieceState {
    pub fn as_str(self) -> &'static str {
        match self {
            PieceState::Sending => "sending",
            PieceState::Stored => "stored",
            PieceState::Failed => "failed",
            PieceState::Stopped => "stopped",
        }
    }
}

/// Receives the engine's events as they happen, including from inside the
/// transport's progress callbacks (hence `Rc` and `'static`).
pub type EventSink = Rc<dyn Fn(Event<'_>)>;
