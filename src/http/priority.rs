//! Priorities as doors name them, mapped to lanes, and the timeout each lane implies.

use std::time::{Duration, Instant, SystemTime};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::ApiError;
use crate::engine::{Engine, ItemError, Outcome, Prompt};

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

/// The part of every lane's timeout that does not depend on the lane (seed 002's "+ 30 s").
const TIMEOUT_FLOOR: Duration = Duration::from_secs(30);

/// Waits for the outcome of `prompt` in `lane`, at most the lane's `latency_ms / 1000 + 30` s.
/// Every lane allows at least 30 s, so the lane's live latency target is only asked for if that
/// much has passed: no message to the engine per request on the way. Errors: refused submissions
/// and [`ApiError::Timeout`].
pub async fn outcome_within(engine: &Engine, lane: &str, prompt: Prompt) -> Result<Outcome, ApiError> {
    let started = Instant::now();
    let submitted = engine.submit_one(lane, prompt);
    tokio::pin!(submitted);
    match tokio::time::timeout(TIMEOUT_FLOOR, &mut submitted).await {
        Ok(outcome) => Ok(outcome?),
        Err(_) => {
            let limit = timeout_for(engine, lane).await?;
            let rest = limit.saturating_sub(started.elapsed());
            let outcome = tokio::time::timeout(rest, &mut submitted)
                .await
                .map_err(|_| ApiError::Timeout(format!("no answer within {} s", limit.as_secs())))?;
            Ok(outcome?)
        }
    }
}

/// How long a door waits for an item of `lane`: its latency target plus 30 s (seed 002's rule).
pub async fn timeout_for(engine: &Engine, lane: &str) -> Result<Duration, ApiError> {
    let config = engine.config().await?;
    let latency_ms = config.lanes.get(lane).map_or(0, |settings| settings.latency_ms);
    Ok(Duration::from_millis(latency_ms) + TIMEOUT_FLOOR)
}

/// Maps an item's error to the HTTP error a single-item endpoint returns.
pub fn item_error(error: ItemError) -> ApiError {
    match error {
        ItemError::Upstream { .. } => ApiError::Upstream(error.to_string()),
        ItemError::NoUpstream { .. } => ApiError::bad("model", error.to_string()),
        ItemError::ShuttingDown => ApiError::Unavailable(error.to_string()),
        ItemError::Crashed { .. } => ApiError::Internal(error.to_string()),
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
