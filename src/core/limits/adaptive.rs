//! An adaptive concurrency limit (`concurrency = "auto"`): how many calls to keep in flight so an
//! upstream gives the most answers per second without its latency rising.
//!
//! The rule is Vegas-style, as in Netflix's concurrency-limits: the lowest latency seen is the
//! upstream's no-load latency; a window of answers (at least one per call allowed in flight) gives
//! the current average; `limit × (1 − no_load / average)` estimates how many calls are waiting in
//! the server's own queue instead of running. Under half a waiting call the limit grows by one
//! (if the client was using it all); at one and a half or more it shrinks by one; in between it
//! holds; answers to calls sent before a window closed count in no window. A drop —
//! 429, 503, a timeout — cuts it to three quarters at once, and drops from calls that were
//! already in flight when it was cut do not cut it again.
//!
//! A server with N parallel slots and a FIFO queue settles at N to N+1: with N+1 calls in flight
//! about one waits. What it assumes: calls of similar cost (short answers of similar length); a
//! workload mixing one-word and page-long answers reads the long ones as queueing and stays low.
//!
//! Pure: the caller passes each call's latency; no clock is read.

use std::time::Duration;

/// Answers per window at least, so a limit of 1 still averages a few.
const MIN_WINDOW: usize = 4;
/// Estimated waiting calls under which the limit grows.
const GROW_BELOW: f64 = 0.5;
/// Estimated waiting calls at or over which the limit shrinks.
const SHRINK_AT: f64 = 1.5;

/// The limit and what it has measured.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveLimit {
    limit: usize,
    min: usize,
    max: usize,
    /// The lowest latency seen: the no-load latency.
    base: Option<Duration>,
    /// The current window: answers, their summed latency, the most calls seen in flight.
    samples: usize,
    latency_sum: Duration,
    busiest: usize,
    /// Outcomes still to come from calls sent before the last cut; their drops are not new news.
    forgive: usize,
    /// Answers still to come from calls sent before the last window closed; their latency tells
    /// of the old limit, so they count in no window.
    stale: usize,
}

impl AdaptiveLimit {
    /// A limit starting at `initial`, kept within `min..=max`.
    pub fn new(initial: usize, min: usize, max: usize) -> Self {
        let min = min.max(1);
        let max = max.max(min);
        Self {
            limit: initial.clamp(min, max),
            min,
            max,
            base: None,
            samples: 0,
            latency_sum: Duration::ZERO,
            busiest: 0,
            forgive: 0,
            stale: 0,
        }
    }

    /// Calls allowed in flight now.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The no-load latency measured so far.
    pub fn base_latency(&self) -> Option<Duration> {
        self.base
    }

    /// A call answered after `latency`, with `in_flight` calls running (itself included) when it
    /// ended. Returns whether the limit changed.
    pub fn on_answer(&mut self, latency: Duration, in_flight: usize) -> bool {
        self.forgive = self.forgive.saturating_sub(1);
        self.base = Some(self.base.map_or(latency, |b| b.min(latency)));
        if self.stale > 0 {
            self.stale -= 1;
            return false;
        }
        self.samples += 1;
        self.latency_sum += latency;
        self.busiest = self.busiest.max(in_flight);
        if self.samples < self.limit.max(MIN_WINDOW) {
            return false;
        }
        let average = self.latency_sum / u32::try_from(self.samples).unwrap_or(u32::MAX);
        let used_all = self.busiest >= self.limit;
        self.reset_window();
        // Calls now out were sent under this limit and may be answered under the next.
        self.stale = in_flight.saturating_sub(1);
        let Some(base) = self.base.filter(|b| !b.is_zero()) else {
            // Zero latency (an in-process mock): no queue to measure; grow while used.
            return used_all && self.set(self.limit + 1);
        };
        let waiting =
            self.limit as f64 * (1.0 - base.as_secs_f64() / average.as_secs_f64().max(f64::MIN_POSITIVE));
        if waiting >= SHRINK_AT {
            self.set(self.limit.saturating_sub(1))
        } else if waiting < GROW_BELOW && used_all {
            self.set(self.limit + 1)
        } else {
            false
        }
    }

    /// A call dropped by the upstream (429, 503, timeout), with `in_flight` calls running when it
    /// ended. Returns whether the limit changed.
    pub fn on_drop(&mut self, in_flight: usize) -> bool {
        if self.forgive > 0 {
            self.forgive -= 1;
            return false;
        }
        self.reset_window();
        // Every call still out was sent under the old limit; its drop says nothing new.
        self.forgive = in_flight.saturating_sub(1);
        self.stale = self.forgive;
        self.set(self.limit * 3 / 4)
    }

    fn reset_window(&mut self) {
        self.samples = 0;
        self.latency_sum = Duration::ZERO;
        self.busiest = 0;
    }

