//! The upload session state machine, mirrored from Rindle's
//! `Rindle.Domain.MediaUploadSession`. The transition table lives here and
//! only here: the client engine and the reference broker both ask it.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    Initialized,
    Signed,
    /// Added by newer Rindle releases: signed -> resuming -> uploading.
    Resuming,
    Uploading,
    Uploaded,
    Verifying,
    Completed,
    Aborted,
    Expired,
    Failed,
}

impl SessionState {
    pub const ALL: [SessionState; 10] = [
        SessionState::Initialized,
        SessionState::Signed,
        SessionState::Resuming,
        SessionState::Uploading,
        SessionState::Uploaded,
        SessionState::Verifying,
        SessionState::Completed,
        SessionState::Aborted,
        SessionState::Expired,
        SessionState::Failed,
    ];

    /// The wire name, exactly as Rindle spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Initialized => "initialized",
            SessionState::Signed => "signed",
            SessionState::Resuming => "resuming",
            SessionState::Uploading => "uploading",
            SessionState::Uploaded => "uploaded",
            SessionState::Verifying => "verifying",
            SessionState::Completed => "completed",
            SessionState::Aborted => "aborted",
            SessionState::Expired => "expired",
            SessionState::Failed => "failed",
        }
    }

    /// The states this one may move to: Rindle's transition table (`upload_session_fsm.ex`).
    pub fn successors(self) -> &'static [SessionState] {
        use SessionState::*;
        match self {
            Initialized => &[Signed, Aborted, Expired, Failed],
            Signed => &[Resuming, Uploading, Uploaded, Verifying, Aborted, Expired, Failed],
            Resuming => &[Uploading, Aborted, Expired, Failed],
            Uploading => &[Uploaded, Verifying, Aborted, Expired, Failed],
            Uploaded => &[Verifying],
            Verifying => &[Completed, Failed],
            Completed | Aborted | Expired | Failed => &[],
        }
    }

    pub fn can_transition_to(self, to: SessionState) -> bool {
        self.successors().contains(&to)
    }

    /// States the client enters on its own observation, before the server
    /// may know: it began resuming, bytes started, bytes landed, it asked
    /// for verification. The others only ever come from the server.
    pub fn is_client_observed(self) -> bool {
        matches!(
            self,
            SessionState::Resuming
                | SessionState::Uploading
                | SessionState::Uploaded
                | SessionState::Verifying
        )
    }

    /// Whether `to` lies on some path of the table from this state.
    pub fn can_reach(self, to: SessionState) -> bool {
        self.successors().iter().any(|&next| next == to || next.can_reach(to))
    }

    pub fn is_terminal(self) -> bool {
        self.successors().is_empty()
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::SessionState::{self, *};

    /// The table written out independently of `successors`, as pairs, so a
    /// slip in either shows up as a mismatch.
    const ALLOWED: &[(SessionState, SessionState)] = &[
        (Initialized, Signed),
        (Initialized, Aborted),
        (Initialized, Expired),
        (Initialized, Failed),
        (Signed, Resuming),
        (Signed, Uploading),
        (Signed, Uploaded),
        (Signed, Verifying),
        (Signed, Aborted),
        (Signed, Expired),
        (Signed, Failed),
        (Resuming, Uploading),
        (Resuming, Aborted),
        (Resuming, Expired),
        (Resuming, Failed),
        (Uploading, Uploaded),
        (Uploading, Verifying),
        (Uploading, Aborted),
        (Uploading, Expired),
        (Uploading, Failed),
        (Uploaded, Verifying),
        (Verifying, Completed),
        (Verifying, Failed),
    ];

    #[test]
    fn all_hundred_pairs_match_the_table() {
        let mut checked = 0;
        for from in SessionState::ALL {
            for to in SessionState::ALL {
                let expected = ALLOWED.contains(&(from, to));
                assert_eq!(from.can_transition_to(to), expected, "{from} -> {to}");
                checked += 1;
            }
        }
        assert_eq!(checked, 100);
    }

    #[test]
    fn reachability_follows_the_table() {
        assert!(Initialized.can_reach(Completed));
        assert!(Signed.can_reach(Uploading));
        assert!(Signed.can_reach(Resuming));
        assert!(!Uploading.can_reach(Signed));
        assert!(!Uploaded.can_reach(Aborted));
        assert!(!Completed.can_reach(Completed));
    }

    #[test]
    fn terminal_states_are_exactly_the_four() {
        let terminal: Vec<_> = SessionState::ALL.into_iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(terminal, vec![Completed, Aborted, Expired, Failed]);
    }

    #[test]
    fn wire_names_round_trip_through_json() {
        for state in SessionState::ALL {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
            assert_eq!(serde_json::from_str::<SessionState>(&json).unwrap(), state);
        }
        assert!(serde_json::from_str::<SessionState>("\"paused\"").is_err());
    }
}
