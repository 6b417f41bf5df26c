//! The batching rule and the lane pick: when a lane's next batch may go, and which ready lane the
//! batch former serves when the pool cannot take them all (rank first, with a bounded share for
//! waiting lower lanes: [`Turns`]).
//!
//! The former keeps a [`LaneView`] per lane and asks [`ready_at`], [`ready`], [`Turns::choose`]
//! and [`next_wake`]; it owns the timers and the clock, so these rules are tested here with
//! made-up instants. The client mailboxes apply the same [`Turns`] to their calls.

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

/// How much of the dispatching goes to waiting lower lanes while a higher one has work: one
/// dispatch in `every` (0: none — strict priority, a lower lane waits until the higher ones are
/// empty). Bounded both ways: a lower lane always progresses at this share, and a fresh item of
/// the highest lane waits for at most one lower dispatch, never for a whole backlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LowerShare {
    every: u32,
}

impl LowerShare {
    /// The share as a fraction of dispatches (`[batching] lower_share`): 0.1 is one in ten.
    /// Values at or below zero mean strict priority; the share is at most one half.
    pub fn new(share: f64) -> Self {
        if share.is_nan() || share <= 0.0 {
            return Self { every: 0 };
        }
        let every = (1.0 / share.min(0.5)).round();
        Self { every: if every >= f64::from(u32::MAX) { 0 } else { every as u32 } }
    }

    /// One dispatch in how many goes to a waiting lower lane (0: none).
    pub fn every(self) -> u32 {
        self.every
    }
}

/// Which waiting queue the next dispatch serves, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// The queue chosen (an index into what the caller offered).
    pub index: usize,
    /// It is a lower lane's turn under the share.
    pub lower_turn: bool,
    /// Lower lanes were waiting when a top lane was chosen.
    lower_waiting: bool,
}

/// The share rule's memory: top-rank dispatches since a waiting lower lane was last served.
/// The batch former and every client mailbox keep one each.
#[derive(Debug, Clone, Default)]
pub struct Turns {
    streak: u32,
}

impl Turns {
    /// Of the waiting queues `(index, rank, oldest item)`, the one to serve next: the highest
    /// rank (its oldest item first, then the lower index), except every `share.every()`-th
    /// dispatch while a lower queue waits, which goes to the lower queue whose oldest item has
    /// waited longest. Call [`Turns::served`] with the choice once it is dispatched.
    pub fn choose(
        &self,
        waiting: impl IntoIterator<Item = (usize, u32, Instant)>,
        share: LowerShare,
    ) -> Option<Choice> {
        let waiting: Vec<(usize, u32, Instant)> = waiting.into_iter().collect();
        let top = waiting.iter().map(|w| w.1).max()?;
        let best_of = |of: &mut dyn Iterator<Item = &(usize, u32, Instant)>| {
            of.min_by_key(|(index, rank, oldest)| (*oldest, std::cmp::Reverse(*rank), *index)).map(|w| w.0)
        };
        let lower = best_of(&mut waiting.iter().filter(|w| w.1 < top));
        if let Some(index) = lower
            && share.every > 0
            && self.streak + 1 >= share.every
        {
            return Some(Choice { index, lower_turn: true, lower_waiting: true });
        }
        let index = best_of(&mut waiting.iter().filter(|w| w.1 == top))?;
        Some(Choice { index, lower_turn: false, lower_waiting: lower.is_some() })
    }

    /// Records that `choice` was dispatched.
    pub fn served(&mut self, choice: Choice) {
        self.streak = match (choice.lower_turn, choice.lower_waiting) {
            (true, _) => 0,
            (false, true) => self.streak.saturating_add(1),
            (false, false) => 0,
        };
    }
}

