//! The console's own view of the engine, folded from metrics messages. Drawing reads only this;
//! input changes only its interaction fields ([`Mode`], selection, scroll) and asks for
//! [`Command`](super::command::Command)s.
//!
//! Time is passed in (`now`, `wall`), never read here, so a fixed sequence of messages gives
//! the same screen in tests.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use crate::engine::{BatchRecord, MetricsEvent, Snapshot, UpstreamState, UpstreamStatus};

pub use super::mode::{Field, Focus, Mode};
use super::stats::{Rate, percentile};
use super::view::ConfigView;

/// Recent batches kept for the table and the percentiles.
const BATCHES_KEPT: usize = 200;
/// Lines kept in the failures and log panes.
const LINES_KEPT: usize = 500;
/// Depth samples kept per lane: one a second, five minutes.
pub const HISTORY: usize = 300;
/// Period of the depth samples behind the sparklines.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// A line of the failures or log pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// `HH:MM:SS` UTC.
    pub time: String,
    /// Warning or worse.
    pub severe: bool,
    /// The text.
    pub text: String,
}

/// One lane as the console sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LaneState {
    /// Items waiting at the last report.
    pub depth: usize,
    /// The oldest item's wait at the last report, in ms.
    pub oldest_ms: u64,
    /// Owners with items waiting at the last report.
    pub owners: usize,
    /// Items of the owner with the most waiting.
    pub top_owner_depth: usize,
    /// When the last report came.
    pub reported_at: Option<Instant>,
    /// Depth samples, oldest first (the most seen in each second).
    pub history: VecDeque<u64>,
    /// The most seen since the last sample.
    pub peak: usize,
}

/// An upstream's last status and when it came.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamRow {
    /// The status.
    pub status: UpstreamStatus,
    /// When a backoff or cooldown ends (wall clock), if in one.
    pub until: Option<SystemTime>,
}

/// Where a drain after `q` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Just begun: a `q` now is the first one held down, not a second.
    Starting,
    /// Answering what is queued and in flight; a second `q` cuts it short.
    Waiting,
    /// Asked to stop now: what is left is being answered "shutting down".
    CuttingOff,
}

/// Is the console attached to its engine?
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// Receiving messages.
    Up,
    /// Not receiving; why.
    Down(String),
}

/// Everything the console draws.
#[derive(Debug, Clone)]
pub struct Dashboard {
    /// Where the engine is: `local · API http://…` or `remote http://…`.
    pub source: String,
    /// Whether messages arrive.
    pub link: Link,
    /// The live configuration, once known.
    pub config: Option<ConfigView>,
    /// Per lane, by name.
    pub lanes: BTreeMap<String, LaneState>,
    /// Recent batches, newest last.
    pub batches: VecDeque<BatchRecord>,
    /// Batches in flight (dispatched, not completed).
    pub batches_in_flight: usize,
    /// Per upstream, by name.
    pub upstreams: BTreeMap<String, UpstreamRow>,
    /// Failures, newest last.
    pub failures: VecDeque<Line>,
    /// Log events, newest last.
    pub log: VecDeque<Line>,
    /// Whether log events come from a log feed (then config changes are not echoed twice).
    pub log_feed: bool,
    /// Totals since start.
    pub items_ok: u64,
    /// Items failed since start.
    pub items_failed: u64,
    /// Batches completed since start.
    pub batch_count: u64,
    /// Actor restarts since start.
    pub restarts: u64,
    /// Actors declared failed (restarted too often); the engine takes no new work.
    pub failed_actors: Vec<String>,
    /// Items finished per second.
    pub items_rate: Rate,
    /// Tokens per second.
    pub tokens_rate: Rate,
    /// Tokens reported so far per upstream (to turn totals into a rate).
    tokens_seen: BTreeMap<String, u64>,
    /// Index into the rank-ordered lanes.
    pub selected: usize,
    /// Keys mean…
    pub mode: Mode,
    /// Pane the scroll keys move.
    pub focus: Focus,
    /// Lines scrolled up from the newest, failures pane.
    pub failures_scroll: usize,
    /// Lines scrolled up from the newest, log pane.
    pub log_scroll: usize,
    /// The last command's result: text, and whether it failed.
    pub status: Option<(String, bool)>,
    /// Quitting: the drain under way, if any.
    pub drain: Option<Drain>,
    /// Now, monotonic.
    pub now: Instant,
    /// Now, wall clock.
    pub wall: SystemTime,
    last_sample: Instant,
}

