//! An item's outcome as a line of the output or error file: OpenAI's `{id, custom_id, response,
//! error}`. Built on the job store's thread when the outcome is stored, not on the engine's.

use serde::Serialize;

use super::db::Finished;
use super::model::LineError;
use crate::chat_format::Completion;
use crate::engine::{ItemError, Outcome, Withdrawal};
use crate::providers::ProviderError;

/// An item's outcome as the feed hands it over, turned into its output line when stored.
#[derive(Debug)]
pub(crate) struct Done {
    /// Its input line.
    pub line: u64,
    /// Its id.
    pub custom_id: String,
    /// The engine's outcome, or why it was never sent.
    pub result: Result<Outcome, LineError>,
}

impl Done {
    /// The stored form: the output line, and whether it was answered.
    pub(crate) fn finished(self) -> Finished {
        match self.result {
            Ok(outcome) => finished(self.line, &self.custom_id, outcome),
            Err(error) => failed_line(self.line, &self.custom_id, &error),
        }
    }
}

#[derive(Serialize)]
struct OutputLine<'a> {
    id: String,
    custom_id: &'a str,
    response: Option<ResponseOut>,
    error: Option<ErrorOut<'a>>,
}

#[derive(Serialize)]
struct ResponseOut {
    status_code: u16,
    request_id: String,
    body: Completion,
}

#[derive(Serialize)]
struct ErrorOut<'a> {
    code: &'a str,
    message: String,
}

fn output(line: u64, ok: bool, text: &OutputLine<'_>) -> Finished {
    let output = serde_json::to_string(text).unwrap_or_else(|_| String::from("{}"));
    Finished { line, ok, output }
}

fn request_id() -> String {
    format!("batch_req_{}", ulid::Ulid::new())
}

pub(crate) fn failed_line(line: u64, custom_id: &str, error: &LineError) -> Finished {
    let error = ErrorOut { code: &error.code, message: error.message.clone() };
    output(line, false, &OutputLine { id: request_id(), custom_id, response: None, error: Some(error) })
}

/// The stored output line for an item's outcome.
pub(crate) fn finished(line: u64, custom_id: &str, outcome: Outcome) -> Finished {
    match outcome {
        Ok(answer) => {
            let response = ResponseOut {
                status_code: 200,
                request_id: format!("req_{}", ulid::Ulid::new()),
                body: Completion::of(answer),
            };
            output(
                line,
                true,
                &OutputLine { id: request_id(), custom_id, response: Some(response), error: None },
            )
        }
        Err(error) => {
            let code = match &error {
                ItemError::Upstream { error: ProviderError::RateLimited { .. }, .. } => "rate_limit_exceeded",
                ItemError::Upstream { error: ProviderError::Rejected { .. }, .. } => "upstream_rejected",
                ItemError::Upstream { error: ProviderError::Timeout, .. } => "timeout",
                ItemError::Upstream { .. } => "upstream_error",
                ItemError::NoUpstream { .. } => "model_not_found",
                ItemError::Crashed { .. } | ItemError::ShuttingDown => "internal_error",
                ItemError::Withdrawn(Withdrawal::Cancelled) => "batch_cancelled",
                ItemError::Withdrawn(Withdrawal::Expired) => "batch_expired",
                ItemError::Withdrawn(_) => "request_cancelled",
                ItemError::OverBudget { .. } => "rate_limit_exceeded",
            };
            let error = ErrorOut { code, message: error.to_string() };
            output(
                line,
                false,
                &OutputLine { id: request_id(), custom_id, response: None, error: Some(error) },
            )
        }
    }
}
