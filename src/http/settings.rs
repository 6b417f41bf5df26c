//! `GET`/`PUT /v1/settings` (seed 002, admin): the upstream API key and each priority's token
//! and latency budget, stored over `config.toml` and applied live.
//!
//! Reply (both methods): `{"api_key": "***last4" | null, "high_priority": {"tokens",
//! "latency_ms"}, "medium_priority": …, "low_priority": …}` with the values in effect: the stored
//! override, else the lane's current settings (a priority whose lane does not exist is `null`).
//! `PUT` takes any subset, even one field of a priority; what is given is validated here (every
//! error names the field, e.g. `high_priority.tokens`), then merged, saved and applied by the app
//! ([`crate::app::settings`]). The key is never echoed, logged or written to the database.

use actix_web::web;
use serde_json::{Map, Value};

use super::body::JsonBody;
use super::prompts::{kind, only_fields};
use super::{ApiError, AppState, Caller};
use crate::app::MAX_LATENCY_MS;
use crate::app::settings::{PRIORITIES, SettingsUpdate, SettingsView};

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v1/settings").route(web::get().to(get)).route(web::put().to(put)));
}

async fn get(state: web::Data<AppState>, _: Caller) -> Result<web::Json<SettingsView>, ApiError> {
    Ok(web::Json(state.settings().await?))
}

async fn put(
    state: web::Data<AppState>,
    _: Caller,
    body: JsonBody<Value>,
) -> Result<web::Json<SettingsView>, ApiError> {
    let update = parse_update(&body.into_inner())?;
    Ok(web::Json(state.update_settings(update).await?))
}

/// Validates a `PUT` body; each error names its field and never echoes the key.
fn parse_update(body: &Value) -> Result<SettingsUpdate, ApiError> {
    let Value::Object(object) = body else {
        return Err(ApiError::BadRequest {
            message: format!(
                "the body must be a JSON object with any of api_key, high_priority, \
                 medium_priority, low_priority (got {})",
                kind(body)
            ),
            param: None,
        });
    };
    let mut fields = vec!["api_key"];
    fields.extend(PRIORITIES.iter().map(|(field, _)| *field));
    only_fields(object, "", &fields)?;
    let mut update = SettingsUpdate {
        api_key: object.get("api_key").map(api_key).transpose()?,
        ..SettingsUpdate::default()
    };
    for (index, (field, _)) in PRIORITIES.iter().enumerate() {
        match object.get(*field) {
            None => {}
            Some(Value::Object(budget)) => update.budgets[index] = parse_budget(budget, field)?,
            Some(other) => {
                return Err(ApiError::bad(
                    *field,
                    format!(
                        "{field} must be an object like {{\"tokens\": 1000, \"latency_ms\": 500}} (got {})",
                        kind(other)
                    ),
                ));
            }
        }
    }
    Ok(update)
}

fn api_key(value: &Value) -> Result<String, ApiError> {
    match value {
        Value::String(key) if key.is_empty() => Err(ApiError::bad("api_key", "api_key must not be empty")),
        Value::String(key) if key.chars().any(|c| c.is_whitespace() || c.is_control()) => Err(ApiError::bad(
            "api_key",
            "api_key must not contain spaces, line breaks or control characters",
        )),
        Value::String(key) => Ok(key.clone()),
        other => Err(ApiError::bad("api_key", format!("api_key must be a string (got {})", kind(other)))),
    }
}

fn parse_budget(budget: &Map<String, Value>, field: &str) -> Result<(Option<u32>, Option<u64>), ApiError> {
    let prefix = format!("{field}.");
    only_fields(budget, &prefix, &["tokens", "latency_ms"])?;
    let tokens = budget
        .get("tokens")
        .map(|v| whole(v, &format!("{prefix}tokens"), u64::from(u32::MAX)))
        .transpose()?
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    let latency_ms = budget
        .get("latency_ms")
        .map(|v| whole(v, &format!("{prefix}latency_ms"), MAX_LATENCY_MS))
        .transpose()?;
    Ok((tokens, latency_ms))
}

/// A whole number from 1 to `max`.
fn whole(value: &Value, param: &str, max: u64) -> Result<u64, ApiError> {
    match value.as_u64() {
        Some(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::bad(
            param,
            format!("{param} must be a whole number from 1 to {max} (got {})", shown(value)),
        )),
    }
}

/// A value by its type, never as given (a string might be a secret pasted wrongly).
fn shown(value: &Value) -> String {
    match value {
        Value::Number(_) => "a number out of range".to_string(),
        other => kind(other).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn param(body: Value) -> Option<String> {
        match parse_update(&body) {
            Err(ApiError::BadRequest { param, .. }) => param,
            other => panic!("expected a bad request for {body}, got {other:?}"),
        }
    }

    #[test]
    fn a_partial_body_gives_only_its_fields() -> Result<(), ApiError> {
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
            (json!({"high_priority": {"tokens": 5_000_000_000_u64}}), "high_priority.tokens"),
            (json!({"high_priority": {"token": 5}}), "high_priority.token"),
            (json!({"high_priority": 5}), "high_priority"),
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
    }

    #[test]
    fn a_bad_key_is_not_echoed() {
        match parse_update(&json!({"api_key": "sk-secret with-space"})) {
            Err(error) => assert!(!error.to_string().contains("secret"), "{error}"),
            Ok(update) => panic!("accepted {update:?}"),
        }
    }
}
