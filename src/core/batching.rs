//! The batching rule and the lane pick: when a lane's next batch may go, and which ready lane the
//! batch former serves when the pool cannot take them all.
//!
//! The former keeps a [`LaneView`] per lane and asks [`ready_at`], [`pick`] and [`next_wake`]; it
//! owns the timers and the clock, so these rules are tested here with made-up instants.

use std::time::Duration;

use tokio::time::Instant;

/// What the batch former knows of one lane.
#[derive(Debug, Clone)]
pub struct LaneView {
    /// Priority class: higher is served first.
    pub rank: u32,
    /// Items waiting.
    pub len: usize,
    /// When the oldest waiting item arrived; `Some` whenever `len > 0`.
    pub oldest: Option<Instant>,
    /// How long the oldest item may wait for a fuller batch.
    pub window: Duration,
    /// Items that make a full batch (0 is treated as 1).
    pub max_batch: usize,
    /// The least time between two batches of this lane.
    pub delay: Duration,
    /// When this lane's previous batch went, if any.
    pub last_batch: Option<Instant>,
    /// True for fanout lanes, where a batch of n items costs n upstream calls rather than one;
    /// informational for the caller's capacity check.
    pub cost_per_batch_is_items: bool,
}

/// When this lane's next batch may go: None if empty. A batch is ready when the oldest item has waited
/// `window` or the lane holds `max_batch` items (seed 002), and never sooner than `delay` after the
/// lane's previous batch (seed 000's BATCH_DELAY).
///
/// A full lane is ready since its oldest item arrived (any instant not after now would do). A lane
/// with items but no `oldest` breaks the caller's invariant and is reported as not ready.
pub fn ready_at(lane: &LaneView) -> Option<Instant> {
    if lane.len == 0 {
        return None;
    }
    let oldest = lane.oldest?;
    let batch_ready = if lane.len >= lane.max_batch.max(1) { oldest } else { oldest + lane.window };
    Some(match lane.last_batch {
        Some(last) => batch_ready.max(last + lane.delay),
        None => batch_ready,
    })
}

/// Of the lanes ready at `now` (ready_at <= now), the one to serve next when capacity is short:
/// highest effective rank = rank + (waited / aging) where waited = now - oldest (aging so a low lane
/// is never starved; aging == 0 disables it); ties → the lane whose oldest item is older, then lower index.
///
/// The effective ranks are compared exactly, scaled by `aging`: rank * aging + waited, in
/// nanoseconds, so aging is smooth and no float rounding decides a tie.
pub fn pick(lanes: &[LaneView], now: Instant, aging: Duration) -> Option<usize> {
    let aging_ns = aging.as_nanos();
    lanes
        .iter()
        .enumerate()
        .filter(|(_, lane)| ready_at(lane).is_some_and(|at| at <= now))
        .filter_map(|(index, lane)| lane.oldest.map(|oldest| (index, lane, oldest)))
        // max_by_key keeps the last maximum, so the key ends with the reversed index to prefer the
        // lower one, and with reversed age of the oldest item (older = smaller instant = preferred).
        .max_by_key(|&(index, lane, oldest)| {
            let waited_ns = now.saturating_duration_since(oldest).as_nanos();
            let effective = if aging_ns == 0 {
                u128::from(lane.rank)
            } else {
                u128::from(lane.rank) * aging_ns + waited_ns
            };
            (effective, std::cmp::Reverse(oldest), std::cmp::Reverse(index))
        })
        .map(|(index, _, _)| index)
}

