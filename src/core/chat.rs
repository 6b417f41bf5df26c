//! The vocabulary the pure rules and the providers share: chat messages and the rate-limit
//! hints an upstream announces. Defined here, at the bottom, so `core` needs nothing above it;
//! [`crate::providers`] re-exports them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the model.
    System,
    /// The person asking.
    User,
    /// The model's earlier answers.
    Assistant,
}

/// One message of a chat conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message from the user.
    pub fn user(content: impl Into<String>) -> Self {
        Self { role: Role::User, content: content.into() }
    }

    /// An answer from the model.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self { role: Role::Assistant, content: content.into() }
    }

    /// A system instruction.
    pub fn system(content: impl Into<String>) -> Self {
        Self { role: Role::System, content: content.into() }
    }
}

/// Rate-limit state an upstream announced in its reply headers
/// (`x-ratelimit-limit-*`, `x-ratelimit-remaining-*`, `x-ratelimit-reset-*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateHints {
    /// Requests allowed per window.
    pub limit_requests: Option<u64>,
    /// Requests left in the current window.
    pub remaining_requests: Option<u64>,
    /// Time until the request window resets.
    pub reset_requests: Option<Duration>,
    /// Tokens allowed per window.
    pub limit_tokens: Option<u64>,
    /// Tokens left in the current window.
    pub remaining_tokens: Option<u64>,
    /// Time until the token window resets.
    pub reset_tokens: Option<Duration>,
}

impl RateHints {
    /// True when no header was present.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}
