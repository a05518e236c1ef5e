//! What an upload tells its caller as it happens: state changes, progress,
//! stored parts, pause and resume.

use crate::progress::ProgressSnapshot;
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
    /// The upload was paused (`true`) or resumed (`false`). Rindle's table
    /// has no paused state: the session keeps its state meanwhile.
    Paused(bool),
    /// The upload waits for a turn to transfer (`true`), or stopped waiting
    /// (`false`: its turn came, or it was paused or cancelled meanwhile).
    Queued(bool),
}

/// Receives the engine's events as they happen, including from inside the
/// transport's progress callbacks (hence `Rc` and `'static`).
pub type EventSink = Rc<dyn Fn(Event<'_>)>;
