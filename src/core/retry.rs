//! (placeholder)
use std::time::Duration;
/// x
pub fn backoff(attempt: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let d = base.saturating_mul(1u32 << attempt.min(20)).min(max);
    d / 2 + d.mul_f64(jitter) / 2
}
/// x
pub fn clamp_retry_after(retry_after: Option<Duration>, max: Duration) -> Option<Duration> {
    retry_after.map(|d| d.min(max))
}
