//! What each lane runs on: its `[lanes.NAME]` values with the `[batching]` defaults it leaves
//! unset filled in.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{BatchingConfig, Config, LaneConfig, Mode};

/// What a lane resolves to once `[batching]` defaults are applied; the engine runs on this.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LaneSettings {
    /// Higher rank is served first.
    pub rank: u32,
    /// Longest wait of the oldest item before its batch is ready.
    pub window_ms: u64,
    /// Items that make a batch ready at once.
    pub max_batch: usize,
    /// Minimum pause between two batches of the lane.
    pub delay_ms: u64,
    /// Cap on generated tokens per item, unless the item sets one.
    pub max_tokens: Option<u32>,
    /// Latency target.
    pub latency_ms: u64,
    /// `fanout` or `combined`.
    pub mode: Mode,
    /// Items the lane may hold before refusing submissions.
    pub queue_capacity: usize,
    /// Model for items that name none (absent: the upstream's first model).
    pub model: Option<String>,
    /// A combined batch may carry several owners' items.
    pub mix_owners: bool,
    /// Temperature for items that set none.
    pub temperature: Option<f32>,
    /// Nucleus sampling for items that set none.
    pub top_p: Option<f32>,
    /// Seed for items that set none.
    pub seed: Option<i64>,
    /// Share of combined items also sent alone to measure fidelity.
    pub verify_share: f64,
    /// Fidelity under which the lane acts as `on_low_fidelity` says.
    pub min_fidelity: f64,
    /// `warn` or `fanout`.
    pub on_low_fidelity: super::LowFidelity,
    /// The lane sets no `max_batch`, so a live change of the global batch size applies to it.
    pub max_batch_follows_global: bool,
    /// The lane sets no `delay_ms`, so a live change of the global batch delay applies to it.
    pub delay_follows_global: bool,
}

impl LaneConfig {
    /// This lane's settings, taking what it leaves unset from `batching`.
    pub fn effective(&self, batching: &BatchingConfig) -> LaneSettings {
        LaneSettings {
            rank: self.rank,
            window_ms: self.window_ms,
            max_batch: self.max_batch.unwrap_or(batching.batch_size),
            delay_ms: self.delay_ms.unwrap_or(batching.batch_delay_ms),
            max_tokens: self.max_tokens,
            latency_ms: self.latency_ms,
            mode: self.mode,
            queue_capacity: self.queue_capacity.unwrap_or(batching.queue_capacity),
            model: self.model.clone(),
            mix_owners: self.mix_owners,
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            verify_share: self.verify_share,
            min_fidelity: self.min_fidelity,
            on_low_fidelity: self.on_low_fidelity,
            max_batch_follows_global: self.max_batch.is_none(),
            delay_follows_global: self.delay_ms.is_none(),
        }
    }
}

impl Config {
    /// Every lane's settings after defaults are applied, by lane name.
    pub fn resolved_lanes(&self) -> BTreeMap<String, LaneSettings> {
        self.lanes.iter().map(|(name, lane)| (name.clone(), lane.effective(&self.batching))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{default_latency_ms, default_mode};

    fn lane(max_batch: Option<usize>, delay_ms: Option<u64>) -> LaneConfig {
        LaneConfig {
            rank: 1,
            window_ms: 50,
            max_batch,
            delay_ms,
            max_tokens: None,
            latency_ms: default_latency_ms(),
            mode: default_mode(),
            queue_capacity: None,
            model: None,
            ..LaneConfig::default()
        }
    }

    #[test]
    fn lane_without_own_values_follows_batching() {
        let batching =
            BatchingConfig { batch_size: 7, batch_delay_ms: 30, queue_capacity: 9, ..Default::default() };
        let settings = lane(None, None).effective(&batching);
        assert_eq!((settings.max_batch, settings.delay_ms, settings.queue_capacity), (7, 30, 9));
        assert!(settings.max_batch_follows_global && settings.delay_follows_global);
    }

    #[test]
    fn lane_own_values_win_over_batching() {
        let settings = lane(Some(3), Some(0)).effective(&BatchingConfig::default());
        assert_eq!((settings.max_batch, settings.delay_ms), (3, 0));
        assert!(!settings.max_batch_follows_global && !settings.delay_follows_global);
    }

    #[test]
    fn default_lanes_resolve_as_designed() {
        let lanes = Config::default().resolved_lanes();
        let high = &lanes["high"];
        assert_eq!((high.rank, high.window_ms, high.max_batch, high.latency_ms), (3, 200, 6, 500));
        assert_eq!((high.max_tokens, high.mode, high.delay_ms), (Some(1_000), Mode::Fanout, 100));
        let bulk = &lanes["bulk"];
        assert_eq!((bulk.rank, bulk.window_ms, bulk.max_batch, bulk.mode), (0, 0, 10, Mode::Fanout));
        assert!(bulk.max_batch_follows_global && bulk.delay_follows_global);
        assert_eq!(bulk.queue_capacity, 100_000);
    }
}
