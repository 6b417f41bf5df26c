//! Small numbers behind the batches pane: percentiles and per-second rates over a window.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The window a rate is averaged over.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);

/// The `p`th percentile (nearest rank) of sorted values.
pub fn percentile(sorted: &[Duration], p: usize) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    sorted.get(rank - 1).copied()
}

/// Amounts seen over the last [`RATE_WINDOW`], as a per-second rate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rate {
    seen: VecDeque<(Instant, u64)>,
}

impl Rate {
    /// Records `amount` at `now`.
    pub fn add(&mut self, now: Instant, amount: u64) {
        if amount > 0 {
            self.seen.push_back((now, amount));
        }
        self.forget(now);
    }

    fn forget(&mut self, now: Instant) {
        while self.seen.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) > RATE_WINDOW) {
            self.seen.pop_front();
        }
    }

    /// Per second over the window ending at `now`.
    pub fn per_second(&self, now: Instant) -> f64 {
        let total: u64 = self
            .seen
            .iter()
            .filter(|(at, _)| now.saturating_duration_since(*at) <= RATE_WINDOW)
            .map(|(_, n)| n)
            .sum();
        total as f64 / RATE_WINDOW.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let ms: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&ms, 50), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&ms, 95), Some(Duration::from_millis(95)));
        assert_eq!(percentile(&[Duration::from_millis(7)], 95), Some(Duration::from_millis(7)));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn rates_forget_what_left_the_window() {
        let start = Instant::now();
        let mut rate = Rate::default();
        rate.add(start, 100);
        assert_eq!(rate.per_second(start), 10.0);
        assert_eq!(rate.per_second(start + Duration::from_secs(11)), 0.0);
    }
}
