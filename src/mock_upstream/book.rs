//! The mock upstream's book-keeping: its own requests-per-minute limit, the counters `/stats`
//! reports, and the busiest 60 s window seen.
//!
//! Time is passed in as the offset since the server started, so windows are tested in
//! milliseconds without a clock.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The length of the sliding window for `--rpm` and for `max_requests_in_60s`.
pub const WINDOW: Duration = Duration::from_secs(60);

/// What the mock upstream has seen since it started (`GET /stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MockStats {
    /// Completion calls received (OpenAI and Gemini routes, bad ones included).
    pub requests: u64,
    /// Prompts answered by successful calls (a combined call answers several).
    pub prompts_answered: u64,
    /// The most calls received within any 60 s window.
    pub max_requests_in_60s: u64,
    /// Calls by how they were answered.
    pub outcomes: Outcomes,
    /// Combined calls received whose `response_format` carried the reply's JSON schema (either
    /// way of sending one).
    #[serde(default)]
    pub combined_with_schema: u64,
    /// With `--capacity`: the most calls served at once (never above the capacity).
    #[serde(default)]
    pub most_running: u64,
    /// With `--capacity`: the most calls waiting for a free slot at once.
    #[serde(default)]
    pub most_waiting: u64,
}

/// Calls by how the mock answered them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcomes {
    /// Answered normally.
    pub ok: u64,
    /// Injected 429 (`--rate-limit-rate`).
    pub rate_limited: u64,
    /// 429 because the caller exceeded `--rpm`.
    pub rpm_limited: u64,
    /// Injected 500.
    pub server_error: u64,
    /// Injected 503.
    pub overloaded: u64,
    /// Injected 200 with a body that is not JSON.
    pub malformed: u64,
    /// Injected dropped connection.
    pub dropped: u64,
    /// Injected hang.
    pub timeout: u64,
    /// Combined calls answered 200 with a garbled reply (`--garble-rate`).
    pub garbled: u64,
    /// Combined calls answered with ids shuffled, dropped, duplicated or renamed
    /// (`--misalign-rate`).
    #[serde(default)]
    pub misaligned: u64,
    /// Combined calls answered with every answer under the wrong id (`--wrong-answer-rate`).
    #[serde(default)]
    pub wrong: u64,
    /// 400: the request body was not understood.
    pub bad_request: u64,
}

/// The `x-ratelimit-*-requests` values to send with an admitted call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RpmState {
    /// The `--rpm` limit.
    pub limit: u64,
    /// Calls still allowed in the current window.
    pub remaining: u64,
    /// Time until the oldest call in the window leaves it, freeing a slot.
    pub reset: Duration,
}

/// A sliding 60 s window of admitted calls, refusing past `limit`.
#[derive(Debug)]
struct RpmWindow {
    limit: u64,
    admitted: VecDeque<Duration>,
}

impl RpmWindow {
    /// Admits a call at `now`, or says how long until a slot frees.
    fn admit(&mut self, now: Duration) -> Result<RpmState, Duration> {
        while self.admitted.front().is_some_and(|&at| at + WINDOW <= now) {
            self.admitted.pop_front();
        }
        let len = self.admitted.len() as u64;
        if len >= self.limit {
            let oldest = self.admitted.front().copied().unwrap_or(now);
            return Err((oldest + WINDOW).saturating_sub(now));
        }
        self.admitted.push_back(now);
        let oldest = self.admitted.front().copied().unwrap_or(now);
        Ok(RpmState { limit: self.limit, remaining: self.limit - len - 1, reset: (oldest + WINDOW) - now })
    }
}

/// Counters and windows behind one lock; every operation is O(1) amortised so the lock is held
/// for nanoseconds.
#[derive(Debug, Default)]
pub struct Book {
    stats: MockStats,
    rpm: Option<RpmWindow>,
    /// Arrivals per millisecond inside the last 60 s, so memory stays bounded at any request rate.
    arrivals: VecDeque<(u64, u64)>,
    arrivals_in_window: u64,
    running: u64,
    waiting: u64,
}

impl Book {
    /// A book enforcing `rpm` calls per 60 s window, when set.
    pub fn new(rpm: Option<u64>) -> Self {
        Self { rpm: rpm.map(|limit| RpmWindow { limit, admitted: VecDeque::new() }), ..Self::default() }
    }

