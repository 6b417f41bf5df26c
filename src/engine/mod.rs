//! The engine: actix actors under one Supervisor, reached only through the [`Engine`] handle.
//!
//! ```text
//! Engine ──Enqueue──► LaneQueue ──LaneReport──► BatchFormer ──Dispatch──► ClientPool ──Calls──► LlmClient ──► Provider
//!                        ▲  ◄────────Take──────────┘   ▲                    │  ▲                   │
//!                        │                             └─────Capacity───────┘  └──Released/Reroute─┘
//!                        └── Requeue ◄── Supervisor ◄── items dropped unanswered (Orphan)
//! every actor ──events──► MetricsHub ──broadcast──► subscribers
//! ```
//!
//! One actor per file; the rules they apply are the pure functions of [`crate::core`].

mod batch;
mod batch_former;
mod call;
mod client;
mod control;
mod item;
mod lane;
mod mailbox;
pub mod metrics;
mod pool;
mod supervisor;
mod wake;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::tenants::Tenants;

pub use batch::BatchId;
#[cfg(feature = "fault-injection")]
pub use control::FaultTarget;
pub use control::{
    ControlError, LanePatch, MAX_BATCH_DELAY_MS, MAX_BATCH_SIZE, MAX_LATENCY_MS, RuntimeConfig,
    ShutdownReport, UpstreamView, check_bounds,
};
pub use item::{Answer, ItemError, Origin, Outcome, Prompt, Submission, SubmitError, Withdrawal};
pub use metrics::{
    BATCH_SECONDS_BUCKETS, BatchRecord, FidelityCount, LaneTotals, MetricsEvent, Snapshot, UpstreamState,
    UpstreamStatus,
};
pub use supervisor::restart::{MAX_RESTARTS, RESTART_WINDOW};

use self::client::LlmClient;
use self::item::{Item, Reply, Shared};
use self::lane::{Enqueue, LaneQueue};
use self::metrics::{GetSnapshot, MetricsHub, Publish};
#[cfg(feature = "fault-injection")]
use self::supervisor::InjectPanic;
use self::supervisor::restart::Health;
use self::supervisor::{
    GetConfig, PatchLane, Pause, SetBatchDelay, SetBatchSize, SetUpstreamKey, Shutdown, Supervisor,
};
use crate::config::Config;
use crate::core::fair::JobId;

/// Most upstreams the engine tracks per item (an item remembers the upstreams it tried in a
/// 64-bit set).
pub const MAX_UPSTREAMS: usize = 64;

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// An upstream's provider could not be built.
    #[error(transparent)]
    Provider(#[from] crate::providers::BuildError),
    /// An upstream's API key is missing or unreadable.
    #[error("{0}")]
    Config(String),
    /// More upstreams than the engine tracks per item.
    #[error("at most {MAX_UPSTREAMS} upstreams are supported (got {0})")]
    TooManyUpstreams(usize),
    /// Batching values outside the engine's bounds, each naming its key and the bound.
    #[error("{}", .0.join("; "))]
    OutOfBounds(Vec<String>),
}

/// The handle every door uses: submit prompts, steer batching, watch metrics, shut down.
/// Cheap to clone; usable from any thread.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    supervisor: Addr<Supervisor>,
    lanes: Vec<(Arc<str>, Addr<LaneQueue>)>,
    lane_index: HashMap<String, usize>,
    /// Each lane's `latency_ms`, kept current by the live changes made through this handle.
    lane_latency_ms: Vec<AtomicU64>,
    clients: Vec<Addr<LlmClient>>,
    metrics: Addr<MetricsHub>,
    events: broadcast::Sender<MetricsEvent>,
    shared: Arc<Shared>,
    health: Arc<Health>,
    next_id: AtomicU64,
    accepting: AtomicBool,
    /// `[[tenants]]` and their budgets, for every door that admits work.
    tenants: Tenants,
}

impl Engine {
    /// Starts the actors on the current actix arbiter (call it inside a running `actix::System`),
    /// in the supervisor's start order (see `supervisor/start.rs`). API keys are read from the
    /// environment variables the config names. A config whose batching values lie outside the
    /// engine's bounds ([`check_bounds`]) is refused, every such value named.
    pub fn start(config: &Config) -> Result<Engine, EngineError> {
        check_bounds(config).map_err(EngineError::OutOfBounds)?;
        let running = supervisor::start(config)?;
        let lane_index = running.lanes.iter().enumerate().map(|(i, (n, _))| (n.to_string(), i)).collect();
        let lane_latency_ms = config
            .lanes
            .values()
            .map(|lane| AtomicU64::new(lane.effective(&config.batching).latency_ms))
            .collect();
        Ok(Engine {
            inner: Arc::new(Inner {
                supervisor: running.supervisor,
                lanes: running.lanes,
                lane_index,
                lane_latency_ms,
                clients: running.clients,
                metrics: running.metrics,
                events: running.events,
                shared: running.shared,
                health: running.health,
                next_id: AtomicU64::new(1),
                accepting: AtomicBool::new(true),
                tenants: Tenants::new(&config.tenants),
            }),
        })
    }