    fn set(&mut self, limit: usize) -> bool {
        let limit = limit.clamp(self.min, self.max);
        let changed = limit != self.limit;
        self.limit = limit;
        changed
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// A server with `slots` parallel slots, a FIFO queue, and `latency` per call, driven by a
    /// client that keeps `limit` calls in flight; time in microseconds, no clock.
    struct Server {
        slots: usize,
        latency: u64,
        /// Calls: (sent at, started at) for running ones; sent at for queued ones.
        running: Vec<(u64, u64)>,
        queued: VecDeque<u64>,
        now: u64,
        answered: u64,
        /// Call numbers answered 503 instead (by the order they end).
        overloaded: std::ops::Range<u64>,
        ended: u64,
    }

    impl Server {
        fn new(slots: usize, latency_ms: u64) -> Self {
            Self {
                slots,
                latency: latency_ms * 1000,
                running: Vec::new(),
                queued: VecDeque::new(),
                now: 0,
                answered: 0,
                overloaded: 0..0,
                ended: 0,
            }
        }

        fn in_flight(&self) -> usize {
            self.running.len() + self.queued.len()
        }

        fn send(&mut self) {
            if self.running.len() < self.slots {
                self.running.push((self.now, self.now));
            } else {
                self.queued.push_back(self.now);
            }
        }

        /// Runs the client against the server until `until_ms`; returns the limits seen at each
        /// change.
        fn run(&mut self, limit: &mut AdaptiveLimit, until_ms: u64) -> Vec<usize> {
            let mut seen = vec![limit.limit()];
            while self.now < until_ms * 1000 {
                while self.in_flight() < limit.limit() {
                    self.send();
                }
                // The next call to end.
                let Some((i, &(sent, started))) = self.running.iter().enumerate().min_by_key(|(_, c)| c.1)
                else {
                    break;
                };
                self.now = started + self.latency;
                let in_flight = self.in_flight();
                self.running.swap_remove(i);
                if let Some(waiting) = self.queued.pop_front() {
                    self.running.push((waiting, self.now));
                }
                self.ended += 1;
                let changed = if self.overloaded.contains(&self.ended) {
                    limit.on_drop(in_flight)
                } else {
                    self.answered += 1;
                    limit.on_answer(Duration::from_micros(self.now - sent), in_flight)
                };
                if changed {
                    seen.push(limit.limit());
                }
            }
            seen
        }
    }

    #[test]
    fn settles_near_eight_slots() {
        let mut server = Server::new(8, 200);
        let mut limit = AdaptiveLimit::new(2, 1, 256);
        server.run(&mut limit, 30_000);
        assert!((8..=10).contains(&limit.limit()), "{}", limit.limit());
        // And stays there: another 30 s never leaves 6..=10.
        let seen = server.run(&mut limit, 60_000);
        assert!(seen.iter().all(|l| (6..=10).contains(l)), "{seen:?}");
        // Near the server's best: 40 answers/s over the last 30 s.
        assert!(server.answered >= 2_200, "{} answers in 60 s", server.answered);
    }

    #[test]
    fn a_one_slot_server_gets_one_or_two() {
        let mut server = Server::new(1, 200);
        let mut limit = AdaptiveLimit::new(2, 1, 256);
        server.run(&mut limit, 30_000);
        let seen = server.run(&mut limit, 60_000);
        assert!(seen.iter().all(|l| (1..=2).contains(l)), "{seen:?}");
    }

    #[test]
    fn a_wide_server_is_climbed_to() {
        let mut server = Server::new(64, 100);
        let mut limit = AdaptiveLimit::new(2, 1, 256);
        server.run(&mut limit, 30_000);
        assert!((60..=66).contains(&limit.limit()), "{}", limit.limit());
    }

    #[test]
    fn overloads_cut_the_limit_once_per_burst_and_it_recovers() {
        let mut server = Server::new(8, 200);
        let mut limit = AdaptiveLimit::new(2, 1, 256);
        server.run(&mut limit, 20_000);
        let before = limit.limit();
        assert!(before >= 8, "{before}");
        // The next 40 calls to end are 503s.
        server.overloaded = server.ended + 1..server.ended + 41;
        let seen = server.run(&mut limit, 22_000);
        let lowest = seen.iter().copied().min().unwrap_or(before);
        assert!(lowest < before / 2, "backed off only to {lowest} from {before}: {seen:?}");
        server.run(&mut limit, 40_000);
        assert!((8..=10).contains(&limit.limit()), "recovered only to {}", limit.limit());
    }

    #[test]
    fn drops_of_calls_already_out_do_not_cut_again() {
        let mut limit = AdaptiveLimit::new(16, 1, 256);
        assert!(limit.on_drop(16));
        assert_eq!(limit.limit(), 12);
        for _ in 0..15 {
            assert!(!limit.on_drop(15));
        }
        assert_eq!(limit.limit(), 12);
        assert!(limit.on_drop(12));
        assert_eq!(limit.limit(), 9);
    }

    #[test]
    fn an_idle_client_does_not_grow() {
        let mut limit = AdaptiveLimit::new(4, 1, 256);
        for _ in 0..100 {
            limit.on_answer(Duration::from_millis(100), 1);
        }
        assert_eq!(limit.limit(), 4);
    }

    #[test]
    fn stays_within_its_bounds() {
        let mut limit = AdaptiveLimit::new(1, 1, 3);
        for _ in 0..100 {
            limit.on_answer(Duration::ZERO, 3);
        }
        assert_eq!(limit.limit(), 3);
        for _ in 0..10 {
            limit.on_drop(1);
        }
        assert_eq!(limit.limit(), 1);
    }
}
