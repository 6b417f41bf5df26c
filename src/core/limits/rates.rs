//! Answers per second measured at each concurrency limit, and whether one more call in flight
//! pays: a gain is believed only when it stands out of the noise the windows show.
//!
//! Each limit keeps the rates of its last [`MEMORY`] windows. The noise is pooled over every
//! limit measured more than once: the spread of a window's rate around its limit's mean, relative
//! to that mean. A limit pays over the one below when its mean is [`MIN_GAIN`] higher and the
//! difference is at least [`Z`] standard errors of the two means — so one lucky window does not
//! decide, and revisits make a small real gain show.

use std::collections::{BTreeMap, VecDeque};

/// Windows a limit's rate is averaged over, at most: revisits make it surer, and it still follows
/// a server that changes.
const MEMORY: usize = 8;
/// How much more a limit's rate must be than the next lower limit's for the call added to count
/// as paying: 5%.
const MIN_GAIN: f64 = 0.05;
/// Standard errors the gain must stand out by.
const Z: f64 = 0.5;

/// The windows measured at one limit.
#[derive(Debug, Clone, PartialEq, Default)]
struct Windows {
    recent: VecDeque<f64>,
    /// Every window ever measured at this limit.
    count: u32,
}

impl Windows {
    fn mean(&self) -> f64 {
        self.recent.iter().sum::<f64>() / self.recent.len().max(1) as f64
    }

    /// The squared spread around the mean, relative to it, summed; and its degrees of freedom.
    fn relative_spread(&self) -> (f64, usize) {
        let mean = self.mean();
        if self.recent.len() < 2 || mean <= 0.0 {
            return (0.0, 0);
        }
        let sum = self.recent.iter().map(|r| ((r - mean) / mean).powi(2)).sum();
        (sum, self.recent.len() - 1)
    }
}

/// Answers per second by limit.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rates {
    by_limit: BTreeMap<usize, Windows>,
}

impl Rates {
    /// A window at `limit` gave `rate` answers per second.
    pub fn record(&mut self, limit: usize, rate: f64) {
        let windows = self.by_limit.entry(limit).or_default();
        if windows.recent.len() == MEMORY {
            windows.recent.pop_front();
        }
        windows.recent.push_back(rate);
        windows.count += 1;
    }

    /// Windows measured at `limit`, ever.
    pub fn windows(&self, limit: usize) -> u32 {
        self.by_limit.get(&limit).map_or(0, |w| w.count)
    }

    /// Whether `limit` gives clearly more answers per second than `limit − 1`; false while
    /// either is unmeasured.
    pub fn pays(&self, limit: usize) -> bool {
        let (Some(here), Some(below)) =
            (self.by_limit.get(&limit), limit.checked_sub(1).and_then(|l| self.by_limit.get(&l)))
        else {
            return false;
        };
        let (high, low) = (here.mean(), below.mean());
        if low <= 0.0 || high < low * (1.0 + MIN_GAIN) {
            return false;
        }
        let Some(noise) = self.noise() else {
            // Nothing measured twice yet: the gain alone decides.
            return true;
        };
        let error = noise * (1.0 / here.recent.len() as f64 + 1.0 / below.recent.len() as f64).sqrt();
        high / low - 1.0 >= Z * error
    }

    /// One window's spread around its limit's mean, relative to the mean, pooled over the limits
    /// measured more than once.
    fn noise(&self) -> Option<f64> {
        let (sum, freedom) = self
            .by_limit
            .values()
            .map(Windows::relative_spread)
            .fold((0.0, 0), |(s, f), (a, b)| (s + a, f + b));
        (freedom > 0).then(|| (sum / freedom as f64).sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gain_counts_once_it_stands_out_of_the_noise() {
        let mut rates = Rates::default();
        // Windows at 2 spread ±10%.
        for rate in [9.0, 11.0, 9.0, 11.0] {
            rates.record(2, rate);
        }
        rates.record(3, 10.6);
        // 6% more on one window, with 10% noise per window: not yet.
        assert!(!rates.pays(3));
        for rate in [10.6, 11.0, 10.8, 10.6, 11.0, 10.8, 10.8] {
            rates.record(3, rate);
        }
        assert!(rates.pays(3));
        // Nothing below 2 measured.
        assert!(!rates.pays(2));
    }

    #[test]
    fn without_noise_measured_the_gain_alone_decides() {
        let mut rates = Rates::default();
        rates.record(1, 10.0);
        rates.record(2, 10.4);
        assert!(!rates.pays(2));
        rates.record(3, 11.0);
        assert!(rates.pays(3));
    }

    #[test]
    fn old_windows_are_forgotten() {
        let mut rates = Rates::default();
        for _ in 0..MEMORY {
            rates.record(1, 1.0);
        }
        for _ in 0..MEMORY {
            rates.record(1, 2.0);
        }
        assert_eq!(rates.windows(1), 2 * MEMORY as u32);
        rates.record(2, 2.2);
        rates.record(2, 2.2);
        assert!(rates.pays(2), "the mean at 1 is 2.0 now");
    }
}
