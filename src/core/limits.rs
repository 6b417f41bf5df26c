//! Exact rate limits: "N per window" as the providers state them (requests per minute, tokens per
//! minute, requests per day).
//!
//! A token bucket is not exact: a full bucket spent at the end of one window plus its refill at the
//! start of the next lets up to 2N calls into one window, and the upstream answers that with 429s.
//! [`SlidingWindow`] keeps a log of what was taken and when, so no window of the stated length —
//! whatever its start — ever holds more than the limit. [`Limits`] holds the windows of one
//! upstream, takes from all of them or none, and adapts to the rate headers the upstream sends.
//!
//! Nothing here reads a clock: every call is given `now` (a [`tokio::time::Instant`], so the actors
//! can run under tokio's paused clock in tests).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::providers::RateHints;

/// The length of the requests-per-minute and tokens-per-minute windows.
pub const MINUTE: Duration = Duration::from_secs(60);
/// The length of the requests-per-day window.
pub const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Takes closer together than `window / COALESCE_PARTS` share one log entry, which bounds the log
/// to about `COALESCE_PARTS + 1` entries whatever the limit.
const COALESCE_PARTS: u32 = 1000;

/// One or more takes recorded together.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The first take merged into this entry: later takes merge only while within the coalescing
    /// span of it, so one entry never stands for more than that span of real time.
    first: Instant,
    /// The latest take merged into this entry. The whole amount counts until `at + window`, which
    /// is later than the true expiry of the earlier takes: the log over-counts, never under-counts.
    at: Instant,
    /// How much is recorded.
    amount: u64,
    /// Identifies the entry for [`Taken`]; increasing along the log.
    seq: u64,
}

/// A sliding-window log: at most `limit` in any half-open window `[t, t + window)`.
#[derive(Debug, Clone)]
pub struct SlidingWindow {
    window: Duration,
    coalesce: Duration,
    limit: u64,
    /// Ordered by time and by `seq` alike.
    entries: VecDeque<Entry>,
    /// The sum of `entries`' amounts.
    used: u64,
    next_seq: u64,
}

/// A receipt for one take, to give it back or correct it later.
#[derive(Debug, Clone, Copy)]
pub struct Taken {
    seq: u64,
    at: Instant,
}

impl SlidingWindow {
    /// An empty window allowing `limit` per `window`.
    pub fn new(limit: u64, window: Duration) -> Self {
        Self {
            window,
            coalesce: window / COALESCE_PARTS,
            limit,
            entries: VecDeque::new(),
            used: 0,
            next_seq: 0,
        }
    }

    /// The current limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Changes the limit; what was already taken still counts.
    pub fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    /// The window's length.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// What counts in the window ending at `now`.
    pub fn used(&mut self, now: Instant) -> u64 {
        self.expire(now);
        self.used
    }

    /// Ok if `amount` fits now; Err(t) = earliest instant at which it will fit (given no new takes).
    ///
    /// An amount larger than the limit fits only an empty window, so it waits at most one window
    /// instead of forever. (A limit of 0 therefore lets one take through per window.)
    pub fn check(&mut self, now: Instant, amount: u64) -> Result<(), Instant> {
        self.expire(now);
        if self.used == 0 || self.used.saturating_add(amount) <= self.limit {
            return Ok(());
        }
        // What must expire before `amount` fits; all of it when `amount` alone exceeds the limit.
        let need = self.used.saturating_add(amount).saturating_sub(self.limit).min(self.used);
        let mut freed = 0u64;
        for entry in &self.entries {
            freed = freed.saturating_add(entry.amount);
            if freed >= need {
                return Err(entry.at + self.window);
            }
        }
        // Unreachable while `used` is the sum of the entries; waiting one window is always enough.
        Err(now + self.window)
    }

