//! LaneQueue: one priority class's queue of waiting items.
//!
//! The lane only holds items and releases them when the BatchFormer says `Take`; it reports its
//! length and oldest item to the former after every change, and the former applies the batching
//! rule. Capacity is checked at the door: a submission that does not fit is refused whole with
//! "queue full", so an accepted item is never dropped later.
//!
//! Inside the lane, owners take turns and, within an owner, jobs take turns ([`FairQueue`]): a
//! fanout batch is the next items in turn; a combined batch is the next owner's items only (one
//! upstream call never carries two owners' prompts), unless the lane allows mixing owners.
//! Withdrawing a job takes its waiting items out at once.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::batch::{Batch, BatchTracker};
use super::batch_former::{BatchFormer, LaneReport};
use super::item::{Item, ItemError, SubmitError, Withdrawal};
use super::metrics::{MetricsEvent, MetricsHub, OwnerDepth, Publish, TOP_OWNERS};
use crate::config::{LaneSettings, Mode};
use crate::core::fair::{FairQueue, JobId};

/// The lane actor.
pub struct LaneQueue {
    index: usize,
    name: Arc<str>,
    settings: LaneSettings,
    queue: FairQueue<Item>,
    former: Addr<BatchFormer>,
    metrics: Addr<MetricsHub>,
    accepting: bool,
    depth_scheduled: bool,
    #[cfg(feature = "fault-injection")]
    panic_on_next_batch: bool,
}

/// How often a lane reports its depth to the MetricsHub while it changes.
const DEPTH_EVERY: Duration = Duration::from_millis(100);

impl LaneQueue {
    pub(crate) fn new(
        index: usize,
        name: Arc<str>,
        settings: LaneSettings,
        former: Addr<BatchFormer>,
        metrics: Addr<MetricsHub>,
    ) -> Self {
        Self {
            index,
            name,
            settings,
            queue: FairQueue::default(),
            former,
            metrics,
            accepting: true,
            depth_scheduled: false,
            #[cfg(feature = "fault-injection")]
            panic_on_next_batch: false,
        }
    }

    fn report(&mut self, ctx: &mut Context<Self>, batch: Option<Batch>, take_done: bool) {
        let oldest = self.queue.oldest();
        self.former.do_send(LaneReport { lane: self.index, len: self.queue.len(), oldest, batch, take_done });
        if !self.depth_scheduled {
            // One depth event per period, not one per submission.
            self.depth_scheduled = true;
            ctx.run_later(DEPTH_EVERY, |lane, _| {
                lane.depth_scheduled = false;
                let depth = lane.queue.len();
                let oldest = lane.queue.oldest().map(|at| at.elapsed());
                let oldest_ms = oldest.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                let top_owners = lane
                    .queue
                    .top_owners(TOP_OWNERS)
                    .into_iter()
                    .map(|(owner, depth)| OwnerDepth { owner: owner.to_string(), depth })
                    .collect();
                let event = MetricsEvent::LaneDepth {
                    lane: Arc::clone(&lane.name),
                    depth,
                    oldest_ms,
                    owners: lane.queue.owners(),
                    top_owners,
                };
                lane.metrics.do_send(Publish(event));
            });
        }
    }
}

impl LaneQueue {
    fn push(&mut self, item: Item) {
        let origin = Arc::clone(&item.origin);
        self.queue.push(&origin.owner, &origin.job, item);
    }
}

impl Actor for LaneQueue {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // After a restart the former's view may be stale, and a Take may have been lost with
        // the panic; a report brings it back in line.
        self.report(ctx, None, true);
    }
}

impl Supervised for LaneQueue {
    fn restarting(&mut self, _: &mut Context<Self>) {
        // The queue itself is consistent (pushes and pops are single calls); keep every item.
        #[cfg(feature = "fault-injection")]
        {
            self.panic_on_next_batch = false;
        }
        self.depth_scheduled = false;
    }
}

/// Accept items into the lane, all or none.
#[derive(Message)]
#[rtype(result = "Result<(), SubmitError>")]
pub(crate) struct Enqueue(pub Vec<Item>);

/// Put back an item whose holder failed; it keeps its place by acceptance time.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Requeue(pub Item);

/// Release up to `max` items as one batch (sent by the BatchFormer).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Take {
    pub max: usize,
}

/// New settings for this lane (live change).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct UpdateLane(pub LaneSettings);

/// Refuse further submissions (shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct CloseIntake;

/// Answer every waiting item with `error`; returns how many there were.
#[derive(Message)]
#[rtype(result = "usize")]
pub(crate) struct FailAll(pub ItemError);

/// Take out every waiting item of `job` and answer it withdrawn; returns how many there were.
#[derive(Message)]
#[rtype(result = "usize")]
pub(crate) struct Withdraw {
    pub job: JobId,
    pub why: Withdrawal,
}

/// Fault injection: panic while handling the next message that carries items.
#[derive(Message)]
#[rtype(result = "()")]
#[cfg(feature = "fault-injection")]
pub(crate) struct PanicOnNextBatch;

impl Handler<Enqueue> for LaneQueue {
    type Result = Result<(), SubmitError>;

