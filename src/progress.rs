//! Progress accounting: bytes sent and bytes the server acknowledged, kept
//! apart, never going backwards, never counting a retried byte twice.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgressSnapshot {
    pub bytes_sent: u64,
    pub bytes_acked: u64,
    pub bytes_total: u64,
}

/// The bytes `start..start + len` of the file that one request carries (a
/// whole file, a part, a chunk). A piece in flight is known by its start,
/// which no two requests in flight share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    pub start: u64,
    pub len: u64,
}

impl Piece {
    /// The piece of bytes `start..end`.
    pub fn between(start: u64, end: u64) -> Piece {
        Piece { start, len: end - start }
    }

    pub fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// Each piece in flight reports its own bytes sent, which restart at zero
/// when its request is tried again.
#[derive(Debug)]
pub struct Progress {
    total: u64,
    acked: u64,
    /// Bytes sent so far by each piece in flight, by its start (a few:
    /// at most the concurrency).
    in_flight: Vec<(u64, u64)>,
    shown: ProgressSnapshot,
}

impl Progress {
    pub fn new(total: u64) -> Self {
        Progress {
            total,
            acked: 0,
            in_flight: Vec::new(),
            shown: ProgressSnapshot { bytes_sent: 0, bytes_acked: 0, bytes_total: total },
        }
    }

    pub fn snapshot(&self) -> ProgressSnapshot {
        self.shown
    }

    /// A piece's request reports `sent` body bytes so far. Returns the new
    /// snapshot if anything visible changed.
    pub fn sent(&mut self, piece: Piece, sent: u64) -> Option<ProgressSnapshot> {
        let sent = sent.min(piece.len);
        match self.in_flight.iter_mut().find(|(start, _)| *start == piece.start) {
            Some(entry) => entry.1 = sent,
            None => self.in_flight.push((piece.start, sent)),
        }
        self.refresh()
    }

    /// The server confirmed `bytes` of this piece (a resumable store may
    /// keep less than the whole piece).
    pub fn acked(&mut self, piece: Piece, bytes: u64) -> Option<ProgressSnapshot> {
        self.dropped(piece);
        self.already_stored(bytes)
    }

    /// The store holds `bytes` more that no request of this run sent (what
    /// a resumed upload finds stored).
    pub fn already_stored(&mut self, bytes: u64) -> Option<ProgressSnapshot> {
        self.acked = (self.acked + bytes).min(self.total);
        self.refresh()
    }

    /// The piece's request failed; its bytes will be sent again.
    pub fn dropped(&mut self, piece: Piece) {
        self.in_flight.retain(|(start, _)| *start != piece.start);
    }

    /// Starts counting afresh (the store will be asked what it holds);
    /// what was shown stays the floor, so progress never goes back.
    pub fn restart(&mut self) {
        self.in_flight.clear();
        self.acked = 0;
    }

    fn refresh(&mut self) -> Option<ProgressSnapshot> {
        let in_flight: u64 = self.in_flight.iter().map(|(_, sent)| sent).sum();
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

    fn piece(start: u64, len: u64) -> Piece {
        Piece { start, len }
    }

    #[test]
    fn sent_and_acked_are_separate_and_end_at_the_total() {
        let mut p = Progress::new(100);
        assert_eq!(p.sent(piece(0, 100), 40).unwrap().bytes_sent, 40);
        assert_eq!(p.snapshot().bytes_acked, 0);
        let end = p.acked(piece(0, 100), 100).unwrap();
        assert_eq!(end, ProgressSnapshot { bytes_sent: 100, bytes_acked: 100, bytes_total: 100 });
    }

    #[test]
    fn a_retried_request_is_not_counted_twice_and_never_goes_back() {
        let mut p = Progress::new(100);
        let (first, second) = (piece(0, 50), piece(50, 50));
        p.sent(first, 50);
        p.sent(second, 30);
        assert_eq!(p.snapshot().bytes_sent, 80);
        p.dropped(second);
        assert_eq!(p.sent(second, 10), None, "the retry restarts at 0: nothing new to show");
        assert_eq!(p.snapshot().bytes_sent, 80);
        p.sent(second, 40);
        assert_eq!(p.snapshot().bytes_sent, 90);
        p.acked(first, 50);
        p.acked(second, 50);
        assert_eq!(p.snapshot(), ProgressSnapshot { bytes_sent: 100, bytes_acked: 100, bytes_total: 100 });
    }

    #[test]
    fn a_restart_counts_afresh_without_going_back() {
        let mut p = Progress::new(100);
        p.acked(piece(0, 40), 40);
        p.sent(piece(40, 60), 30);
        p.restart();
        assert_eq!(p.already_stored(40), None, "the store holds what was acknowledged: nothing new");
        assert_eq!(p.sent(piece(40, 60), 20), None, "below what was shown");
        assert_eq!(p.sent(piece(40, 60), 50).unwrap().bytes_sent, 90);
        assert_eq!(
            p.acked(piece(40, 60), 60).unwrap(),
            ProgressSnapshot { bytes_sent: 100, bytes_acked: 100, bytes_total: 100 }
        );
    }

    #[test]
    fn reports_past_the_length_are_clamped() {
        let mut p = Progress::new(10);
        p.sent(piece(0, 10), 1_000);
        assert_eq!(p.snapshot().bytes_sent, 10);
        p.acked(piece(0, 10), 1_000);
        assert_eq!(p.snapshot().bytes_acked, 10);
    }
}
