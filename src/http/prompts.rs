//! `POST /api/v1/prompt` and `POST /api/v1/prompts` (seed 000): prompts through the bulk lane,
//! which follows `[batching]` batch size and delay, so the config endpoints steer them live.
//!
//! A prompt that fails upstream is answered in its slot as
//! `{"status": "error", "response": "", "error": "…"}` with HTTP 200 — the request itself was
//! valid and served; only bad input (400), a full queue (429) or a shutdown (503) fail the
//! request as a whole.

use std::sync::Arc;

use actix_web::web;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::body::JsonBody;
use super::peer::Peer;
use super::priority::{WithdrawOnDrop, caller_gone};
use super::record::{ChatMeta, record, record_all};
use super::{ApiError, AppState, Caller, tenant};
use crate::config::Config;
use crate::engine::{Origin, Outcome, Prompt};

/// Most prompts one `/api/v1/prompts` request may carry (seed 000).
pub const MAX_PROMPTS: usize = 1000;

/// The lane seed 000's endpoints use.
pub const PROMPTS_LANE: &str = "bulk";

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api/v1/prompt").route(web::post().to(prompt)))
        .service(web::resource("/api/v1/prompts").route(web::post().to(prompts)));
}

/// One prompt's answer, as seed 000 shapes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromptReply {
    /// `"success"` or `"error"`.
    pub status: &'static str,
    /// The answer; empty on error.
    pub response: String,
    /// What went wrong; only on error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<Outcome> for PromptReply {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Ok(answer) => PromptReply { status: "success", response: answer.text, error: None },
            Err(error) => {
                PromptReply { status: "error", response: String::new(), error: Some(error.to_string()) }
            }
        }
    }
}

/// `/api/v1/prompts`'s reply: one entry per prompt, in order.
#[derive(Debug, Serialize)]
pub struct PromptsReply {
    /// The answers, same order and length as the prompts.
    pub responses: Vec<PromptReply>,
}

async fn prompt(
    state: web::Data<AppState>,
    caller: Caller,
    peer: Peer,
    body: JsonBody<Value>,
) -> Result<web::Json<PromptReply>, ApiError> {
    let text = parse_prompt(&body.0)?;
    let meta = ChatMeta::new(&caller, lane(&state.config));
    let request = json!({ "prompt": text });
    let prompt = Prompt::text(text);
    let _held =
        tenant::admit(&state.engine, meta.tenant.as_deref(), &meta.lane, std::slice::from_ref(&prompt))
            .await?;
    let origin = Origin::request(meta.owner.as_deref().unwrap_or(Origin::LOCAL), None);
    let mut pending = WithdrawOnDrop { engine: &state.engine, origin: Some(Arc::clone(&origin)) };
    let outcome = tokio::select! {
        outcome = state.engine.submit_one_from(&meta.lane, &origin, prompt) => outcome?,
        () = peer.gone() => return Err(caller_gone()),
    };
    pending.origin = None;
    record(&state.store, meta.chat(request, &outcome));
    Ok(web::Json(outcome.into()))
}

async fn prompts(
    state: web::Data<AppState>,
    caller: Caller,
    peer: Peer,
    body: JsonBody<Value>,
) -> Result<web::Json<PromptsReply>, ApiError> {
    let prompts = parse_prompts(&body.0)?;
    let meta = ChatMeta::new(&caller, lane(&state.config));
    let requests: Vec<Value> = prompts.iter().map(request_of).collect();
    let _held = tenant::admit(&state.engine, meta.tenant.as_deref(), &meta.lane, &prompts).await?;
    let origin = Origin::request(meta.owner.as_deref().unwrap_or(Origin::LOCAL), None);
    let mut pending = WithdrawOnDrop { engine: &state.engine, origin: Some(Arc::clone(&origin)) };
    let submission = state.engine.submit_from(&meta.lane, &origin, prompts).await?;
    let outcomes = tokio::select! {
        outcomes = submission.collect() => outcomes,
        () = peer.gone() => return Err(caller_gone()),
    };
    pending.origin = None;
    let chats = requests.into_iter().zip(&outcomes).map(|(request, outcome)| meta.chat(request, outcome));
    record_all(&state.store, chats);
    Ok(web::Json(PromptsReply { responses: outcomes.into_iter().map(PromptReply::from).collect() }))
}

