//! MetricsHub: every actor reports here; subscribers (console, `/metrics`, event streams) read.
//!
//! Actors send batch-level events and periodic per-upstream snapshots — never one message per
//! item, which would cost more than the work it measures. The hub keeps a [`Snapshot`] for
//! queries and broadcasts each [`MetricsEvent`] to subscribers; a slow subscriber lags and
//! skips, it never slows the engine.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::batch::BatchId;
use crate::config::Mode;
use crate::core::limits::{Limit, LimitsSnapshot};

/// Recent batches kept for the console and `/api/v1/stats`.
pub const RECENT_BATCHES: usize = 256;

/// Owners reported per lane in [`MetricsEvent::LaneDepth`].
pub const TOP_OWNERS: usize = 5;

/// One owner's items waiting in a lane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerDepth {
    /// The owner: a tenant, an API key's owner id, or `local`.
    pub owner: String,
    /// Its items waiting.
    pub depth: usize,
}

/// A finished batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRecord {
    /// Its id.
    pub id: BatchId,
    /// Its lane.
    pub lane: Arc<str>,
    /// How it was sent.
    pub mode: Mode,
    /// Items released in it.
    pub size: usize,
    /// Items answered.
    pub ok: usize,
    /// Items that ended in an error.
    pub failed: usize,
    /// Items put back in their lane after their holder failed.
    pub requeued: usize,
    /// From release to the last item's outcome.
    #[serde(serialize_with = "millis", deserialize_with = "from_millis")]
    pub duration: Duration,
    /// Wall-clock time it finished.
    pub finished_at: SystemTime,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// The other way, for a remote console reading the event stream.
fn from_millis<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let ms = f64::deserialize(d)?;
    Duration::try_from_secs_f64(ms / 1000.0).map_err(serde::de::Error::custom)
}

/// What state an upstream client is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum UpstreamState {
    /// Serving calls.
    Ok,
    /// Paused by a 429 or an announced limit, for this long from the report.
    BackingOff {
        /// Milliseconds left.
        for_ms: u64,
    },
    /// Paused after repeated failures, for this long from the report.
    CoolingDown {
        /// Milliseconds left.
        for_ms: u64,
    },
    /// Its daily budget is spent: no call before `until`.
    Exhausted {
        /// Milliseconds left.
        for_ms: u64,
        /// When the budget comes back (wall clock).
        until: SystemTime,
        /// The limit spent.
        limit: Limit,
    },
}

/// One upstream client's counters and limits, reported periodically and on state changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamStatus {
    /// Upstream name.
    pub name: Arc<str>,
    /// Its state.
    pub state: UpstreamState,
    /// Calls running now.
    pub in_flight: usize,
    /// Calls waiting in its mailbox.
    pub queued: usize,
    /// Effective concurrency (lowered by 503 backpressure; searched for with `auto`).
    pub concurrency: usize,
    /// Whether `concurrency` is searched for (`concurrency = "auto"`).
    #[serde(default)]
    pub concurrency_auto: bool,
    /// Combined calls started.
    #[serde(default)]
    pub combined_calls: u64,
    /// Combined replies that left items unanswered (no object of answers by id, or ids missing,
    /// duplicated or not answered with text).
    #[serde(default)]
    pub split_failures: u64,
    /// Items of combined calls sent again alone after a split failure or a failed combined call.
    #[serde(default)]
    pub resent_alone: u64,
    /// Used/limit per rate window.
    pub limits: LimitsSnapshot,
    /// Calls started.
    pub calls: u64,
    /// Calls answered.
    pub ok: u64,
    /// Calls that failed (any error).
    pub failed: u64,
    /// Calls retried.
    pub retries: u64,
    /// Retries of calls that had been sent (possible duplicate upstream work).
    pub duplicate_risk: u64,
    /// 429 answers.
    pub rate_limited: u64,
    /// 503 answers taken as backpressure.
    pub backpressure: u64,
    /// Prompt tokens reported.
    pub prompt_tokens: u64,
    /// Completion tokens reported.
    pub completion_tokens: u64,
    /// Times calls had to wait for a rate window (RPM/TPM/RPD or an announced limit) to open.
    pub limit_waits: u64,
    /// The last error, shortened.
    pub last_error: Option<String>,
    /// Fidelity samples of combined answers, per lane and model.
    #[serde(default)]
    pub fidelity: Vec<FidelityCount>,
}

