//! [`SlidingWindow`]: one exact "N per window" limit, kept as a log of what was taken and when.
//!
//! The log is coalesced so its length stays bounded whatever the limit, and it only ever
//! over-counts, so no window of the stated length holds more than the limit.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

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

    /// Removes up to `amount` from the newest entries, for a take whose receipt was not kept (it
    /// is almost always the newest). Returning from the newest frees the window no sooner than
    /// returning from the take itself would.
    pub fn give_back_latest(&mut self, now: Instant, mut amount: u64) {
        self.expire(now);
        while amount > 0 {
            let Some(last) = self.entries.back_mut() else { break };
            let returned = amount.min(last.amount);
            last.amount -= returned;
            self.used = self.used.saturating_sub(returned);
            amount -= returned;
            if last.amount == 0 {
                self.entries.pop_back();
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_given_back_comes_off_the_newest_takes() {
        let start = Instant::now();
        let mut window = SlidingWindow::new(10, Duration::from_secs(60));
        window.take(start, 6);
        window.take(start + Duration::from_secs(30), 4);
        assert!(window.check(start + Duration::from_secs(31), 1).is_err());
        window.give_back_latest(start + Duration::from_secs(31), 5);
        assert_eq!(window.used(start + Duration::from_secs(31)), 5);
        // The newest take went whole and one of the older: room for 5 now, and the rest at 60 s.
        assert!(window.check(start + Duration::from_secs(31), 5).is_ok());
        assert_eq!(window.used(start + Duration::from_secs(60)), 0);
        // More than was taken gives back what there is.
        window.take(start + Duration::from_secs(61), 3);
        window.give_back_latest(start + Duration::from_secs(61), 100);
        assert_eq!(window.used(start + Duration::from_secs(61)), 0);
    }
    use crate::core::limits::{DAY, MINUTE};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
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
}
