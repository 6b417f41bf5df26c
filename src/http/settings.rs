//! `GET`/`PUT /v1/settings` (seed 002, admin): the upstream API key and each priority's token
//! and latency budget, stored over `config.toml` and applied live.
//!
//! Reply (both methods): `{"api_key": "***last4" | null, "high_priority": {"tokens",
//! "latency_ms"}, "medium_priority": …, "low_priority": …}` with the values in effect: the stored
//! override, else the lane's current settings (a priority whose lane does not exist is `null`).
//! `PUT` takes any subset, even one field of a priority; what is given is validated here (every
//! error names the field, e.g. `high_priority.tokens`), then merged, saved and applied by the app
//! ([`crate::app::settings`]). The key is never echoed, logged or written to the database.

use std::fmt;

use actix_web::web;
use serde::Deserialize;
use serde::de::{self, Deserializer, Unexpected, Visitor};

use super::body::JsonBody;
use super::fields::{Object, Shape, Whole, present};
use super::{ApiError, AppState, Caller};
use crate::app::MAX_LATENCY_MS;
use crate::app::settings::{SettingsUpdate, SettingsView};

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v1/settings").route(web::get().to(get)).route(web::put().to(put)));
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

async fn get(state: web::Data<AppState>, _: Caller) -> Result<web::Json<SettingsView>, ApiError> {
    Ok(web::Json(state.settings().await?))
}

async fn put(
    state: web::Data<AppState>,
    _: Caller,
    body: JsonBody<Object<SettingsBody>>,
) -> Result<web::Json<SettingsView>, ApiError> {
    let update = SettingsUpdate::from(body.into_inner().0);
    Ok(web::Json(state.update_settings(update).await?))
}

impl From<SettingsBody> for SettingsUpdate {
    fn from(body: SettingsBody) -> SettingsUpdate {
        let budget = |b: Option<Object<BudgetBody>>| {
            let b = b.unwrap_or_default().0;
            (b.tokens.map(|n| u32::try_from(n.0).unwrap_or(u32::MAX)), b.latency_ms.map(|n| n.0))
        };
        SettingsUpdate {
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

    fn parse_update(body: &Value) -> Result<SettingsUpdate, JsonError> {
        parse::<Object<SettingsBody>>(body.to_string().as_bytes()).map(|body| SettingsUpdate::from(body.0))
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
