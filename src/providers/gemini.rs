//! Google Gemini `generateContent` (`POST {base_url}/models/{model}:generateContent`).
//!
//! Gemini differs from OpenAI in shape only: system messages travel as `systemInstruction`, the
//! assistant is called `model`, and a 429 names its retry delay in the body (`RetryInfo`) rather
//! than in a header.

use std::time::Duration;

use reqwest::header::HeaderValue;
use serde::{Deserialize, Serialize};

use super::http::{self, Success};
use super::{
    BuildError, CallFuture, CallReply, CallRequest, Provider, ProviderError, Role, Usage, excerpt, headers,
};
use crate::config::UpstreamConfig;

/// The API root used when an upstream sets no `base_url`.
pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com/v1beta";

/// A client for one Gemini upstream.
#[derive(Debug)]
pub struct GeminiProvider {
    client: reqwest::Client,
    base_url: String,
    /// `x-goog-api-key`, or the error every call returns when the key is unusable.
    key: Option<Result<HeaderValue, ProviderError>>,
}

impl GeminiProvider {
    /// A client for `upstream`, sending `api_key` in the `x-goog-api-key` header when given.
    pub fn new(upstream: &UpstreamConfig, api_key: Option<String>) -> Result<Self, BuildError> {
        let base_url = upstream.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL);
        Ok(Self {
            client: http::client(upstream)?,
            base_url: base_url.trim_end_matches('/').to_string(),
            key: api_key.map(|key| http::key_header(&upstream.name, key, "")),
        })
    }
}

impl Provider for GeminiProvider {
    fn call(&self, request: CallRequest) -> CallFuture {
        // People copy model names from Google's docs with their `models/` prefix.
        let model = request.model.strip_prefix("models/").unwrap_or(&request.model);
        let url = http::join_url(&self.base_url, &format!("models/{model}:generateContent"));
        let mut send = self.client.post(url);
        match &self.key {
            Some(Ok(header)) => send = send.header("x-goog-api-key", header.clone()),
            Some(Err(refused)) => {
                let refused = refused.clone();
                return Box::pin(async move { Err(refused) });
            }
            None => {}
        }
        let send = send.json(&GenerateBody::of(&request));
        Box::pin(async move {
            let Success { body, hints } = http::send("gemini", send, retry_delay_from_body).await?;
            let (text, usage) = parse_reply(&body)?;
            Ok(CallReply { text, usage, hints })
        })
    }
}

/// The retry delay of a Gemini 429 body: the `retryDelay` (`"30s"`) of the `error.details[]`
/// entry whose `@type` ends in `RetryInfo`.
pub fn retry_delay_from_body(body: &[u8]) -> Option<Duration> {
    #[derive(Deserialize)]
    struct Envelope {
        error: Detail,
    }
    #[derive(Deserialize)]
    struct Detail {
        #[serde(default)]
        details: Vec<serde_json::Value>,
    }
    let envelope: Envelope = serde_json::from_slice(body).ok()?;
    envelope.error.details.iter().find_map(|detail| {
        let kind = detail.get("@type")?.as_str()?;
        if !kind.ends_with("RetryInfo") {
            return None;
        }
        headers::parse_reset(detail.get("retryDelay")?.as_str()?)
    })
}

/// The request body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateBody<'a> {
    contents: Vec<Content<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<SystemInstruction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    generation_config: Option<GenerationConfig<'a>>,
}

#[derive(Serialize)]
struct Content<'a> {
    role: &'static str,
    parts: [Part<'a>; 1],
}

#[derive(Serialize)]
struct Part<'a> {
    text: &'a str,
}

#[derive(Serialize)]
struct SystemInstruction {
    parts: [OwnedPart; 1],
}

#[derive(Serialize)]
struct OwnedPart {
    text: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_json_schema: Option<&'a serde_json::Value>,
}

impl<'a> GenerationConfig<'a> {
    /// Gemini's names for OpenAI's options; None when the request sets none of them.
    fn of(request: &'a CallRequest) -> Option<Self> {
        // OpenAI's `response_format`: `json_object` asks for JSON, `json_schema` for JSON of a schema.
        let format = request.response_format.as_ref();
        let kind = format.and_then(|f| f.get("type")).and_then(serde_json::Value::as_str);
        let schema = format.and_then(|f| f.pointer("/json_schema/schema"));
        let response_mime_type =
            matches!(kind, Some("json_object" | "json_schema")).then_some("application/json");
        let config = Self {
            max_output_tokens: request.max_tokens,
            temperature: request.temperature,
            top_p: request.top_p,
            stop_sequences: &request.stop,
            seed: request.seed,
            response_mime_type,
            response_json_schema: schema,
        };
        let empty = config.max_output_tokens.is_none()
            && config.temperature.is_none()
            && config.top_p.is_none()
            && config.stop_sequences.is_empty()
            && config.seed.is_none()
            && config.response_mime_type.is_none();
        (!empty).then_some(config)
    }
}

impl<'a> GenerateBody<'a> {
    fn of(request: &'a CallRequest) -> Self {
        let system: Vec<&str> =
            request.messages.iter().filter(|m| m.role == Role::System).map(|m| m.content.as_str()).collect();
        let contents = request
            .messages
            .iter()
            .filter_map(|m| {
                let role = match m.role {
                    Role::User => "user",
                    Role::Assistant => "model",
                    Role::System => return None,
                };
                Some(Content { role, parts: [Part { text: &m.content }] })
            })
            .collect();
        let generation_config = GenerationConfig::of(request);
        Self {
            contents,
            // Gemini takes one system instruction; several system messages become its paragraphs.
            system_instruction: (!system.is_empty())
                .then(|| SystemInstruction { parts: [OwnedPart { text: system.join("\n\n") }] }),
            generation_config,
        }
    }
}

