//! Retry timing: how long to wait before calling an upstream again after a failure.
//!
//! Pure arithmetic; the client actor draws the jitter and owns the timers, so the same numbers can
//! be checked here without a clock or a random source.

use std::time::Duration;

/// Exponential backoff with "equal jitter": d = min(max, base * 2^attempt); result in [d/2, d]
/// using `jitter` in [0,1) (the caller draws it, so this stays pure). attempt 0 = first retry.
///
/// Half the delay is fixed so a retry never comes back almost at once; the jittered half spreads
/// the retries of many clients that failed together. A `jitter` outside [0, 1] (or NaN) is clamped.
pub fn backoff(attempt: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    // 2^attempt overflows a u32 from attempt 32, and base * 2^attempt may overflow a Duration
    // sooner: either way the delay has long reached `max`.
    let full = 1u32
        .checked_shl(attempt)
        .and_then(|factor| base.checked_mul(factor))
        .map_or(max, |delay| delay.min(max));
    let half = full / 2;
    let jitter = if jitter.is_nan() { 0.0 } else { jitter.clamp(0.0, 1.0) };
    half + (full - half).mul_f64(jitter)
}

/// What a Retry-After said, clamped to `max`; None (absent/garbage) → None so the caller backs off.
///
/// The clamp keeps a hostile or mistaken upstream ("retry after a week") from parking the client;
/// past `max` the client retries and, if refused again, asks again.
pub fn clamp_retry_after(retry_after: Option<Duration>, max: Duration) -> Option<Duration> {
    retry_after.map(|delay| delay.min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(30);

    #[test]
    fn first_retry_waits_between_half_and_all_of_base() {
        assert_eq!(backoff(0, BASE, MAX, 0.0), Duration::from_millis(250));
        assert_eq!(backoff(0, BASE, MAX, 0.5), Duration::from_millis(375));
        assert!(backoff(0, BASE, MAX, 0.999_999) <= BASE);
    }

    #[test]
    fn each_retry_doubles_the_delay() {
        assert_eq!(backoff(1, BASE, MAX, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(2, BASE, MAX, 0.0), Duration::from_millis(1_000));
        assert_eq!(backoff(3, BASE, MAX, 0.0), Duration::from_millis(2_000));
    }

    #[test]
    fn delay_stops_growing_at_max() {
        assert_eq!(backoff(10, BASE, MAX, 0.0), MAX / 2);
        assert!(backoff(10, BASE, MAX, 0.999_999) <= MAX);
    }

    #[test]
    fn huge_attempts_do_not_overflow() {
        for attempt in [31, 32, 33, 64, 1_000, u32::MAX] {
            let delay = backoff(attempt, BASE, MAX, 0.5);
            assert!(delay >= MAX / 2 && delay <= MAX, "attempt {attempt}: {delay:?}");
        }
        assert_eq!(backoff(40, Duration::MAX, Duration::MAX, 1.0), Duration::MAX);
    }

    #[test]
    fn jitter_outside_the_unit_interval_is_clamped() {
        assert_eq!(backoff(0, BASE, MAX, -3.0), Duration::from_millis(250));
        assert_eq!(backoff(0, BASE, MAX, 7.0), BASE);
        assert_eq!(backoff(0, BASE, MAX, f64::NAN), Duration::from_millis(250));
    }

    #[test]
    fn retry_after_is_honoured_up_to_max() {
        assert_eq!(clamp_retry_after(Some(Duration::from_secs(3)), MAX), Some(Duration::from_secs(3)));
        assert_eq!(clamp_retry_after(Some(Duration::from_secs(3_600)), MAX), Some(MAX));
        assert_eq!(clamp_retry_after(Some(Duration::ZERO), MAX), Some(Duration::ZERO));
    }

    #[test]
    fn missing_retry_after_leaves_the_caller_to_back_off() {
        assert_eq!(clamp_retry_after(None, MAX), None);
    }
}