    /// The actors declared failed (they panicked again after [`MAX_RESTARTS`] restarts
    /// in [`RESTART_WINDOW`]); while any is, the engine takes no new work.
    pub fn failed_actors(&self) -> Vec<String> {
        self.inner.health.failed()
    }

    /// The configured tenants: what the doors admit a tenant's work by.
    pub fn tenants(&self) -> &Tenants {
        &self.inner.tenants
    }

    /// The configured lane names.
    pub fn lanes(&self) -> Vec<String> {
        self.inner.lanes.iter().map(|(n, _)| n.to_string()).collect()
    }

    /// Whether a lane of this name exists.
    pub fn has_lane(&self, lane: &str) -> bool {
        self.inner.lane_index.contains_key(lane)
    }

    fn lane(&self, lane: &str) -> Result<usize, SubmitError> {
        if !self.inner.accepting.load(Ordering::Acquire) {
            return Err(SubmitError::ShuttingDown);
        }
        let failed = self.inner.health.failed();
        if !failed.is_empty() {
            return Err(SubmitError::Failed { actors: failed.join(", ") });
        }
        self.inner.lane_index.get(lane).copied().ok_or_else(|| SubmitError::UnknownLane {
            lane: lane.to_string(),
            known: self.lanes().join(", "),
        })
    }

    fn next_ids(&self, n: usize) -> u64 {
        self.inner.next_id.fetch_add(n as u64, Ordering::Relaxed)
    }

    async fn enqueue(&self, index: usize, items: Vec<Item>) -> Result<(), SubmitError> {
        match self.inner.lanes[index].1.send(Enqueue(items)).await {
            Ok(result) => result,
            // The lane died holding the message: its items went home and will be answered, so
            // the submission stands.
            Err(_) => Ok(()),
        }
    }

    /// Submits prompts to a lane as a request of the local user, all or none; their outcomes
    /// arrive on the [`Submission`].
    pub async fn submit(&self, lane: &str, prompts: Vec<Prompt>) -> Result<Submission, SubmitError> {
        self.submit_from(lane, &Origin::request(Origin::LOCAL, None), prompts).await
    }

    /// Submits prompts of `origin` (owner, job, deadline) to a lane, all or none.
    pub async fn submit_from(
        &self,
        lane: &str,
        origin: &Arc<Origin>,
        prompts: Vec<Prompt>,
    ) -> Result<Submission, SubmitError> {
        let index = self.lane(lane)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let first = self.next_ids(prompts.len());
        let items: Vec<Item> = prompts
            .into_iter()
            .enumerate()
            .map(|(i, prompt)| {
                let reply = Reply::Indexed { index: i, tx: tx.clone() };
                Item::new(first + i as u64, index, origin, prompt, reply, &self.inner.shared)
            })
            .collect();
        let submission = Submission::new(rx, items.len());
        self.enqueue(index, items).await?;
        Ok(submission)
    }

    /// Submits one prompt as a request of the local user and waits for its outcome.
    pub async fn submit_one(&self, lane: &str, prompt: Prompt) -> Result<Outcome, SubmitError> {
        self.submit_one_from(lane, &Origin::request(Origin::LOCAL, None), prompt).await
    }

    /// Submits one prompt of `origin` and waits for its outcome.
    pub async fn submit_one_from(
        &self,
        lane: &str,
        origin: &Arc<Origin>,
        prompt: Prompt,
    ) -> Result<Outcome, SubmitError> {
        let index = self.lane(lane)?;
        let (tx, rx) = oneshot::channel();
        let item = Item::new(self.next_ids(1), index, origin, prompt, Reply::One(tx), &self.inner.shared);
        self.enqueue(index, vec![item]).await?;
        Ok(rx.await.unwrap_or(Err(ItemError::ShuttingDown)))
    }

    /// Withdraws `origin`'s job: every item of it still waiting in a lane or a client mailbox
    /// is answered [`ItemError::Withdrawn`] at once and never sent; calls already sent finish.
    /// Items on their way between actors are caught before they are sent. Returns the items
    /// taken out of lanes and mailboxes.
    pub async fn withdraw(&self, origin: &Origin, why: Withdrawal) -> usize {
        if !origin.mark_withdrawn(why) {
            return 0;
        }
        self.take_out(Arc::clone(&origin.job), why).await
    }

    /// [`withdraw`](Engine::withdraw) without waiting: for a door that is being dropped (the
    /// caller went away). The items are counted as they are found.
    pub fn withdraw_now(&self, origin: &Origin, why: Withdrawal) {
        if !origin.mark_withdrawn(why) {
            return;
        }
        let engine = self.clone();
        let job = Arc::clone(&origin.job);
        actix::spawn(async move {
            engine.take_out(job, why).await;
        });
    }