impl Dashboard {
    /// An empty dashboard.
    pub fn new(source: impl Into<String>, now: Instant, wall: SystemTime) -> Self {
        Dashboard {
            source: source.into(),
            link: Link::Up,
            config: None,
            lanes: BTreeMap::new(),
            batches: VecDeque::new(),
            batches_in_flight: 0,
            upstreams: BTreeMap::new(),
            failures: VecDeque::new(),
            log: VecDeque::new(),
            log_feed: false,
            items_ok: 0,
            items_failed: 0,
            batch_count: 0,
            restarts: 0,
            failed_actors: Vec::new(),
            items_rate: Rate::default(),
            tokens_rate: Rate::default(),
            tokens_seen: BTreeMap::new(),
            selected: 0,
            mode: Mode::Normal,
            focus: Focus::Log,
            failures_scroll: 0,
            log_scroll: 0,
            status: None,
            drain: None,
            now,
            wall,
            last_sample: now,
        }
    }

    /// Moves the clocks and takes a depth sample each second. True when something shown moved.
    pub fn tick(&mut self, now: Instant, wall: SystemTime) -> bool {
        self.now = now;
        self.wall = wall;
        let mut sampled = false;
        while now.duration_since(self.last_sample) >= SAMPLE_EVERY {
            self.last_sample += SAMPLE_EVERY;
            for lane in self.lanes.values_mut() {
                if lane.history.len() == HISTORY {
                    lane.history.pop_front();
                }
                lane.history.push_back(lane.peak as u64);
                lane.peak = lane.depth;
            }
            sampled = true;
        }
        // Sparklines of nothing but zeros look the same shifted: no redraw for them.
        sampled && self.lanes.values().any(|lane| lane.history.iter().any(|&d| d > 0))
    }

    /// Takes the configuration (at start, after every change).
    pub fn set_config(&mut self, config: ConfigView) {
        for name in config.lanes.keys() {
            self.lanes.entry(name.clone()).or_default();
        }
        self.selected = self.selected.min(config.lanes.len().saturating_sub(1));
        self.config = Some(config);
    }

