//! `GET`/`PUT /v1/settings` (seed 002, admin): the upstream API key and each priority's token
//! and latency budget, stored over `config.toml` and applied live.
//!
//! Reply (both methods): `{"api_key": "***last4" | null, "high_priority": {"tokens",
//! "latency_ms"}, "medium_priority": …, "low_priority": …}` with the values in effect: the stored
//! override, else the lane's current settings (a priority whose lane does not exist is `null`).
//! `PUT` takes any subset, even one field of a priority; what is given is validated (every error
//! names the field, e.g. `high_priority.tokens`), merged with what is stored, saved, and applied
//! to the engine: the key to the default upstream, the budgets to the lanes `high`, `medium`,
//! `low`. The key is never echoed, logged or written to the database.

use std::fmt;

use actix_web::web;
use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde::{Deserialize, Serialize};

use super::body::JsonBody;
use super::fields::{Object, Shape, Whole, present};
use super::record::store_unavailable;
use super::{ApiError, AppState, Caller};
use crate::config::mask_secret;
use crate::engine::{ControlError, Engine, LanePatch, RuntimeConfig};
use crate::store::{LaneBudget, StoredSettings};

/// Longest latency target the API sets: one day.
pub const MAX_LATENCY_MS: u64 = 86_400_000;

/// Each priority's field in the body and the lane it steers.
const PRIORITIES: [(&str, &str); 3] =
    [("high_priority", "high"), ("medium_priority", "medium"), ("low_priority", "low")];

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v1/settings").route(web::get().to(get)).route(web::put().to(put)));
}

/// A priority's budget as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetView {
    /// Max output tokens per item; `null` when the lane has no cap.
    pub tokens: Option<u32>,
    /// Latency target.
    pub latency_ms: u64,
}

/// The reply body (seed 002's settings, key masked).
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

/// `PUT /v1/settings`'s body: any of the fields, each priority in part or whole.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    /// The upstream API key.
    #[serde(default, deserialize_with = "present")]
    pub api_key: Option<ApiKey>,
    /// HIGH's budget.
    #[serde(default, deserialize_with = "present")]
    pub high_priority: Option<Object<BudgetBody>>,
    /// MEDIUM's budget.
    #[serde(default, deserialize_with = "present")]
    pub medium_priority: Option<Object<BudgetBody>>,
    /// LOW's budget.
    #[serde(default, deserialize_with = "present")]
    pub low_priority: Option<Object<BudgetBody>>,
}

/// A priority's budget in a `PUT`: either part may be left out.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetBody {
    /// Max output tokens per item.
    #[serde(default, deserialize_with = "present")]
    pub tokens: Option<Whole<1, { u32::MAX as u64 }>>,
    /// Latency target in milliseconds, up to [`MAX_LATENCY_MS`].
    #[serde(default, deserialize_with = "present")]
    pub latency_ms: Option<Whole<1, MAX_LATENCY_MS>>,
}

impl Shape for SettingsBody {
    const SHAPE: &'static str =
        "a JSON object with any of api_key, high_priority, medium_priority, low_priority";
}

impl Shape for BudgetBody {
    const SHAPE: &'static str = "an object like {\"tokens\": 1000, \"latency_ms\": 500}";
}

/// An upstream API key: not empty, no white space or control characters. Refused without being
/// shown.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(pub String);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl<'de> Deserialize<'de> for ApiKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Key;
        impl Visitor<'_> for Key {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-empty key without spaces, line breaks or control characters")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<String, E> {
                if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(E::invalid_value(Unexpected::Str(key), &self));
                }
                Ok(key.to_string())
            }
        }
        deserializer.deserialize_str(Key).map(ApiKey)
    }
}

