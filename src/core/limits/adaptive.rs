//! An adaptive concurrency limit (`concurrency = "auto"`): how many calls to keep in flight so an
//! upstream gives the most answers per second, without calls waiting in the server's own queue.
//!
//! Each window of answers (one per call allowed in flight, and at least [`MIN_WINDOW`]) gives two
//! measures:
//!
//! - **queueing**, Vegas-style as in Netflix's concurrency-limits: the lowest latency seen is the
//!   upstream's no-load latency, and `limit × (1 − no_load / average)` estimates how many calls
//!   wait in the server's queue instead of running;
//! - **the rate**: by Little's law, answers per second are the calls in flight over their average
//!   latency. Each limit keeps the rates of its last windows ([`Rates`]); a limit *pays* when its
//!   mean beats the next lower limit's by 5% and by half a standard error of the difference, the
//!   noise pooled over the limits measured more than once.
//!
//! When the client kept every call allowed in flight, the limit grows by one if under half a call
//! waits, or if this limit pays (the last call added still buys answers), or, while calls do not
//! clearly queue, if the limit above measured better than this one or, to try it, has been tried
//! for fewer than [`PROBES`] windows. A window with fewer calls out than allowed never grows it,
//! and shrinks it only when the calls that were out clearly queued.
//! The rate rules are for servers whose slots share the same cores (llama.cpp on a CPU): each
//! call added there makes every call slower, which reads as queueing, while the answers per second
//! still grow up to the slots; and for calls of uneven cost, whose fastest answer makes a poor
//! no-load latency. The limit shrinks by one when one and a half calls or more wait and this limit
//! does not pay. Otherwise it holds — and goes down one for a window when the limit below has
//! fewer than [`PROBES`] windows, or every [`REVISIT`] windows held, so that whether the last call
//! pays is known, and one unlucky window never decides it for good: a gain of a few percent,
//! within one window's noise, shows after a few visits. Answers to calls sent before a window
//! closed count in no window, nor, after a change, the next limit's worth. A drop — 429, 503, a
//! timeout — cuts the limit to three quarters at once, and drops from calls that were already in
//! flight when it was cut do not cut it again.
//!
//! A server with N parallel slots and a FIFO queue settles at N to N+1: with N+1 calls in flight
//! about one waits and the rate no longer grows. What it assumes: a workload that stays alike for
//! a few windows; one that swings between one-word and page-long answers moves the rates under it.
//!
//! Pure: the caller passes each call's latency; no clock is read.

use std::time::Duration;

use super::rates::Rates;