/// The earliest ready_at among lanes not ready at `now`, for the former's wake-up timer.
pub fn next_wake(lanes: &[LaneView], now: Instant) -> Option<Instant> {
    lanes.iter().filter_map(ready_at).filter(|&at| at > now).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A lane of `rank` holding `len` items, the oldest from `oldest`, window 200 ms, batches of 4.
    fn lane(rank: u32, len: usize, oldest: Instant) -> LaneView {
        LaneView {
            rank,
            len,
            oldest: (len > 0).then_some(oldest),
            window: ms(200),
            max_batch: 4,
            delay: Duration::ZERO,
            last_batch: None,
            cost_per_batch_is_items: false,
        }
    }

    #[test]
    fn empty_lane_is_never_ready() {
        let t0 = Instant::now();
        assert_eq!(ready_at(&lane(1, 0, t0)), None);
    }

    #[test]
    fn partial_batch_is_ready_when_the_oldest_item_has_waited_the_window() {
        let t0 = Instant::now();
        assert_eq!(ready_at(&lane(1, 3, t0)), Some(t0 + ms(200)));
    }

    #[test]
    fn full_batch_is_ready_at_once() {
        let t0 = Instant::now();
        assert_eq!(ready_at(&lane(1, 4, t0)), Some(t0));
        assert_eq!(ready_at(&lane(1, 9, t0)), Some(t0));
    }

    #[test]
    fn zero_window_lane_is_ready_as_soon_as_an_item_arrives() {
        let t0 = Instant::now();
        let bulk = LaneView { window: Duration::ZERO, ..lane(0, 1, t0) };
        assert_eq!(ready_at(&bulk), Some(t0));
    }

    #[test]
    fn batch_waits_for_the_delay_after_the_previous_batch() {
        let t0 = Instant::now();
        let full = LaneView { delay: ms(100), last_batch: Some(t0 + ms(50)), ..lane(1, 4, t0) };
        assert_eq!(ready_at(&full), Some(t0 + ms(150)));
        let partial = LaneView { delay: ms(100), last_batch: Some(t0), ..lane(1, 1, t0) };
        assert_eq!(ready_at(&partial), Some(t0 + ms(200)));
    }

    #[test]
    fn lane_without_an_oldest_item_is_not_ready() {
        let t0 = Instant::now();
        let broken = LaneView { oldest: None, ..lane(1, 3, t0) };
        assert_eq!(ready_at(&broken), None);
    }

    #[test]
    fn high_lane_is_served_before_low() {
        let t0 = Instant::now();
        let lanes = [lane(1, 4, t0), lane(3, 4, t0 + ms(100))];
        assert_eq!(pick(&lanes, t0 + ms(100), Duration::from_secs(10)), Some(1));
    }

    #[test]
    fn lanes_not_ready_are_not_picked() {
        let t0 = Instant::now();
        let lanes = [lane(3, 1, t0), lane(1, 4, t0)];
        assert_eq!(pick(&lanes, t0 + ms(100), Duration::from_secs(10)), Some(1));
        assert_eq!(pick(&[lane(3, 1, t0)], t0 + ms(100), Duration::from_secs(10)), None);
    }

    #[test]
    fn low_lane_overtakes_high_after_waiting_long_enough() {
        // Aging 10 s: rank 1 + 21 s / 10 s = 3.1 beats rank 3 + 0.1 s / 10 s = 3.01,
        // while at 19 s the low lane's 2.9 still loses to 3.01.
        let t0 = Instant::now();
        let aging = Duration::from_secs(10);
        let now = t0 + Duration::from_secs(21);
        let lanes = [lane(3, 4, now - ms(100)), lane(1, 4, t0)];
        assert_eq!(pick(&lanes, now, aging), Some(1));
        let earlier = t0 + Duration::from_secs(19);
        let lanes = [lane(3, 4, earlier - ms(100)), lane(1, 4, t0)];
        assert_eq!(pick(&lanes, earlier, aging), Some(0));
    }

    #[test]
    fn zero_aging_never_lets_a_low_lane_overtake() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(3_600);
        let lanes = [lane(3, 4, now), lane(1, 4, t0)];
        assert_eq!(pick(&lanes, now, Duration::ZERO), Some(0));
    }

    #[test]
    fn equal_ranks_serve_the_older_item_first() {
        let t0 = Instant::now();
        let lanes = [lane(2, 4, t0 + ms(50)), lane(2, 4, t0)];
        assert_eq!(pick(&lanes, t0 + ms(100), Duration::ZERO), Some(1));
        assert_eq!(pick(&lanes, t0 + ms(100), Duration::from_secs(10)), Some(1));
    }

    #[test]
    fn full_ties_serve_the_lower_index() {
        let t0 = Instant::now();
        let lanes = [lane(2, 4, t0), lane(2, 4, t0), lane(2, 4, t0)];
        assert_eq!(pick(&lanes, t0 + ms(100), Duration::from_secs(10)), Some(0));
    }

    #[test]
    fn next_wake_is_the_earliest_lane_not_yet_ready() {
        let t0 = Instant::now();
        let lanes = [lane(1, 1, t0), lane(2, 1, t0 + ms(50)), lane(3, 4, t0), lane(0, 0, t0)];
        assert_eq!(next_wake(&lanes, t0 + ms(10)), Some(t0 + ms(200)));
        assert_eq!(next_wake(&lanes, t0 + ms(200)), Some(t0 + ms(250)));
        assert_eq!(next_wake(&lanes, t0 + ms(250)), None);
    }
}
