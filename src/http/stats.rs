//! `GET /api/v1/stats` (seed 000's "basic monitoring"): recent batches with the time each took,
//! throughput over the last minute, failures, and per-lane totals. The figures are computed from
//! the engine's metrics snapshot by pure functions.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::web;
use serde::Serialize;

use super::{ApiError, AppState, Caller};
use crate::engine::metrics::RECENT_BATCHES;
use crate::engine::{BatchRecord, Snapshot};

/// Recent batches listed, newest first.
pub const RECENT_LISTED: usize = 50;
/// The throughput window.
pub const THROUGHPUT_WINDOW: Duration = Duration::from_secs(60);

/// Registers the route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api/v1/stats").route(web::get().to(stats)));
}

/// The reply.
#[derive(Debug, Serialize)]
pub struct Stats {
    /// Batches completed since start.
    pub batches: u64,
    /// Items answered since start.
    pub items_ok: u64,
    /// Items that ended in an error since start.
    pub items_failed: u64,
    /// Items finished per second over the last minute.
    pub throughput: Throughput,
    /// Time per batch over the recent batches.
    pub time_per_batch_ms: BatchTimes,
    /// Failures since start.
    pub failures: Failures,
    /// Per-lane totals.
    pub lanes: BTreeMap<String, LaneStats>,
    /// The most recent batches, newest first.
    pub recent_batches: Vec<BatchView>,
}

/// Items finished per second over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Throughput {
    /// Seconds covered: the last minute, or less when the recent-batch record is shorter.
    pub window_seconds: f64,
    /// Items finished (answered or failed) in the window.
    pub items: u64,
    /// `items / window_seconds`.
    pub items_per_second: f64,
}

/// Batch durations, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BatchTimes {
    /// Batches measured.
    pub count: usize,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// Longest.
    pub max: f64,
}

/// Failure counts.
#[derive(Debug, Serialize)]
pub struct Failures {
    /// Items that ended in an error.
    pub items_failed: u64,
    /// Recent batches with at least one failed item.
    pub recent_batches_with_failures: usize,
    /// Upstream calls that failed (all upstreams; retried calls included).
    pub upstream_calls_failed: u64,
    /// Upstream calls retried.
    pub upstream_retries: u64,
    /// Upstream 429 answers.
    pub upstream_rate_limited: u64,
}

/// One lane's totals.
#[derive(Debug, Serialize)]
pub struct LaneStats {
    /// Items waiting now.
    pub depth: usize,
    /// Batches completed.
    pub batches: u64,
    /// Items answered.
    pub items_ok: u64,
    /// Items failed.
    pub items_failed: u64,
    /// Mean batch duration in milliseconds (0 before the first batch).
    pub mean_batch_ms: f64,
}

/// One finished batch.
#[derive(Debug, Serialize)]
pub struct BatchView {
    /// Batch id.
    pub id: String,
    /// Lane.
    pub lane: String,
    /// `fanout` or `combined`.
    pub mode: String,
    /// Items released in it.
    pub size: usize,
    /// Items answered.
    pub ok: usize,
    /// Items failed.
    pub failed: usize,
    /// From release to its last item's outcome, in milliseconds.
    pub duration_ms: f64,
    /// When it finished, milliseconds since the Unix epoch.
    pub finished_at_ms: u64,
}

async fn stats(state: web::Data<AppState>, _: Caller) -> Result<web::Json<Stats>, ApiError> {
    let snapshot = state.engine.snapshot().await?;
    Ok(web::Json(summarize(&snapshot, &state.engine.lanes(), SystemTime::now())))
}

