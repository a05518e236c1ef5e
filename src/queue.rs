//! The uploader's queue: at most `limit` uploads transfer at once; the
//! others wait for a turn in the order they asked. A turn is held while
//! bytes move and given to the next waiter when it is dropped (the
//! transfer ended, was paused or was cancelled).

use futures::channel::oneshot;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

#[derive(Clone)]
pub struct Queue(Rc<RefCell<Line>>);

struct Line {
    free: usize,
    waiting: VecDeque<oneshot::Sender<Turn>>,
}

/// The right to transfer, until dropped.
pub struct Turn(Option<Queue>);

/// A place in the line; dropping it leaves the line.
pub struct Waiter(oneshot::Receiver<Turn>);

impl Waiter {
    pub async fn wait(self) -> Turn {
        // A sender is dropped unsent only with the whole line.
        self.0.await.unwrap_or(Turn(None))
    }
}

impl Queue {
    /// A queue of `limit` turns (at least one).
    pub fn new(limit: usize) -> Queue {
        Queue(Rc::new(RefCell::new(Line { free: limit.max(1), waiting: VecDeque::new() })))
    }

    /// No limit: every upload transfers at once.
    pub fn unlimited() -> Queue {
        Queue::new(usize::MAX)
    }

    /// A turn now, or a place in the line.
    pub fn ask(&self) -> Result<Turn, Waiter> {
        let mut line = self.0.borrow_mut();
        if line.free > 0 && line.waiting.is_empty() {
            line.free -= 1;
            return Ok(Turn(Some(self.clone())));
        }
        let (sender, receiver) = oneshot::channel();
        line.waiting.push_back(sender);
        Err(Waiter(receiver))
    }

    /// Waits for a turn.
    pub async fn turn(&self) -> Turn {
        match self.ask() {
            Ok(turn) => turn,
            Err(waiter) => waiter.wait().await,
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let Some(queue) = self.0.take() else { return };
        let mut turn = Turn(Some(queue.clone()));
        loop {
            let next = queue.0.borrow_mut().waiting.pop_front();
            let Some(sender) = next else { break };
            // A waiter that left hands the turn back: try the next one.
            match sender.send(turn) {
                Ok(()) => return,
                Err(returned) => turn = returned,
            }
        }
        // Nobody waits: the turn goes back to the pool.
        turn.0 = None;
        queue.0.borrow_mut().free += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn at_most_limit_turns_are_held_and_waiters_are_served_in_order() {
        let queue = Queue::new(2);
        let first = queue.ask().ok().unwrap();
        let second = queue.ask().ok().unwrap();
        let mut third = queue.ask().err().unwrap().0;
        let mut fourth = queue.ask().err().unwrap().0;
        assert!(third.try_recv().unwrap().is_none());
        drop(second);
        let third = third.try_recv().unwrap().expect("the first waiter gets the freed turn");
        assert!(fourth.try_recv().unwrap().is_none());
        drop(first);
        let fourth = fourth.try_recv().unwrap().expect("then the next");
        drop((third, fourth));
        // Both turns are back: two more start at once.
        let (_a, _b) = (queue.ask().ok().unwrap(), queue.ask().ok().unwrap());
        assert!(queue.ask().is_err());
    }

    #[test]
    fn a_waiter_that_leaves_passes_its_turn_on() {
        let queue = Queue::new(1);
        let held = queue.ask().ok().unwrap();
        let left = queue.ask().err().unwrap();
        let mut stays = queue.ask().err().unwrap().0;
        drop(left);
        drop(held);
        assert!(stays.try_recv().unwrap().is_some(), "the turn skips the waiter that left");
    }

    #[test]
    fn a_turn_granted_but_never_taken_is_not_lost() {
        let queue = Queue::new(1);
        let held = queue.ask().ok().unwrap();
        let granted = queue.ask().err().unwrap();
        drop(held);
        // The turn sits in the channel; dropping it unread frees it.
        drop(granted);
        assert!(queue.ask().is_ok());
    }

    #[test]
    fn turn_waits_until_an_earlier_turn_ends() {
        let queue = Queue::new(1);
        let held = queue.turn().now_or_never().unwrap();
        let mut waiting = Box::pin(queue.turn());
        assert!(waiting.as_mut().now_or_never().is_none());
        drop(held);
        assert!(waiting.now_or_never().is_some());
    }

    #[test]
    fn unlimited_never_waits() {
        let queue = Queue::unlimited();
        let turns: Vec<Turn> = (0..100).map(|_| queue.ask().ok().unwrap()).collect();
        assert_eq!(turns.len(), 100);
    }
}
