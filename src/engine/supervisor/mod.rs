//! Supervisor: starts and owns every actor, restarts one that panics (within the restart
//! policy), applies live changes, brings lost items home, shuts down.
//!
//! - [`start`]: the start order (which actor first, and why); the [`Engine`] handle only holds
//!   what it returns.
//! - [`restart`]: the restart policy. Every actor runs under it, so a panic restarts it in
//!   place, and one that panics again after [`MAX_RESTARTS`] restarts in [`RESTART_WINDOW`] is
//!   declared failed: the engine then takes no new work.
//! - [`live`]: live changes (batch size, delay, lane settings, pause, an upstream's key), checked
//!   against the engine's bounds (`control.rs`) and pushed to the lanes and the former, which
//!   apply them from the next batch on.
//! - here: the supervisor actor, holding every address. Items a dead handler held come back here
//!   (see `item.rs`) and go back to their lane, up to `max_requeues` times; shutdown drains and
//!   then cuts off what is left.
//!
//! [`Engine`]: crate::engine::Engine
//! [`MAX_RESTARTS`]: restart::MAX_RESTARTS
//! [`RESTART_WINDOW`]: restart::RESTART_WINDOW

mod live;
pub(crate) mod restart;
mod start;

#[cfg(feature = "fault-injection")]
pub(crate) use live::InjectPanic;
pub(crate) use live::{GetConfig, PatchLane, Pause, SetBatchDelay, SetBatchSize, SetUpstreamKey};
pub(crate) use start::start;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::Config;
use crate::engine::batch_former::{BatchFormer, SetPaused};
use crate::engine::client::{FailWaiting, LlmClient};
use crate::engine::control::ShutdownReport;
use crate::engine::item::{Item, ItemError, Shared};
use crate::engine::lane::{CloseIntake, FailAll, LaneQueue, Requeue};
use crate::engine::metrics::MetricsHub;
use crate::engine::pool::ClientPool;

/// The supervisor actor.
pub struct Supervisor {
    pub(crate) config: Config,
    pub(crate) lane_names: Vec<Arc<str>>,
    pub(crate) lanes: Vec<Addr<LaneQueue>>,
    pub(crate) former: Addr<BatchFormer>,
    #[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
    pub(crate) pool: Addr<ClientPool>,
    pub(crate) clients: Vec<Addr<LlmClient>>,
    pub(crate) metrics: Addr<MetricsHub>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) shutting_down: bool,
    pub(crate) paused: bool,
}

impl Supervisor {
    /// The configured lane names, for a refusal naming an unknown lane.
    pub(crate) fn known_lanes(&self) -> String {
        self.lane_names.iter().map(|n| n.as_ref()).collect::<Vec<_>>().join(", ")
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;
}

impl Supervised for Supervisor {}

/// An item whose holder dropped it unanswered.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Orphan(pub Item);

/// Stop intake, drain until `deadline`, then cut off what is left.
#[derive(Message)]
#[rtype(result = "ShutdownReport")]
pub(crate) struct Shutdown(pub Duration);

impl Handler<Orphan> for Supervisor {
    type Result = ();
    fn handle(&mut self, msg: Orphan, _: &mut Context<Self>) {
        let item = msg.0;
        if self.shutting_down {
            item.finish(Err(ItemError::ShuttingDown));
            return;
        }
        let max = self.config.batching.max_requeues;
        if item.requeues > max {
            tracing::warn!(event = "failed", item = item.id, reason = "crashed", requeues = item.requeues);
            let times = item.requeues;
            item.finish(Err(ItemError::Crashed { times }));
            return;
        }
        match self.lanes.get(item.lane) {
            Some(lane) => lane.do_send(Requeue(item)),
            None => item.finish(Err(ItemError::ShuttingDown)),
        }
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ResponseFuture<ShutdownReport>;

    fn handle(&mut self, msg: Shutdown, _: &mut Context<Self>) -> Self::Result {
        self.shutting_down = true;
        tracing::info!(event = "shutdown", open = self.shared.open(), deadline_ms = msg.0.as_millis() as u64);
        for lane in &self.lanes {
            lane.do_send(CloseIntake);
        }
        // Dispatch must run for the drain to make progress.
        self.former.do_send(SetPaused(false));
        let (lanes, clients, shared, stop) =
            (self.lanes.clone(), self.clients.clone(), Arc::clone(&self.shared), self.stop.clone());
        let deadline = Instant::now() + msg.0;
        Box::pin(async move {
            let open_at_start = shared.open();
            shared.until_settled(deadline, true).await;
            let open_at_deadline = shared.open();
            if open_at_deadline > 0 {
                // From here on clients start no call and fail whatever reaches their mailbox;
                // calls still running are dropped, and their items, coming home, are answered
                // "shutting down" by the Orphan handler.
                stop.send_replace(true);
                for lane in &lanes {
                    let _ = lane.send(FailAll(ItemError::ShuttingDown)).await;
                }
                for client in &clients {
                    let _ = client.send(FailWaiting(ItemError::ShuttingDown)).await;
                }
                shared.until_settled(Instant::now() + Duration::from_secs(1), false).await;
            }
            let left = shared.open();
            let report = ShutdownReport {
                drained: open_at_start.saturating_sub(open_at_deadline),
                cut_off: open_at_deadline.saturating_sub(left),
                left,
            };
            tracing::info!(
                event = "shutdown_complete",
                drained = report.drained,
                cut_off = report.cut_off,
                left
            );
            report
        })
    }
}