/// The stats reply for `snapshot` at `now`; `lanes` are listed even before their first batch.
pub fn summarize(snapshot: &Snapshot, lanes: &[String], now: SystemTime) -> Stats {
    let records: Vec<&BatchRecord> = snapshot.recent_batches.iter().collect();
    let upstreams = snapshot.upstreams.values();
    let lanes = lanes
        .iter()
        .map(|lane| {
            let totals = snapshot.lanes.get(lane).cloned().unwrap_or_default();
            let mean_batch_ms =
                if totals.batches == 0 { 0.0 } else { totals.duration_sum * 1000.0 / totals.batches as f64 };
            let stats = LaneStats {
                depth: snapshot.lane_depths.get(lane).copied().unwrap_or(0),
                batches: totals.batches,
                items_ok: totals.items_ok,
                items_failed: totals.items_failed,
                mean_batch_ms,
            };
            (lane.clone(), stats)
        })
        .collect();
    Stats {
        batches: snapshot.batches,
        items_ok: snapshot.items_ok,
        items_failed: snapshot.items_failed,
        throughput: throughput(&records, now, snapshot.recent_batches.len() >= RECENT_BATCHES),
        time_per_batch_ms: batch_times(&records),
        failures: Failures {
            items_failed: snapshot.items_failed,
            recent_batches_with_failures: records.iter().filter(|r| r.failed > 0).count(),
            upstream_calls_failed: upstreams.clone().map(|u| u.failed).sum(),
            upstream_retries: upstreams.clone().map(|u| u.retries).sum(),
            upstream_rate_limited: upstreams.map(|u| u.rate_limited).sum(),
        },
        lanes,
        recent_batches: records.iter().rev().take(RECENT_LISTED).map(|r| view(r)).collect(),
    }
}

/// Items per second over the last minute. When the record is `full` (older batches were
/// dropped) and its oldest batch is inside the minute, the window shrinks to what it covers.
pub fn throughput(records: &[&BatchRecord], now: SystemTime, full: bool) -> Throughput {
    let since = |t: SystemTime| now.duration_since(t).unwrap_or_default();
    let recent = records.iter().filter(|r| since(r.finished_at) <= THROUGHPUT_WINDOW);
    let items: u64 = recent.map(|r| (r.ok + r.failed) as u64).sum();
    let oldest = records.first().map(|r| since(r.finished_at)).unwrap_or(THROUGHPUT_WINDOW);
    let window = if full && oldest < THROUGHPUT_WINDOW {
        oldest.max(Duration::from_secs(1))
    } else {
        THROUGHPUT_WINDOW
    };
    let window_seconds = window.as_secs_f64();
    Throughput { window_seconds, items, items_per_second: items as f64 / window_seconds }
}

/// Mean, median, p95 and max of the batches' durations.
pub fn batch_times(records: &[&BatchRecord]) -> BatchTimes {
    let mut ms: Vec<f64> = records.iter().map(|r| r.duration.as_secs_f64() * 1000.0).collect();
    if ms.is_empty() {
        return BatchTimes::default();
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    BatchTimes {
        count: ms.len(),
        mean: ms.iter().sum::<f64>() / ms.len() as f64,
        p50: at(0.5),
        p95: at(0.95),
        max: ms[ms.len() - 1],
    }
}

fn view(record: &BatchRecord) -> BatchView {
    BatchView {
        id: record.id.to_string(),
        lane: record.lane.to_string(),
        mode: record.mode.to_string(),
        size: record.size,
        ok: record.ok,
        failed: record.failed,
        duration_ms: record.duration.as_secs_f64() * 1000.0,
        finished_at_ms: record.finished_at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Mode;
    use crate::engine::BatchId;

    fn record(ok: usize, failed: usize, ms: u64, finished_at: SystemTime) -> BatchRecord {
        BatchRecord {
            id: BatchId::new(),
            lane: Arc::from("bulk"),
            mode: Mode::Fanout,
            size: ok + failed,
            ok,
            failed,
            requeued: 0,
            duration: Duration::from_millis(ms),
            finished_at,
        }
    }

    #[test]
    fn throughput_counts_the_last_minute_only() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let old = record(100, 0, 10, now - Duration::from_secs(61));
        let a = record(50, 10, 10, now - Duration::from_secs(30));
        let b = record(60, 0, 10, now - Duration::from_secs(1));
        let t = throughput(&[&old, &a, &b], now, false);
        assert_eq!((t.items, t.window_seconds), (120, 60.0));
        assert!((t.items_per_second - 2.0).abs() < 1e-9);
        // A full record covering only 30 s measures over those 30 s.
        let t = throughput(&[&a, &b], now, true);
        assert_eq!(t.window_seconds, 30.0);
    }

    #[test]
    fn batch_times_give_percentiles() {
        let now = SystemTime::now();
        let records: Vec<BatchRecord> = (1..=100).map(|ms| record(1, 0, ms, now)).collect();
        let refs: Vec<&BatchRecord> = records.iter().collect();
        let times = batch_times(&refs);
        assert_eq!((times.count, times.p50, times.p95, times.max), (100, 51.0, 95.0, 100.0));
        assert!((times.mean - 50.5).abs() < 1e-9);
        assert_eq!(batch_times(&[]), BatchTimes::default());
    }
}