    /// Records `amount` at `now` whether or not it fits (the caller checked, or must send anyway).
    pub fn take(&mut self, now: Instant, amount: u64) -> Taken {
        self.expire(now);
        self.used = self.used.saturating_add(amount);
        if let Some(last) = self.entries.back_mut()
            && now.saturating_duration_since(last.first) < self.coalesce
        {
            last.amount = last.amount.saturating_add(amount);
            last.at = last.at.max(now);
            return Taken { seq: last.seq, at: now };
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.push_back(Entry { first: now, at: now, amount, seq });
        Taken { seq, at: now }
    }

    /// Removes up to `amount` from the take's entry; nothing if it has already expired.
    pub fn give_back(&mut self, taken: Taken, amount: u64) {
        let Ok(index) = self.find(taken.seq) else { return };
        let Some(entry) = self.entries.get_mut(index) else { return };
        let returned = amount.min(entry.amount);
        entry.amount -= returned;
        self.used = self.used.saturating_sub(returned);
        if entry.amount == 0 {
            // At most ~1000 entries, so removing from the middle is cheap.
            self.entries.remove(index);
        }
    }

    /// Adds `amount` to the take's entry (a correction upward). If that entry is gone, the amount
    /// is recorded at the take's own time: expiry drops it again if that time is out of the window.
    pub fn add(&mut self, taken: &Taken, amount: u64) {
        self.used = self.used.saturating_add(amount);
        match self.find(taken.seq) {
            Ok(index) => {
                if let Some(entry) = self.entries.get_mut(index) {
                    entry.amount = entry.amount.saturating_add(amount);
                }
            }
            Err(index) => {
                let entry = Entry { first: taken.at, at: taken.at, amount, seq: taken.seq };
                self.entries.insert(index, entry);
            }
        }
    }

    /// How many log entries are held (memory stays bounded however much is taken).
    pub fn entries(&self) -> usize {
        self.entries.len()
    }

    /// The position of entry `seq`, or where it would go (the log is ordered by `seq`).
    fn find(&self, seq: u64) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&seq, |entry| entry.seq)
    }

    /// Drops entries that no longer count at `now`: an entry at `at` counts in `[at, at + window)`.
    fn expire(&mut self, now: Instant) {
        while let Some(first) = self.entries.front() {
            if first.at + self.window > now {
                break;
            }
            self.used = self.used.saturating_sub(first.amount);
            self.entries.pop_front();
        }
        if self.entries.is_empty() {
            // Keeps `used` honest even if a saturating add ever clipped it.
            self.used = 0;
        }
    }
}

/// One of an upstream's windows with where its limit comes from.
#[derive(Debug, Clone)]
struct Gate {
    window: SlidingWindow,
    /// From the config; `None` means no limit (takes are still counted, for the console).
    configured: Option<u64>,
    /// The limit the upstream last announced for this window, if any.
    announced: Option<u64>,
}

impl Gate {
    fn new(configured: Option<u64>, window: Duration) -> Self {
        let mut gate = Self { window: SlidingWindow::new(u64::MAX, window), configured, announced: None };
        gate.apply();
        gate
    }

    /// The limit in force: the configured one, lowered (never raised) by an announced one.
    fn effective(&self) -> Option<u64> {
        match (self.configured, self.announced) {
            (Some(configured), Some(announced)) => Some(configured.min(announced)),
            (configured, announced) => configured.or(announced),
        }
    }

    fn apply(&mut self) {
        self.window.set_limit(self.effective().unwrap_or(u64::MAX));
    }
}

/// "n more before `until`", as the upstream announced it in its remaining/reset headers.
#[derive(Debug, Clone, Copy)]
struct Allowance {
    remaining: u64,
    until: Instant,
    /// Tells a permit whether the allowance it drew from is still the one in force.
    epoch: u64,
}

impl Allowance {
    fn check(slot: &Option<Self>, now: Instant, amount: u64) -> Result<(), Instant> {
        match slot {
            Some(allowance) if now < allowance.until && allowance.remaining < amount => Err(allowance.until),
            _ => Ok(()),
        }
    }

    /// Draws `amount` from the allowance in force, returning its epoch.
    fn draw(slot: &mut Option<Self>, now: Instant, amount: u64) -> Option<u64> {
        match slot {
            Some(allowance) if now < allowance.until => {
                allowance.remaining = allowance.remaining.saturating_sub(amount);
                Some(allowance.epoch)
            }
            _ => {
                *slot = None;
                None
            }
        }
    }