    /// Counts a call arriving at `now`.
    pub fn arrive(&mut self, now: Duration) {
        let ms = now.as_millis() as u64;
        let window_ms = WINDOW.as_millis() as u64;
        while let Some(&(at, count)) = self.arrivals.front() {
            if at + window_ms > ms {
                break;
            }
            self.arrivals.pop_front();
            self.arrivals_in_window -= count;
        }
        match self.arrivals.back_mut() {
            Some((at, count)) if *at == ms => *count += 1,
            _ => self.arrivals.push_back((ms, 1)),
        }
        self.arrivals_in_window += 1;
        self.stats.requests += 1;
        self.stats.max_requests_in_60s = self.stats.max_requests_in_60s.max(self.arrivals_in_window);
    }

    /// Applies `--rpm` to a call at `now`: `Ok` with the header values to send (`None` without a
    /// limit), or `Err` with how long the caller must wait.
    pub fn admit(&mut self, now: Duration) -> Result<Option<RpmState>, Duration> {
        match &mut self.rpm {
            None => Ok(None),
            Some(window) => window.admit(now).map(Some),
        }
    }

    /// The counters, for changing one.
    pub fn outcomes(&mut self) -> &mut Outcomes {
        &mut self.stats.outcomes
    }

    /// Counts `prompts` answered by a successful call.
    pub fn answered(&mut self, prompts: u64) {
        self.stats.outcomes.ok += 1;
        self.stats.prompts_answered += prompts;
    }

    /// Calls waiting for a slot now (`--capacity`).
    pub fn waiting(&self) -> u64 {
        self.waiting
    }

    /// A call starts waiting for a slot (`--capacity`).
    pub fn wait_for_slot(&mut self) {
        self.waiting += 1;
        self.stats.most_waiting = self.stats.most_waiting.max(self.waiting);
    }

    /// A waiting call got its slot (or gave up waiting, `got` false).
    pub fn stop_waiting(&mut self, got: bool) {
        self.waiting = self.waiting.saturating_sub(1);
        if got {
            self.running += 1;
            self.stats.most_running = self.stats.most_running.max(self.running);
        }
    }

    /// A call gave its slot back.
    pub fn release_slot(&mut self) {
        self.running = self.running.saturating_sub(1);
    }

    /// Counts a combined call that carried its reply's JSON schema.
    pub fn combined_with_schema(&mut self) {
        self.stats.combined_with_schema += 1;
    }

    /// Calls received so far.
    pub fn requests(&self) -> u64 {
        self.stats.requests
    }

    /// A copy of the counters.
    pub fn stats(&self) -> MockStats {
        self.stats.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn rpm_refuses_the_call_past_the_limit_until_a_slot_frees() {
        let mut book = Book::new(Some(2));
        let first = book.admit(ms(0)).unwrap().unwrap();
        assert_eq!(first, RpmState { limit: 2, remaining: 1, reset: WINDOW });
        let second = book.admit(ms(10_000)).unwrap().unwrap();
        assert_eq!(second, RpmState { limit: 2, remaining: 0, reset: ms(50_000) });
        assert_eq!(book.admit(ms(20_000)), Err(ms(40_000)));
        // The first call leaves the window at exactly 60 s.
        assert!(book.admit(ms(60_000)).is_ok());
        assert_eq!(book.admit(ms(60_001)), Err(ms(9_999)));
    }

    #[test]
    fn without_rpm_everything_is_admitted() {
        let mut book = Book::new(None);
        for i in 0..1000 {
            assert_eq!(book.admit(ms(i)), Ok(None));
        }
    }

    #[test]
    fn busiest_window_is_remembered() {
        let mut book = Book::new(None);
        for t in [0, 0, 1, 30_000, 59_999] {
            book.arrive(ms(t));
        }
        assert_eq!(book.stats().max_requests_in_60s, 5);
        // At 60 s the two calls at 0 ms have left the window.
        book.arrive(ms(60_000));
        book.arrive(ms(60_001));
        let stats = book.stats();
        assert_eq!(stats.requests, 7);
        assert_eq!(stats.max_requests_in_60s, 5);
        for t in 0..4 {
            book.arrive(ms(61_000 + t));
        }
        // 30 s, 59.999 s, 60 s, 60.001 s and these four share one window.
        assert_eq!(book.stats().max_requests_in_60s, 8);
    }

    #[test]
    fn outcomes_are_counted() {
        let mut book = Book::new(None);
        book.answered(3);
        book.outcomes().dropped += 1;
        let stats = book.stats();
        assert_eq!((stats.outcomes.ok, stats.prompts_answered, stats.outcomes.dropped), (1, 3, 1));
    }
}
