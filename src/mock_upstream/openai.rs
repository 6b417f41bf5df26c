//! The mock's OpenAI routes: `POST /v1/chat/completions` and `GET /v1/models`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Dialect, Upstream, respond};
use crate::providers::{CallReply, CallRequest, ChatMessage, Role};

/// The model `GET /v1/models` lists (any model name is answered).
const MODEL: &str = "mock";

/// `POST /v1/chat/completions`.
pub(super) async fn chat_completions(upstream: web::Data<Upstream>, body: web::Bytes) -> HttpResponse {
    match parse(&body) {
        Ok(request) => respond(&upstream, &OpenAi, request).await,
        Err(message) => {
            upstream.refuse();
            OpenAi.error(StatusCode::BAD_REQUEST, &message)
        }
    }
}

/// `GET /v1/models`.
pub(super) async fn models() -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "object": "list",
        "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "ferry"}]
    }))
}

/// An OpenAI-style error reply.
pub(super) fn error_response(status: StatusCode, message: &str) -> HttpResponse {
    let kind = match status.as_u16() {
        400 | 404 => "invalid_request_error",
        429 => "rate_limit_exceeded",
        _ => "server_error",
    };
    HttpResponse::build(status)
        .json(json!({"error": {"message": message, "type": kind, "param": null, "code": null}}))
}

/// The chat-completions request fields the mock reads; others (`n`, `user`, …) are
/// accepted and ignored, as a permissive server would.
#[derive(Deserialize)]
struct ChatBody {
    model: String,
    messages: Vec<Message>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    stop: Option<Stop>,
    seed: Option<i64>,
    response_format: Option<Value>,
    #[serde(default)]
    stream: bool,
}

/// OpenAI's `stop`: one string or a list.
#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Value,
}

/// The call a body asks for, or what is wrong with it.
fn parse(body: &[u8]) -> Result<CallRequest, String> {
    let body: ChatBody =
        serde_json::from_slice(body).map_err(|error| format!("invalid chat completions body: {error}"))?;
    if body.stream {
        return Err("`stream: true` is not supported by the mock upstream".into());
    }
    if body.messages.is_empty() {
        return Err("`messages` must not be empty".into());
    }
    let messages = body
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, message)| message_of(i, message))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CallRequest {
        model: body.model,
        messages,
        max_tokens: body.max_completion_tokens.or(body.max_tokens),
        temperature: body.temperature,
        top_p: body.top_p,
        stop: match body.stop {
            None => Vec::new(),
            Some(Stop::One(stop)) => vec![stop],
            Some(Stop::Many(stops)) => stops,
        },
        seed: body.seed,
        response_format: body.response_format,
    })
}

/// One message: string content or an array of text parts, as OpenAI clients send either.
fn message_of(index: usize, message: Message) -> Result<ChatMessage, String> {
    let role = match message.role.as_str() {
        "system" | "developer" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        other => {
            return Err(format!("messages[{index}].role `{other}` is not supported by the mock upstream"));
        }
    };
    let content = match message.content {
        Value::String(text) => text,
        Value::Null => String::new(),
        Value::Array(parts) => parts.iter().filter_map(|part| part.get("text")?.as_str()).collect(),
        _ => return Err(format!("messages[{index}].content must be a string or an array of text parts")),
    };
    Ok(ChatMessage { role, content })
}

/// The OpenAI way of writing replies.
pub(super) struct OpenAi;

impl Dialect for OpenAi {
    fn answer(&self, request: &CallRequest, reply: &CallReply, serial: u64) -> HttpResponse {
        let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let usage = reply.usage.unwrap_or_default();
        HttpResponse::Ok().json(json!({
            "id": format!("chatcmpl-mock-{serial}"),
            "object": "chat.completion",
            "created": created,
            "model": request.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": reply.text},
                "finish_reason": "stop"
            }],
            "usage": {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total()
            }
        }))
    }

    fn error(&self, status: StatusCode, message: &str) -> HttpResponse {
        error_response(status, message)
    }

    fn rate_limited(&self, retry_after: Duration, message: &str) -> HttpResponse {
        let ms = u64::try_from(retry_after.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
        let mut response = error_response(StatusCode::TOO_MANY_REQUESTS, message);
        let headers = response.headers_mut();
        // Whole seconds rounded up, so a client that only reads `Retry-After` never comes back early.
        headers.insert(RETRY_AFTER, HeaderValue::from(ms.div_ceil(1000)));
        headers.insert(HeaderName::from_static("retry-after-ms"), HeaderValue::from(ms));
        response
    }
}