    /// Returns `amount` to the allowance a permit drew from, if it is still in force.
    fn refund(slot: &mut Option<Self>, epoch: Option<u64>, amount: u64) {
        if let (Some(allowance), Some(epoch)) = (slot, epoch)
            && allowance.epoch == epoch
        {
            allowance.remaining = allowance.remaining.saturating_add(amount);
        }
    }
}

/// All limits of one upstream, checked and taken atomically (all or nothing).
#[derive(Debug, Clone)]
pub struct Limits {
    rpm: Gate,
    tpm: Gate,
    rpd: Gate,
    requests: Option<Allowance>,
    tokens: Option<Allowance>,
    next_epoch: u64,
}

/// What one call took from every limit; hand it back with [`Limits::give_back`] or
/// [`Limits::settle`]. Not `Clone`, so it cannot be returned twice; dropping it keeps the estimate
/// counted, which errs on the safe side.
#[derive(Debug)]
pub struct Permit {
    rpm: Taken,
    tpm: Taken,
    rpd: Taken,
    tokens: u64,
    requests_epoch: Option<u64>,
    tokens_epoch: Option<u64>,
}

impl Permit {
    /// The tokens estimated for the call when it was admitted.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }
}

/// Used and limit of each window, for the console and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct LimitsSnapshot {
    /// Requests in the last minute.
    pub rpm_used: u64,
    /// Requests per minute in force, if any.
    pub rpm_limit: Option<u64>,
    /// Tokens in the last minute (estimated, corrected as calls finish).
    pub tpm_used: u64,
    /// Tokens per minute in force, if any.
    pub tpm_limit: Option<u64>,
    /// Requests in the last 24 hours.
    pub rpd_used: u64,
    /// Requests per day in force, if any.
    pub rpd_limit: Option<u64>,
}

/// Folds one check into the latest refusal so far: the instant every refusing limit allows.
fn later(wait: Option<Instant>, check: Result<(), Instant>) -> Option<Instant> {
    match (wait, check) {
        (Some(wait), Err(t)) => Some(wait.max(t)),
        (None, Err(t)) => Some(t),
        (wait, Ok(())) => wait,
    }
}

impl Limits {
    /// Limits of one upstream; `None` means that limit is not enforced.
    pub fn new(rpm: Option<u64>, tpm: Option<u64>, rpd: Option<u64>) -> Self {
        Self {
            rpm: Gate::new(rpm, MINUTE),
            tpm: Gate::new(tpm, MINUTE),
            rpd: Gate::new(rpd, DAY),
            requests: None,
            tokens: None,
            next_epoch: 0,
        }
    }

    /// Takes one request and `tokens` estimated tokens from every limit, or nothing:
    /// Err(t) = the instant at which to try again (the latest of the limits' earliest times).
    pub fn try_acquire(&mut self, now: Instant, tokens: u64) -> Result<Permit, Instant> {
        let mut wait = later(None, self.rpm.window.check(now, 1));
        wait = later(wait, self.tpm.window.check(now, tokens));
        wait = later(wait, self.rpd.window.check(now, 1));
        wait = later(wait, Allowance::check(&self.requests, now, 1));
        wait = later(wait, Allowance::check(&self.tokens, now, tokens));
        if let Some(wait) = wait {
            return Err(wait);
        }
        Ok(Permit {
            rpm: self.rpm.window.take(now, 1),
            tpm: self.tpm.window.take(now, tokens),
            rpd: self.rpd.window.take(now, 1),
            tokens,
            requests_epoch: Allowance::draw(&mut self.requests, now, 1),
            tokens_epoch: Allowance::draw(&mut self.tokens, now, tokens),
        })
    }

    /// The call never went out: return its request and tokens to every window.
    pub fn give_back(&mut self, permit: Permit) {
        self.rpm.window.give_back(permit.rpm, 1);
        self.tpm.window.give_back(permit.tpm, permit.tokens);
        self.rpd.window.give_back(permit.rpd, 1);
        Allowance::refund(&mut self.requests, permit.requests_epoch, 1);
        Allowance::refund(&mut self.tokens, permit.tokens_epoch, permit.tokens);
    }