/// [`PROMPTS_LANE`] when configured, else the lowest-ranked lane.
fn lane(config: &Config) -> &str {
    if config.lanes.contains_key(PROMPTS_LANE) {
        return PROMPTS_LANE;
    }
    config.lanes.iter().min_by_key(|(_, lane)| lane.rank).map_or(PROMPTS_LANE, |(name, _)| name)
}

/// The text of `{"prompt": "…"}`.
pub fn parse_prompt(body: &Value) -> Result<String, ApiError> {
    let Value::Object(object) = body else {
        return Err(ApiError::bad(
            "prompt",
            format!("the body must be a JSON object like {{\"prompt\": \"…\"}} (got {})", kind(body)),
        ));
    };
    object_prompt(object, "")
}

/// The chat record of a prompt: its text and the parameters it set.
fn request_of(prompt: &Prompt) -> Value {
    let mut request = json!({ "prompt": prompt.last_user_text() });
    if let Some(t) = prompt.temperature {
        request["temperature"] = json!(t);
    }
    if let Some(n) = prompt.max_tokens {
        request["max_tokens"] = json!(n);
    }
    request
}

/// The prompts of `{"prompts": ["…", {"prompt": "…", "temperature"?, "max_tokens"?}, …]}`:
/// 1..=[`MAX_PROMPTS`], each non-empty.
pub fn parse_prompts(body: &Value) -> Result<Vec<Prompt>, ApiError> {
    let Value::Object(object) = body else {
        return Err(ApiError::bad(
            "prompts",
            format!("the body must be a JSON object like {{\"prompts\": [\"…\"]}} (got {})", kind(body)),
        ));
    };
    only_fields(object, "", &["prompts"])?;
    let items = match object.get("prompts") {
        None => {
            return Err(ApiError::bad("prompts", "missing field `prompts`: an array of 1 to 1000 prompts"));
        }
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(ApiError::bad(
                "prompts",
                format!("must be an array of 1 to {MAX_PROMPTS} prompts (got {})", kind(other)),
            ));
        }
    };
    if items.is_empty() || items.len() > MAX_PROMPTS {
        return Err(ApiError::bad(
            "prompts",
            format!("must hold 1 to {MAX_PROMPTS} prompts (got {})", items.len()),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(text) => non_empty(text, &format!("prompts[{i}]")).map(Prompt::text),
            Value::Object(object) => object_item(object, &format!("prompts[{i}].")),
            other => Err(ApiError::bad(
                format!("prompts[{i}]"),
                format!("must be a string or {{\"prompt\": \"…\"}} (got {})", kind(other)),
            )),
        })
        .collect()
}

/// An item of `prompts`: its `prompt`, and the `temperature` (0.0–2.0) and `max_tokens` (at
/// least 1) it may carry; fields named `{prefix}field` in errors.
fn object_item(object: &Map<String, Value>, prefix: &str) -> Result<Prompt, ApiError> {
    only_fields(object, prefix, &["prompt", "temperature", "max_tokens"])?;
    let mut text_only = object.clone();
    text_only.retain(|key, _| key == "prompt");
    let mut prompt = Prompt::text(object_prompt(&text_only, prefix)?);
    if let Some(value) = object.get("temperature") {
        let param = format!("{prefix}temperature");
        match value.as_f64() {
            Some(t) if (0.0..=2.0).contains(&t) => prompt.temperature = Some(t as f32),
            _ => {
                return Err(ApiError::bad(&param, format!("must be a number from 0.0 to 2.0 (got {value})")));
            }
        }
    }
    if let Some(value) = object.get("max_tokens") {
        let param = format!("{prefix}max_tokens");
        match value.as_u64().and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0) {
            Some(n) => prompt.max_tokens = Some(n),
            None => {
                return Err(ApiError::bad(
                    &param,
                    format!("must be a whole number of at least 1 (got {value})"),
                ));
            }
        }
    }
    Ok(prompt)
}

/// The `prompt` of an object whose fields are named `{prefix}field` in errors.
fn object_prompt(object: &Map<String, Value>, prefix: &str) -> Result<String, ApiError> {
    only_fields(object, prefix, &["prompt"])?;
    let param = format!("{prefix}prompt");
    match object.get("prompt") {
        None => Err(ApiError::bad(&param, format!("missing field `{param}`: the prompt text"))),
        Some(Value::String(text)) => non_empty(text, &param),
        Some(other) => Err(ApiError::bad(&param, format!("must be a string (got {})", kind(other)))),
    }
}

