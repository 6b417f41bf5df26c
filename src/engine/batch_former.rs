//! BatchFormer: decides which lane releases a batch, and when.
//!
//! It keeps a view of every lane (length, oldest item, settings) and of the pool's free call
//! slots, and applies the pure rules of [`crate::core::batching`]: a lane is ready when its
//! oldest item has waited `window_ms` or it holds `max_batch` items, never sooner than `delay_ms`
//! after its previous batch; when slots are short, the highest rank goes first, and a waiting
//! lower lane gets `[batching] lower_share` of the batches ([`Turns`]). A single timer wakes it
//! for the next window to close.

use std::time::Duration;

use actix::prelude::*;
use tokio::time::Instant;

use super::batch::Batch;
use super::lane::{LaneQueue, Take};
use super::pool::{ClientPool, Dispatch};
use super::wake::Wake;
use crate::config::{LaneSettings, Mode};
use crate::core::batching::{self, LaneView, LowerShare, Turns};

struct LaneSlot {
    addr: Addr<LaneQueue>,
    settings: LaneSettings,
    len: usize,
    oldest: Option<Instant>,
    last_batch: Option<Instant>,
    /// A `Take` is out and its report has not come back: the view is stale until it does.
    taking: bool,
}

impl LaneSlot {
    fn view(&self) -> LaneView {
        LaneView {
            rank: self.settings.rank,
            len: self.len,
            oldest: self.oldest,
            window: Duration::from_millis(self.settings.window_ms),
            max_batch: self.settings.max_batch.max(1),
            delay: Duration::from_millis(self.settings.delay_ms),
            last_batch: self.last_batch,
            cost_per_batch_is_items: self.settings.mode == Mode::Fanout,
        }
    }
}

/// The former actor.
pub struct BatchFormer {
    lanes: Vec<LaneSlot>,
    pool: Addr<ClientPool>,
    /// Call slots the pool can take now, as last reported, minus what was released since.
    free_slots: usize,
    /// All call slots of the clients that can take calls, as last reported.
    total_slots: usize,
    share: LowerShare,
    turns: Turns,
    paused: bool,
    wake: Wake,
}

impl BatchFormer {
    pub(crate) fn new(pool: Addr<ClientPool>, share: LowerShare) -> Self {
        Self {
            lanes: Vec::new(),
            pool,
            free_slots: 0,
            total_slots: 0,
            share,
            turns: Turns::default(),
            paused: false,
            wake: Wake::default(),
        }
    }

    /// Releases every batch that is ready and fits, then arms the timer for the next one.
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        if self.paused || self.lanes.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut views: Vec<LaneView> = self.lanes.iter().map(LaneSlot::view).collect();
        // A lane with a Take out is hidden until its report returns.
        for (view, lane) in views.iter_mut().zip(&self.lanes) {
            if lane.taking {
                view.len = 0;
                view.oldest = None;
            }
        }
        while self.free_slots > 0 {
            let Some(choice) = self.turns.choose(batching::ready(&views, now), self.share) else { break };
            let i = choice.index;
            let lane = &mut self.lanes[i];
            if lane.settings.mode == Mode::Fanout && self.free_slots < fanout_floor(lane, self.total_slots) {
                // Capacity-bound: this lane waits for enough slots to free up for a batch worth
                // its cost; the others may use the slots meanwhile.
                views[i].len = 0;
                views[i].oldest = None;
                continue;
            }
            let max = match lane.settings.mode {
                Mode::Fanout => lane.settings.max_batch.max(1).min(self.free_slots),
                Mode::Combined => lane.settings.max_batch.max(1),
            };
            let cost = match lane.settings.mode {
                Mode::Fanout => max.min(lane.len),
                Mode::Combined => 1,
            };
            lane.addr.do_send(Take { max });
            self.turns.served(choice);
            lane.taking = true;
            lane.last_batch = Some(now);
            self.free_slots = self.free_slots.saturating_sub(cost);
            views[i].len = 0;
            views[i].oldest = None;
        }
        self.arm_timer(ctx, &views, now);
    }

    fn arm_timer(&mut self, ctx: &mut Context<Self>, views: &[LaneView], now: Instant) {
        let Some(at) = batching::next_wake(views, now) else { return };
        self.wake.arm(ctx, at, now, |former, ctx| {
            former.wake.fired();
            former.dispatch(ctx);
        });
    }
}

