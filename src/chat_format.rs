//! OpenAI's chat-completion shapes, shared by the doors that speak them: the request ferry reads
//! (from `POST /v1/chat/completions` and from each line of a batch job) and the
//! `chat.completion` object it answers with (in the HTTP reply and in a batch's output file).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{Answer, Prompt};
use crate::providers::{ChatMessage, Role};

/// The parts of OpenAI's request ferry uses; other fields (`user`, `metadata`, …) are accepted and
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
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// Where the reply stops: one string or a list.
    pub stop: Option<Stop>,
    /// Sampling seed.
    pub seed: Option<i64>,
    /// `{"type": "text" | "json_object" | "json_schema", …}`, passed to the upstream as given.
    pub response_format: Option<Value>,
    /// Streaming is not supported.
    #[serde(default)]
    pub stream: bool,
    /// Only one choice is supported.
    pub n: Option<u32>,
}

/// OpenAI's `stop`: one string or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// A single stop sequence.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// A message as OpenAI clients send it: content is text or a list of parts.
#[derive(Debug, Deserialize)]
pub struct IncomingMessage {
    /// system, developer, user or assistant.
    pub role: String,
    /// A string or `[{"type": "text", "text": …}]`.
    pub content: Value,
}

/// A request ferry cannot serve, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct FieldError {
    /// The field, as a JSON path (`messages[0].role`).
    pub param: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    fn new(param: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { param: param.into(), message: message.into() }
    }
}

fn role(value: &str, index: usize) -> Result<Role, FieldError> {
    match value {
        "system" | "developer" => Ok(Role::System),
        "user" => Ok(Role::User),
        "assistant" => Ok(Role::Assistant),
        other => Err(FieldError::new(
            format!("messages[{index}].role"),
            format!(
                "the role (a string of {} bytes) is not supported; use system, developer, user or assistant",
                other.len()
            ),
        )),
    }
}

fn content(value: &Value, index: usize) -> Result<String, FieldError> {
    let param = || format!("messages[{index}].content");
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                match (part.get("type").and_then(Value::as_str), part.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(piece)) => text.push_str(piece),
                    _ => return Err(FieldError::new(param(), "only text content parts are supported")),
                }
            }
            Ok(text)
        }
        _ => Err(FieldError::new(param(), "content must be a string or a list of text parts")),
    }
}

impl CompletionRequest {
    /// The engine prompt for this request, or the first field ferry cannot serve.
    pub fn prompt(&self) -> Result<Prompt, FieldError> {
        if self.stream {
            return Err(FieldError::new("stream", "streaming is not supported; send stream: false"));
        }
        if self.n.is_some_and(|n| n != 1) {
            return Err(FieldError::new("n", "only n = 1 is supported"));
        }
        if self.messages.is_empty() {
            return Err(FieldError::new("messages", "messages must hold at least one message"));
        }
        let messages = self
            .messages
            .iter()
            .enumerate()
            .map(|(i, m)| Ok(ChatMessage { role: role(&m.role, i)?, content: content(&m.content, i)? }))
            .collect::<Result<Vec<_>, FieldError>>()?;
        Ok(Prompt {
            messages,
            model: Some(self.model.clone()),
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            temperature: self.temperature,
            top_p: self.top_p,
            stop: match &self.stop {
                None => Vec::new(),
                Some(Stop::One(stop)) => vec![stop.clone()],
                Some(Stop::Many(stops)) => stops.clone(),
            },
            seed: self.seed,
            response_format: self.response_format.clone(),
        })
    }
}

/// The models that `upstreams` serve, each once with the first upstream serving it; and
/// whether some upstream serves any model (lists none).
pub fn served_models(upstreams: &[crate::config::UpstreamConfig]) -> (Vec<(String, String)>, bool) {
    let mut models: Vec<(String, String)> = Vec::new();
    for upstream in upstreams {
        for model in &upstream.models {
            if !models.iter().any(|(m, _)| m == model) {
                models.push((model.clone(), upstream.name.clone()));
            }
        }
    }
    (models, upstreams.iter().any(|u| u.models.is_empty()))
}

/// Checks that `model` is served by one of `upstreams`. Runs per request and per batch line, so
/// it allocates only to word a refusal.
pub fn check_model(upstreams: &[crate::config::UpstreamConfig], model: &str) -> Result<(), FieldError> {
    if upstreams.iter().any(|u| u.models.is_empty() || u.models.iter().any(|m| m == model)) {
        return Ok(());
    }
    let (served, _) = served_models(upstreams);
    let names: Vec<&str> = served.iter().map(|(m, _)| m.as_str()).collect();
    Err(FieldError::new(
        "model",
        format!(
            "the model (a string of {} bytes) is not served here; models: {}",
            model.len(),
            names.join(", ")
        ),
    ))
}

/// OpenAI's `chat.completion` object.
#[derive(Debug, Serialize)]
pub struct Completion {
    /// `chatcmpl-` and a ULID.
    pub id: String,
    /// Always `chat.completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The model that answered.
    pub model: String,
    /// The one choice.
    pub choices: [Choice; 1],
    /// Tokens used.
    pub usage: UsageOut,
}

/// One choice of a completion.
#[derive(Debug, Serialize)]
pub struct Choice {
    /// Always 0.
    pub index: u32,
    /// The assistant's message.
    pub message: ChatMessage,
    /// Always `stop`.
    pub finish_reason: &'static str,
}

/// Usage as OpenAI reports it.
#[derive(Debug, Serialize)]
pub struct UsageOut {
    /// Tokens in the request.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// Their sum.
    pub total_tokens: u32,
}

impl Completion {
    /// The completion object for an engine answer.
    pub fn of(answer: Answer) -> Completion {
        let usage = answer.usage;
        Completion {
            id: format!("chatcmpl-{}", ulid::Ulid::new()),
            object: "chat.completion",
            created: unix_now(),
            model: answer.model.to_string(),
            choices: [Choice {
                index: 0,
                message: ChatMessage::assistant(answer.text),
                finish_reason: "stop",
            }],
            usage: UsageOut {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                total_tokens: usage.total(),
            },
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> CompletionRequest {
        serde_json::from_value(body).expect("valid request")
    }

    #[test]
    fn text_parts_are_joined_and_roles_mapped() {
        let prompt = request(serde_json::json!({
            "model": "m",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hel"}, {"type": "text", "text": "lo"}]}
            ],
            "max_completion_tokens": 7
        }))
        .prompt()
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
            match request(body).prompt() {
                Err(FieldError { param: p, .. }) => assert_eq!(p, param),
                Ok(prompt) => panic!("expected an error naming {param}, got {prompt:?}"),
            }
        }
    }
}
