//! Upstream LLM APIs behind one trait.
//!
//! A [`Provider`] turns one [`CallRequest`] into one HTTP call (or, for the in-process mock, a
//! simulated one) and classifies what came back into a [`CallReply`] or a [`ProviderError`].
//! Providers know nothing of lanes, batches or retries: the `LlmClient` actor decides what to do
//! with an error, using only [`ProviderError::sent`] and the variant.
//!
//! Adding an API is one new file here plus one [`ProviderKind`](crate::config::ProviderKind)
//! variant matched in [`build`].

pub mod gemini;
pub mod headers;
mod http;
pub mod mock;
pub mod openai;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{ProviderKind, UpstreamConfig};
pub use crate::core::chat::{ChatMessage, RateHints, Role};

/// What one upstream call asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallRequest {
    /// The model name sent upstream.
    pub model: String,
    /// The conversation, oldest first.
    pub messages: Vec<ChatMessage>,
    /// Cap on generated tokens, if any.
    pub max_tokens: Option<u32>,
    /// Sampling temperature, if set.
    pub temperature: Option<f32>,
    /// Nucleus sampling, if set.
    pub top_p: Option<f32>,
    /// Sequences that end the reply (empty: none).
    pub stop: Vec<String>,
    /// Sampling seed, if set.
    pub seed: Option<i64>,
    /// OpenAI's `response_format` object as the caller gave it (`json_object`, `json_schema`).
    pub response_format: Option<serde_json::Value>,
}

/// Token counts an upstream reported for one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the request.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
}

impl Usage {
    /// Prompt plus completion tokens.
    pub fn total(&self) -> u32 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }

    /// This usage and `other`'s together.
    pub fn plus(self, other: Usage) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens.saturating_add(other.prompt_tokens),
            completion_tokens: self.completion_tokens.saturating_add(other.completion_tokens),
        }
    }
}

/// A successful upstream answer.
#[derive(Debug, Clone, PartialEq)]
pub struct CallReply {
    /// The generated text.
    pub text: String,
    /// Token usage, when the upstream reported it.
    pub usage: Option<Usage>,
    /// Rate-limit headers, when the upstream sent them.
    pub hints: RateHints,
}

/// Why an upstream call did not produce an answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// HTTP 429: the upstream asks us to slow down.
    #[error("rate limited (429){}", retry_after.map(|d| format!(", retry after {d:?}")).unwrap_or_default())]
    RateLimited {
        /// Parsed `Retry-After` (or provider-specific equivalent), already clamped to >= 0.
        retry_after: Option<Duration>,
        /// Any rate-limit headers sent with the 429 (boxed: keeps every error, and so every
        /// outcome, small).
        hints: Box<RateHints>,
    },
    /// HTTP 503: the upstream has no free slot (llama.cpp, Ollama). Backpressure, not failure.
    #[error("upstream overloaded (503): {message}")]
    Overloaded {
        /// The upstream's message, shortened.
        message: String,
    },
    /// Any other 5xx.
    #[error("upstream error {status}: {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The upstream's message, shortened.
        message: String,
    },
    /// A 4xx other than 429: the request itself is wrong; retrying will not help.
    #[error("upstream rejected the request ({status}): {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The upstream's message, shortened.
        message: String,
    },
    /// No reply within the upstream's `timeout_ms` (the request was sent).
    #[error("upstream timed out")]
    Timeout,
    /// The connection could not be made; the request never went out.
    #[error("could not connect to upstream: {message}")]
    Connect {
        /// What the transport said.
        message: String,
    },
    /// The connection broke after the request was sent.
    #[error("connection to upstream dropped: {message}")]
    Dropped {
        /// What the transport said.
        message: String,
    },
    /// The provider's code panicked during the call (a bug in ferry, not the upstream's doing).
    #[error("provider failed internally: {message}")]
    Panicked {
        /// The panic message.
        message: String,
    },
    /// A 2xx whose body is not the API's shape.
    #[error("malformed reply from upstream: {message}")]
    Malformed {
        /// What was wrong, with a short excerpt.
        message: String,
    },
}

impl ProviderError {
    /// Whether the request reached the upstream (and so counts against its limits and may have
    /// run there). Only a failed connect is known not to have been sent.
    pub fn sent(&self) -> bool {
        !matches!(self, ProviderError::Connect { .. })
    }

    /// A short stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::Overloaded { .. } => "overloaded",
            ProviderError::Server { .. } => "server",
            ProviderError::Rejected { .. } => "rejected",
            ProviderError::Timeout => "timeout",
            ProviderError::Connect { .. } => "connect",
            ProviderError::Dropped { .. } => "dropped",
            ProviderError::Malformed { .. } => "malformed",
            ProviderError::Panicked { .. } => "panicked",
        }
    }
}

/// The future a provider returns for one call.
pub type CallFuture = Pin<Box<dyn Future<Output = Result<CallReply, ProviderError>> + Send>>;

/// One upstream API.
pub trait Provider: Send + Sync {
    /// Starts one call. The future owns everything it needs (`'static`), so the client actor can
    /// spawn it and go on serving its mailbox.
    fn call(&self, request: CallRequest) -> CallFuture;
}

/// Errors building a provider from its config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The HTTP client could not be created.
    #[error("upstream `{upstream}`: cannot build HTTP client: {source}")]
    Http {
        /// Upstream name.
        upstream: String,
        /// The reqwest error.
        source: reqwest::Error,
    },
}

/// Builds the provider an upstream's config names. `api_key` is the secret read from the
/// environment variable named by `api_key_env` (never from the file).
pub fn build(upstream: &UpstreamConfig, api_key: Option<String>) -> Result<Arc<dyn Provider>, BuildError> {
    match upstream.provider {
        ProviderKind::Mock => Ok(Arc::new(mock::MockProvider::new(upstream.mock.clone()))),
        ProviderKind::Openai => Ok(Arc::new(openai::OpenAiProvider::new(upstream, api_key)?)),
        ProviderKind::Gemini => Ok(Arc::new(gemini::GeminiProvider::new(upstream, api_key)?)),
    }
}

/// Shortens an upstream's error text for messages and logs.
pub(crate) fn excerpt(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}