    /// Takes what the hub knew when the console attached.
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) {
        for (lane, depth) in snapshot.lane_depths {
            let state = self.lanes.entry(lane).or_default();
            state.depth = depth;
            state.peak = depth;
            state.reported_at = Some(self.now);
        }
        self.batches = snapshot.recent_batches.into_iter().collect();
        while self.batches.len() > BATCHES_KEPT {
            self.batches.pop_front();
        }
        self.batch_count = snapshot.batches;
        self.batches_in_flight = snapshot.batches_in_flight;
        self.items_ok = snapshot.items_ok;
        self.items_failed = snapshot.items_failed;
        self.restarts = snapshot.restarts;
        self.failed_actors = snapshot.failed_actors;
        for status in snapshot.upstreams.into_values() {
            self.tokens_seen.insert(status.name.to_string(), status.prompt_tokens + status.completion_tokens);
            self.set_upstream(status);
        }
        if let Some(config) = &mut self.config {
            config.paused = snapshot.paused;
        }
    }

    /// Folds one metrics message in. True when something shown changed.
    pub fn apply(&mut self, event: MetricsEvent) -> bool {
        match event {
            MetricsEvent::LaneDepth { lane, depth, oldest_ms, owners, top_owners } => {
                let new = !self.lanes.contains_key(lane.as_ref());
                let state = self.lanes.entry(lane.to_string()).or_default();
                let top = top_owners.first().map_or(0, |o| o.depth);
                let changed = new
                    || state.depth != depth
                    || state.oldest_ms != oldest_ms
                    || state.owners != owners
                    || state.top_owner_depth != top;
                state.depth = depth;
                state.oldest_ms = oldest_ms;
                state.owners = owners;
                state.top_owner_depth = top;
                state.reported_at = Some(self.now);
                state.peak = state.peak.max(depth);
                changed
            }
            MetricsEvent::BatchDispatched { .. } => {
                self.batches_in_flight += 1;
                true
            }
            MetricsEvent::BatchCompleted(record) => {
                self.complete(record);
                true
            }
            MetricsEvent::Upstream(status) => self.upstream_report(status),
            MetricsEvent::Withdrawn { reason, count } => {
                if !self.log_feed {
                    self.push_log(false, format!("event=withdrawn reason={reason} items={count}"));
                }
                true
            }
            MetricsEvent::ConfigChanged { change } => {
                if !self.log_feed {
                    self.push_log(false, format!("event=config_changed change={change}"));
                }
                true
            }
            MetricsEvent::Paused { paused } => {
                if let Some(config) = &mut self.config {
                    config.paused = paused;
                }
                if !self.log_feed {
                    let word = if paused { "paused" } else { "resumed" };
                    self.push_log(false, format!("event=config_changed dispatch={word}"));
                }
                true
            }
            MetricsEvent::ActorRestarted { actor } => {
                self.restarts += 1;
                self.push_failure(format!("actor {actor} panicked and was restarted"));
                true
            }
            MetricsEvent::ActorFailed { actor } => {
                self.push_failure(format!(
                    "actor {actor} kept panicking and was stopped; no new work is taken"
                ));
                self.failed_actors.push(actor);
                true
            }
        }
    }

    fn complete(&mut self, record: BatchRecord) {
        self.batches_in_flight = self.batches_in_flight.saturating_sub(1);
        self.batch_count += 1;
        self.items_ok += record.ok as u64;
        self.items_failed += record.failed as u64;
        self.items_rate.add(self.now, (record.ok + record.failed) as u64);
        if record.failed > 0 {
            let id = record.id.to_string();
            let short = short_id(&id);
            self.push_failure(format!(
                "batch {short} ({}): {} of {} items failed",
                record.lane, record.failed, record.size
            ));
        }
        if self.batches.len() == BATCHES_KEPT {
            self.batches.pop_front();
        }
        self.batches.push_back(record);
    }

    fn upstream_report(&mut self, status: UpstreamStatus) -> bool {
        let name = status.name.to_string();
        let tokens = status.prompt_tokens + status.completion_tokens;
        let before = self.tokens_seen.insert(name.clone(), tokens).unwrap_or(tokens);
        self.tokens_rate.add(self.now, tokens.saturating_sub(before));
        let previous = self.upstreams.get(&name).map(|row| row.status.clone());
        if let Some(previous) = &previous {
            if status == *previous {
                return false;
            }
            if status.last_error != previous.last_error
                && let Some(error) = &status.last_error
            {
                self.push_failure(format!("{name}: {error}"));
            }
            if status.rate_limited > previous.rate_limited {
                let new = status.rate_limited - previous.rate_limited;
                self.push_failure(format!(
                    "{name}: {new} × 429 rate limited ({} in all)",
                    status.rate_limited
                ));
            }
        }
        self.set_upstream(status);
        true
    }

    fn set_upstream(&mut self, status: UpstreamStatus) {
        let until = match status.state {
            UpstreamState::Ok => None,
            UpstreamState::BackingOff { for_ms }
            | UpstreamState::CoolingDown { for_ms }
            | UpstreamState::Exhausted { for_ms, .. } => Some(self.wall + Duration::from_millis(for_ms)),
        };
        self.upstreams.insert(status.name.to_string(), UpstreamRow { status, until });
    }

    /// Adds a failure line.
    pub fn push_failure(&mut self, text: String) {
        let line = Line { time: clock(self.wall), severe: true, text };
        push_line(&mut self.failures, line, &mut self.failures_scroll);
    }

    /// Adds a log line.
    pub fn push_log(&mut self, severe: bool, text: String) {
        let line = Line { time: clock(self.wall), severe, text };
        push_line(&mut self.log, line, &mut self.log_scroll);
    }

    /// Lane names in the order shown: highest rank first, then any lane only metrics named.
    pub fn lane_order(&self) -> Vec<String> {
        let mut order = self.config.as_ref().map(ConfigView::lanes_by_rank).unwrap_or_default();
        for name in self.lanes.keys() {
            if !order.contains(name) {
                order.push(name.clone());
            }
        }
        order
    }

    /// The selected lane's name.
    pub fn selected_lane(&self) -> Option<String> {
        self.lane_order().get(self.selected).cloned()
    }

    /// How long a lane's oldest item has waited, now.
    pub fn oldest_wait(&self, lane: &LaneState) -> Duration {
        if lane.depth == 0 {
            return Duration::ZERO;
        }
        let since = lane.reported_at.map_or(Duration::ZERO, |at| self.now.saturating_duration_since(at));
        Duration::from_millis(lane.oldest_ms) + since
    }

    /// p50 and p95 of the recent batches' durations.
    pub fn batch_percentiles(&self) -> Option<(Duration, Duration)> {
        let mut durations: Vec<Duration> = self.batches.iter().map(|b| b.duration).collect();
        durations.sort_unstable();
        Some((percentile(&durations, 50)?, percentile(&durations, 95)?))
    }

    /// Whether dispatch is paused.
    pub fn paused(&self) -> bool {
        self.config.as_ref().is_some_and(|c| c.paused)
    }
}

