//! LaneQueue: one priority class's queue of waiting items.
//!
//! The lane only holds items and releases them when the BatchFormer says `Take`; it reports its
//! length and oldest item to the former after every change, and the former applies the batching
//! rule. Capacity is checked at the door: a submission that does not fit is refused whole with
//! "queue full", so an accepted item is never dropped later.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::batch::{Batch, BatchTracker};
use super::batch_former::{BatchFormer, LaneReport};
use super::item::{Item, ItemError, SubmitError};
use super::metrics::{MetricsEvent, MetricsHub, Publish};
use crate::config::LaneSettings;

/// The lane actor.
pub struct LaneQueue {
    index: usize,
    name: Arc<str>,
    settings: LaneSettings,
    queue: VecDeque<Item>,
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
            queue: VecDeque::new(),
            former,
            metrics,
            accepting: true,
            depth_scheduled: false,
            #[cfg(feature = "fault-injection")]
            panic_on_next_batch: false,
        }
    }

    fn report(&mut self, ctx: &mut Context<Self>, batch: Option<Batch>, take_done: bool) {
        let oldest = self.queue.front().map(|item| item.accepted_at);
        self.former.do_send(LaneReport { lane: self.index, len: self.queue.len(), oldest, batch, take_done });
        if !self.depth_scheduled {
            // One depth event per period, not one per submission.
            self.depth_scheduled = true;
            ctx.run_later(DEPTH_EVERY, |lane, _| {
                lane.depth_scheduled = false;
                let depth = lane.queue.len();
                let oldest = lane.queue.front().map(|item| item.accepted_at.elapsed());
                let oldest_ms = oldest.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                let event = MetricsEvent::LaneDepth { lane: Arc::clone(&lane.name), depth, oldest_ms };
                lane.metrics.do_send(Publish(event));
            });
        }
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
        self.queue.extend(items);
        tracing::debug!(event = "enqueue", lane = %self.name, count = asked, depth = self.queue.len());
        self.report(ctx, None, false);
        Ok(())
    }
}

impl Handler<Requeue> for LaneQueue {
    type Result = ();

    fn handle(&mut self, msg: Requeue, ctx: &mut Context<Self>) {
        let item = msg.0;
        // Requeued items are rare; a linear search keeps acceptance order, so an item that came
        // home is served before items accepted after it.
        let at = self
            .queue
            .iter()
            .position(|waiting| waiting.accepted_at > item.accepted_at)
            .unwrap_or(self.queue.len());
        tracing::debug!(event = "requeue", lane = %self.name, item = item.id, requeues = item.requeues);
        self.queue.insert(at, item);
        self.report(ctx, None, false);
    }
}

impl Handler<Take> for LaneQueue {
    type Result = ();

    fn handle(&mut self, msg: Take, ctx: &mut Context<Self>) {
        let n = msg.max.min(self.queue.len());
        if n == 0 {
            self.report(ctx, None, true);
            return;
        }
        let tracker = BatchTracker::new(Arc::clone(&self.name), self.settings.mode, n, self.metrics.clone());
        let mut items: Vec<Item> = self.queue.drain(..n).collect();
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
        let n = self.queue.len();
        for item in self.queue.drain(..) {
            item.finish(Err(msg.0.clone()));
        }
        self.report(ctx, None, false);
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
