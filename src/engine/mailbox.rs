//! The order in which an upstream client starts its calls.
//!
//! Calls that may start now wait in one FIFO per lane rank. The next call is the head with the
//! highest effective rank — its rank plus one per `aging` it has waited, the former's rule — so a
//! high-lane call that arrives behind a low-lane backlog goes first, yet a low call is not starved
//! by a stream of high ones while the upstream is rate limited. Ranks are few, so choosing is a
//! short scan of the heads, and a call is moved once in and once out (a heap would move it log n
//! times). Calls waiting out a backoff sit in a heap by the instant they become due. Plain data,
//! no clock: the client passes `now`.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

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
    /// (rank, calls with the instant they became ready) sorted by rank, highest first.
    ready: Vec<(u32, VecDeque<(Instant, T)>)>,
    ready_len: usize,
    delayed: BinaryHeap<Delayed<T>>,
    seq: u64,
    aging: Duration,
}

impl<T> Mailbox<T> {
    /// An empty mailbox; `aging` is the wait worth one rank (zero: rank alone decides).
    pub(crate) fn new(aging: Duration) -> Self {
        Self { ready: Vec::new(), ready_len: 0, delayed: BinaryHeap::new(), seq: 0, aging }
    }

    /// A call that may start as soon as limits allow.
    pub(crate) fn push(&mut self, now: Instant, rank: u32, value: T) {
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
        self.ready[at].1.push_back((now, value));
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
                self.push(d.due, d.rank, d.value);
            }
        }
    }

    /// The bucket whose head goes next at `now`: highest `rank * aging + waited`, in nanoseconds
    /// so no rounding decides; ties go to the higher rank (buckets are sorted by rank). With zero
    /// aging, rank alone decides.
    fn next_bucket(&self, now: Instant) -> Option<usize> {
        let aging = self.aging.as_nanos();
        let mut best: Option<(usize, (u128, u128))> = None;
        for (i, (rank, calls)) in self.ready.iter().enumerate() {
            let Some((since, _)) = calls.front() else { continue };
            let (rank, waited) = (u128::from(*rank), now.saturating_duration_since(*since).as_nanos());
            let score = if aging == 0 { (rank, waited) } else { (rank * aging + waited, 0) };
            if best.is_none_or(|(_, b)| score > b) {
                best = Some((i, score));
            }
        }
        best.map(|(i, _)| i)
    }

    /// The call to start next at `now`, if any is ready.
    pub(crate) fn peek(&self, now: Instant) -> Option<&T> {
        let i = self.next_bucket(now)?;
        self.ready[i].1.front().map(|(_, value)| value)
    }

    /// Takes the call [`peek`](Self::peek) showed at the same `now`.
    pub(crate) fn pop(&mut self, now: Instant) -> Option<T> {
        let i = self.next_bucket(now)?;
        let (_, value) = self.ready[i].1.pop_front()?;
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
        let mut all: Vec<T> =
            self.ready.iter_mut().flat_map(|(_, calls)| calls.drain(..).map(|(_, value)| value)).collect();
        self.ready_len = 0;
        all.extend(self.delayed.drain().map(|d| d.value));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGING: Duration = Duration::from_secs(1);

    #[test]
    fn higher_rank_starts_first_then_arrival_order() {
        let t0 = Instant::now();
        let mut mailbox = Mailbox::new(AGING);
        mailbox.push(t0, 0, "low-1");
        mailbox.push(t0, 0, "low-2");
        mailbox.push(t0, 3, "high");
        assert_eq!(mailbox.pop(t0), Some("high"));
        assert_eq!(mailbox.pop(t0), Some("low-1"));
        assert_eq!(mailbox.pop(t0), Some("low-2"));
        assert_eq!(mailbox.pop(t0), None);
    }

    #[test]
    fn a_low_call_that_waited_long_enough_overtakes_new_high_ones() {
        let t0 = Instant::now();
        let mut mailbox = Mailbox::new(AGING);
        mailbox.push(t0, 0, "low");
        // Two ranks apart: after just over two agings the low call goes first.
        let later = t0 + Duration::from_millis(2_100);
        mailbox.push(later, 2, "high");
        assert_eq!(mailbox.peek(t0 + Duration::from_millis(2_100)), Some(&"low"));
        let mut young = Mailbox::new(AGING);
        young.push(t0, 0, "low");
        young.push(t0 + Duration::from_millis(1_500), 2, "high");
        assert_eq!(young.pop(t0 + Duration::from_millis(1_500)), Some("high"));
    }

    #[test]
    fn zero_aging_is_rank_alone() {
        let t0 = Instant::now();
        let mut mailbox = Mailbox::new(Duration::ZERO);
        mailbox.push(t0, 0, "low");
        mailbox.push(t0 + Duration::from_secs(3600), 1, "high");
        assert_eq!(mailbox.pop(t0 + Duration::from_secs(3600)), Some("high"));
    }

    #[test]
    fn delayed_call_waits_until_due() {
        let t0 = Instant::now();
        let mut mailbox = Mailbox::new(AGING);
        mailbox.push_at(t0 + Duration::from_millis(20), 5, "later");
        mailbox.push_at(t0 + Duration::from_millis(10), 5, "sooner");
        mailbox.promote(t0);
        assert!(mailbox.peek(t0).is_none());
        assert_eq!(mailbox.next_due(), Some(t0 + Duration::from_millis(10)));
        let t15 = t0 + Duration::from_millis(15);
        mailbox.promote(t15);
        assert_eq!(mailbox.pop(t15), Some("sooner"));
        assert_eq!(mailbox.len(), 1);
        let t20 = t0 + Duration::from_millis(20);
        mailbox.promote(t20);
        assert_eq!(mailbox.pop(t20), Some("later"));
        assert!(mailbox.is_empty());
    }

    #[test]
    fn drain_returns_ready_and_delayed() {
        let t0 = Instant::now();
        let mut mailbox = Mailbox::new(AGING);
        mailbox.push(t0, 1, 1);
        mailbox.push_at(t0 + Duration::from_secs(1), 1, 2);
        let mut all = mailbox.drain();
        all.sort();
        assert_eq!(all, vec![1, 2]);
        assert!(mailbox.is_empty());
    }
}