/// The lanes ready at `now` (ready_at <= now), as the share rule takes them.
pub fn ready(lanes: &[LaneView], now: Instant) -> impl Iterator<Item = (usize, u32, Instant)> + '_ {
    lanes
        .iter()
        .enumerate()
        .filter(move |(_, lane)| ready_at(lane).is_some_and(|at| at <= now))
        .filter_map(|(index, lane)| lane.oldest.map(|oldest| (index, lane.rank, oldest)))
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

    fn pick(lanes: &[LaneView], now: Instant, turns: &mut Turns, share: LowerShare) -> Option<usize> {
        let choice = turns.choose(ready(lanes, now), share)?;
        turns.served(choice);
        Some(choice.index)
    }

    const ONE_IN_TEN: f64 = 0.1;

    #[test]
    fn high_lane_is_served_before_low() {
        let t0 = Instant::now();
        let lanes = [lane(1, 4, t0), lane(3, 4, t0 + ms(100))];
        let share = LowerShare::new(ONE_IN_TEN);
        assert_eq!(pick(&lanes, t0 + ms(100), &mut Turns::default(), share), Some(1));
    }

    #[test]
    fn lanes_not_ready_are_not_picked() {
        let t0 = Instant::now();
        let share = LowerShare::new(ONE_IN_TEN);
        let lanes = [lane(3, 1, t0), lane(1, 4, t0)];
        assert_eq!(pick(&lanes, t0 + ms(100), &mut Turns::default(), share), Some(1));
        assert_eq!(pick(&[lane(3, 1, t0)], t0 + ms(100), &mut Turns::default(), share), None);
    }

    #[test]
    fn a_waiting_lower_lane_gets_one_dispatch_in_ten_however_old() {
        // The low lane's backlog is an hour old: it still gets one turn in ten, no more.
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(3_600);
        let lanes = [lane(3, 4, now), lane(1, 4, t0)];
        let (share, mut turns) = (LowerShare::new(ONE_IN_TEN), Turns::default());
        let picks: Vec<usize> = (0..30).filter_map(|_| pick(&lanes, now, &mut turns, share)).collect();
        let low_turns: Vec<usize> =
            picks.iter().enumerate().filter(|(_, p)| **p == 1).map(|(i, _)| i).collect();
        assert_eq!(low_turns, [9, 19, 29]);
    }

    #[test]
    fn a_fresh_high_item_waits_for_at_most_one_lower_dispatch() {
        // Only low work for a long time: low is served, and the streak does not build up credit.
        let t0 = Instant::now();
        let (share, mut turns) = (LowerShare::new(ONE_IN_TEN), Turns::default());
        let only_low = [lane(3, 0, t0), lane(1, 4, t0)];
        for _ in 0..50 {
            assert_eq!(pick(&only_low, t0, &mut turns, share), Some(1));
        }
        let now = t0 + Duration::from_secs(30);
        let both = [lane(3, 4, now), lane(1, 4, t0)];
        assert_eq!(pick(&both, now, &mut turns, share), Some(0));
    }

    #[test]
    fn the_lower_turn_goes_to_the_lower_lane_waiting_longest() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(10);
        let lanes = [lane(3, 4, now), lane(2, 4, t0 + ms(500)), lane(0, 4, t0)];
        let (share, mut turns) = (LowerShare::new(0.5), Turns::default());
        assert_eq!(pick(&lanes, now, &mut turns, share), Some(0));
        assert_eq!(pick(&lanes, now, &mut turns, share), Some(2));
    }

    #[test]
    fn strict_priority_never_serves_a_lower_lane_while_a_higher_waits() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(3_600);
        let lanes = [lane(3, 4, now), lane(1, 4, t0)];
        let (share, mut turns) = (LowerShare::new(0.0), Turns::default());
        assert!((0..100).all(|_| pick(&lanes, now, &mut turns, share) == Some(0)));
    }

    #[test]
    fn share_is_one_in_round_of_its_inverse_and_at_most_a_half() {
        assert_eq!(LowerShare::new(0.1).every(), 10);
        assert_eq!(LowerShare::new(0.25).every(), 4);
        assert_eq!(LowerShare::new(0.9).every(), 2);
        assert_eq!(LowerShare::new(0.0).every(), 0);
        assert_eq!(LowerShare::new(-1.0).every(), 0);
    }

    #[test]
    fn equal_ranks_serve_the_older_item_first() {
        let t0 = Instant::now();
        let lanes = [lane(2, 4, t0 + ms(50)), lane(2, 4, t0)];
        let share = LowerShare::new(ONE_IN_TEN);
        assert_eq!(pick(&lanes, t0 + ms(100), &mut Turns::default(), share), Some(1));
    }

    #[test]
    fn full_ties_serve_the_lower_index() {
        let t0 = Instant::now();
        let lanes = [lane(2, 4, t0), lane(2, 4, t0), lane(2, 4, t0)];
        let share = LowerShare::new(ONE_IN_TEN);
        assert_eq!(pick(&lanes, t0 + ms(100), &mut Turns::default(), share), Some(0));
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