/// How often combined answers agreed with the same prompts answered alone, for one lane and model
/// on one upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FidelityCount {
    /// Lane name.
    pub lane: Arc<str>,
    /// Model.
    pub model: Arc<str>,
    /// Samples whose answers agreed (normalised text).
    pub agreed: u64,
    /// Samples taken.
    pub samples: u64,
}

/// An event broadcast to subscribers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum MetricsEvent {
    /// A lane's depth changed.
    LaneDepth {
        /// Lane name.
        lane: Arc<str>,
        /// Items waiting.
        depth: usize,
        /// How long the oldest waiting item has waited, in milliseconds (0 when empty).
        #[serde(default)]
        oldest_ms: u64,
        /// Owners with items waiting.
        #[serde(default)]
        owners: usize,
        /// The owners with the most items waiting (at most [`TOP_OWNERS`]), deepest first.
        #[serde(default)]
        top_owners: Vec<OwnerDepth>,
    },
    /// A batch was released to the pool.
    BatchDispatched {
        /// Batch id.
        id: BatchId,
        /// Lane name.
        lane: Arc<str>,
        /// Items in it.
        size: usize,
        /// How it is sent.
        mode: Mode,
    },
    /// A batch's last item ended.
    BatchCompleted(BatchRecord),
    /// An upstream's periodic status.
    Upstream(UpstreamStatus),
    /// A live configuration change.
    ConfigChanged {
        /// What changed, as `key=value`.
        change: String,
    },
    /// Dispatch paused or resumed.
    Paused {
        /// True when paused.
        paused: bool,
    },
    /// An actor panicked and was restarted.
    ActorRestarted {
        /// Which actor.
        actor: String,
    },
    /// Items of a withdrawn job (cancelled, expired, caller gone) taken out before they were sent.
    Withdrawn {
        /// Why: `cancelled`, `expired`, `caller_gone` or `timed_out`.
        reason: String,
        /// Items taken out.
        count: u64,
    },
    /// An actor panicked too often (see `restart.rs`) and was stopped; the engine takes no new
    /// work.
    ActorFailed {
        /// Which actor.
        actor: String,
    },
}

/// Everything the hub knows, for queries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Depth per lane.
    pub lane_depths: BTreeMap<String, usize>,
    /// Per lane: owners with items waiting, and the deepest of them.
    #[serde(default)]
    pub lane_owners: BTreeMap<String, (usize, Vec<OwnerDepth>)>,
    /// Most recent batches, newest last.
    pub recent_batches: VecDeque<BatchRecord>,
    /// Batches completed since start.
    pub batches: u64,
    /// Batches dispatched and not yet completed.
    #[serde(default)]
    pub batches_in_flight: usize,
    /// Items answered since start.
    pub items_ok: u64,
    /// Items that ended in an error since start.
    pub items_failed: u64,
    /// Totals and batch-duration histogram per lane.
    pub lanes: BTreeMap<String, LaneTotals>,
    /// Latest status per upstream.
    pub upstreams: BTreeMap<String, UpstreamStatus>,
    /// Actor restarts since start.
    pub restarts: u64,
    /// Actors declared failed (restarted too often), in the order they failed.
    #[serde(default)]
    pub failed_actors: Vec<String>,
    /// Whether dispatch is paused.
    pub paused: bool,
    /// Items taken out unsent because their job was withdrawn, per reason.
    #[serde(default)]
    pub withdrawn: BTreeMap<String, u64>,
}

