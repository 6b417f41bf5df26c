//! OpenAI batch jobs (seed 001): creating one from an uploaded file, and resuming those a stop
//! left under way. Retrieve, list, cancel and results are the [`Jobs`](crate::jobs::Jobs)
//! handle's own, called by the door directly.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{App, AppError};
use crate::jobs::line::CHAT_ENDPOINT;
use crate::jobs::{Created, Job, JobKind, NewJob};

/// Longest completion window accepted: a week.
const MAX_WINDOW_SECS: u64 = 7 * 24 * 3600;

/// A request to create a batch (OpenAI's create body; other fields clients send are ignored).
/// Serialized again (keys in order) for the idempotency hash, so two bodies that mean the same
/// hash the same.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct BatchRequest {
    /// The uploaded input file (`purpose=batch`).
    pub input_file_id: String,
    /// The endpoint every line calls; ferry runs `/v1/chat/completions`.
    pub endpoint: String,
    /// How long the batch may take, like `24h`.
    pub completion_window: String,
    /// Up to 16 string pairs kept with the batch.
    pub metadata: Option<Map<String, Value>>,
}

impl App {
    /// Creates `owner`'s batch from `request` and starts it; answers once the job is committed,
    /// with status `validating`. The same `idempotency_key` with the same request answers the
    /// batch it made first; with another request, a conflict.
    pub async fn create_batch(
        &self,
        owner: Option<String>,
        request: BatchRequest,
        idempotency_key: Option<String>,
    ) -> Result<Job, AppError> {
        let canonical = serde_json::to_vec(&request)
            .map_err(|_| AppError::invalid("metadata", "the request cannot be read back as JSON"))?;
        let request_hash: String = Sha256::digest(&canonical).iter().map(|b| format!("{b:02x}")).collect();
        if request.endpoint != CHAT_ENDPOINT {
            return Err(AppError::invalid(
                "endpoint",
                format!(
                    "endpoint (a string of {} bytes) is not supported; ferry runs {CHAT_ENDPOINT} batches",
                    request.endpoint.len()
                ),
            ));
        }
        let window = window_secs(&request.completion_window)?;
        if let Some(metadata) = &request.metadata {
            check_metadata(metadata)?;
        }
        let file = self
            .store
            .file(owner.clone(), request.input_file_id.clone())
            .await
            .map_err(|source| AppError::StoreFailed { what: "get_file", source })?
            .ok_or_else(|| AppError::invalid("input_file_id", "no such file of this key's"))?;
        if file.purpose != "batch" {
            return Err(AppError::invalid(
                "input_file_id",
                format!("file `{}` has purpose `{}`; upload it with purpose=batch", file.id, file.purpose),
            ));
        }
        let now = crate::jobs::unix_now();
        let new = NewJob {
            id: format!("batch_{}", ulid::Ulid::new()),
            kind: JobKind::Api,
            owner,
            input_file_id: file.id.clone(),
            input_path: self.store.file_path(&file.id),
            output_path: None,
            endpoint: request.endpoint,
            completion_window: request.completion_window,
            lane: self.config.jobs_lane().to_string(),
            metadata: request.metadata,
            idempotency_key,
            request_hash: Some(request_hash),
            created_at: now,
            expires_at: Some(now.saturating_add(i64::try_from(window).unwrap_or(i64::MAX))),
        };
        match self.jobs.create(new).await? {
            Created::New(job) => {
                tracing::info!(event = "batch_job_created", batch = %job.id, input_file = %job.input_file_id);
                Ok(job)
            }
            Created::Existing(job) => Ok(job),
        }
    }

    /// Resumes the batches the last stop (or crash) left under way, where they stopped; a
    /// failure is logged, not returned (the server runs on). Call once the API is up.
    pub async fn resume_batches(&self) {
        match self.jobs.resume(JobKind::Api).await {
            Ok(ids) if !ids.is_empty() => tracing::info!(event = "batch_jobs_resumed", count = ids.len()),
            Ok(_) => {}
            Err(error) => tracing::error!(event = "batch_jobs_resume_failed", error = %error),
        }
    }
}

/// Seconds in a completion window like `24h`, `90m` or `30s`.
fn window_secs(window: &str) -> Result<u64, AppError> {
    let bad = || {
        AppError::invalid(
            "completion_window",
            format!(
                "completion_window (a string of {} bytes) is not a duration like \"24h\", \"90m\" or \"30s\" (1 s to 168 h)",
                window.len()
            ),
        )
    };
    let (number, unit) = match window.strip_suffix('s') {
        Some(number) => (number, 1u64),
        None => match window.strip_suffix('m') {
            Some(number) => (number, 60),
            None => (window.strip_suffix('h').ok_or_else(bad)?, 3600),
        },
    };
    let number: u64 = number.parse().map_err(|_| bad())?;
    let secs = number.saturating_mul(unit);
    if secs == 0 || secs > MAX_WINDOW_SECS {
        return Err(bad());
    }
    Ok(secs)
}

fn check_metadata(metadata: &Map<String, Value>) -> Result<(), AppError> {
    if metadata.len() > 16 {
        return Err(AppError::invalid("metadata", "metadata holds at most 16 pairs"));
    }
    for (key, value) in metadata {
        if key.len() > 64 {
            return Err(AppError::invalid("metadata", "metadata keys are at most 64 characters"));
        }
        match value {
            Value::String(text) if text.len() <= 512 => {}
            _ => {
                return Err(AppError::invalid(
                    format!("metadata.{}", crate::request_json::shown_name(key)),
                    "metadata values are strings of at most 512 characters",
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_windows_parse_and_bad_ones_name_the_field() {
        assert_eq!(window_secs("24h").ok(), Some(86_400));
        assert_eq!(window_secs("90m").ok(), Some(5_400));
        assert_eq!(window_secs("2s").ok(), Some(2));
        for bad in ["", "h", "0h", "24", "1d", "-1h", "169h", "1.5h", "1é", "éh"] {
            match window_secs(bad) {
                Err(AppError::Invalid { field, .. }) => assert_eq!(field, "completion_window"),
                other => panic!("{bad}: expected a refusal, got {other:?}"),
            }
        }
    }
}
