//! The order in which an upstream client starts its calls.
//!
//! Calls that may start now wait in one FIFO per lane rank, highest rank first, so a high-lane
//! call that arrives behind a low-lane backlog still goes first; ranks are few, so finding a
//! bucket is a short scan and a call is moved once in and once out (a heap would move it log n
//! times). Calls waiting out a backoff sit in a heap by the instant they become due. Plain data,
//! no clock: the client passes `now`.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use tokio::time::Instant;

struct Delayed<T> {
    due: Instant,
    seq: u64,
    rank: u32,
    value: T,
}

impl<T> PartialEq for Delayed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due && self.seq == other.seq
    }
}
impl<T> Eq for Delayed<T> {}
impl<T> PartialOrd for Delayed<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Delayed<T> {
    // Max-heap reversed: the earliest due first, then the earlier arrival.
    fn cmp(&self, other: &Self) -> Ordering {
        other.due.cmp(&self.due).then_with(|| other.seq.cmp(&self.seq))
    }
}

/// Calls waiting in one upstream client.
pub(crate) struct Mailbox<T> {
    /// (rank, calls) sorted by rank, highest first.
    ready: Vec<(u32, VecDeque<T>)>,
    ready_len: usize,
    delayed: BinaryHeap<Delayed<T>>,
    seq: u64,
}

impl<T> Default for Mailbox<T> {
    fn default() -> Self {
        Self { ready: Vec::new(), ready_len: 0, delayed: BinaryHeap::new(), seq: 0 }
    }
}

impl<T> Mailbox<T> {
    /// A call that may start as soon as limits allow.
    pub(crate) fn push(&mut self, rank: u32, value: T) {
        let at = match self.ready.iter().position(|(r, _)| *r <= rank) {
            Some(i) if self.ready[i].0 == rank => i,
            Some(i) => {
                self.ready.insert(i, (rank, VecDeque::new()));
                i
            }
            None => {
                self.ready.push((rank, VecDeque::new()));
                self.ready.len() - 1
            }
        };
        self.ready[at].1.push_back(value);
        self.ready_len += 1;
    }

    /// A call that may not start before `due`.
    pub(crate) fn push_at(&mut self, due: Instant, rank: u32, value: T) {
        self.seq += 1;
        self.delayed.push(Delayed { due, seq: self.seq, rank, value });
    }

    /// Moves calls that are due at `now` to the ready queues.
    pub(crate) fn promote(&mut self, now: Instant) {
        while self.delayed.peek().is_some_and(|d| d.due <= now) {
            if let Some(d) = self.delayed.pop() {
                self.push(d.rank, d.value);
            }
        }
    }

    /// The call to start next, if any is ready.
    pub(crate) fn peek(&self) -> Option<&T> {
        self.ready.iter().find_map(|(_, calls)| calls.front())
    }

    /// Takes the call [`peek`](Self::peek) showed.
    pub(crate) fn pop(&mut self) -> Option<T> {
        let value = self.ready.iter_mut().find_map(|(_, calls)| calls.pop_front())?;
        self.ready_len -= 1;
        Some(value)
    }

    /// When the next delayed call becomes due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.delayed.peek().map(|d| d.due)
    }

    /// Calls waiting, ready or delayed.
    pub(crate) fn len(&self) -> usize {
        self.ready_len + self.delayed.len()
    }

    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every waiting call.
    pub(crate) fn drain(&mut self) -> Vec<T> {
        let mut all: Vec<T> = self.ready.iter_mut().flat_map(|(_, calls)| calls.drain(..)).collect();
        self.ready_len = 0;
        all.extend(self.delayed.drain().map(|d| d.value));
        all
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn higher_rank_starts_first_then_arrival_order() {
        let mut mailbox = Mailbox::default();
        mailbox.push(0, "low-1");
        mailbox.push(0, "low-2");
        mailbox.push(3, "high");
        assert_eq!(mailbox.pop(), Some("high"));
        assert_eq!(mailbox.pop(), Some("low-1"));
        assert_eq!(mailbox.pop(), Some("low-2"));
        assert_eq!(mailbox.pop(), None);
    }

    #[test]
    fn delayed_call_waits_until_due() {
        let t0 = Instant::now();
        let mut mailbox = Mailbox::default();
        mailbox.push_at(t0 + Duration::from_millis(20), 5, "later");
        mailbox.push_at(t0 + Duration::from_millis(10), 5, "sooner");
        mailbox.promote(t0);
        assert!(mailbox.peek().is_none());
        assert_eq!(mailbox.next_due(), Some(t0 + Duration::from_millis(10)));
        mailbox.promote(t0 + Duration::from_millis(15));
        assert_eq!(mailbox.pop(), Some("sooner"));
        assert_eq!(mailbox.len(), 1);
        mailbox.promote(t0 + Duration::from_millis(20));
        assert_eq!(mailbox.pop(), Some("later"));
        assert!(mailbox.is_empty());
    }

    #[test]
    fn drain_returns_ready_and_delayed() {
        let t0 = Instant::now();
        let mut mailbox = Mailbox::default();
        mailbox.push(1, 1);
        mailbox.push_at(t0 + Duration::from_secs(1), 1, 2);
        let mut all = mailbox.drain();
        all.sort();
        assert_eq!(all, vec![1, 2]);
        assert!(mailbox.is_empty());
    }
}