/// The fewest free slots a fanout lane waits for before it releases, when it holds more items
/// than there are free slots (capacity-bound, not arrival-bound): a quarter of all slots, capped
/// by its `max_batch` and by what it holds. Without it, a lane with a backlog follows each
/// finished call with a batch of one, and the fixed cost of a batch (its id, two log lines, its
/// metrics events) is paid per item. A lane with no backlog releases at once, as before; and the
/// floor never exceeds the slots that exist, so a lane can always release.
fn fanout_floor(lane: &LaneSlot, total_slots: usize) -> usize {
    // A lane holding no more than the free slots has want <= free: it is never held back.
    let want = lane.settings.max_batch.min(lane.len).max(1);
    (total_slots / 4).clamp(1, want)
}

impl Actor for BatchFormer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // After a restart the wake timer is gone; dispatching re-arms it.
        self.dispatch(ctx);
    }
}

impl Supervised for BatchFormer {
    fn restarting(&mut self, _: &mut Context<Self>) {
        // Reports lost in the panic would leave lanes marked as taking forever; the lanes'
        // next reports (and the pool's next capacity report) rebuild the view.
        self.wake.fired();
        for lane in &mut self.lanes {
            lane.taking = false;
        }
    }
}

/// Register the lanes, in index order (sent once at start).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct AddLanes(pub Vec<(Addr<LaneQueue>, LaneSettings)>);

/// A lane's state after a change, with the batch it released if this answers a `Take`.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct LaneReport {
    pub lane: usize,
    pub len: usize,
    pub oldest: Option<Instant>,
    pub batch: Option<Batch>,
    /// This report answers a `Take` (or follows a lane restart, which loses any `Take` out).
    pub take_done: bool,
}

/// Call slots in the pool: free now, and all of the clients that can take calls.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Capacity {
    pub free: usize,
    pub total: usize,
}

/// New settings for lane `index` (live change).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct UpdateLaneView {
    pub index: usize,
    pub settings: LaneSettings,
}

/// Stop or restart releasing batches.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SetPaused(pub bool);

impl Handler<AddLanes> for BatchFormer {
    type Result = ();
    fn handle(&mut self, msg: AddLanes, ctx: &mut Context<Self>) {
        self.lanes = msg
            .0
            .into_iter()
            .map(|(addr, settings)| LaneSlot {
                addr,
                settings,
                len: 0,
                oldest: None,
                last_batch: None,
                taking: false,
            })
            .collect();
        self.dispatch(ctx);
    }
}

impl Handler<LaneReport> for BatchFormer {
    type Result = ();
    fn handle(&mut self, msg: LaneReport, ctx: &mut Context<Self>) {
        let Some(lane) = self.lanes.get_mut(msg.lane) else { return };
        lane.len = msg.len;
        lane.oldest = msg.oldest;
        if msg.take_done {
            lane.taking = false;
        }
        if let Some(batch) = msg.batch {
            self.pool.do_send(Dispatch(batch));
        }
        self.dispatch(ctx);
    }
}

impl Handler<Capacity> for BatchFormer {
    type Result = ();
    fn handle(&mut self, msg: Capacity, ctx: &mut Context<Self>) {
        self.free_slots = msg.free;
        self.total_slots = msg.total;
        self.dispatch(ctx);
    }
}

impl Handler<UpdateLaneView> for BatchFormer {
    type Result = ();
    fn handle(&mut self, msg: UpdateLaneView, ctx: &mut Context<Self>) {
        if let Some(lane) = self.lanes.get_mut(msg.index) {
            lane.settings = msg.settings;
        }
        // A shorter window or delay may make a lane ready now; re-arm from scratch.
        self.wake.cancel(ctx);
        self.dispatch(ctx);
    }
}

impl Handler<SetPaused> for BatchFormer {
    type Result = ();
    fn handle(&mut self, msg: SetPaused, ctx: &mut Context<Self>) {
        self.paused = msg.0;
        self.dispatch(ctx);
    }
}
