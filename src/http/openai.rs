//! OpenAI-compatible `POST /v1/chat/completions` (non-streaming) and `GET /v1/models`, through the
//! queues: any OpenAI client can point its base URL at ferry. The lane comes from the
//! `x-ferry-priority` header (HIGH/MEDIUM/LOW or a lane name), default `medium`.

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::from_body;
use super::priority;
use super::record::{ChatMeta, answer_one};
use super::{ApiError, AppState, Caller};
use crate::engine::Prompt;
use crate::providers::{ChatMessage, Role};

/// The header that picks the lane.
pub const PRIORITY_HEADER: &str = "x-ferry-priority";
/// The lane when the header is absent.
const DEFAULT_LANE: &str = "medium";

/// The parts of OpenAI's request ferry uses; other fields (`top_p`, `user`, …) are accepted and
/// ignored, as OpenAI clients send many.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// Model name; must be served by an upstream.
    pub model: String,
    /// The conversation.
    pub messages: Vec<IncomingMessage>,
    /// Reply budget (older name).
    pub max_tokens: Option<u32>,
    /// Reply budget (newer name).
    pub max_completion_tokens: Option<u32>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Streaming is not supported.
    #[serde(default)]
    pub stream: bool,
    /// Only one choice is supported.
    pub n: Option<u32>,
}

/// A message as OpenAI clients send it: content is text or a list of parts.
#[derive(Debug, Deserialize)]
pub struct IncomingMessage {
    /// system, developer, user or assistant.
    pub role: String,
    /// A string or `[{"type": "text", "text": …}]`.
    pub content: Value,
}

#[derive(Serialize)]
struct Completion {
    id: String,
    object: &'static str,
    created: u64,
    model: String,
    choices: [Choice; 1],
    usage: UsageOut,
}

#[derive(Serialize)]
struct Choice {
    index: u32,
    message: ChatMessage,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct UsageOut {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
}

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/chat/completions", web::post().to(complete)).route("/v1/models", web::get().to(models));
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The models the upstreams serve, each once.
fn served_models(state: &AppState) -> Vec<(String, String)> {
    let mut models: Vec<(String, String)> = Vec::new();
    for upstream in &state.config.upstreams {
        for model in &upstream.models {
            if !models.iter().any(|(m, _)| m == model) {
                models.push((model.clone(), upstream.name.clone()));
            }
        }
    }
    models
}

fn role(value: &str, index: usize) -> Result<Role, ApiError> {
    match value {
        "system" | "developer" => Ok(Role::System),
        "user" => Ok(Role::User),
        "assistant" => Ok(Role::Assistant),
        other => Err(ApiError::bad(
            format!("messages[{index}].role"),
            format!("role `{other}` is not supported; use system, developer, user or assistant"),
        )),
    }
}

fn content(value: &Value, index: usize) -> Result<String, ApiError> {
    let param = || format!("messages[{index}].content");
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                match (part.get("type").and_then(Value::as_str), part.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(piece)) => text.push_str(piece),
                    _ => return Err(ApiError::bad(param(), "only text content parts are supported")),
                }
            }
            Ok(text)
        }
        _ => Err(ApiError::bad(param(), "content must be a string or a list of text parts")),
    }
}

fn prompt_of(request: &CompletionRequest) -> Result<Prompt, ApiError> {
    if request.stream {
        return Err(ApiError::bad("stream", "streaming is not supported; send stream: false"));
    }
    if request.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad("n", "only n = 1 is supported"));
    }
    if request.messages.is_empty() {
        return Err(ApiError::bad("messages", "messages must hold at least one message"));
    }
    let messages = request
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| Ok(ChatMessage { role: role(&m.role, i)?, content: content(&m.content, i)? }))
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Prompt {
        messages,
        model: Some(request.model.clone()),
        max_tokens: request.max_completion_tokens.or(request.max_tokens),
        temperature: request.temperature,
    })
}

async fn complete(
    state: web::Data<AppState>,
    caller: Caller,
    http: HttpRequest,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let request: CompletionRequest = from_body(body.into_inner())?;
    let prompt = prompt_of(&request)?;
    let served = served_models(&state);
    let serves_any = state.config.upstreams.iter().any(|u| u.models.is_empty());
    if !serves_any && !served.iter().any(|(m, _)| *m == request.model) {
        let names: Vec<&str> = served.iter().map(|(m, _)| m.as_str()).collect();
        return Err(ApiError::bad(
            "model",
            format!("model `{}` is not served here; models: {}", request.model, names.join(", ")),
        ));
    }
    let engine = &state.engine;
    let priority = match http.headers().get(PRIORITY_HEADER) {
        Some(value) => value
            .to_str()
            .map_err(|_| ApiError::bad(PRIORITY_HEADER, "the header must be plain text"))?
            .to_string(),
        None => DEFAULT_LANE.to_string(),
    };
    let lane = priority::lane_for(engine, &priority, PRIORITY_HEADER)?;
    let request = serde_json::json!({ "model": request.model, "messages": prompt.messages });
    let answer = answer_one(&state, &ChatMeta::new(&caller, &lane), request, prompt).await?;
    let usage = answer.usage;
    Ok(HttpResponse::Ok().insert_header(("x-ferry-batch-id", answer.batch_id.to_string())).json(Completion {
        id: format!("chatcmpl-{}", ulid::Ulid::new()),
        object: "chat.completion",
        created: unix_now(),
        model: answer.model.to_string(),
        choices: [Choice { index: 0, message: ChatMessage::assistant(answer.text), finish_reason: "stop" }],
        usage: UsageOut {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: usage.total(),
        },
    }))
}

async fn models(state: web::Data<AppState>) -> HttpResponse {
    let data: Vec<Value> = served_models(&state)
        .into_iter()
        .map(|(id, owner)| serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": owner}))
        .collect();
    HttpResponse::Ok().json(serde_json::json!({"object": "list", "data": data}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> CompletionRequest {
        serde_json::from_value(body).expect("valid request")
    }

    #[test]
    fn text_parts_are_joined_and_roles_mapped() {
        let prompt = prompt_of(&request(serde_json::json!({
            "model": "m",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hel"}, {"type": "text", "text": "lo"}]}
            ],
            "max_completion_tokens": 7
        })))
        .expect("valid prompt");
        assert_eq!(prompt.messages, vec![ChatMessage::system("be brief"), ChatMessage::user("hello")]);
        assert_eq!(prompt.max_tokens, Some(7));
    }

    #[test]
    fn unsupported_requests_name_the_field() {
        let cases = [
            (serde_json::json!({"model": "m", "messages": [], }), "messages"),
            (
                serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": true}),
                "stream",
            ),
            (serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}), "n"),
            (
                serde_json::json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                serde_json::json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
                "messages[0].content",
            ),
        ];
        for (body, param) in cases {
            match prompt_of(&request(body)) {
                Err(ApiError::BadRequest { param: Some(p), .. }) => assert_eq!(p, param),
                other => panic!("expected a 400 naming {param}, got {other:?}"),
            }
        }
    }
}
