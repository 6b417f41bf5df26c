//! Priorities as doors name them, mapped to lanes, and the timeout each lane implies.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::ApiError;
use super::peer::Peer;
use super::tenant::Admission;
use crate::engine::{Engine, ItemError, Origin, Outcome, Prompt, Withdrawal};

/// The lane for a priority: `HIGH`/`MEDIUM`/`LOW` (any case) name the lanes `high`/`medium`/
/// `low`; any other value must be a lane's own name. `param` names the field in errors.
pub fn lane_for(engine: &Engine, priority: &str, param: &str) -> Result<String, ApiError> {
    let lane = priority.trim().to_ascii_lowercase();
    if engine.has_lane(&lane) {
        return Ok(lane);
    }
    Err(ApiError::bad(
        param,
        format!(
            "unknown priority (a value of {} bytes); use HIGH, MEDIUM or LOW, or a lane name: {}",
            priority.len(),
            engine.lanes().join(", ")
        ),
    ))
}

/// The part of every lane's timeout that does not depend on the lane (the "+ 30 s").
const TIMEOUT_FLOOR: Duration = Duration::from_secs(30);

/// Waits for the outcome of `prompt` in `lane`, at most the lane's `latency_ms / 1000 + 30` s,
/// as a request of `owner` (None: keys are off) whose deadline is that timeout. If the caller
/// goes away first (`peer` closes, or the handler is dropped) or the timeout passes, the item is withdrawn: it is
/// not sent to an upstream for nobody. Errors: refused submissions (the tenant's `admission`
/// given back) and [`ApiError::Timeout`]. The admission is held until the outcome is in.
pub async fn outcome_within(
    engine: &Engine,
    lane: &str,
    owner: Option<&str>,
    prompt: Prompt,
    peer: &Peer,
    admission: Option<Admission>,
) -> Result<Outcome, ApiError> {
    let limit = timeout_for(engine, lane);
    let origin = Origin::request(owner.unwrap_or(Origin::LOCAL), Some(tokio::time::Instant::now() + limit));
    let mut pending = WithdrawOnDrop { engine, origin: Some(Arc::clone(&origin)) };
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(limit, engine.submit_one_from(lane, &origin, prompt)) => outcome,
        // Dropping `pending` withdraws the item.
        () = peer.gone() => return Err(caller_gone()),
    };
    pending.origin = None;
    match outcome {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(refused)) => Err(super::tenant::submit_refused(admission, refused).await),
        Err(_) => {
            engine.withdraw_now(&origin, Withdrawal::TimedOut);
            Err(ApiError::Timeout(format!("no answer within {} s", limit.as_secs())))
        }
    }
}

/// What a door returns when its caller went away (nobody reads it; the access log does).
pub fn caller_gone() -> ApiError {
    ApiError::Unavailable("the caller went away before the answer; its prompts were withdrawn".into())
}

/// Withdraws a request's items if the handler waiting for them is dropped (the caller went
/// away) while it still holds the origin.
pub struct WithdrawOnDrop<'a> {
    /// The engine.
    pub engine: &'a Engine,
    /// The request; set to None once its outcome is in.
    pub origin: Option<Arc<Origin>>,
}

impl Drop for WithdrawOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(origin) = self.origin.take() {
            self.engine.withdraw_now(&origin, Withdrawal::CallerGone);
        }
    }
}

/// How long a door waits for an item of `lane`: its latency target plus 30 s.
pub fn timeout_for(engine: &Engine, lane: &str) -> Duration {
    engine.lane_latency(lane).unwrap_or_default() + TIMEOUT_FLOOR
}

/// Maps an item's error to the HTTP error a single-item endpoint returns.
pub fn item_error(error: ItemError) -> ApiError {
    match error {
        ItemError::Upstream { .. } => ApiError::Upstream(error.to_string()),
        ItemError::NoUpstream { .. } => ApiError::bad("model", error.to_string()),
        ItemError::ShuttingDown => ApiError::Unavailable(error.to_string()),
        ItemError::Crashed { .. } => ApiError::Internal(error.to_string()),
        ItemError::Withdrawn(_) => ApiError::Timeout(error.to_string()),
        ItemError::OverBudget { retry_after_s, .. } => ApiError::QueueFull {
            message: error.to_string(),
            retry_after: Duration::from_secs(retry_after_s.max(1)),
        },
    }
}

/// Now as an RFC 3339 UTC timestamp.
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

/// A time as an RFC 3339 UTC timestamp.
pub fn rfc3339(at: SystemTime) -> String {
    OffsetDateTime::from(at).format(&Rfc3339).unwrap_or_default()
}

/// Whether `value` is an RFC 3339 timestamp.
pub fn is_rfc3339(value: &str) -> bool {
    OffsetDateTime::parse(value, &Rfc3339).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        let now = now_rfc3339();
        assert!(is_rfc3339(&now), "{now}");
        assert!(is_rfc3339("2026-02-01T12:00:00Z"));
        assert!(!is_rfc3339("yesterday"));
    }
}
