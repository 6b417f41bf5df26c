//! OpenAI chat completions (`POST {base_url}/chat/completions`), which also speaks to llama.cpp
//! server, vLLM, Ollama and LM Studio.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde::{Deserialize, Serialize};

use super::http::{self, Success};
use super::{
    BuildError, CallFuture, CallReply, CallRequest, ChatMessage, Provider, ProviderError, Usage, excerpt,
};
use crate::config::UpstreamConfig;

/// The API root used when an upstream sets no `base_url`.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// A client for one OpenAI-compatible upstream.
#[derive(Debug)]
pub struct OpenAiProvider {
    client: reqwest::Client,
    url: String,
    /// `Authorization: Bearer …`, or the error every call returns when the key is unusable.
    auth: Option<Result<HeaderValue, ProviderError>>,
}

impl OpenAiProvider {
    /// A client for `upstream`, sending `api_key` as a bearer token when given.
    pub fn new(upstream: &UpstreamConfig, api_key: Option<String>) -> Result<Self, BuildError> {
        let base_url = upstream.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL);
        Ok(Self {
            client: http::client(upstream)?,
            url: http::join_url(base_url, "chat/completions"),
            auth: api_key.map(|key| http::key_header(&upstream.name, key, "Bearer ")),
        })
    }
}

impl Provider for OpenAiProvider {
    fn call(&self, request: CallRequest) -> CallFuture {
        let mut send = self.client.post(&self.url);
        match &self.auth {
            Some(Ok(header)) => send = send.header(AUTHORIZATION, header.clone()),
            Some(Err(refused)) => {
                let refused = refused.clone();
                return Box::pin(async move { Err(refused) });
            }
            None => {}
        }
        let send = send.json(&ChatBody::of(&request));
        Box::pin(async move {
            let Success { body, hints } = http::send("openai", send, no_body_retry_after).await?;
            let (text, usage) = parse_reply(&body)?;
            Ok(CallReply { text, usage, hints })
        })
    }
}

/// OpenAI puts its retry delay in headers only.
fn no_body_retry_after(_body: &[u8]) -> Option<Duration> {
    None
}

/// The request body.
#[derive(Serialize)]
struct ChatBody<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<&'a serde_json::Value>,
}

impl<'a> ChatBody<'a> {
    fn of(request: &'a CallRequest) -> Self {
        Self {
            model: &request.model,
            messages: &request.messages,
            max_tokens: request.max_tokens,
            temperature: request.temperature,
            top_p: request.top_p,
            stop: &request.stop,
            seed: request.seed,
            response_format: request.response_format.as_ref(),
        }
    }
}

/// The parts of a chat completion ferry reads.
#[derive(Deserialize)]
struct ChatReply {
    choices: Vec<Choice>,
    usage: Option<ReplyUsage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ReplyMessage,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ReplyMessage {
    content: Option<String>,
    refusal: Option<String>,
}

#[derive(Deserialize)]
struct ReplyUsage {
    prompt_tokens: u32,
    completion_tokens: u32,
}

/// The answer text and usage of a 2xx body.
fn parse_reply(body: &[u8]) -> Result<(String, Option<Usage>), ProviderError> {
    let reply: ChatReply = serde_json::from_slice(body).map_err(|error| ProviderError::Malformed {
        message: format!("not a chat completion ({error}): {}", excerpt(&String::from_utf8_lossy(body))),
    })?;
    let usage =
        reply.usage.map(|u| Usage { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens });
    let Some(choice) = reply.choices.into_iter().next() else {
        return Err(ProviderError::Malformed { message: "the reply has no choices".into() });
    };
    match choice.message.content {
        Some(text) => Ok((text, usage)),
        None => {
            let why = match (choice.message.refusal, choice.finish_reason) {
                (Some(refusal), _) => format!("the model refused: {}", excerpt(&refusal)),
                (None, Some(reason)) => format!("finish_reason {reason}"),
                (None, None) => "no finish_reason".into(),
            };
            Err(ProviderError::Malformed { message: format!("choices[0].message.content is null ({why})") })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ChatMessage;

    #[test]
    fn body_leaves_out_unset_options() {
        let request = CallRequest {
            model: "gpt-x".into(),
            messages: vec![ChatMessage::system("be brief"), ChatMessage::user("hi")],
            max_tokens: Some(5),
            ..CallRequest::default()
        };
        let body = serde_json::to_value(ChatBody::of(&request)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "model": "gpt-x",
                "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
                "max_tokens": 5
            })
        );
    }

    #[test]
    fn reply_text_and_usage_are_read() {
        let body = br#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"4"},
            "finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}"#;
        let (text, usage) = parse_reply(body).unwrap();
        assert_eq!(text, "4");
        assert_eq!(usage, Some(Usage { prompt_tokens: 9, completion_tokens: 1 }));
    }

    #[test]
    fn null_content_is_malformed_with_the_reason() {
        let body =
            br#"{"choices":[{"message":{"role":"assistant","content":null},"finish_reason":"length"}]}"#;
        let error = parse_reply(body).unwrap_err();
        assert_eq!(error.kind(), "malformed");
        assert!(error.to_string().contains("finish_reason length"), "{error}");
    }

    #[test]
    fn other_shapes_are_malformed() {
        for body in [&b"not json"[..], br#"{"choices":[]}"#, br#"{"object":"list"}"#] {
            assert_eq!(parse_reply(body).unwrap_err().kind(), "malformed");
        }
    }
}
