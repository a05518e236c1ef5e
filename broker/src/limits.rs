//! The rate of new sessions per client address, in fixed one-minute
//! windows, in bounded memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

/// Addresses remembered at most; past it, older windows are forgotten.
const REMEMBERED: usize = 10_000;

#[derive(Default)]
pub struct Limits {
    /// Per address: the minute of its window and the sessions started in it.
    windows: Mutex<HashMap<IpAddr, (u64, u32)>>,
}

impl Limits {
    /// Counts a new session of `client` at `now_unix`; false when the
    /// client already started `per_minute` this minute.
    pub fn allow_session(&self, client: IpAddr, now_unix: u64, per_minute: u32) -> bool {
        let minute = now_unix / 60;
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        if windows.len() >= REMEMBERED {
            windows.retain(|_, (at, _)| *at == minute);
            if windows.len() >= REMEMBERED {
                windows.clear();
            }
        }
        let window = windows.entry(client).or_insert((minute, 0));
        if window.0 != minute {
            *window = (minute, 0);
        }
        if window.1 >= per_minute {
            return false;
        }
        window.1 += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_rate_per_minute() {
        let limits = Limits::default();
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!((0..3).all(|_| limits.allow_session(a, 120, 3)));
        assert!(!limits.allow_session(a, 130, 3), "the fourth in the same minute");
        assert!(limits.allow_session(b, 130, 3), "another client has its own");
        assert!(limits.allow_session(a, 180, 3), "a new minute");
    }

    #[test]
    fn memory_stays_bounded() {
        let limits = Limits::default();
        for i in 0..(REMEMBERED as u32 + 10) {
            limits.allow_session(IpAddr::from(i.to_be_bytes()), 0, 1);
        }
        assert!(limits.windows.lock().unwrap().len() <= REMEMBERED);
    }
}
