//! Tests of [`Limits`]: schedulers run against it must never overfill any window of the stated
//! length, and announced hints must lower, pause and allow as documented.

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
        let calls =
            simulate(&mut limits, t0 + MINUTE * 12, t0, || ms(rng.u64(0..150)), || 1, || ms(late.u64(0..5)));
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
    let daily =
        RateHints { limit_requests: Some(200), reset_requests: Some(ms(3_600_000)), ..Default::default() };
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

#[test]
fn blocked_names_the_limit_that_holds_a_call_longest() {
    let t0 = Instant::now();
    let mut limits = Limits::new(Some(1), None, Some(1));
    assert_eq!(limits.blocked(t0, 10), None);
    let _permit = limits.try_acquire(t0, 10).expect("first call fits");
    let (at, limit) = limits.blocked(t0, 10).expect("both windows are spent");
    assert_eq!((at, limit), (t0 + DAY, Limit::Rpd));
    let mut minute = Limits::new(Some(1), None, None);
    let _permit = minute.try_acquire(t0, 10).expect("first call fits");
    assert_eq!(minute.blocked(t0, 10), Some((t0 + MINUTE, Limit::Rpm)));
}
