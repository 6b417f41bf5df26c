//! The engine's control vocabulary: its bounds, live changes, the configuration view, shutdown reports and
//! fault-injection targets — what doors send to and get back from the Supervisor.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::{Config, LaneSettings, Mode, ProviderKind};

/// Largest batch size the engine takes, for `[batching] batch_size` and a lane's `max_batch`,
/// at start and live (the prompts endpoints take at most 1000 per request).
pub const MAX_BATCH_SIZE: u64 = 10_000;
/// Longest batch delay, or lane window, the engine takes, at start and live: ten minutes.
pub const MAX_BATCH_DELAY_MS: u64 = 600_000;
/// Longest latency target (a lane's `latency_ms`) the engine takes, at start and live: one day.
pub const MAX_LATENCY_MS: u64 = 86_400_000;

/// `value` when it lies in `min..=max`; otherwise the refusal naming `field` and the range.
pub(crate) fn in_range(field: &'static str, value: u64, min: u64, max: u64) -> Result<u64, ControlError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ControlError::Invalid {
            field,
            message: format!("must be an integer from {min} to {max} (got {value})"),
        })
    }
}

/// Checks `config`'s batching values against the engine's bounds, as a live change is
/// checked: `[batching] batch_size` and `batch_delay_ms`, and each lane's `max_batch`,
/// `window_ms`, `delay_ms` and `latency_ms`. Every value out of bounds is listed, by its key,
/// with the range that would be valid. (The config's own `validate` cannot see these bounds:
/// the config sits below the engine; the app checks both at load, and [`Engine::start`] again.)
///
/// [`Engine::start`]: super::Engine::start
pub fn check_bounds(config: &Config) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let mut check = |key: String, value: u64, min: u64, max: u64| {
        if let Err(ControlError::Invalid { message, .. }) = in_range("", value, min, max) {
            problems.push(format!("{key}: {message}"));
        }
    };
    let batching = &config.batching;
    check("batching.batch_size".into(), batching.batch_size as u64, 1, MAX_BATCH_SIZE);
    check("batching.batch_delay_ms".into(), batching.batch_delay_ms, 0, MAX_BATCH_DELAY_MS);
    for (name, lane) in &config.lanes {
        if let Some(n) = lane.max_batch {
            check(format!("lanes.{name}.max_batch"), n as u64, 1, MAX_BATCH_SIZE);
        }
        check(format!("lanes.{name}.window_ms"), lane.window_ms, 0, MAX_BATCH_DELAY_MS);
        if let Some(ms) = lane.delay_ms {
            check(format!("lanes.{name}.delay_ms"), ms, 0, MAX_BATCH_DELAY_MS);
        }
        check(format!("lanes.{name}.latency_ms"), lane.latency_ms, 1, MAX_LATENCY_MS);
    }
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

/// A change to one lane; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LanePatch {
    /// New batch window.
    pub window_ms: Option<u64>,
    /// New batch size (the lane stops following `[batching] batch_size`).
    pub max_batch: Option<usize>,
    /// New pause between batches (the lane stops following `[batching] batch_delay_ms`).
    pub delay_ms: Option<u64>,
    /// New per-item reply budget.
    pub max_tokens: Option<u32>,
    /// New latency target.
    pub latency_ms: Option<u64>,
    /// New mode.
    pub mode: Option<Mode>,
}

/// An upstream as the config view shows it: no secrets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpstreamView {
    /// Name.
    pub name: String,
    /// API kind.
    pub provider: ProviderKind,
    /// API root.
    pub base_url: Option<String>,
    /// Models served.
    pub models: Vec<String>,
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens per minute.
    pub tpm: Option<u64>,
    /// Requests per day.
    pub rpd: Option<u64>,
    /// Concurrency cap: a number, or `"auto"`.
    pub concurrency: crate::config::Concurrency,
    /// How combined calls send their reply schema.
    pub structured_output: crate::config::StructuredOutput,
    /// Name of the key's environment variable (never the key).
    pub api_key_env: Option<String>,
}

/// The live batching configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuntimeConfig {
    /// `[batching] batch_size` now.
    pub batch_size: usize,
    /// `[batching] batch_delay_ms` now.
    pub batch_delay_ms: u64,
    /// Whether dispatch is paused.
    pub paused: bool,
    /// Each lane's effective settings.
    pub lanes: BTreeMap<String, LaneSettings>,
    /// The upstreams.
    pub upstreams: Vec<UpstreamView>,
}

/// A live change that was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// A value out of range; names the field.
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What would be valid.
        message: String,
    },
    /// No such lane.
    #[error("unknown lane `{lane}`; lanes are: {known}")]
    UnknownLane {
        /// The name given.
        lane: String,
        /// Configured lanes.
        known: String,
    },
    /// No such upstream.
    #[error("unknown upstream `{0}`")]
    UnknownUpstream(String),
    /// The engine has stopped.
    #[error("the engine has stopped")]
    Stopped,
}

/// What a shutdown left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ShutdownReport {
    /// Items that finished (result or upstream error) during the drain.
    pub drained: usize,
    /// Items answered "shutting down" because the deadline passed first.
    pub cut_off: usize,
    /// Items still unanswered after the deadline and a one-second grace (0 unless an upstream
    /// call ignores cancellation).
    pub left: usize,
}

/// Which actor a fault injection targets (only with the `fault-injection` feature).
#[cfg(feature = "fault-injection")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultTarget {
    /// A lane, by name.
    Lane(String),
    /// The client pool.
    Pool,
    /// An upstream client, by upstream name.
    Client(String),
}