/// Answers per window at least, so a low limit still averages enough to compare rates.
const MIN_WINDOW: usize = 16;
/// Estimated waiting calls under which the limit grows.
const GROW_BELOW: f64 = 0.5;
/// Estimated waiting calls at or over which the limit shrinks, unless the last call still paid.
const SHRINK_AT: f64 = 1.5;
/// Windows a limit is tried for before its rate alone decides whether to go back to it: one
/// window's rate is too noisy to rule a limit out for good.
const PROBES: u32 = 2;
/// Windows a limit holds before the limit below is measured again.
const REVISIT: u32 = 8;

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
    /// Answers per second measured at each limit.
    rates: Rates,
    /// Outcomes still to come from calls sent before the last cut; their drops are not new news.
    forgive: usize,
    /// Answers still to come from calls sent before the last window closed; their latency tells
    /// of the old limit, so they count in no window.
    stale: usize,
    /// Windows in a row the limit held.
    held: u32,
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
            rates: Rates::default(),
            forgive: 0,
            stale: 0,
            held: 0,
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
        let average = (self.latency_sum / u32::try_from(self.samples).unwrap_or(u32::MAX)).as_secs_f64();
        let busiest = self.busiest;
        self.reset_window();
        let changed = self.decide(average, busiest);
        // Calls now out were sent under this limit and may be answered under the next; after a
        // change, the queue takes one more turn of the new limit to settle.
        self.stale = in_flight.saturating_sub(1) + if changed { self.limit } else { 0 };
        changed
    }

    /// The end of a window: `average` latency in seconds, `busiest` the most calls the client kept
    /// in flight (all it was allowed, or fewer).
    fn decide(&mut self, average: f64, busiest: usize) -> bool {
        let used_all = busiest >= self.limit;
        let Some(base) = self.base.filter(|b| !b.is_zero()) else {
            // Zero latency (an in-process mock): no queue to measure; grow while used.
            return used_all && self.set(self.limit + 1);
        };
        let queued = 1.0 - base.as_secs_f64() / average.max(f64::MIN_POSITIVE);
        if !used_all {
            // Fewer calls than allowed: no rate for this limit, and no reason to grow. Only the
            // calls that were out can have waited.
            let waiting = busiest as f64 * queued;
            return waiting >= SHRINK_AT && self.set(self.limit.saturating_sub(1));
        }
        let waiting = self.limit as f64 * queued;
        self.rates.record(self.limit, self.limit as f64 / average.max(f64::MIN_POSITIVE));
        let paid = self.rates.pays(self.limit);
        // The limit above already measured better than this one, and calls do not clearly queue:
        // go back to it (after a cut, or a visit down). Without this, calls of uneven cost —
        // whose lowest latency makes every window look a little queued — would hold at a low
        // limit whose own rate cannot say grow (at one call there is no limit below to beat).
        let above_pays = waiting < SHRINK_AT && self.rates.pays(self.limit + 1);
        // The limit above is tried, for [`PROBES`] windows, while calls do not clearly queue:
        // latencies that vary from call to call make the lowest one seen a poor no-load latency,
        // so the estimate of waiting calls alone would stop short of the slots.
        let untried = waiting < SHRINK_AT && self.rates.windows(self.limit + 1) < PROBES;
        if waiting < GROW_BELOW || paid || untried || above_pays {
            self.set(self.limit + 1)
        } else if waiting >= SHRINK_AT && !paid {
            self.set(self.limit.saturating_sub(1))
        } else {
            // Holding. The limit below is measured again now and then, and at first until it has
            // [`PROBES`] windows: one unlucky window must not decide for good that the last call
            // added does not pay.
            self.held += 1;
            if self.rates.windows(self.limit - 1) < PROBES || self.held >= REVISIT {
                self.set(self.limit - 1)
            } else {
                false
            }
        }
    }

    /// A call dropped by the upstream (429, 503, timeout), with `in_flight` calls running when it
    /// ended. Returns whether the limit changed.
    pub fn on_drop(&mut self, in_flight: usize) -> bool {
        let forgiven = self.forgive > 0;
        self.on_other();
        if forgiven {
            return false;
        }
        let changed = self.set(self.limit * 3 / 4);
        if changed {
            self.reset_window();
            // Every call still out was sent under the old limit; its drop says nothing new.
            self.forgive = in_flight.saturating_sub(1);
            self.stale = self.forgive;
        }
        changed
    }

    /// A call ended in a failure that says nothing about load (a 500, a refused connection): it
    /// is one fewer of the calls still out from before a cut or a window's close. (Every drop
    /// counts so too.)
    pub fn on_other(&mut self) {
        self.forgive = self.forgive.saturating_sub(1);
        self.stale = self.stale.saturating_sub(1);
    }

    fn reset_window(&mut self) {
        self.samples = 0;
        self.latency_sum = Duration::ZERO;
        self.busiest = 0;
    }

    fn set(&mut self, limit: usize) -> bool {
        let limit = limit.clamp(self.min, self.max);
        let changed = limit != self.limit;
        if changed {
            self.held = 0;
        }
        self.limit = limit;
        changed
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// A server with `slots` parallel slots, a FIFO queue, and `latency` per call alone, driven
    /// by a client that keeps `limit` calls in flight; time in microseconds, no clock. With
    /// `sharing` above 0 the running calls share the same cores, as llama.cpp's slots on a CPU:
    /// with k running each goes `1 + sharing × (k − 1)` times slower.
    struct Server {
        slots: usize,
        latency: f64,
        sharing: f64,
        /// Each call's work alone is `latency` times 1 ± up to this (uniform, seeded).
        jitter: f64,
        rng: fastrand::Rng,
        /// Calls: (sent at, work left in microseconds alone) for running ones; sent at for
        /// queued ones.
        running: Vec<(f64, f64)>,
        queued: VecDeque<f64>,
        now: f64,
        answered: u64,
        /// Call numbers answered 503 instead (by the order they end).
        overloaded: std::ops::Range<u64>,
        ended: u64,
        /// Calls the client has to send: it keeps at most this many in flight, whatever the limit.
        demand: usize,
    }

    impl Server {
        fn new(slots: usize, latency_ms: u64) -> Self {
            Self {
                slots,
                latency: latency_ms as f64 * 1000.0,
                sharing: 0.0,
                jitter: 0.0,
                rng: fastrand::Rng::with_seed(7),
                running: Vec::new(),
                queued: VecDeque::new(),
                now: 0.0,
                answered: 0,
                overloaded: 0..0,
                ended: 0,
                demand: usize::MAX,
            }
        }

        fn sharing(self, sharing: f64) -> Self {
            Self { sharing, ..self }
        }

        fn jitter(self, jitter: f64) -> Self {
            Self { jitter, ..self }
        }

        fn seed(self, seed: u64) -> Self {
            Self { rng: fastrand::Rng::with_seed(seed), ..self }
        }

        fn work(&mut self) -> f64 {
            self.latency * (1.0 + self.jitter * (self.rng.f64() * 2.0 - 1.0))
        }

        fn in_flight(&self) -> usize {
            self.running.len() + self.queued.len()
        }

        fn send(&mut self) {
            if self.running.len() < self.slots {
                let work = self.work();
                self.running.push((self.now, work));
            } else {
                self.queued.push_back(self.now);
            }
        }

        /// Answers per second with every slot busy: the most the server gives.
        fn best_rate(&self) -> f64 {
            let slowdown = 1.0 + self.sharing * (self.slots - 1) as f64;
            self.slots as f64 / (self.latency * slowdown) * 1e6
        }

        /// [`Server::run`], and the answers per second over that time as a share of the server's
        /// best.
        fn run_measured(&mut self, limit: &mut AdaptiveLimit, until_ms: u64) -> (Vec<usize>, f64) {
            let (answered, from) = (self.answered, self.now);
            let seen = self.run(limit, until_ms);
            let seconds = (self.now - from) / 1e6;
            (seen, (self.answered - answered) as f64 / seconds / self.best_rate())
        }

        /// Runs the client against the server until `until_ms`; returns the limits seen at each
        /// change.
        fn run(&mut self, limit: &mut AdaptiveLimit, until_ms: u64) -> Vec<usize> {
            let mut seen = vec![limit.limit()];
            while self.now < until_ms as f64 * 1000.0 {
                while self.in_flight() < limit.limit().min(self.demand) {
                    self.send();
                }
                // The next call to end, and how long its work left takes with the others running.
                let Some((i, &(sent, left))) =
                    self.running.iter().enumerate().min_by(|(_, a), (_, b)| a.1.total_cmp(&b.1))
                else {
                    break;
                };
                let slowdown = 1.0 + self.sharing * (self.running.len() - 1) as f64;
                self.now += left * slowdown;
                for call in &mut self.running {
                    call.1 -= left;
                }
                let in_flight = self.in_flight();
                self.running.swap_remove(i);
                if let Some(waiting) = self.queued.pop_front() {
                    let work = self.work();
                    self.running.push((waiting, work));
                }
                self.ended += 1;
                let changed = if self.overloaded.contains(&self.ended) {
                    limit.on_drop(in_flight)
                } else {
                    self.answered += 1;
                    limit.on_answer(Duration::from_micros((self.now - sent) as u64), in_flight)
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
    fn slots_that_share_the_cores_are_climbed_to_while_answers_per_second_grow() {
        // Four slots on shared cores: latency at 1, 2, 3, 4 calls is 1, 1.45, 1.9, 2.35 times the
        // latency alone, so the answers per second grow by 38%, 15% and 8% with each call added.
        let mut server = Server::new(4, 200).sharing(0.45);
        let mut limit = AdaptiveLimit::new(2, 1, 256);
        server.run(&mut limit, 30_000);
        let (seen, rate) = server.run_measured(&mut limit, 60_000);
        assert!(seen.iter().all(|l| (4..=5).contains(l)), "{seen:?}");
        assert!(rate >= 0.97, "{rate:.2} of the server's best");
    }

    #[test]
    fn calls_of_uneven_cost_still_find_the_best_rate() {
        // Each call's work is 100–300 ms, so the lowest latency seen is half the typical one.
        // (slots, sharing, the limits allowed after the first 30 s: the search still measures one
        // below, and on the small servers tries one above while the noise is being learnt)
        let servers =
            [(1, 0.0, 1..=3), (8, 0.0, 6..=11), (16, 0.0, 11..=18), (4, 0.45, 1..=6), (2, 0.8, 1..=4)];
        for (slots, sharing, allowed) in servers {
            let mut rates = Vec::new();
            for seed in 1..=5 {
                let mut server = Server::new(slots, 200).sharing(sharing).jitter(0.5).seed(seed);
                let mut limit = AdaptiveLimit::new(2, 1, 256);
                server.run(&mut limit, 30_000);
                let (seen, rate) = server.run_measured(&mut limit, 120_000);
                assert!(seen.iter().all(|l| allowed.contains(l)), "{slots} slots, seed {seed}: {seen:?}");
                rates.push(rate);
            }
            rates.sort_by(f64::total_cmp);
            assert!(rates[0] >= 0.93 && rates[2] >= 0.96, "{slots} slots, {sharing}: {rates:?} of the best");
        }
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
    fn calls_of_uneven_cost_recover_from_a_burst_of_overloads() {
        // With latencies of 40–360 ms the lowest seen is a fifth of the typical one, so at one
        // call the waiting estimate alone never says grow: what the limits above measured must.
        for seed in 1..=5 {
            let mut server = Server::new(8, 200).jitter(0.8).seed(seed);
            let mut limit = AdaptiveLimit::new(2, 1, 256);
            server.run(&mut limit, 30_000);
            server.overloaded = server.ended + 1..server.ended + 41;
            let seen = server.run(&mut limit, 33_000);
            assert!(seen.contains(&1) || seen.contains(&2), "seed {seed}: not cut low: {seen:?}");
            server.run(&mut limit, 60_000);
            let (_, rate) = server.run_measured(&mut limit, 90_000);
            assert!(rate >= 0.9, "seed {seed}: {rate:.2} of the best after the burst, at {}", limit.limit());
        }
    }

    #[test]
    fn a_quiet_spell_does_not_leave_it_at_one() {
        // The client's callers keep only two calls out for a minute, then demand comes back:
        // the limit must not have been talked down to one for good by the quiet windows.
        for seed in 1..=5 {
            let mut server = Server::new(8, 200).jitter(0.7).seed(seed);
            let mut limit = AdaptiveLimit::new(2, 1, 256);
            server.run(&mut limit, 30_000);
            server.demand = 2;
            server.run(&mut limit, 90_000);
            server.demand = usize::MAX;
            server.run(&mut limit, 120_000);
            let (_, rate) = server.run_measured(&mut limit, 150_000);
            assert!(
                rate >= 0.9,
                "seed {seed}: {rate:.2} of the best after a quiet minute, at {}",
                limit.limit()
            );
        }
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
    fn other_failures_use_up_what_is_forgiven() {
        let mut limit = AdaptiveLimit::new(16, 1, 256);
        assert!(limit.on_drop(16));
        // The 15 calls out at the cut end in 500s: the next 503 is news.
        for _ in 0..15 {
            limit.on_other();
        }
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