    /// Takes a withdrawn job's waiting items out of every lane and client mailbox; counts them.
    async fn take_out(&self, job: JobId, why: Withdrawal) -> usize {
        let lanes =
            self.inner.lanes.iter().map(|(_, lane)| lane.send(lane::Withdraw { job: Arc::clone(&job), why }));
        let clients = self.inner.clients.iter().map(|client| client.send(client::Withdraw(Arc::clone(&job))));
        let (lanes, clients) = futures_util::future::join(
            futures_util::future::join_all(lanes),
            futures_util::future::join_all(clients),
        )
        .await;
        let n: usize = lanes.into_iter().chain(clients).map(|r| r.unwrap_or(0)).sum();
        self.count_withdrawn(why, n);
        n
    }

    fn count_withdrawn(&self, why: Withdrawal, n: usize) {
        if n > 0 {
            tracing::info!(event = "withdrawn", reason = why.label(), items = n);
            let event = MetricsEvent::Withdrawn { reason: why.label().to_string(), count: n as u64 };
            self.inner.metrics.do_send(Publish(event));
        }
    }

    /// Sets the batch size of every lane that follows `[batching] batch_size`, from the next batch.
    pub async fn set_batch_size(&self, size: usize) -> Result<RuntimeConfig, ControlError> {
        self.inner.supervisor.send(SetBatchSize(size)).await.map_err(|_| ControlError::Stopped)?
    }

    /// Sets the delay between batches of every lane that follows `[batching] batch_delay_ms`.
    pub async fn set_batch_delay(&self, delay_ms: u64) -> Result<RuntimeConfig, ControlError> {
        self.inner.supervisor.send(SetBatchDelay(delay_ms)).await.map_err(|_| ControlError::Stopped)?
    }

    /// Changes one lane's settings live.
    pub async fn update_lane(&self, lane: &str, patch: LanePatch) -> Result<RuntimeConfig, ControlError> {
        let config = self
            .inner
            .supervisor
            .send(PatchLane(lane.to_string(), patch))
            .await
            .map_err(|_| ControlError::Stopped)??;
        for (name, settings) in &config.lanes {
            if let Some(&i) = self.inner.lane_index.get(name) {
                self.inner.lane_latency_ms[i].store(settings.latency_ms, Ordering::Relaxed);
            }
        }
        Ok(config)
    }

    /// A lane's latency target (`latency_ms`) as last set, without a message to the engine.
    pub fn lane_latency(&self, lane: &str) -> Option<Duration> {
        let i = *self.inner.lane_index.get(lane)?;
        Some(Duration::from_millis(self.inner.lane_latency_ms[i].load(Ordering::Relaxed)))
    }

    /// Stops releasing batches (items keep queueing).
    pub async fn pause(&self) -> Result<RuntimeConfig, ControlError> {
        self.inner.supervisor.send(Pause(true)).await.map_err(|_| ControlError::Stopped)
    }

    /// Releases batches again.
    pub async fn resume(&self) -> Result<RuntimeConfig, ControlError> {
        self.inner.supervisor.send(Pause(false)).await.map_err(|_| ControlError::Stopped)
    }

    /// The live batching configuration.
    pub async fn config(&self) -> Result<RuntimeConfig, ControlError> {
        self.inner.supervisor.send(GetConfig).await.map_err(|_| ControlError::Stopped)
    }

    /// Metrics events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<MetricsEvent> {
        self.inner.events.subscribe()
    }

    /// What the MetricsHub knows now.
    pub async fn snapshot(&self) -> Result<Snapshot, ControlError> {
        self.inner.metrics.send(GetSnapshot).await.map_err(|_| ControlError::Stopped)
    }

    /// Items accepted and not yet answered.
    pub fn open_items(&self) -> usize {
        self.inner.shared.open()
    }

    /// Stops intake, lets queued and in-flight work finish until `deadline`, then answers what
    /// is left with [`ItemError::ShuttingDown`].
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        self.inner.accepting.store(false, Ordering::Release);
        self.inner.supervisor.send(Shutdown(deadline)).await.unwrap_or(ShutdownReport {
            drained: 0,
            cut_off: 0,
            left: self.open_items(),
        })
    }

    /// Ends a [`shutdown`](Engine::shutdown) under way at once, as if its deadline had passed:
    /// what is still open is answered [`ItemError::ShuttingDown`]. (The operator's second `q`.)
    pub fn cut_off(&self) {
        self.inner.shared.cut_off();
    }

    /// Gives an upstream (the first one when `upstream` is None) a new API key, live: calls from
    /// now on use it. The key is never logged.
    pub async fn set_upstream_key(&self, upstream: Option<&str>, key: String) -> Result<(), ControlError> {
        let msg = SetUpstreamKey { upstream: upstream.map(str::to_string), key };
        self.inner.supervisor.send(msg).await.map_err(|_| ControlError::Stopped)?
    }

    /// Fault injection for tests and drills: the target panics while handling its next message
    /// that carries items. The engine must restart it and lose none of them. Only with the
    /// `fault-injection` feature (on for `cargo test`, off in a release build).
    #[cfg(feature = "fault-injection")]
    pub async fn inject_panic(&self, target: FaultTarget) -> Result<(), ControlError> {
        self.inner.supervisor.send(InjectPanic(target)).await.map_err(|_| ControlError::Stopped)?
    }
}