    /// The call finished: correct the token window from estimated to `actual` tokens (up or down).
    pub fn settle(&mut self, permit: Permit, actual_tokens: u64) {
        if actual_tokens < permit.tokens {
            let over = permit.tokens - actual_tokens;
            self.tpm.window.give_back(permit.tpm, over);
            Allowance::refund(&mut self.tokens, permit.tokens_epoch, over);
        } else if actual_tokens > permit.tokens {
            let under = actual_tokens - permit.tokens;
            self.tpm.window.add(&permit.tpm, under);
            if let Some(allowance) = &mut self.tokens
                && Some(allowance.epoch) == permit.tokens_epoch
            {
                allowance.remaining = allowance.remaining.saturating_sub(under);
            }
        }
    }

    /// Adapts to what the upstream announced.
    ///
    /// - A limit lower than the configured one lowers it (never above the configured value; a later
    ///   higher announcement lifts it back up to at most the configured one). A zero limit is
    ///   ignored as garbage. The requests limit applies to the day window when its reset is longer
    ///   than a minute (some tiers announce requests per day), else to the minute window.
    /// - remaining n with reset d: at most n more calls (tokens) before `now + d`, drawn by
    ///   [`Self::try_acquire`]; remaining 0 therefore means no call before `now + d`. A remaining
    ///   without a reset is ignored: with no end to it, the windows and the 429 path are safer.
    /// - While an earlier announcement with a later or equal reset is in force, the lower remaining
    ///   wins: a reply that arrives late must not undo calls made since.
    pub fn apply_hints(&mut self, now: Instant, hints: &RateHints) {
        if let Some(limit) = hints.limit_requests.filter(|&limit| limit > 0) {
            let gate = if hints.reset_requests.is_some_and(|reset| reset > MINUTE) {
                &mut self.rpd
            } else {
                &mut self.rpm
            };
            gate.announced = Some(limit);
            gate.apply();
        }
        if let Some(limit) = hints.limit_tokens.filter(|&limit| limit > 0) {
            self.tpm.announced = Some(limit);
            self.tpm.apply();
        }
        if let (Some(remaining), Some(reset)) = (hints.remaining_requests, hints.reset_requests) {
            let epoch = self.epoch();
            Self::announce(&mut self.requests, now, remaining, now + reset, epoch);
        }
        if let (Some(remaining), Some(reset)) = (hints.remaining_tokens, hints.reset_tokens) {
            let epoch = self.epoch();
            Self::announce(&mut self.tokens, now, remaining, now + reset, epoch);
        }
    }

    /// Until when the upstream's announcements allow no call at all (remaining 0), if so.
    pub fn paused_until(&self, now: Instant) -> Option<Instant> {
        [self.requests, self.tokens]
            .into_iter()
            .flatten()
            .filter(|allowance| allowance.remaining == 0 && now < allowance.until)
            .map(|allowance| allowance.until)
            .max()
    }

    /// Used and limit of each window at `now`.
    pub fn snapshot(&mut self, now: Instant) -> LimitsSnapshot {
        LimitsSnapshot {
            rpm_used: self.rpm.window.used(now),
            rpm_limit: self.rpm.effective(),
            tpm_used: self.tpm.window.used(now),
            tpm_limit: self.tpm.effective(),
            rpd_used: self.rpd.window.used(now),
            rpd_limit: self.rpd.effective(),
        }
    }

    /// Changes the configured limits live; what was taken still counts against the new ones.
    pub fn set_limits(&mut self, rpm: Option<u64>, tpm: Option<u64>, rpd: Option<u64>) {
        for (gate, configured) in [(&mut self.rpm, rpm), (&mut self.tpm, tpm), (&mut self.rpd, rpd)] {
            gate.configured = configured;
            gate.apply();
        }
    }

    fn epoch(&mut self) -> u64 {
        self.next_epoch += 1;
        self.next_epoch
    }

