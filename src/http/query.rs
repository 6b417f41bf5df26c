//! `POST /v1/query`: one prompt at a priority, answered when its batch is (seed 002).
//!
//! Request `{username, request_id, prompt, created_at, priority: HIGH|MEDIUM|LOW}`; reply
//! `{request_id, username, text, tokens_used, latency_ms, created_at, completed_at}`. The wait is
//! bounded by the lane's `latency_ms / 1000 + 30` seconds.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::body::JsonBody;
use super::peer::Peer;
use super::priority::{self, is_rfc3339, now_rfc3339};
use super::record::{ChatMeta, answer_one};
use super::{ApiError, AppState, Caller};
use crate::engine::Prompt;

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    /// Who asks.
    pub username: String,
    /// The caller's id for this request, echoed back.
    pub request_id: String,
    /// The prompt.
    pub prompt: String,
    /// When the caller created it (RFC 3339), echoed back.
    pub created_at: String,
    /// HIGH, MEDIUM or LOW.
    pub priority: String,
}

/// The reply body (seed 002's GenerationResponse).
#[derive(Debug, Serialize)]
pub struct Generation {
    /// Echoed from the request.
    pub request_id: String,
    /// Echoed from the request.
    pub username: String,
    /// The answer.
    pub text: String,
    /// Tokens the answer cost (for a combined batch, this item's share).
    pub tokens_used: u32,
    /// From acceptance to answer.
    pub latency_ms: f64,
    /// Echoed from the request.
    pub created_at: String,
    /// When the answer arrived (RFC 3339, UTC).
    pub completed_at: String,
}

/// Registers the route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/query", web::post().to(query));
}

fn validate(query: &Query) -> Result<(), ApiError> {
    for (field, value) in
        [("username", &query.username), ("request_id", &query.request_id), ("prompt", &query.prompt)]
    {
        if value.trim().is_empty() {
            return Err(ApiError::bad(field, format!("{field} must not be empty")));
        }
    }
    if !is_rfc3339(&query.created_at) {
        return Err(ApiError::bad(
            "created_at",
            format!(
                "created_at must be an RFC 3339 timestamp such as 2026-02-01T12:00:00Z (got a string of {} bytes)",
                query.created_at.len()
            ),
        ));
    }
    if !["HIGH", "MEDIUM", "LOW"].contains(&query.priority.to_ascii_uppercase().as_str()) {
        return Err(ApiError::bad(
            "priority",
            format!("priority must be HIGH, MEDIUM or LOW (got a string of {} bytes)", query.priority.len()),
        ));
    }
    Ok(())
}

async fn query(
    state: web::Data<AppState>,
    caller: Caller,
    peer: Peer,
    body: JsonBody<Query>,
) -> Result<HttpResponse, ApiError> {
    let query = body.into_inner();
    validate(&query)?;
    let lane = priority::lane_for(&state.engine, &query.priority, "priority")?;
    let meta = ChatMeta {
        username: Some(query.username.clone()),
        request_id: Some(query.request_id.clone()),
        priority: Some(query.priority.to_ascii_uppercase()),
        ..ChatMeta::new(&caller, &lane)
    };
    let request = serde_json::json!({ "prompt": query.prompt });
    let answer = answer_one(&state, &meta, request, Prompt::text(&query.prompt), &peer).await?;
    Ok(HttpResponse::Ok().json(Generation {
        request_id: query.request_id,
        username: query.username,
        text: answer.text,
        tokens_used: answer.usage.total(),
        latency_ms: answer.latency.as_secs_f64() * 1000.0,
        created_at: query.created_at,
        completed_at: now_rfc3339(),
    }))
}