/// Refuses fields other than `allowed`, so a misspelt field is reported, not ignored.
pub(super) fn only_fields(
    object: &Map<String, Value>,
    prefix: &str,
    allowed: &[&str],
) -> Result<(), ApiError> {
    match object.keys().find(|key| !allowed.contains(&key.as_str())) {
        None => Ok(()),
        Some(key) => {
            let key = crate::request_json::shown_name(key);
            let expected: Vec<String> = allowed.iter().map(|a| format!("`{a}`")).collect();
            Err(ApiError::bad(
                format!("{prefix}{key}"),
                format!("unknown field `{prefix}{key}`; expected {}", expected.join(", ")),
            ))
        }
    }
}

fn non_empty(text: &str, param: &str) -> Result<String, ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::bad(param, format!("`{param}` must not be empty")));
    }
    Ok(text.to_string())
}

/// A JSON value's type, for messages.
pub(super) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn param(result: Result<impl std::fmt::Debug, ApiError>) -> Option<String> {
        match result {
            Err(ApiError::BadRequest { param, .. }) => param,
            other => panic!("expected a bad request, got {other:?}"),
        }
    }

    #[test]
    fn prompts_take_strings_and_objects_in_order() {
        let body = json!({"prompts": ["a", {"prompt": "b"}, "c"]});
        let texts = parse_prompts(&body)
            .map(|p| p.iter().map(|p| p.last_user_text().to_string()).collect::<Vec<_>>());
        assert_eq!(texts.ok(), Some(vec!["a".into(), "b".into(), "c".into()]));
    }

    #[test]
    fn prompts_may_carry_temperature_and_max_tokens() {
        let body = json!({"prompts": [{"prompt": "b", "temperature": 0.0, "max_tokens": 16}, "c"]});
        let prompts = parse_prompts(&body).expect("valid");
        assert_eq!((prompts[0].temperature, prompts[0].max_tokens), (Some(0.0), Some(16)));
        assert_eq!((prompts[1].temperature, prompts[1].max_tokens), (None, None));
        for (item, expected) in [
            (json!({"prompt": "a", "temperature": 3}), "prompts[0].temperature"),
            (json!({"prompt": "a", "temperature": "hot"}), "prompts[0].temperature"),
            (json!({"prompt": "a", "max_tokens": 0}), "prompts[0].max_tokens"),
            (json!({"prompt": "a", "max_tokens": 1.5}), "prompts[0].max_tokens"),
            (json!({"temperature": 0.1}), "prompts[0].prompt"),
        ] {
            assert_eq!(
                param(parse_prompts(&json!({"prompts": [item]}))).as_deref(),
                Some(expected),
                "{item}"
            );
        }
    }

    #[test]
    fn bad_prompts_name_the_offending_entry() {
        let cases = [
            (json!({"prompts": []}), "prompts"),
            (json!({"prompts": "x"}), "prompts"),
            (json!({}), "prompts"),
            (json!([]), "prompts"),
            (json!({"prompts": ["a", "b", "c", 4]}), "prompts[3]"),
            (json!({"prompts": ["a", " "]}), "prompts[1]"),
            (json!({"prompts": [{"text": "a"}]}), "prompts[0].text"),
            (json!({"prompts": [{}]}), "prompts[0].prompt"),
            (json!({"prompts": [{"prompt": 1}]}), "prompts[0].prompt"),
            (json!({"prompts": ["a"], "lane": "high"}), "lane"),
        ];
        for (body, expected) in cases {
            assert_eq!(param(parse_prompts(&body)).as_deref(), Some(expected), "{body}");
        }
        let many = json!({"prompts": vec!["p"; MAX_PROMPTS + 1]});
        assert_eq!(param(parse_prompts(&many)).as_deref(), Some("prompts"));
        assert!(parse_prompts(&json!({"prompts": vec!["p"; MAX_PROMPTS]})).is_ok());
    }

    #[test]
    fn a_single_prompt_must_be_a_non_empty_string() {
        assert_eq!(parse_prompt(&json!({"prompt": "hi"})).ok().as_deref(), Some("hi"));
        for body in [json!({}), json!({"prompt": ""}), json!({"prompt": 3}), json!("hi")] {
            assert_eq!(param(parse_prompt(&body)).as_deref(), Some("prompt"), "{body}");
        }
    }
}
