//! A model test of the scheduler's pure core, with no clock and no actors: random arrivals of
//! several owners and jobs across three lanes, served by the share rule ([`Turns`]) over the
//! lanes and the fair queue ([`FairQueue`]) inside each. Invariants, for many random runs:
//! nothing is lost or duplicated; between lanes, rank order holds except on the share's turns
//! (at most one in `every`, never two lower dispatches in a row while the top lane waits); no
//! owner waiting in a lane is passed over more than once per other owner (no owner starved).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ferry::core::batching::{LowerShare, Turns};
use ferry::core::fair::{Accepted, FairQueue};
use tokio::time::Instant;

const LANES: [u32; 3] = [3, 2, 1];
const OWNERS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Item {
    id: u64,
    at: Instant,
    lane: usize,
    owner: usize,
}

impl Accepted for Item {
    fn id(&self) -> u64 {
        self.id
    }
    fn accepted_at(&self) -> Instant {
        self.at
    }
}

#[test]
fn random_arrivals_across_lanes_and_owners_keep_every_invariant() {
    let t0 = Instant::now();
    let share = LowerShare::new(0.1);
    let key = |s: String| -> Arc<str> { Arc::from(s.as_str()) };
    for seed in 0..300 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut lanes: Vec<FairQueue<Item>> = LANES.iter().map(|_| FairQueue::default()).collect();
        let mut turns = Turns::default();
        let (mut next_id, mut accepted, mut served) = (0u64, HashSet::new(), HashSet::new());
        let mut lower_run = 0u32;
        let mut top_streak_while_lower_waits = 0u32;
        // Per lane and owner: pops of other owners of that lane since this owner was last served.
        let mut passed_over: BTreeMap<(usize, usize), usize> = BTreeMap::new();
        for _ in 0..400 {
            // Arrivals: a few items of a random owner and job in a random lane.
            for _ in 0..rng.usize(0..3) {
                let (lane, owner, job) = (rng.usize(0..LANES.len()), rng.usize(0..OWNERS), rng.usize(0..2));
                for _ in 0..rng.usize(1..4) {
                    next_id += 1;
                    let item = Item { id: next_id, at: t0 + Duration::from_millis(next_id), lane, owner };
                    lanes[lane].push(&key(owner.to_string()), &key(format!("{owner}/{job}")), item);
                    accepted.insert(item);
                }
            }
            // One dispatch.
            let waiting = lanes
                .iter_mut()
                .enumerate()
                .filter_map(|(i, q)| q.oldest().map(|oldest| (i, LANES[i], oldest)));
            let Some(choice) = turns.choose(waiting, share) else { continue };
            turns.served(choice);
            let top_waiting =
                lanes.iter().enumerate().filter(|(_, q)| !q.is_empty()).map(|(i, _)| LANES[i]).max();
            let lane = choice.index;
            let owners_before: Vec<usize> =
                lanes[lane].top_owners(OWNERS).iter().filter_map(|(o, _)| o.parse().ok()).collect();
            let item = lanes[lane].pop().expect("the chosen lane holds an item");
            assert_eq!(item.lane, lane);
            assert!(served.insert(item), "item {} served twice", item.id);

            // Rank order: a lower lane only on the share's turn, and never twice in a row.
            if Some(LANES[lane]) < top_waiting {
                lower_run += 1;
                assert!(lower_run <= 1, "two lower dispatches in a row while a higher lane waited");
                assert!(
                    top_streak_while_lower_waits + 1 >= share.every(),
                    "a lower lane went before its turn"
                );
                top_streak_while_lower_waits = 0;
            } else {
                lower_run = 0;
                let lower_waits =
                    lanes.iter().enumerate().any(|(i, q)| !q.is_empty() && LANES[i] < LANES[lane]);
                top_streak_while_lower_waits = if lower_waits { top_streak_while_lower_waits + 1 } else { 0 };
            }
            // Owners take turns in the lane: nobody waiting is passed over more than once by
            // each other owner.
            for other in owners_before.iter().filter(|o| **o != item.owner) {
                let count = passed_over.entry((lane, *other)).or_default();
                *count += 1;
                assert!(*count < OWNERS, "owner {other} in lane {lane} passed over {count} times in a row");
            }
            passed_over.insert((lane, item.owner), 0);
        }
        // Drain: everything accepted comes out exactly once.
        for queue in &mut lanes {
            while let Some(item) = queue.pop() {
                assert!(served.insert(item), "item {} served twice", item.id);
            }
        }
        assert_eq!(served, accepted, "seed {seed}: an item was lost");
    }
}
