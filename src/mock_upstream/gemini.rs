//! The mock's Gemini route: `POST /v1beta/models/{model}:generateContent`, so the Gemini
//! provider is tested over a socket too.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::{Dialect, Upstream, format_secs, respond};
use crate::providers::{CallReply, CallRequest, ChatMessage, Role};

/// `POST /v1beta/models/{model}:generateContent`.
pub(super) async fn generate_content(
    upstream: web::Data<Upstream>,
    call: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let Some(model) = call.strip_suffix(":generateContent") else {
        return Gemini.error(StatusCode::NOT_FOUND, "only `:generateContent` is served by the mock upstream");
    };
    match parse(model, &body) {
        Ok(request) => respond(&upstream, &Gemini, request).await,
        Err(message) => {
            upstream.refuse();
            Gemini.error(StatusCode::BAD_REQUEST, &message)
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateBody {
    #[serde(default)]
    contents: Vec<Content>,
    system_instruction: Option<Content>,
    generation_config: Option<GenerationConfig>,
}

#[derive(Deserialize)]
struct Content {
    role: Option<String>,
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Deserialize)]
struct Part {
    text: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig {
    max_output_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    #[serde(default)]
    stop_sequences: Vec<String>,
    seed: Option<i64>,
}

impl Content {
    /// The text parts joined, as Gemini reads consecutive parts as one text.
    fn text(&self) -> String {
        self.parts.iter().filter_map(|part| part.text.as_deref()).collect()
    }
}

/// The call a body asks for, or what is wrong with it.
fn parse(model: &str, body: &[u8]) -> Result<CallRequest, String> {
    let body: GenerateBody =
        serde_json::from_slice(body).map_err(|error| format!("invalid generateContent body: {error}"))?;
    if body.contents.is_empty() {
        return Err("`contents` must not be empty".into());
    }
    let mut messages = Vec::with_capacity(body.contents.len() + 1);
    if let Some(system) = &body.system_instruction {
        messages.push(ChatMessage::system(system.text()));
    }
    for (index, content) in body.contents.iter().enumerate() {
        let role = match content.role.as_deref() {
            None | Some("user") => Role::User,
            Some("model") => Role::Assistant,
            Some(other) => return Err(format!("contents[{index}].role `{other}` must be `user` or `model`")),
        };
        messages.push(ChatMessage { role, content: content.text() });
    }
    let config = body.generation_config.unwrap_or(GenerationConfig {
        max_output_tokens: None,
        temperature: None,
        top_p: None,
        stop_sequences: Vec::new(),
        seed: None,
    });
    Ok(CallRequest {
        model: model.to_string(),
        messages,
        max_tokens: config.max_output_tokens,
        temperature: config.temperature,
        top_p: config.top_p,
        stop: config.stop_sequences,
        seed: config.seed,
        response_format: None,
    })
}

/// Google's status names for the codes the mock sends.
fn status_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// The Gemini way of writing replies.
struct Gemini;

impl Dialect for Gemini {
    fn answer(&self, request: &CallRequest, reply: &CallReply, _serial: u64) -> HttpResponse {
        let usage = reply.usage.unwrap_or_default();
        HttpResponse::Ok().json(json!({
            "candidates": [{
                "content": {"role": "model", "parts": [{"text": reply.text}]},
                "finishReason": "STOP",
                "index": 0
            }],
            "usageMetadata": {
                "promptTokenCount": usage.prompt_tokens,
                "candidatesTokenCount": usage.completion_tokens,
                "totalTokenCount": usage.total()
            },
            "modelVersion": request.model
        }))
    }

    fn error(&self, status: StatusCode, message: &str) -> HttpResponse {
        HttpResponse::build(status).json(json!({
            "error": {"code": status.as_u16(), "message": message, "status": status_name(status)}
        }))
    }

    /// Like Google, the delay goes in the body's `RetryInfo`, not in a header.
    fn rate_limited(&self, retry_after: Duration, message: &str) -> HttpResponse {
        let status = StatusCode::TOO_MANY_REQUESTS;
        HttpResponse::build(status).json(json!({
            "error": {
                "code": 429,
                "message": message,
                "status": status_name(status),
                "details": [{
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": format_secs(retry_after)
                }]
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::combine;

    #[test]
    fn body_becomes_a_call_with_the_system_instruction_first() {
        let body = br#"{"contents":[{"role":"user","parts":[{"text":"hi "},{"text":"there"}]},
            {"role":"model","parts":[{"text":"hello"}]}],
            "systemInstruction":{"parts":[{"text":"be brief"}]},
            "generationConfig":{"maxOutputTokens":9}}"#;
        let request = parse("g", body).unwrap();
        assert_eq!(
            request.messages,
            vec![
                ChatMessage::system("be brief"),
                ChatMessage::user("hi there"),
                ChatMessage { role: Role::Assistant, content: "hello".into() }
            ]
        );
        assert_eq!(request.max_tokens, Some(9));
    }

    #[test]
    fn combined_calls_survive_the_translation() {
        let messages = combine::build(&["a", "b"]);
        let body = json!({
            "systemInstruction": {"parts": [{"text": messages[0].content}]},
            "contents": [{"role": "user", "parts": [{"text": messages[1].content}]}]
        });
        let request = parse("g", body.to_string().as_bytes()).unwrap();
        assert_eq!(
            combine::parse_request(&request.messages),
            Some(vec![("q1".into(), "a".into()), ("q2".into(), "b".into())])
        );
    }

    #[test]
    fn bad_bodies_are_refused_with_the_field() {
        assert!(parse("g", b"{}").unwrap_err().contains("contents"));
        let tool = br#"{"contents":[{"role":"function","parts":[]}]}"#;
        assert!(parse("g", tool).unwrap_err().contains("contents[0].role"));
    }
}