    fn handle(&mut self, msg: Enqueue, ctx: &mut Context<Self>) -> Self::Result {
        let items = msg.0;
        if !self.accepting {
            items.into_iter().for_each(Item::withdraw);
            return Err(SubmitError::ShuttingDown);
        }
        let (held, capacity, asked) = (self.queue.len(), self.settings.queue_capacity, items.len());
        if held + asked > capacity {
            items.into_iter().for_each(Item::withdraw);
            tracing::info!(event = "queue_full", lane = %self.name, held, capacity, asked);
            return Err(SubmitError::QueueFull { lane: self.name.to_string(), held, capacity, asked });
        }
        #[cfg(feature = "fault-injection")]
        if self.panic_on_next_batch {
            self.panic_on_next_batch = false;
            panic!("fault injection: lane `{}` panics holding {asked} items", self.name);
        }
        // A submission's items share one origin: the queue finds their owner and job once, and
        // keeps the submitted vector as it is.
        match items.first().map(|item| Arc::clone(&item.origin)) {
            Some(origin) if items.iter().all(|item| Arc::ptr_eq(&item.origin, &origin)) => {
                self.queue.extend(&origin.owner, &origin.job, items);
            }
            _ => items.into_iter().for_each(|item| self.push(item)),
        }
        tracing::debug!(event = "enqueue", lane = %self.name, count = asked, depth = self.queue.len());
        self.report(ctx, None, false);
        Ok(())
    }
}

impl Handler<Requeue> for LaneQueue {
    type Result = ();

    fn handle(&mut self, msg: Requeue, ctx: &mut Context<Self>) {
        let item = msg.0;
        if let Some(why) = item.withdrawn() {
            item.finish(Err(ItemError::Withdrawn(why)));
            return;
        }
        // The item goes back to its place in its job, by acceptance time.
        tracing::debug!(event = "requeue", lane = %self.name, item = item.id, requeues = item.requeues);
        self.push(item);
        self.report(ctx, None, false);
    }
}

impl Handler<Take> for LaneQueue {
    type Result = ();

    fn handle(&mut self, msg: Take, ctx: &mut Context<Self>) {
        let max = msg.max.min(self.queue.len());
        let mut items: Vec<Item> = if self.settings.mode == Mode::Combined && !self.settings.mix_owners {
            self.queue.pop_owner(max)
        } else {
            self.queue.pop_many(max)
        };
        // A job withdrawn while its items were on their way here is not sent.
        if items.iter().any(|item| item.withdrawn().is_some()) {
            let (gone, kept): (Vec<Item>, Vec<Item>) =
                items.into_iter().partition(|item| item.withdrawn().is_some());
            for item in gone {
                let why = item.withdrawn().unwrap_or(Withdrawal::Cancelled);
                item.finish(Err(ItemError::Withdrawn(why)));
            }
            items = kept;
        }
        let n = items.len();
        if n == 0 {
            self.report(ctx, None, true);
            return;
        }
        let tracker = BatchTracker::new(Arc::clone(&self.name), self.settings.mode, n, self.metrics.clone());
        for item in &mut items {
            item.batch = Some(Arc::clone(&tracker));
        }
        tracing::info!(
            event = "batch_start",
            batch_id = %tracker.id,
            lane = %self.name,
            size = n,
            mode = %self.settings.mode,
            waiting = self.queue.len(),
        );
        self.metrics.do_send(Publish(MetricsEvent::BatchDispatched {
            id: tracker.id,
            lane: Arc::clone(&self.name),
            size: n,
            mode: self.settings.mode,
        }));
        let batch = Batch {
            mode: self.settings.mode,
            rank: self.settings.rank,
            model: self.settings.model.clone(),
            max_tokens: self.settings.max_tokens,
            mix_owners: self.settings.mix_owners,
            items,
        };
        self.report(ctx, Some(batch), true);
    }
}

impl Handler<UpdateLane> for LaneQueue {
    type Result = ();
    fn handle(&mut self, msg: UpdateLane, _: &mut Context<Self>) {
        self.settings = msg.0;
    }
}

impl Handler<CloseIntake> for LaneQueue {
    type Result = ();
    fn handle(&mut self, _: CloseIntake, _: &mut Context<Self>) {
        self.accepting = false;
    }
}

impl Handler<FailAll> for LaneQueue {
    type Result = usize;
    fn handle(&mut self, msg: FailAll, ctx: &mut Context<Self>) -> usize {
        let items = self.queue.drain();
        let n = items.len();
        for item in items {
            item.finish(Err(msg.0.clone()));
        }
        self.report(ctx, None, false);
        n
    }
}

impl Handler<Withdraw> for LaneQueue {
    type Result = usize;
    fn handle(&mut self, msg: Withdraw, ctx: &mut Context<Self>) -> usize {
        let items = self.queue.remove_job(&msg.job);
        let n = items.len();
        if n > 0 {
            tracing::debug!(event = "withdrawn", lane = %self.name, job = %msg.job, reason = msg.why.label(), count = n);
            for item in items {
                item.finish(Err(ItemError::Withdrawn(msg.why)));
            }
            self.report(ctx, None, false);
        }
        n
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<PanicOnNextBatch> for LaneQueue {
    type Result = ();
    fn handle(&mut self, _: PanicOnNextBatch, _: &mut Context<Self>) {
        self.panic_on_next_batch = true;
    }
}
