//! Recording finished items as chats: each door's request/response pair goes to the store once
//! its outcome is known, owned by the caller's key id.
//!
//! Recording is awaited, so a chat is listed by the time its reply leaves, but a store failure
//! never fails the user's request: it is logged as `event=store_failed` (the error only, never
//! the payloads) and the reply goes out anyway.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::peer::Peer;
use super::{ApiError, AppState, Caller, priority};
use crate::engine::{Answer, Outcome, Prompt};
use crate::store::{NewChat, Store, StoreError};

/// What a door knows about an item apart from its request and outcome.
#[derive(Debug, Clone)]
pub struct ChatMeta {
    /// The caller's key id, or its tenant's owner (`None` when keys are off).
    pub owner: Option<String>,
    /// The caller's tenant, whose limits its prompts are admitted under.
    pub tenant: Option<std::sync::Arc<str>>,
    /// The username the request gave (`/v1/query` only).
    pub username: Option<String>,
    /// The request id the caller gave (`/v1/query` only).
    pub request_id: Option<String>,
    /// The lane the item went through.
    pub lane: String,
    /// `HIGH`/`MEDIUM`/`LOW` for `/v1/query`.
    pub priority: Option<String>,
    /// When ferry accepted the item, unix ms.
    pub created_at: i64,
}

impl ChatMeta {
    /// Metadata for an item of `caller` on `lane`, accepted now.
    pub fn new(caller: &Caller, lane: &str) -> ChatMeta {
        ChatMeta {
            owner: caller.key_id.clone(),
            tenant: caller.tenant.clone(),
            username: None,
            request_id: None,
            lane: lane.to_string(),
            priority: None,
            created_at: unix_ms(SystemTime::now()),
        }
    }

    /// The chat for this item: `request` as the door recorded it, and `outcome` shaped as
    /// `{"text", "tokens_used", "latency_ms"}` or `{"error"}`.
    pub fn chat(&self, request: Value, outcome: &Outcome) -> NewChat {
        match outcome {
            Ok(answer) => self.answered(request, answer),
            Err(error) => self.failed(request, &error.to_string()),
        }
    }

    fn answered(&self, request: Value, answer: &Answer) -> NewChat {
        let tokens_used = answer.usage.total();
        let latency_ms = answer.latency.as_secs_f64() * 1000.0;
        NewChat {
            batch_id: Some(answer.batch_id.to_string()),
            response: json!({"text": answer.text, "tokens_used": tokens_used, "latency_ms": latency_ms}),
            ok: true,
            tokens_used,
            latency_ms,
            ..self.base(request)
        }
    }

    /// The chat for an item that ended without an answer (an upstream error or a timeout).
    pub fn failed(&self, request: Value, error: &str) -> NewChat {
        NewChat { response: json!({ "error": error }), ..self.base(request) }
    }

    fn base(&self, request: Value) -> NewChat {
        let completed_at = unix_ms(SystemTime::now());
        NewChat {
            owner: self.owner.clone(),
            username: self.username.clone(),
            request_id: self.request_id.clone(),
            lane: self.lane.clone(),
            priority: self.priority.clone(),
            batch_id: None,
            request,
            response: Value::Null,
            ok: false,
            created_at: self.created_at,
            completed_at,
            tokens_used: 0,
            // Milliseconds between two unix-ms stamps; precise enough for a failure.
            latency_ms: (completed_at - self.created_at).max(0) as f64,
        }
    }
}

/// `at` in unix milliseconds (0 before 1970).
pub fn unix_ms(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Records one chat; a failure is logged, not returned.
pub fn record(store: &Store, chat: NewChat) {
    store.record_later(chat);
}

/// Queues chats for recording (written together with whatever else is queued).
pub fn record_all(store: &Store, chats: impl IntoIterator<Item = NewChat>) {
    for chat in chats {
        store.record_later(chat);
    }
}

/// Submits one item to `meta.lane`, waits at most the lane's timeout, records the chat and
/// returns the answer — the path `/v1/query` and `/v1/chat/completions` share. A refused
/// submission (queue full, shutting down) was never accepted and is not recorded.
pub async fn answer_one(
    state: &AppState,
    meta: &ChatMeta,
    request: Value,
    prompt: Prompt,
    peer: &Peer,
) -> Result<Answer, ApiError> {
    let owner = meta.owner.as_deref();
    let admission = super::tenant::admit(
        &state.engine,
        meta.tenant.as_deref(),
        &meta.lane,
        std::slice::from_ref(&prompt),
    )
    .await?;
    let outcome =
        match priority::outcome_within(&state.engine, &meta.lane, owner, prompt, peer, admission).await {
            Ok(outcome) => outcome,
            Err(error @ ApiError::Timeout(_)) => {
                record(&state.store, meta.failed(request, &error.to_string()));
                return Err(error);
            }
            Err(error) => return Err(error),
        };
    record(&state.store, meta.chat(request, &outcome));
    outcome.map_err(priority::item_error)
}

/// Maps a store failure on a read (or a settings write) to a 500, logging `event=store_failed`
/// with `what` and the error only.
pub fn store_unavailable(what: &'static str) -> impl Fn(StoreError) -> ApiError {
    move |error| {
        tracing::warn!(event = "store_failed", what, error = %error);
        ApiError::Internal("the store is unavailable; see the server log".into())
    }
}