/// Upper bounds, in seconds, of the batch-duration histogram's buckets (Prometheus `le`).
pub const BATCH_SECONDS_BUCKETS: [f64; 12] =
    [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// One lane's totals since start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LaneTotals {
    /// Batches completed.
    pub batches: u64,
    /// Items answered.
    pub items_ok: u64,
    /// Items that ended in an error.
    pub items_failed: u64,
    /// Batches whose duration was at most each bound of [`BATCH_SECONDS_BUCKETS`] (cumulative).
    pub duration_buckets: [u64; BATCH_SECONDS_BUCKETS.len()],
    /// Sum of batch durations, in seconds.
    pub duration_sum: f64,
}

impl LaneTotals {
    fn record(&mut self, record: &BatchRecord) {
        self.batches += 1;
        self.items_ok += record.ok as u64;
        self.items_failed += record.failed as u64;
        let seconds = record.duration.as_secs_f64();
        self.duration_sum += seconds;
        for (count, bound) in self.duration_buckets.iter_mut().zip(BATCH_SECONDS_BUCKETS) {
            if seconds <= bound {
                *count += 1;
            }
        }
    }
}

/// The hub actor.
pub struct MetricsHub {
    snapshot: Snapshot,
    events: broadcast::Sender<MetricsEvent>,
}

impl MetricsHub {
    pub(crate) fn new(events: broadcast::Sender<MetricsEvent>) -> Self {
        Self { snapshot: Snapshot::default(), events }
    }

    fn publish(&mut self, event: MetricsEvent) {
        match &event {
            MetricsEvent::LaneDepth { lane, depth, owners, top_owners, .. } => {
                self.snapshot.lane_depths.insert(lane.to_string(), *depth);
                self.snapshot.lane_owners.insert(lane.to_string(), (*owners, top_owners.clone()));
            }
            MetricsEvent::BatchCompleted(record) => {
                self.snapshot.batches += 1;
                self.snapshot.batches_in_flight = self.snapshot.batches_in_flight.saturating_sub(1);
                self.snapshot.items_ok += record.ok as u64;
                self.snapshot.items_failed += record.failed as u64;
                self.snapshot.lanes.entry(record.lane.to_string()).or_default().record(record);
                if self.snapshot.recent_batches.len() == RECENT_BATCHES {
                    self.snapshot.recent_batches.pop_front();
                }
                self.snapshot.recent_batches.push_back(record.clone());
            }
            MetricsEvent::Upstream(status) => {
                self.snapshot.upstreams.insert(status.name.to_string(), status.clone());
            }
            MetricsEvent::Paused { paused } => self.snapshot.paused = *paused,
            MetricsEvent::ActorRestarted { .. } => self.snapshot.restarts += 1,
            MetricsEvent::ActorFailed { actor } => self.snapshot.failed_actors.push(actor.clone()),
            MetricsEvent::BatchDispatched { .. } => self.snapshot.batches_in_flight += 1,
            MetricsEvent::ConfigChanged { .. } => {}
            MetricsEvent::Withdrawn { reason, count } => {
                *self.snapshot.withdrawn.entry(reason.clone()).or_default() += count;
            }
        }
        // No subscriber is fine: the snapshot still answers queries.
        let _ = self.events.send(event);
    }
}

impl Actor for MetricsHub {
    type Context = Context<Self>;
}

impl Supervised for MetricsHub {}

/// Report an event.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish(pub MetricsEvent);

/// Report a finished batch (sent by its tracker).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct BatchCompleted(pub BatchRecord);

/// Ask for the current snapshot.
#[derive(Message)]
#[rtype(result = "Snapshot")]
pub struct GetSnapshot;

impl Handler<Publish> for MetricsHub {
    type Result = ();
    fn handle(&mut self, msg: Publish, _: &mut Context<Self>) {
        self.publish(msg.0);
    }
}

impl Handler<BatchCompleted> for MetricsHub {
    type Result = ();
    fn handle(&mut self, msg: BatchCompleted, _: &mut Context<Self>) {
        self.publish(MetricsEvent::BatchCompleted(msg.0));
    }
}

impl Handler<GetSnapshot> for MetricsHub {
    type Result = MessageResult<GetSnapshot>;
    fn handle(&mut self, _: GetSnapshot, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.snapshot.clone())
    }
}
