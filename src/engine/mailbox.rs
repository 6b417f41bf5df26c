//! The order in which an upstream client starts its calls.
//!
//! Calls that may start now wait in one FIFO per lane rank. The next call is the head of the
//! highest rank, except that a waiting lower rank gets its share of the starts — the former's
//! rule, [`Turns`] — so a high-lane call that arrives behind a low-lane backlog goes first (after
//! at most one lower call), yet a low call is not starved by a stream of high ones while the
//! upstream is rate limited. Ranks are few, so choosing is a short scan of the heads, and a call
//! is moved once in and once out (a heap would move it log n times). Calls waiting out a backoff
//! sit in a heap by the instant they become due. Plain data, no clock: the client passes `now`.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use tokio::time::Instant;

use crate::core::batching::{Choice, LowerShare, Turns};

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
    share: LowerShare,
    turns: Turns,
}

impl<T> Mailbox<T> {
    /// An empty mailbox; a waiting lower rank gets `share` of the starts.
    pub(crate) fn new(share: LowerShare) -> Self {
        Self {
            ready: Vec::new(),
            ready_len: 0,
            delayed: BinaryHeap::new(),
            seq: 0,
            share,
            turns: Turns::default(),
        }
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

    /// The bucket whose head goes next: the share rule over the buckets' heads.
    fn next_bucket(&self) -> Option<Choice> {
        let heads = self
            .ready
            .iter()
            .enumerate()
            .filter_map(|(i, (rank, calls))| calls.front().map(|(since, _)| (i, *rank, *since)));
        self.turns.choose(heads, self.share)
    }

    /// The call to start next, if any is ready.
    pub(crate) fn peek(&self) -> Option<&T> {
        let choice = self.next_bucket()?;
        self.ready[choice.index].1.front().map(|(_, value)| value)
    }

    /// Takes the call [`peek`](Self::peek) showed, and counts the start for the share rule.
    pub(crate) fn pop(&mut self) -> Option<T> {
        let choice = self.next_bucket()?;
        let (_, value) = self.ready[choice.index].1.pop_front()?;
        self.turns.served(choice);
        self.ready_len -= 1;
        Some(value)
    }

    /// Takes out every waiting call, ready or delayed, that `matches`; the rest keep their order
    /// and due times.
    pub(crate) fn extract(&mut self, mut matches: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut out = Vec::new();
        for (_, calls) in &mut self.ready {
            for (since, value) in std::mem::take(calls) {
                if matches(&value) { out.push(value) } else { calls.push_back((since, value)) }
            }
        }
        self.ready_len = self.ready.iter().map(|(_, calls)| calls.len()).sum();
        let mut delayed = std::mem::take(&mut self.delayed).into_vec();
        let mut kept = Vec::with_capacity(delayed.len());
        for d in delayed.drain(..) {
            if matches(&d.value) { out.push(d.value) } else { kept.push(d) }
        }
        self.delayed = kept.into();
        out
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
    use std::time::Duration;

    use super::*;

    fn one_in(n: f64) -> LowerShare {
        LowerShare::new(1.0 / n)
    }

    #[test]
    fn higher_rank_starts_first_then_arrival_order() {
        let t0 = Instant::now();
        let mut mailbox = Mailbox::new(one_in(10.0));
        mailbox.push(t0, 0, "low-1");
        mailbox.push(t0, 0, "low-2");
        mailbox.push(t0, 3, "high");
        assert_eq!(mailbox.pop(), Some("high"));
        assert_eq!(mailbox.pop(), Some("low-1"));
        assert_eq!(mailbox.pop(), Some("low-2"));
        assert_eq!(mailbox.pop(), None);
    }

    #[test]
    fn a_low_backlog_gets_its_share_and_no_more() {
        let t0 = Instant::now();
        let mut mailbox = Mailbox::new(one_in(4.0));
        for i in 0..100 {
            mailbox.push(t0, 0, ("low", i));
        }
        let later = t0 + Duration::from_secs(60);
        for i in 0..8 {
            mailbox.push(later, 2, ("high", i));
        }
        let order: Vec<&str> = (0..10).filter_map(|_| mailbox.pop()).map(|(lane, _)| lane).collect();
        assert_eq!(order, ["high", "high", "high", "low", "high", "high", "high", "low", "high", "high"]);
    }

    #[test]
    fn strict_priority_is_rank_alone() {
        let t0 = Instant::now();
        let mut mailbox = Mailbox::new(LowerShare::new(0.0));
        mailbox.push(t0, 0, "low");
        mailbox.push(t0 + Duration::from_secs(3600), 1, "high");
        assert_eq!(mailbox.pop(), Some("high"));
    }

    #[test]
    fn delayed_call_waits_until_due() {
        let t0 = Instant::now();
        let mut mailbox = Mailbox::new(one_in(10.0));
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
    fn extract_takes_matching_calls_ready_or_delayed_and_keeps_the_rest_in_order() {
        let t0 = Instant::now();
        let mut mailbox = Mailbox::new(one_in(10.0));
        for i in 0..6 {
            mailbox.push(t0, 1, i);
        }
        mailbox.push_at(t0 + Duration::from_secs(1), 1, 10);
        mailbox.push_at(t0 + Duration::from_secs(2), 1, 11);
        let mut taken = mailbox.extract(|v| v % 2 == 0);
        taken.sort_unstable();
        assert_eq!(taken, [0, 2, 4, 10]);
        assert_eq!(mailbox.len(), 4);
        assert_eq!(mailbox.next_due(), Some(t0 + Duration::from_secs(2)));
        assert_eq!((mailbox.pop(), mailbox.pop(), mailbox.pop()), (Some(1), Some(3), Some(5)));
    }

    #[test]
    fn drain_returns_ready_and_delayed() {
        let t0 = Instant::now();
        let mut mailbox = Mailbox::new(one_in(10.0));
        mailbox.push(t0, 1, 1);
        mailbox.push_at(t0 + Duration::from_secs(1), 1, 2);
        let mut all = mailbox.drain();
        all.sort();
        assert_eq!(all, vec![1, 2]);
        assert!(mailbox.is_empty());
    }
}
