//! Progress accounting: bytes sent and bytes the server acknowledged, kept
//! apart, never going backwards, never counting a retried byte twice.

use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgressSnapshot {
    pub bytes_sent: u64,
    pub bytes_acked: u64,
    pub bytes_total: u64,
}

/// Requests in flight are identified by a slot (a part number, a chunk
/// offset); each reports its own bytes sent, which restart at zero when the
/// request is retried.
#[derive(Debug)]
pub struct Progress {
    total: u64,
    acked: u64,
    in_flight: BTreeMap<u64, u64>,
    shown: ProgressSnapshot,
}

impl Progress {
    pub fn new(total: u64) -> Self {
        Progress {
            total,
            acked: 0,
            in_flight: BTreeMap::new(),
            shown: ProgressSnapshot { bytes_sent: 0, bytes_acked: 0, bytes_total: total },
        }
    }

    pub fn snapshot(&self) -> ProgressSnapshot {
        self.shown
    }

    /// A request reports `sent` body bytes so far (of `len`). Returns the new
    /// snapshot if anything visible changed.
    pub fn sent(&mut self, slot: u64, sent: u64, len: u64) -> Option<ProgressSnapshot> {
        self.in_flight.insert(slot, sent.min(len));
        self.refresh()
    }

    /// The server confirmed `len` bytes of this slot.
    pub fn acked(&mut self, slot: u64, len: u64) -> Option<ProgressSnapshot> {
        self.in_flight.remove(&slot);
        self.acked = (self.acked + len).min(self.total);
        self.refresh()
    }

    /// The request failed; its bytes will be sent again.
    pub fn dropped(&mut self, slot: u64) {
        self.in_flight.remove(&slot);
    }

    /// Starts counting afresh (the store will be asked what it holds);
    /// what was shown stays the floor, so progress never goes back.
    pub fn restart(&mut self) {
        self.in_flight.clear();
        self.acked = 0;
    }

    fn refresh(&mut self) -> Option<ProgressSnapshot> {
        let in_flight: u64 = self.in_flight.values().sum();
        let sent = (self.acked + in_flight).min(self.total);
        let next = ProgressSnapshot {
            bytes_sent: self.shown.bytes_sent.max(sent).max(self.acked),
            bytes_acked: self.shown.bytes_acked.max(self.acked),
            bytes_total: self.total,
        };
        (next != self.shown).then(|| {
            self.shown = next;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_and_acked_are_separate_and_end_at_the_total() {
        let mut p = Progress::new(100);
        assert_eq!(p.sent(0, 40, 100).unwrap().bytes_sent, 40);
        assert_eq!(p.snapshot().bytes_acked, 0);
        let end = p.acked(0, 100).unwrap();
        assert_eq!(end, ProgressSnapshot { bytes_sent: 100, bytes_acked: 100, bytes_total: 100 });
    }

    #[test]
    fn a_retried_request_is_not_counted_twice_and_never_goes_back() {
        let mut p = Progress::new(100);
        p.sent(1, 50, 50);
        p.sent(2, 30, 50);
        assert_eq!(p.snapshot().bytes_sent, 80);
        p.dropped(2);
        assert_eq!(p.sent(2, 10, 50), None, "the retry restarts at 0: nothing new to show");
        assert_eq!(p.snapshot().bytes_sent, 80);
        p.sent(2, 40, 50);
        assert_eq!(p.snapshot().bytes_sent, 90);
        p.acked(1, 50);
        p.acked(2, 50);
        assert_eq!(p.snapshot(), ProgressSnapshot { bytes_sent: 100, bytes_acked: 100, bytes_total: 100 });
    }

    #[test]
    fn a_restart_counts_afresh_without_going_back() {
        let mut p = Progress::new(100);
        p.acked(1, 40);
        p.sent(2, 30, 60);
        p.restart();
        assert_eq!(p.acked(0, 40), None, "the store holds what was acknowledged: nothing new");
        assert_eq!(p.sent(2, 20, 60), None, "below what was shown");
        assert_eq!(p.sent(2, 50, 60).unwrap().bytes_sent, 90);
        assert_eq!(
            p.acked(2, 60).unwrap(),
            ProgressSnapshot { bytes_sent: 100, bytes_acked: 100, bytes_total: 100 }
        );
    }

    #[test]
    fn reports_past_the_length_are_clamped() {
        let mut p = Progress::new(10);
        p.sent(0, 1_000, 10);
        assert_eq!(p.snapshot().bytes_sent, 10);
        p.acked(0, 1_000);
        assert_eq!(p.snapshot().bytes_acked, 10);
    }
}
