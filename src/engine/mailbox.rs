//! The order in which an upstream client starts its calls.
//!
//! Calls that may start now wait in a heap by lane rank (then arrival), so a high-lane call that
//! arrives behind a low-lane backlog still goes first; calls waiting out a backoff sit in a
//! second heap by the instant they become due. Plain data, no clock: the client passes `now`.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use tokio::time::Instant;

struct Ready<T> {
    rank: u32,
    seq: u64,
    value: T,
}

impl<T> PartialEq for Ready<T> {
    fn eq(&self, other: &Self) -> bool {
        self.rank == other.rank && self.seq == other.seq
    }
}
impl<T> Eq for Ready<T> {}
impl<T> PartialOrd for Ready<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Ready<T> {
    // Max-heap: higher rank first, then the earlier arrival.
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank.cmp(&other.rank).then_with(|| Reverse(self.seq).cmp(&Reverse(other.seq)))
    }
}

struct Delayed<T> {
    due: Instant,
    inner: Ready<T>,
}

impl<T> PartialEq for Delayed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due && self.inner == other.inner
    }
}
impl<T> Eq for Delayed<T> {}
impl<T> PartialOrd for Delayed<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Delayed<T> {
    // Max-heap reversed: the earliest due first.
    fn cmp(&self, other: &Self) -> Ordering {
        other.due.cmp(&self.due).then_with(|| other.inner.seq.cmp(&self.inner.seq))
    }
}

/// Calls waiting in one upstream client.
pub(crate) struct Mailbox<T> {
    ready: BinaryHeap<Ready<T>>,
    delayed: BinaryHeap<Delayed<T>>,
    seq: u64,
}

impl<T> Default for Mailbox<T> {
    fn default() -> Self {
        Self { ready: BinaryHeap::new(), delayed: BinaryHeap::new(), seq: 0 }
    }
}

impl<T> Mailbox<T> {
    /// A call that may start as soon as limits allow.
    pub(crate) fn push(&mut self, rank: u32, value: T) {
        self.seq += 1;
        self.ready.push(Ready { rank, seq: self.seq, value });
    }

    /// A call that may not start before `due`.
    pub(crate) fn push_at(&mut self, due: Instant, rank: u32, value: T) {
        self.seq += 1;
        self.delayed.push(Delayed { due, inner: Ready { rank, seq: self.seq, value } });
    }

    /// Moves calls that are due at `now` to the ready heap.
    pub(crate) fn promote(&mut self, now: Instant) {
        while self.delayed.peek().is_some_and(|d| d.due <= now) {
            if let Some(d) = self.delayed.pop() {
                self.ready.push(d.inner);
            }
        }
    }

    /// The call to start next, if any is ready.
    pub(crate) fn peek(&self) -> Option<&T> {
        self.ready.peek().map(|r| &r.value)
    }

    /// Takes the call [`peek`](Self::peek) showed.
    pub(crate) fn pop(&mut self) -> Option<T> {
        self.ready.pop().map(|r| r.value)
    }

    /// When the next delayed call becomes due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.delayed.peek().map(|d| d.due)
    }

    /// Calls waiting, ready or delayed.
    pub(crate) fn len(&self) -> usize {
        self.ready.len() + self.delayed.len()
    }

    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every waiting call.
    pub(crate) fn drain(&mut self) -> Vec<T> {
        let mut all: Vec<T> = self.ready.drain().map(|r| r.value).collect();
        all.extend(self.delayed.drain().map(|d| d.inner.value));
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
