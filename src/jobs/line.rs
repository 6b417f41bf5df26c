//! One line of a batch input file: `{"custom_id", "method", "url", "body"}`, checked the way
//! OpenAI checks it, and turned into an engine prompt.
//!
//! The line is parsed once ([`crate::request_json`]) and its body converted once into the chat
//! request, each in time linear in the line's size; an error names the field by its path
//! (`body.messages[3].content`) and never quotes what the line held, since errors are stored
//! with the batch and shown to whoever reads it.

use serde::Deserialize;
use serde_json::Value;

use super::model::LineError;
use crate::chat_format::{self, CompletionRequest};
use crate::config::UpstreamConfig;
use crate::engine::Prompt;
use crate::request_json;

/// The one endpoint batch lines may name.
pub const CHAT_ENDPOINT: &str = "/v1/chat/completions";

/// Longest `custom_id` accepted (OpenAI documents none; this keeps rows and lines bounded).
const MAX_CUSTOM_ID: usize = 512;

#[derive(Deserialize)]
struct RawLine {
    custom_id: Option<Value>,
    method: Option<Value>,
    url: Option<Value>,
    body: Option<Value>,
}

/// A checked line.
#[derive(Debug)]
pub struct BatchLine {
    /// The caller's id for the line, unique in its file.
    pub custom_id: String,
    /// What to ask.
    pub prompt: Prompt,
}

/// What `line` (1-based) of a file holds, or why it cannot run. `upstreams` decide which models
/// are served.
pub fn parse(text: &[u8], line: u64, upstreams: &[UpstreamConfig]) -> Result<BatchLine, LineError> {
    let raw: RawLine = request_json::parse(text).map_err(|e| {
        let message = format!("line {line} is not a JSON object of the batch line's shape: {}", e.message);
        LineError::new("invalid_json_line", message, None, line)
    })?;
    let custom_id = match raw.custom_id {
        Some(Value::String(id)) if !id.is_empty() && id.len() <= MAX_CUSTOM_ID => id,
        Some(Value::String(_)) => {
            return Err(LineError::new(
                "invalid_custom_id",
                format!("custom_id must be 1 to {MAX_CUSTOM_ID} bytes long"),
                Some("custom_id"),
                line,
            ));
        }
        Some(_) => {
            return Err(LineError::new(
                "invalid_custom_id",
                "custom_id must be a string",
                Some("custom_id"),
                line,
            ));
        }
        None => {
            return Err(LineError::new(
                "missing_custom_id",
                "custom_id is required",
                Some("custom_id"),
                line,
            ));
        }
    };
    match raw.method.as_ref().and_then(Value::as_str) {
        Some("POST") => {}
        _ => return Err(LineError::new("invalid_method", "method must be \"POST\"", Some("method"), line)),
    }
    match raw.url.as_ref().and_then(Value::as_str) {
        Some(CHAT_ENDPOINT) => {}
        Some(other) => {
            return Err(LineError::new(
                "invalid_url",
                format!(
                    "url (a string of {} bytes) does not match the batch's endpoint {CHAT_ENDPOINT}",
                    other.len()
                ),
                Some("url"),
                line,
            ));
        }
        None => {
            return Err(LineError::new(
                "invalid_url",
                "url is required and must be a string",
                Some("url"),
                line,
            ));
        }
    }
    let body = match raw.body {
        Some(body @ Value::Object(_)) => body,
        Some(_) => {
            return Err(LineError::new("invalid_body", "body must be a JSON object", Some("body"), line));
        }
        None => return Err(LineError::new("missing_body", "body is required", Some("body"), line)),
    };
    let request: CompletionRequest = request_json::from_value(body).map_err(|e| {
        let param = e.param.map_or_else(|| "body".to_string(), |p| format!("body.{p}"));
        let message = format!("body is not a chat completion request: {}", e.message);
        LineError::new("invalid_body", message, Some(&param), line)
    })?;
    let invalid = |e: chat_format::FieldError| {
        LineError::new("invalid_body", e.message, Some(&format!("body.{}", e.param)), line)
    };
    let prompt = request.prompt().map_err(invalid)?;
    chat_format::check_model(upstreams, &request.model)
        .map_err(|e| LineError::new("model_not_found", e.message, Some("body.model"), line))?;
    Ok(BatchLine { custom_id, prompt })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstreams() -> Vec<UpstreamConfig> {
        let mut mock = UpstreamConfig::mock("mock");
        mock.models = vec!["mock-1".into()];
        vec![mock]
    }

    fn code_of(text: &str) -> (String, Option<String>) {
        match parse(text.as_bytes(), 7, &upstreams()) {
            Ok(line) => panic!("expected an error for {text}, got {line:?}"),
            Err(e) => {
                assert_eq!(e.line, Some(7));
                (e.code, e.param)
            }
        }
    }

    #[test]
    fn a_good_line_becomes_a_prompt() {
        let text = r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"mock-1","messages":[{"role":"user","content":"hi"}],"max_tokens":5}}"#;
        let line = parse(text.as_bytes(), 1, &upstreams()).expect("valid line");
        assert_eq!(line.custom_id, "a");
        assert_eq!(line.prompt.last_user_text(), "hi");
        assert_eq!(line.prompt.max_tokens, Some(5));
    }

    #[test]
    fn bad_lines_name_what_is_wrong() {
        let body = r#""body":{"model":"mock-1","messages":[{"role":"user","content":"hi"}]}"#;
        let cases = [
            ("not json".to_string(), "invalid_json_line", None),
            (format!(r#"{{"method":"POST","url":"/v1/chat/completions",{body}}}"#), "missing_custom_id", Some("custom_id")),
            (format!(r#"{{"custom_id":5,"method":"POST","url":"/v1/chat/completions",{body}}}"#), "invalid_custom_id", Some("custom_id")),
            (format!(r#"{{"custom_id":"a","method":"GET","url":"/v1/chat/completions",{body}}}"#), "invalid_method", Some("method")),
            (format!(r#"{{"custom_id":"a","method":"POST","url":"/v1/embeddings",{body}}}"#), "invalid_url", Some("url")),
            (r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions"}"#.to_string(), "missing_body", Some("body")),
            (
                r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"mock-1","messages":[]}}"#.to_string(),
                "invalid_body",
                Some("body.messages"),
            ),
            (
                r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-9","messages":[{"role":"user","content":"x"}]}}"#.to_string(),
                "model_not_found",
                Some("body.model"),
            ),
        ];
        for (text, code, param) in cases {
            assert_eq!(code_of(&text), (code.to_string(), param.map(str::to_string)), "{text}");
        }
    }
}