    fn announce(slot: &mut Option<Allowance>, now: Instant, remaining: u64, until: Instant, epoch: u64) {
        match slot {
            Some(current) if now < current.until && until <= current.until => {
                current.remaining = current.remaining.min(remaining);
            }
            _ => *slot = Some(Allowance { remaining, until, epoch }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The most calls (weighted by amount) in any half-open window `[t, t + window)`, by brute force:
    /// the fullest window can always be slid right until it starts at a call.
    fn fullest_window(calls: &[(Instant, u64)], window: Duration) -> u64 {
        assert!(calls.windows(2).all(|pair| pair[0].0 <= pair[1].0), "calls are in time order");
        // prefix[i] = the amount of calls[..i], so any run of calls sums in O(1).
        let prefix: Vec<u64> = std::iter::once(0)
            .chain(calls.iter().scan(0, |sum, &(_, n)| {
                *sum += n;
                Some(*sum)
            }))
            .collect();
        calls
            .iter()
            .map(|&(start, _)| {
                let from = calls.partition_point(|&(at, _)| at < start);
                let to = calls.partition_point(|&(at, _)| at < start + window);
                prefix[to] - prefix[from]
            })
            .max()
            .unwrap_or(0)
    }

    /// A scheduler as the client actor runs it: each call arrives `gap()` after the previous one and
    /// waits for `try_acquire`; on Err it sleeps to the returned instant, waking up to `late` later.
    fn simulate(
        limits: &mut Limits,
        until: Instant,
        start: Instant,
        mut gap: impl FnMut() -> Duration,
        mut tokens: impl FnMut() -> u64,
        mut late: impl FnMut() -> Duration,
    ) -> Vec<(Instant, u64)> {
        let mut calls = Vec::new();
        let mut now = start;
        let mut arrival = start;
        while now < until {
            now = now.max(arrival);
            let want = tokens();
            loop {
                match limits.try_acquire(now, want) {
                    Ok(_) => break,
                    Err(at) => {
                        assert!(at > now, "a refusal must name a later instant");
                        now = at + late();
                    }
                }
            }
            calls.push((now, want));
            arrival += gap();
        }
        calls
    }

    fn calls_before(calls: &[(Instant, u64)], until: Instant) -> usize {
        calls.iter().filter(|&&(at, _)| at < until).count()
    }

    #[test]
    fn window_refuses_the_601st_call_within_60s() {
        let t0 = Instant::now();
        let mut window = SlidingWindow::new(600, MINUTE);
        for i in 0..600 {
            assert_eq!(window.check(t0 + ms(i * 99), 1), Ok(()));
            window.take(t0 + ms(i * 99), 1);
        }
        assert_eq!(window.check(t0 + ms(59_999), 1), Err(t0 + MINUTE));
    }

    #[test]
    fn a_take_stops_counting_exactly_one_window_later() {
        let t0 = Instant::now();
        let mut window = SlidingWindow::new(1, MINUTE);
        window.take(t0, 1);
        assert_eq!(window.check(t0 + MINUTE - ms(1), 1), Err(t0 + MINUTE));
        assert_eq!(window.check(t0 + MINUTE, 1), Ok(()));
        assert_eq!(window.used(t0 + MINUTE), 0);
    }

    #[test]
    fn refusal_names_when_enough_has_expired() {
        let t0 = Instant::now();
        let mut window = SlidingWindow::new(10, MINUTE);
        window.take(t0, 4);
        window.take(t0 + ms(1_000), 3);
        window.take(t0 + ms(2_000), 3);
        // 6 more need 6 freed: the first two entries (4 + 3).
        assert_eq!(window.check(t0 + ms(3_000), 6), Err(t0 + ms(61_000)));
        assert_eq!(window.check(t0 + ms(3_000), 4), Err(t0 + ms(60_000)));
    }

    #[test]
    fn greedy_caller_never_exceeds_600_in_any_60s_and_gets_the_full_rate() {
        let t0 = Instant::now();
        let mut limits = Limits::new(Some(600), None, None);
        let end = t0 + MINUTE * 12;
        let calls = simulate(&mut limits, end, t0, || Duration::ZERO, || 1, || Duration::ZERO);
        assert!(fullest_window(&calls, MINUTE) <= 600);
        assert!(calls_before(&calls, t0 + MINUTE * 10) >= 5_700);
    }

    #[test]
    fn random_arrivals_never_exceed_600_in_any_60s_and_get_close_to_the_rate() {
        for seed in [1, 7, 42] {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut late = fastrand::Rng::with_seed(seed + 100);
            let t0 = Instant::now();
            let mut limits = Limits::new(Some(600), None, None);
            // A mean gap of 75 ms offers 800 calls a minute, so a backlog forms and the limit binds.
            let calls = simulate(
                &mut limits,
                t0 + MINUTE * 12,
                t0,
                || ms(rng.u64(0..150)),
                || 1,
                || ms(late.u64(0..5)),
            );
            assert!(fullest_window(&calls, MINUTE) <= 600, "seed {seed}");
            let served = calls_before(&calls, t0 + MINUTE * 10);
            assert!(served >= 5_700, "seed {seed}: only {served} calls in 10 minutes");
        }
    }

    #[test]
    fn bursts_after_idle_never_exceed_600_in_any_60s() {
        let mut rng = fastrand::Rng::with_seed(3);
        let t0 = Instant::now();
        let mut limits = Limits::new(Some(600), None, None);
        // Mostly bursts of near-simultaneous calls, with idle stretches of up to 40 s between.
        let calls = simulate(
            &mut limits,
            t0 + MINUTE * 15,
            t0,
            || if rng.u8(0..100) < 2 { ms(rng.u64(0..40_000)) } else { ms(rng.u64(0..20)) },
            || 1,
            || Duration::ZERO,
        );
        assert!(fullest_window(&calls, MINUTE) <= 600);
    }

    #[test]
    fn token_window_holds_with_random_call_sizes() {
        let mut rng = fastrand::Rng::with_seed(11);
        let mut sizes = fastrand::Rng::with_seed(12);
        let t0 = Instant::now();
        let mut limits = Limits::new(Some(600), Some(20_000), None);
        let calls = simulate(
            &mut limits,
            t0 + MINUTE * 10,
            t0,
            || ms(rng.u64(0..100)),
            || sizes.u64(50..2_000),
            || Duration::ZERO,
        );
        assert!(fullest_window(&calls, MINUTE) <= 20_000);
        let tokens: u64 = calls.iter().filter(|&&(at, _)| at < t0 + MINUTE * 9).map(|&(_, n)| n).sum();
        assert!(tokens >= 9 * 20_000 * 95 / 100, "only {tokens} tokens in 9 minutes");
    }

    #[test]
    fn give_back_restores_capacity() {
        let t0 = Instant::now();
        let mut limits = Limits::new(Some(2), Some(1_000), None);
        let first = limits.try_acquire(t0, 400);
        let second = limits.try_acquire(t0, 400);
        assert!(first.is_ok() && second.is_ok());
        assert!(limits.try_acquire(t0, 100).is_err());
        if let Ok(permit) = second {
            limits.give_back(permit);
        }
        let snapshot = limits.snapshot(t0);
        assert_eq!((snapshot.rpm_used, snapshot.tpm_used), (1, 400));
        assert!(limits.try_acquire(t0, 600).is_ok());
    }

    #[test]
    fn settle_below_the_estimate_frees_tokens() {
        let t0 = Instant::now();
        let mut limits = Limits::new(None, Some(1_000), None);
        let permit = limits.try_acquire(t0, 800).expect("an empty window admits");
        assert!(limits.try_acquire(t0, 500).is_err());
        limits.settle(permit, 300);
        assert_eq!(limits.snapshot(t0).tpm_used, 300);
        assert!(limits.try_acquire(t0, 500).is_ok());
    }

    #[test]
    fn settle_above_the_estimate_counts_the_extra_tokens() {
        let t0 = Instant::now();
        let mut limits = Limits::new(None, Some(1_000), None);
        let permit = limits.try_acquire(t0, 300).expect("an empty window admits");
        limits.settle(permit, 900);
        assert_eq!(limits.snapshot(t0 + ms(10)).tpm_used, 900);
        // The extra tokens count from the call's own time, so they expire with it.
        assert_eq!(limits.try_acquire(t0 + ms(10), 200).map(|_| ()), Err(t0 + MINUTE));
        assert_eq!(limits.snapshot(t0 + MINUTE).tpm_used, 0);
    }

    #[test]
    fn correction_after_expiry_counts_nowhere() {
        let t0 = Instant::now();
        let mut limits = Limits::new(None, Some(1_000), None);
        let permit = limits.try_acquire(t0, 100).expect("an empty window admits");
        assert_eq!(limits.snapshot(t0 + MINUTE * 2).tpm_used, 0);
        limits.settle(permit, 5_000);
        assert_eq!(limits.snapshot(t0 + MINUTE * 2).tpm_used, 0);
    }

    #[test]
    fn token_refusal_takes_no_request() {
        let t0 = Instant::now();
        let mut limits = Limits::new(Some(10), Some(100), Some(100));
        assert!(limits.try_acquire(t0, 80).is_ok());
        assert_eq!(limits.try_acquire(t0, 50).map(|_| ()), Err(t0 + MINUTE));
        let snapshot = limits.snapshot(t0);
        assert_eq!((snapshot.rpm_used, snapshot.tpm_used, snapshot.rpd_used), (1, 80, 1));
    }

    #[test]
    fn refusal_names_the_latest_of_the_limits() {
        let t0 = Instant::now();
        let mut limits = Limits::new(Some(2), Some(100), None);
        assert!(limits.try_acquire(t0, 10).is_ok());
        assert!(limits.try_acquire(t0 + ms(5_000), 90).is_ok());
        // A request frees at t0 + 60 s, but 50 tokens only at t0 + 65 s.
        assert_eq!(limits.try_acquire(t0 + ms(6_000), 50).map(|_| ()), Err(t0 + ms(65_000)));
    }

    #[test]
    fn oversize_amount_is_admitted_when_the_window_is_empty() {
        let t0 = Instant::now();
        let mut limits = Limits::new(None, Some(1_000), None);
        assert!(limits.try_acquire(t0, 5_000).is_ok());
        assert_eq!(limits.try_acquire(t0 + ms(1), 10).map(|_| ()), Err(t0 + MINUTE));
        let mut window = SlidingWindow::new(1_000, MINUTE);
        window.take(t0, 10);
        assert_eq!(window.check(t0 + ms(1), 5_000), Err(t0 + MINUTE));
        assert_eq!(window.check(t0 + MINUTE, 5_000), Ok(()));
    }

    #[test]
    fn a_million_takes_in_a_day_keep_about_a_thousand_entries() {
        let t0 = Instant::now();
        let mut window = SlidingWindow::new(1_000_000, DAY);
        let step = DAY / 1_000_000;
        for i in 0..1_000_000u32 {
            window.take(t0 + step * i, 1);
        }
        assert!(window.entries() <= 1_001, "{} entries", window.entries());
        assert_eq!(window.used(t0 + step * 999_999), 1_000_000);
    }

    #[test]
    fn coalesced_takes_expire_with_the_latest_of_them() {
        let t0 = Instant::now();
        let mut window = SlidingWindow::new(2, MINUTE);
        window.take(t0, 1);
        window.take(t0 + ms(50), 1);
        assert_eq!(window.entries(), 1);
        assert_eq!(window.check(t0 + MINUTE, 1), Err(t0 + ms(60_050)));
        assert_eq!(window.check(t0 + ms(60_050), 2), Ok(()));
    }

    #[test]
    fn give_back_after_expiry_changes_nothing() {
        let t0 = Instant::now();
        let mut window = SlidingWindow::new(5, MINUTE);
        let old = window.take(t0, 3);
        window.take(t0 + ms(30_000), 2);
        assert_eq!(window.used(t0 + ms(61_000)), 2);
        window.give_back(old, 3);
        assert_eq!(window.used(t0 + ms(61_000)), 2);
    }

    #[test]
    fn remaining_zero_pauses_until_the_reset() {
        let t0 = Instant::now();
        let mut limits = Limits::new(Some(600), None, None);
        let hints =
            RateHints { remaining_requests: Some(0), reset_requests: Some(ms(7_000)), ..Default::default() };
        limits.apply_hints(t0, &hints);
        assert_eq!(limits.paused_until(t0), Some(t0 + ms(7_000)));
        assert_eq!(limits.try_acquire(t0 + ms(1), 1).map(|_| ()), Err(t0 + ms(7_000)));
        assert!(limits.try_acquire(t0 + ms(7_000), 1).is_ok());
        assert_eq!(limits.paused_until(t0 + ms(7_000)), None);
    }

    #[test]
    fn remaining_n_allows_n_calls_before_the_reset() {
        let t0 = Instant::now();
        let mut limits = Limits::new(None, None, None);
        let hints =
            RateHints { remaining_requests: Some(2), reset_requests: Some(ms(1_000)), ..Default::default() };
        limits.apply_hints(t0, &hints);
        let given_back = limits.try_acquire(t0, 1).expect("two remain");
        limits.give_back(given_back);
        assert!(limits.try_acquire(t0, 1).is_ok());
        assert!(limits.try_acquire(t0, 1).is_ok());
        assert_eq!(limits.try_acquire(t0, 1).map(|_| ()), Err(t0 + ms(1_000)));
        // A late reply about the same window must not hand back calls made since.
        let stale =
            RateHints { remaining_requests: Some(1), reset_requests: Some(ms(900)), ..Default::default() };
        limits.apply_hints(t0 + ms(50), &stale);
        assert_eq!(limits.try_acquire(t0 + ms(60), 1).map(|_| ()), Err(t0 + ms(1_000)));
    }

    #[test]
    fn remaining_tokens_limit_the_next_calls() {
        let t0 = Instant::now();
        let mut limits = Limits::new(None, Some(100_000), None);
        let hints =
            RateHints { remaining_tokens: Some(500), reset_tokens: Some(ms(2_000)), ..Default::default() };
        limits.apply_hints(t0, &hints);
        let permit = limits.try_acquire(t0, 400).expect("500 remain");
        assert_eq!(limits.try_acquire(t0, 200).map(|_| ()), Err(t0 + ms(2_000)));
        limits.settle(permit, 100);
        assert!(limits.try_acquire(t0, 200).is_ok());
    }

    #[test]
    fn announced_limit_lowers_the_configured_one_but_never_raises_it() {
        let t0 = Instant::now();
        let mut limits = Limits::new(Some(600), Some(90_000), None);
        let lower = RateHints { limit_requests: Some(500), limit_tokens: Some(40_000), ..Default::default() };
        limits.apply_hints(t0, &lower);
        let snapshot = limits.snapshot(t0);
        assert_eq!((snapshot.rpm_limit, snapshot.tpm_limit), (Some(500), Some(40_000)));
        let higher =
            RateHints { limit_requests: Some(10_000), limit_tokens: Some(1_000_000), ..Default::default() };
        limits.apply_hints(t0, &higher);
        let snapshot = limits.snapshot(t0);
        assert_eq!((snapshot.rpm_limit, snapshot.tpm_limit), (Some(600), Some(90_000)));
    }

    #[test]
    fn lowered_limit_refuses_what_the_configured_one_allowed() {
        let t0 = Instant::now();
        let mut limits = Limits::new(Some(600), None, None);
        limits.apply_hints(t0, &RateHints { limit_requests: Some(3), ..Default::default() });
        for _ in 0..3 {
            assert!(limits.try_acquire(t0, 1).is_ok());
        }
        assert_eq!(limits.try_acquire(t0, 1).map(|_| ()), Err(t0 + MINUTE));
    }

    #[test]
    fn requests_limit_with_a_long_reset_is_a_daily_limit() {
        let t0 = Instant::now();
        let mut limits = Limits::new(Some(60), None, Some(10_000));
        let daily = RateHints {
            limit_requests: Some(200),
            reset_requests: Some(ms(3_600_000)),
            ..Default::default()
        };
        limits.apply_hints(t0, &daily);
        let snapshot = limits.snapshot(t0);
        assert_eq!((snapshot.rpm_limit, snapshot.rpd_limit), (Some(60), Some(200)));
    }

    #[test]
    fn set_limits_keeps_what_was_taken() {
        let t0 = Instant::now();
        let mut limits = Limits::new(Some(10), None, None);
        for _ in 0..5 {
            assert!(limits.try_acquire(t0, 1).is_ok());
        }
        limits.set_limits(Some(5), None, None);
        assert!(limits.try_acquire(t0, 1).is_err());
        limits.set_limits(None, None, None);
        assert!(limits.try_acquire(t0, 1).is_ok());
        assert_eq!(
            limits.snapshot(t0),
            LimitsSnapshot { rpm_used: 6, tpm_used: 6, rpd_used: 6, ..Default::default() }
        );
    }
}