/// The parts of a `generateContent` reply ferry reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateReply {
    #[serde(default)]
    candidates: Vec<Candidate>,
    usage_metadata: Option<UsageMetadata>,
    prompt_feedback: Option<PromptFeedback>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    content: Option<ReplyContent>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ReplyContent {
    #[serde(default)]
    parts: Vec<ReplyPart>,
}

#[derive(Deserialize)]
struct ReplyPart {
    text: Option<String>,
    /// Thinking models can return their thought summary as parts; they are not the answer.
    #[serde(default)]
    thought: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: u32,
    #[serde(default)]
    candidates_token_count: u32,
    /// Thinking tokens count against output limits, so they are part of completion tokens.
    #[serde(default)]
    thoughts_token_count: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    block_reason: Option<String>,
}

/// The answer text and usage of a 2xx body.
fn parse_reply(body: &[u8]) -> Result<(String, Option<Usage>), ProviderError> {
    let reply: GenerateReply = serde_json::from_slice(body).map_err(|error| ProviderError::Malformed {
        message: format!(
            "not a generateContent reply ({error}): {}",
            excerpt(&String::from_utf8_lossy(body))
        ),
    })?;
    let usage = reply.usage_metadata.map(|u| Usage {
        prompt_tokens: u.prompt_token_count,
        completion_tokens: u.candidates_token_count.saturating_add(u.thoughts_token_count),
    });
    let Some(candidate) = reply.candidates.into_iter().next() else {
        let reason =
            reply.prompt_feedback.and_then(|f| f.block_reason).unwrap_or_else(|| "none given".into());
        return Err(ProviderError::Malformed { message: format!("no candidates (block reason: {reason})") });
    };
    let texts: Vec<String> = candidate
        .content
        .map(|c| c.parts)
        .unwrap_or_default()
        .into_iter()
        .filter(|part| !part.thought)
        .filter_map(|part| part.text)
        .collect();
    if texts.is_empty() {
        let reason = candidate.finish_reason.unwrap_or_else(|| "none given".into());
        return Err(ProviderError::Malformed {
            message: format!("candidate has no text (finishReason {reason})"),
        });
    }
    Ok((texts.concat(), usage))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ChatMessage;

    #[test]
    fn body_moves_system_messages_and_renames_assistant() {
        let request = CallRequest {
            model: "gemini-x".into(),
            messages: vec![
                ChatMessage::system("be brief"),
                ChatMessage::user("hi"),
                ChatMessage { role: Role::Assistant, content: "hello".into() },
                ChatMessage::user("2+2?"),
            ],
            max_tokens: Some(7),
            temperature: Some(0.5),
            ..CallRequest::default()
        };
        assert_eq!(
            serde_json::to_value(GenerateBody::of(&request)).unwrap(),
            serde_json::json!({
                "contents": [
                    {"role": "user", "parts": [{"text": "hi"}]},
                    {"role": "model", "parts": [{"text": "hello"}]},
                    {"role": "user", "parts": [{"text": "2+2?"}]}
                ],
                "systemInstruction": {"parts": [{"text": "be brief"}]},
                "generationConfig": {"maxOutputTokens": 7, "temperature": 0.5}
            })
        );
    }

    #[test]
    fn body_without_options_has_no_generation_config() {
        let request = CallRequest {
            model: "g".into(),
            messages: vec![ChatMessage::user("hi")],
            ..CallRequest::default()
        };
        let body = serde_json::to_value(GenerateBody::of(&request)).unwrap();
        assert_eq!(body, serde_json::json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}));
    }

    #[test]
    fn reply_parts_are_concatenated_without_thoughts() {
        let body = br#"{"candidates":[{"content":{"role":"model","parts":[
            {"text":"thinking...","thought":true},{"text":"Par"},{"text":"is"}]},"finishReason":"STOP"}],
            "usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":2,"thoughtsTokenCount":3}}"#;
        let (text, usage) = parse_reply(body).unwrap();
        assert_eq!(text, "Paris");
        assert_eq!(usage, Some(Usage { prompt_tokens: 4, completion_tokens: 5 }));
    }

    #[test]
    fn safety_stop_is_malformed_with_the_reason() {
        let body = br#"{"candidates":[{"finishReason":"SAFETY","index":0}]}"#;
        let error = parse_reply(body).unwrap_err();
        assert_eq!(error.kind(), "malformed");
        assert!(error.to_string().contains("SAFETY"), "{error}");
        let blocked = br#"{"promptFeedback":{"blockReason":"OTHER"}}"#;
        assert!(parse_reply(blocked).unwrap_err().to_string().contains("OTHER"));
    }

    #[test]
    fn retry_info_in_the_body_gives_the_delay() {
        let body =
            br#"{"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED",
            "details":[
                {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[]},
                {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"30s"}
            ]}}"#;
        assert_eq!(retry_delay_from_body(body), Some(Duration::from_secs(30)));
        let fractional = br#"{"error":{"details":[{"@type":"x.RetryInfo","retryDelay":"1.5s"}]}}"#;
        assert_eq!(retry_delay_from_body(fractional), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn retry_info_absent_or_garbled_gives_nothing() {
        assert_eq!(retry_delay_from_body(br#"{"error":{"message":"slow down"}}"#), None);
        assert_eq!(retry_delay_from_body(br#"{"error":{"details":[{"@type":"x.RetryInfo"}]}}"#), None);
        assert_eq!(retry_delay_from_body(b"<html>"), None);
    }
}
