//! A batch job as the store keeps it and as OpenAI's Batch API shows it.
//!
//! Times are unix seconds, as OpenAI's batch object has them. Statuses follow OpenAI:
//! `validating → in_progress → finalizing → completed`, or `failed` (validation refused the
//! input), `expired` (the completion window ran out), `cancelling → cancelled`.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Map, Value, json};

/// Where a batch is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// The input is being checked line by line.
    Validating,
    /// The input was refused; `errors` says why. Terminal.
    Failed,
    /// Items are going through the engine.
    InProgress,
    /// Every item has an outcome; the output and error files are being written.
    Finalizing,
    /// Done; the files are there. Terminal.
    Completed,
    /// The completion window ran out; finished items kept, the rest `batch_expired`. Terminal.
    Expired,
    /// Cancel asked: no new items go out, in-flight ones finish.
    Cancelling,
    /// Cancelled; finished items kept, the rest `batch_cancelled`. Terminal.
    Cancelled,
}

impl JobStatus {
    /// The name OpenAI uses (and the store keeps).
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Validating => "validating",
            JobStatus::Failed => "failed",
            JobStatus::InProgress => "in_progress",
            JobStatus::Finalizing => "finalizing",
            JobStatus::Completed => "completed",
            JobStatus::Expired => "expired",
            JobStatus::Cancelling => "cancelling",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// The status named `name`, if any.
    pub fn parse(name: &str) -> Option<JobStatus> {
        [
            JobStatus::Validating,
            JobStatus::Failed,
            JobStatus::InProgress,
            JobStatus::Finalizing,
            JobStatus::Completed,
            JobStatus::Expired,
            JobStatus::Cancelling,
            JobStatus::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }

    /// Whether nothing more will happen to the job.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Failed | JobStatus::Completed | JobStatus::Expired | JobStatus::Cancelled)
    }

    /// The store column holding the time the job entered this status.
    pub(crate) fn time_column(self) -> &'static str {
        match self {
            JobStatus::Validating => "created_at",
            JobStatus::Failed => "failed_at",
            JobStatus::InProgress => "in_progress_at",
            JobStatus::Finalizing => "finalizing_at",
            JobStatus::Completed => "completed_at",
            JobStatus::Expired => "expired_at",
            JobStatus::Cancelling => "cancelling_at",
            JobStatus::Cancelled => "cancelled_at",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who started a job: the HTTP Batch API, or `ferry run` on the command line. A daemon resumes
/// only API jobs; `ferry run` resumes only its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// `POST /v1/batches`: output and error files in the Files API.
    Api,
    /// `ferry run FILE`: one output file on disk, a line for every input line.
    Run,
}

impl JobKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            JobKind::Api => "api",
            JobKind::Run => "run",
        }
    }
}

/// OpenAI's `request_counts`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RequestCounts {
    /// Lines in the input.
    pub total: u64,
    /// Items answered.
    pub completed: u64,
    /// Items that ended in an error (including expired and cancelled ones).
    pub failed: u64,
}

impl RequestCounts {
    /// Items with an outcome.
    pub fn done(&self) -> u64 {
        self.completed + self.failed
    }
}

/// One reason the input was refused (OpenAI's `errors.data[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LineError {
    /// Machine-readable: `invalid_json_line`, `duplicate_custom_id`, `invalid_url`, …
    pub code: String,
    /// What is wrong, for people.
    pub message: String,
    /// The field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// The 1-based input line, when the error is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
}

impl LineError {
    /// An error about `line` (0: about the whole file).
    pub fn new(code: &str, message: impl Into<String>, param: Option<&str>, line: u64) -> Self {
        LineError {
            code: code.to_string(),
            message: message.into(),
            param: param.map(str::to_string),
            line: (line > 0).then_some(line),
        }
    }
}

/// A job as the store holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// `batch_` and a ULID (API jobs) or `run_` and the command's fingerprint (`ferry run`).
    pub id: String,
    /// Who started it.
    pub kind: JobKind,
    /// The creator's key id (`None` when keys are off, and for `ferry run`).
    pub owner: Option<String>,
    /// The uploaded input file (for `ferry run`: the input's fingerprint).
    pub input_file_id: String,
    /// Where the input JSONL is read from.
    pub input_path: PathBuf,
    /// `ferry run`'s output file.
    pub output_path: Option<PathBuf>,
    /// Always `/v1/chat/completions` today.
    pub endpoint: String,
    /// As given at create (`24h`); `ferry run` jobs have none (empty).
    pub completion_window: String,
    /// The engine lane its items go through.
    pub lane: String,
    /// Up to 16 string pairs the creator attached.
    pub metadata: Option<Map<String, Value>>,
    /// Where it is.
    pub status: JobStatus,
    /// Why validation refused it.
    pub errors: Vec<LineError>,
    /// The output file (answered items), once finalized and if any item was answered.
    pub output_file_id: Option<String>,
    /// The error file (failed items), once finalized and if any item failed.
    pub error_file_id: Option<String>,
    /// Counts so far.
    pub counts: RequestCounts,
    /// Unix seconds.
    pub created_at: i64,
    /// When the completion window ends (`None`: never).
    pub expires_at: Option<i64>,
    /// When each later status began.
    pub times: StatusTimes,
}

/// When a job entered each status after `validating` (unix seconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct StatusTimes {
    pub in_progress_at: Option<i64>,
    pub finalizing_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub expired_at: Option<i64>,
    pub cancelling_at: Option<i64>,
    pub cancelled_at: Option<i64>,
}

impl Job {
    /// The job as OpenAI's batch object.
    pub fn to_openai(&self) -> Value {
        let errors = (!self.errors.is_empty()).then(|| json!({"object": "list", "data": self.errors}));
        // The files' ids are chosen when finalizing starts, before the files exist: show them
        // once the job has ended.
        let ended = self.status.is_terminal();
        let (output_file_id, error_file_id) =
            if ended { (&self.output_file_id, &self.error_file_id) } else { (&None, &None) };
        json!({
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": errors,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": output_file_id,
            "error_file_id": error_file_id,
            "created_at": self.created_at,
            "in_progress_at": self.times.in_progress_at,
            "expires_at": self.expires_at,
            "finalizing_at": self.times.finalizing_at,
            "completed_at": self.times.completed_at,
            "failed_at": self.times.failed_at,
            "expired_at": self.times.expired_at,
            "cancelling_at": self.times.cancelling_at,
            "cancelled_at": self.times.cancelled_at,
            "request_counts": self.counts,
            "metadata": self.metadata,
        })
    }
}
