//! The configuration as the console shows it: built from the engine's [`RuntimeConfig`] in
//! process, or read from `GET /api/v1/config` when attached to a daemon (the same JSON).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::Mode;
use crate::engine::RuntimeConfig;

/// The live batching configuration, the fields the console draws and steers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ConfigView {
    /// `[batching] batch_size` now.
    pub batch_size: usize,
    /// `[batching] batch_delay_ms` now.
    pub batch_delay_ms: u64,
    /// Whether dispatch is paused.
    pub paused: bool,
    /// Each lane's effective settings.
    pub lanes: BTreeMap<String, LaneView>,
}

/// One lane's effective settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LaneView {
    /// Higher rank is served first.
    pub rank: u32,
    /// Batch window.
    pub window_ms: u64,
    /// Items that make a batch ready.
    pub max_batch: usize,
    /// Minimum pause between two batches.
    pub delay_ms: u64,
    /// `fanout` or `combined`.
    pub mode: Mode,
    /// Follows `[batching] batch_size`.
    pub max_batch_follows_global: bool,
    /// Follows `[batching] batch_delay_ms`.
    pub delay_follows_global: bool,
}

impl From<&RuntimeConfig> for ConfigView {
    fn from(config: &RuntimeConfig) -> Self {
        ConfigView {
            batch_size: config.batch_size,
            batch_delay_ms: config.batch_delay_ms,
            paused: config.paused,
            lanes: config
                .lanes
                .iter()
                .map(|(name, lane)| {
                    let view = LaneView {
                        rank: lane.rank,
                        window_ms: lane.window_ms,
                        max_batch: lane.max_batch,
                        delay_ms: lane.delay_ms,
                        mode: lane.mode,
                        max_batch_follows_global: lane.max_batch_follows_global,
                        delay_follows_global: lane.delay_follows_global,
                    };
                    (name.clone(), view)
                })
                .collect(),
        }
    }
}

impl ConfigView {
    /// Lane names, highest rank first (the order the console lists them in).
    pub fn lanes_by_rank(&self) -> Vec<String> {
        let mut names: Vec<(&String, u32)> = self.lanes.iter().map(|(n, l)| (n, l.rank)).collect();
        names.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        names.into_iter().map(|(n, _)| n.clone()).collect()
    }
}