fn push_line(lines: &mut VecDeque<Line>, line: Line, scroll: &mut usize) {
    if lines.len() == LINES_KEPT {
        lines.pop_front();
    }
    lines.push_back(line);
    // A scrolled-up view stays on the lines it shows.
    if *scroll > 0 {
        *scroll = (*scroll + 1).min(lines.len().saturating_sub(1));
    }
}

/// The last six characters of a batch id: enough to tell recent batches apart.
pub fn short_id(id: &str) -> &str {
    let start = id.len().saturating_sub(6);
    id.get(start..).unwrap_or(id)
}

/// `HH:MM:SS` in UTC.
pub fn clock(at: SystemTime) -> String {
    let secs = at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let day = secs % 86_400;
    format!("{:02}:{:02}:{:02}", day / 3600, day / 60 % 60, day % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::UpstreamStatus;

    fn status(in_flight: usize) -> UpstreamStatus {
        UpstreamStatus {
            name: "mock".into(),
            state: UpstreamState::Ok,
            in_flight,
            queued: 0,
            concurrency: 16,
            concurrency_auto: false,
            combined_calls: 0,
            split_failures: 0,
            resent_alone: 0,
            limits: Default::default(),
            calls: 0,
            ok: 0,
            failed: 0,
            retries: 0,
            duplicate_risk: 0,
            rate_limited: 0,
            backpressure: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            limit_waits: 0,
            last_error: None,
            fidelity: Vec::new(),
        }
    }

    #[test]
    fn an_unchanged_report_asks_for_no_redraw() {
        let mut state = Dashboard::new("test", Instant::now(), SystemTime::now());
        assert!(state.apply(MetricsEvent::Upstream(status(0))));
        // Idle: the same status every 250 ms changes nothing on screen.
        assert!(!state.apply(MetricsEvent::Upstream(status(0))));
        assert!(state.apply(MetricsEvent::Upstream(status(1))));
        let depth = |depth| MetricsEvent::LaneDepth {
            lane: "high".into(),
            depth,
            oldest_ms: 0,
            owners: 1,
            top_owners: Vec::new(),
        };
        assert!(state.apply(depth(0)));
        assert!(!state.apply(depth(0)));
    }

    /// A snapshot (at attach, or after the console fell behind and lost events) sets the
    /// batches in flight; counting on from a stale figure would never come back to zero.
    #[test]
    fn a_snapshot_resets_the_batches_in_flight() {
        let mut state = Dashboard::new("test", Instant::now(), SystemTime::now());
        for _ in 0..3 {
            let id = crate::engine::BatchId::new();
            state.apply(MetricsEvent::BatchDispatched {
                id,
                lane: "low".into(),
                size: 1,
                mode: crate::config::Mode::Fanout,
            });
        }
        assert_eq!(state.batches_in_flight, 3);
        state.apply_snapshot(Snapshot { batches_in_flight: 1, ..Snapshot::default() });
        assert_eq!(state.batches_in_flight, 1);
    }

    #[test]
    fn sparkline_samples_keep_the_peak_of_each_second() {
        let start = Instant::now();
        let wall = SystemTime::now();
        let mut state = Dashboard::new("test", start, wall);
        let depth = |depth| MetricsEvent::LaneDepth {
            lane: "low".into(),
            depth,
            oldest_ms: 0,
            owners: 1,
            top_owners: Vec::new(),
        };
        state.apply(depth(9));
        state.apply(depth(2));
        state.tick(start + Duration::from_millis(1500), wall);
        state.tick(start + Duration::from_millis(2100), wall);
        assert_eq!(state.lanes["low"].history, VecDeque::from([9, 2]));
    }
}
