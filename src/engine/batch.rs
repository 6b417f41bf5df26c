//! A batch: the items a lane releases at once, with an id and a clock.
//!
//! The items of a batch are answered by different upstream calls at different times; the
//! [`BatchTracker`] they share counts them down and reports the batch complete (with its
//! duration and ok/failed counts) when the last one ends.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix::Addr;
use serde::Serialize;
use tokio::time::Instant;

use super::item::Item;
use super::metrics::{BatchRecord, MetricsHub};
use crate::config::Mode;

/// A batch's id: a ULID, so ids sort by time and stay unique across restarts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchId(pub ulid::Ulid);

impl BatchId {
    /// A fresh id.
    pub fn new() -> Self {
        Self(ulid::Ulid::new())
    }
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for BatchId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for BatchId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        ulid::Ulid::from_string(&text).map(BatchId).map_err(serde::de::Error::custom)
    }
}

/// Items released together by one lane.
pub(crate) struct Batch {
    pub mode: Mode,
    /// Rank of the lane, carried so client mailboxes serve higher lanes first.
    pub rank: u32,
    /// The lane's model for items that name none.
    pub model: Option<String>,
    /// The lane's reply budget for items that set none.
    pub max_tokens: Option<u32>,
    /// A combined call may carry several owners' items.
    pub mix_owners: bool,
    pub items: Vec<Item>,
}

/// Counts a batch's items down to completion.
pub(crate) struct BatchTracker {
    pub id: BatchId,
    pub lane: Arc<str>,
    pub mode: Mode,
    pub size: usize,
    started: Instant,
    remaining: AtomicUsize,
    ok: AtomicUsize,
    failed: AtomicUsize,
    requeued: AtomicUsize,
    metrics: Addr<MetricsHub>,
}

impl BatchTracker {
    pub(crate) fn new(lane: Arc<str>, mode: Mode, size: usize, metrics: Addr<MetricsHub>) -> Arc<Self> {
        Arc::new(Self {
            id: BatchId::new(),
            lane,
            mode,
            size,
            started: Instant::now(),
            remaining: AtomicUsize::new(size),
            ok: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            requeued: AtomicUsize::new(0),
            metrics,
        })
    }

    /// One item of the batch got its outcome.
    pub(crate) fn item_done(&self, ok: bool) {
        let counter = if ok { &self.ok } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
        self.count_down();
    }

    /// One item left the batch unanswered (its holder failed; it goes back to its lane).
    pub(crate) fn item_left(&self) {
        self.requeued.fetch_add(1, Ordering::Relaxed);
        self.count_down();
    }

    fn count_down(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let record = BatchRecord {
            id: self.id,
            lane: Arc::clone(&self.lane),
            mode: self.mode,
            size: self.size,
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            requeued: self.requeued.load(Ordering::Relaxed),
            duration: self.started.elapsed(),
            finished_at: std::time::SystemTime::now(),
        };
        tracing::info!(
            event = "batch_complete",
            batch_id = %record.id,
            lane = %record.lane,
            size = record.size,
            ok = record.ok,
            failed = record.failed,
            requeued = record.requeued,
            duration_ms = record.duration.as_secs_f64() * 1000.0,
        );
        self.metrics.do_send(super::metrics::BatchCompleted(record));
    }
}
