//! The settings stored over `config.toml` (seed 002's `/v1/settings`): the upstream API key and
//! each priority's token and latency budget.
//!
//! A change ([`SettingsUpdate`], already validated by its door) is merged with what is stored,
//! saved, and applied to the engine: the key to the default upstream, the budgets to the lanes
//! `high`, `medium`, `low` (those that exist). At start, [`App::start`] applies what is stored.
//! The key is never logged or written back out except masked.

use serde::Serialize;

use super::{App, AppError};
use crate::config::mask_secret;
use crate::engine::{ControlError, Engine, LanePatch, RuntimeConfig};
use crate::store::{LaneBudget, Store, StoredSettings};

/// Each priority's field (as the API names it) and the lane it steers.
pub const PRIORITIES: [(&str, &str); 3] =
    [("high_priority", "high"), ("medium_priority", "medium"), ("low_priority", "low")];

/// A validated change: only what was given.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SettingsUpdate {
    /// The new upstream key.
    pub api_key: Option<String>,
    /// Per priority, in [`PRIORITIES`] order: (tokens, latency_ms) as given.
    pub budgets: [(Option<u32>, Option<u64>); 3],
}

/// A priority's budget in effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetView {
    /// Max output tokens per item; `null` when the lane has no cap.
    pub tokens: Option<u32>,
    /// Latency target.
    pub latency_ms: u64,
}

/// The settings in effect (seed 002's settings, key masked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SettingsView {
    /// `***` and the last four characters of the key in effect, or `null` when there is none.
    pub api_key: Option<String>,
    /// HIGH's budget.
    pub high_priority: Option<BudgetView>,
    /// MEDIUM's budget.
    pub medium_priority: Option<BudgetView>,
    /// LOW's budget.
    pub low_priority: Option<BudgetView>,
}

impl App {
    /// The settings in effect: the stored overrides, else the lanes' live settings.
    pub async fn settings(&self) -> Result<SettingsView, AppError> {
        let stored = self.store.settings().await.map_err(store_failed("load_settings"))?;
        Ok(self.view(&stored, &self.engine.config().await?))
    }

    /// Merges `update` with what is stored, saves it and applies the change to the engine;
    /// returns the settings now in effect. A priority given only in part takes the rest from
    /// what is in effect.
    pub async fn update_settings(&self, update: SettingsUpdate) -> Result<SettingsView, AppError> {
        let mut stored = self.store.settings().await.map_err(store_failed("load_settings"))?;
        let changes = merge(&mut stored, update, &self.engine.config().await?)?;
        self.store.save_settings(stored.clone()).await.map_err(store_failed("save_settings"))?;
        apply(&self.engine, &changes).await?;
        Ok(self.view(&stored, &self.engine.config().await?))
    }

    fn view(&self, stored: &StoredSettings, runtime: &RuntimeConfig) -> SettingsView {
        let budget = |index: usize| {
            let (_, lane) = PRIORITIES[index];
            match budget_of(stored, index) {
                Some(b) => Some(BudgetView { tokens: Some(b.tokens), latency_ms: b.latency_ms }),
                None => runtime
                    .lanes
                    .get(lane)
                    .map(|l| BudgetView { tokens: l.max_tokens, latency_ms: l.latency_ms }),
            }
        };
        let configured = || self.config.upstreams.first().and_then(|u| u.api_key().ok().flatten());
        SettingsView {
            api_key: stored.api_key.clone().or_else(configured).map(|key| mask_secret(&key)),
            high_priority: budget(0),
            medium_priority: budget(1),
            low_priority: budget(2),
        }
    }
}

/// Applies the stored settings over `config.toml` at start, before any door takes requests.
pub(crate) async fn apply_stored(engine: &Engine, store: &Store) -> Result<(), AppError> {
    let stored = store.settings().await.map_err(store_failed("reading the stored settings at start"))?;
    apply(engine, &stored).await.map_err(AppError::StoredSettings)?;
    if stored != StoredSettings::default() {
        tracing::info!(event = "settings_applied", api_key = stored.api_key.is_some());
    }
    Ok(())
}

/// Applies `settings` to the engine: the key to the default upstream, each budget to its lane
/// (a priority without a lane is skipped).
pub async fn apply(engine: &Engine, settings: &StoredSettings) -> Result<(), ControlError> {
    if let Some(key) = &settings.api_key {
        engine.set_upstream_key(None, key.clone()).await?;
    }
    for (index, (_, lane)) in PRIORITIES.iter().enumerate() {
        if let Some(budget) = budget_of(settings, index)
            && engine.has_lane(lane)
        {
            let patch = LanePatch {
                max_tokens: Some(budget.tokens),
                latency_ms: Some(budget.latency_ms),
                ..LanePatch::default()
            };
            engine.update_lane(lane, patch).await?;
        }
    }
    Ok(())
}

fn store_failed(what: &'static str) -> impl Fn(crate::store::StoreError) -> AppError {
    move |source| AppError::StoreFailed { what, source }
}

fn budget_slot(settings: &mut StoredSettings, index: usize) -> &mut Option<LaneBudget> {
    match index {
        0 => &mut settings.high,
        1 => &mut settings.medium,
        _ => &mut settings.low,
    }
}

fn budget_of(settings: &StoredSettings, index: usize) -> Option<LaneBudget> {
    [settings.high, settings.medium, settings.low][index]
}

/// Folds `update` into `stored`; returns just the changed parts, to apply.
fn merge(
    stored: &mut StoredSettings,
    update: SettingsUpdate,
    runtime: &RuntimeConfig,
) -> Result<StoredSettings, AppError> {
    let mut changes = StoredSettings { api_key: update.api_key, ..StoredSettings::default() };
    if changes.api_key.is_some() {
        stored.api_key.clone_from(&changes.api_key);
    }
    for (index, (field, lane)) in PRIORITIES.iter().enumerate() {
        let (tokens, latency_ms) = update.budgets[index];
        if tokens.is_none() && latency_ms.is_none() {
            continue;
        }
        let live = runtime.lanes.get(*lane);
        let current = budget_of(stored, index);
        let tokens = tokens.or(current.map(|b| b.tokens)).or(live.and_then(|l| l.max_tokens));
        let Some(tokens) = tokens else {
            return Err(AppError::invalid(
                format!("{field}.tokens"),
                format!("{field}.tokens is required: the `{lane}` lane has no token cap to keep"),
            ));
        };
        let latency_ms = latency_ms.or(current.map(|b| b.latency_ms)).or(live.map(|l| l.latency_ms));
        let Some(latency_ms) = latency_ms else {
            return Err(AppError::invalid(
                format!("{field}.latency_ms"),
                format!("{field}.latency_ms is required: there is no `{lane}` lane to take it from"),
            ));
        };
        let budget = LaneBudget { tokens, latency_ms };
        *budget_slot(stored, index) = Some(budget);
        *budget_slot(&mut changes, index) = Some(budget);
    }
    Ok(changes)
}