/// A validated `PUT` body: only what was given.
#[derive(Debug, Default, PartialEq, Eq)]
struct Update {
    api_key: Option<String>,
    /// Per priority, in [`PRIORITIES`] order: (tokens, latency_ms) as given.
    budgets: [(Option<u32>, Option<u64>); 3],
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

async fn get(state: web::Data<AppState>, _: Caller) -> Result<web::Json<SettingsView>, ApiError> {
    let stored = state.store.settings().await.map_err(store_unavailable("load_settings"))?;
    Ok(web::Json(view(&state, &stored, &state.engine.config().await?)))
}

async fn put(
    state: web::Data<AppState>,
    _: Caller,
    body: JsonBody<Object<SettingsBody>>,
) -> Result<web::Json<SettingsView>, ApiError> {
    let update = Update::from(body.into_inner().0);
    let mut stored = state.store.settings().await.map_err(store_unavailable("load_settings"))?;
    let changes = merge(&mut stored, update, &state.engine.config().await?)?;
    state.store.save_settings(stored.clone()).await.map_err(store_unavailable("save_settings"))?;
    apply(&state.engine, &changes).await?;
    Ok(web::Json(view(&state, &stored, &state.engine.config().await?)))
}

/// Applies `settings` to the engine: the key to the default upstream, each budget to its lane
/// (a priority without a lane is skipped). Used at start (stored settings) and by `PUT`.
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

/// The values in effect: stored overrides, else the lanes' live settings.
fn view(state: &AppState, stored: &StoredSettings, runtime: &RuntimeConfig) -> SettingsView {
    let budget = |index: usize| {
        let (_, lane) = PRIORITIES[index];
        match budget_of(stored, index) {
            Some(b) => Some(BudgetView { tokens: Some(b.tokens), latency_ms: b.latency_ms }),
            None => {
                runtime.lanes.get(lane).map(|l| BudgetView { tokens: l.max_tokens, latency_ms: l.latency_ms })
            }
        }
    };
    let configured = || state.config.upstreams.first().and_then(|u| u.api_key().ok().flatten());
    SettingsView {
        api_key: stored.api_key.clone().or_else(configured).map(|key| mask_secret(&key)),
        high_priority: budget(0),
        medium_priority: budget(1),
        low_priority: budget(2),
    }
}

/// Folds `update` into `stored`; returns just the changed parts, to apply. A priority given
/// only in part takes the rest from what is in effect.
fn merge(
    stored: &mut StoredSettings,
    update: Update,
    runtime: &RuntimeConfig,
) -> Result<StoredSettings, ApiError> {
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
            return Err(ApiError::bad(
                format!("{field}.tokens"),
                format!("{field}.tokens is required: the `{lane}` lane has no token cap to keep"),
            ));
        };
        let latency_ms = latency_ms.or(current.map(|b| b.latency_ms)).or(live.map(|l| l.latency_ms));
        let Some(latency_ms) = latency_ms else {
            return Err(ApiError::bad(
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

impl From<SettingsBody> for Update {
    fn from(body: SettingsBody) -> Update {
        let budget = |b: Option<Object<BudgetBody>>| {
            let b = b.unwrap_or_default().0;
            (b.tokens.map(|n| u32::try_from(n.0).unwrap_or(u32::MAX)), b.latency_ms.map(|n| n.0))
        };
        Update {
            api_key: body.api_key.map(|key| key.0),
            budgets: [budget(body.high_priority), budget(body.medium_priority), budget(body.low_priority)],
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::request_json::{JsonError, parse};

    fn parse_update(body: &Value) -> Result<Update, JsonError> {
        parse::<Object<SettingsBody>>(body.to_string().as_bytes()).map(|body| Update::from(body.0))
    }

    fn param(body: Value) -> Option<String> {
        match parse_update(&body) {
            Err(error) => error.param,
            other => panic!("expected a bad request for {body}, got {other:?}"),
        }
    }

    #[test]
    fn a_partial_body_gives_only_its_fields() -> Result<(), JsonError> {
        let update = parse_update(&json!({"high_priority": {"tokens": 42}, "api_key": "sk-abcd1234"}))?;
        assert_eq!(update.api_key.as_deref(), Some("sk-abcd1234"));
        assert_eq!(update.budgets, [(Some(42), None), (None, None), (None, None)]);
        Ok(())
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            (json!({"high_priority": {"tokens": 0}}), "high_priority.tokens"),
            (json!({"medium_priority": {"tokens": "10"}}), "medium_priority.tokens"),
            (json!({"low_priority": {"latency_ms": -1}}), "low_priority.latency_ms"),
            (json!({"low_priority": {"latency_ms": 1.5}}), "low_priority.latency_ms"),
            (json!({"low_priority": {"latency_ms": MAX_LATENCY_MS + 1}}), "low_priority.latency_ms"),
            (json!({"high_priority": {"tokens": 5_000_000_000_u64}}), "high_priority.tokens"),
            (json!({"high_priority": {"tokens": null}}), "high_priority.tokens"),
            (json!({"high_priority": {"token": 5}}), "high_priority.token"),
            (json!({"high_priority": 5}), "high_priority"),
            (json!({"high_priority": null}), "high_priority"),
            (json!({"api_key": ""}), "api_key"),
            (json!({"api_key": "sk bad"}), "api_key"),
            (json!({"api_key": "sk\u{7}x"}), "api_key"),
            (json!({"api_key": 12}), "api_key"),
            (json!({"api_key": null}), "api_key"),
            (json!({"apikey": "x"}), "apikey"),
        ];
        for (body, expected) in cases {
            assert_eq!(param(body.clone()).as_deref(), Some(expected), "{body}");
        }
        assert_eq!(param(json!([1])), None);
        assert_eq!(param(json!({"high_priority": [1, 2]})).as_deref(), Some("high_priority"));
    }

    #[test]
    fn a_bad_key_is_not_echoed() {
        for body in [json!({"api_key": "sk-secret with-space"}), json!({"api_key": "sk-secret", "x": 1})] {
            match parse_update(&body) {
                Err(error) => assert!(!error.to_string().contains("secret"), "{error}"),
                Ok(update) => panic!("accepted {update:?}"),
            }
        }
        let debug = format!("{:?}", parse::<Object<SettingsBody>>(br#"{"api_key": "sk-secret"}"#));
        assert!(!debug.contains("secret"), "{debug}");
    }
}
