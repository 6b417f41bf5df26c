//! The HTTP layer's one error type and its mapping to statuses.
//!
//! Every 4xx and 5xx is JSON: `{"error": {"message", "type", "param"?}}` — OpenAI's shape, so
//! OpenAI clients show it well — with the offending field in `param` where there is one. Handlers
//! return `Result<_, ApiError>`; this file alone decides the status for each case.

use std::time::Duration;

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;

use crate::app::AppError;
use crate::engine::{ControlError, SubmitError};
use crate::jobs::JobError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad input; `param` names the field when there is one.
    #[error("{message}")]
    BadRequest {
        /// What is wrong and what would be valid.
        message: String,
        /// The offending field.
        param: Option<String>,
    },
    /// No or unknown credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// Known credentials without the right (e.g. an inference key on an admin endpoint).
    #[error("{0}")]
    Forbidden(String),
    /// No such resource (or not the caller's).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with an earlier one (an idempotency key reused with another body).
    #[error("{0}")]
    Conflict(String),
    /// No such object of the caller's (or none at all), naming the path parameter that held its
    /// id (`file_id`, …): another key's object is answered the same as a missing one.
    #[error("{message}")]
    UnknownId {
        /// What was not found.
        message: String,
        /// The path parameter.
        param: &'static str,
    },
    /// The path exists but not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The body is over the configured limit.
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// An uploaded file is over `[files] max_bytes`.
    #[error("the file is larger than the limit of {limit} bytes ([files] max_bytes)")]
    FileTooLarge {
        /// The limit.
        limit: u64,
    },
    /// An upload would take its owner past `[files] max_bytes_per_owner`.
    #[error(
        "this key's files would exceed {limit} bytes ([files] max_bytes_per_owner; {used} held now); \
         delete files (DELETE /v1/files/{{file_id}}) to make room"
    )]
    QuotaExceeded {
        /// The quota.
        limit: u64,
        /// Bytes the owner holds now.
        used: u64,
    },
    /// The body is not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A lane is full; try again later.
    #[error("{message}")]
    QueueFull {
        /// Which lane and how full.
        message: String,
        /// Suggested wait.
        retry_after: Duration,
    },
    /// The upstream failed the item (after retries and fallbacks).
    #[error("{0}")]
    Upstream(String),
    /// The item did not finish within the endpoint's timeout.
    #[error("{0}")]
    Timeout(String),
    /// ferry is shutting down or its engine has stopped.
    #[error("{0}")]
    Unavailable(String),
    /// A fault inside ferry; the message says what without leaking internals.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// Bad input in `param`.
    pub fn bad(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::BadRequest { message: message.into(), param: Some(param.into()) }
    }

    fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "invalid_request_error",
            ApiError::Unauthorized(_) => "authentication_error",
            ApiError::Forbidden(_) => "permission_error",
            ApiError::NotFound(_) | ApiError::UnknownId { .. } => "not_found_error",
            ApiError::Conflict(_) => "conflict_error",
            ApiError::MethodNotAllowed(_) => "invalid_request_error",
            ApiError::PayloadTooLarge { .. } | ApiError::FileTooLarge { .. } => "request_too_large",
            ApiError::QuotaExceeded { .. } => "quota_exceeded",
            ApiError::UnsupportedMediaType(_) => "invalid_request_error",
            ApiError::QueueFull { .. } => "rate_limit_error",
            ApiError::Upstream(_) => "upstream_error",
            ApiError::Timeout(_) => "timeout_error",
            ApiError::Unavailable(_) => "unavailable_error",
            ApiError::Internal(_) => "server_error",
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    message: String,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    param: Option<&'a str>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) | ApiError::UnknownId { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. }
            | ApiError::FileTooLarge { .. }
            | ApiError::QuotaExceeded { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let param = match self {
            ApiError::BadRequest { param, .. } => param.as_deref(),
            ApiError::UnknownId { param, .. } => Some(*param),
            ApiError::FileTooLarge { .. } | ApiError::QuotaExceeded { .. } => Some("file"),
            _ => None,
        };
        let mut response = HttpResponse::build(self.status_code());
        if let ApiError::QueueFull { retry_after, .. } = self {
            // Rounded up: a client that waits what it is told must not be refused again.
            let seconds = retry_after.as_millis().div_ceil(1000).max(1).to_string();
            if let Ok(value) = HeaderValue::from_str(&seconds) {
                response.insert_header((header::RETRY_AFTER, value));
            }
        }
        if let ApiError::Unauthorized(_) = self {
            response.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        response.json(Body { error: Detail { message: self.to_string(), kind: self.kind(), param } })
    }
}

impl From<SubmitError> for ApiError {
    fn from(error: SubmitError) -> Self {
        match error {
            SubmitError::QueueFull { .. } => {
                ApiError::QueueFull { message: error.to_string(), retry_after: Duration::from_secs(1) }
            }
            SubmitError::UnknownLane { .. } => ApiError::bad("priority", error.to_string()),
            SubmitError::ShuttingDown | SubmitError::Stopped | SubmitError::Failed { .. } => {
                ApiError::Unavailable(error.to_string())
            }
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(error: ControlError) -> Self {
        match error {
            ControlError::Invalid { field, .. } => ApiError::bad(field, error.to_string()),
            // The name came from the caller's path: its length, not the name.
            ControlError::UnknownLane { lane, known } => ApiError::bad(
                "lane",
                format!("unknown lane (a name of {} bytes); lanes are: {known}", lane.len()),
            ),
            ControlError::UnknownUpstream(_) => ApiError::bad("upstream", error.to_string()),
            ControlError::Stopped => ApiError::Unavailable(error.to_string()),
        }
    }
}

impl From<AppError> for ApiError {
    fn from(error: AppError) -> Self {
        match error {
            AppError::Invalid { field, message } => ApiError::bad(field, message),
            AppError::Control(error) => error.into(),
            AppError::Job(error) => job_error("batch_job")(error),
            AppError::StoreFailed { what, source } => {
                tracing::warn!(event = "store_failed", what, error = %source);
                ApiError::Internal("the store is unavailable; see the server log".into())
            }
            other => {
                tracing::warn!(event = "request_failed", error = %other);
                ApiError::Internal("ferry could not do this; see the server log".into())
            }
        }
    }
}

/// A batch job's failure as an answer; `what` names the operation in the log.
pub fn job_error(what: &'static str) -> impl Fn(JobError) -> ApiError {
    move |error| match error {
        JobError::NotFound(id) => ApiError::NotFound(super::batches::no_batch(&id)),
        JobError::IdempotencyConflict { existing } => ApiError::Conflict(format!(
            "Idempotency-Key was already used with a different request body (batch {existing}); \
             use a new key for a new request"
        )),
        JobError::Stopped => ApiError::Unavailable("the job runner has stopped".into()),
        JobError::ResultsGone { id, file } => ApiError::NotFound(format!(
            "the results of batch {id} are kept in its output and error files, and {file} was deleted"
        )),
        other => {
            tracing::warn!(event = "store_failed", what, error = %other);
            ApiError::Internal("the job store is unavailable; see the server log".into())
        }
    }
}

/// Turns actix-web's JSON extractor errors into [`ApiError`]s that name the field.
pub fn json_error(error: JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    let api = match &error {
        JsonPayloadError::OverflowKnownLength { limit, .. } | JsonPayloadError::Overflow { limit } => {
            ApiError::PayloadTooLarge { limit: *limit }
        }
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType(
            "the body must be JSON, sent with Content-Type: application/json".into(),
        ),
        // Bodies are read with [`super::body::JsonBody`]; this covers an extractor added later.
        _ => ApiError::BadRequest { message: "invalid JSON body".into(), param: None },
    };
    api.into()
}

/// Turns query-string errors into [`ApiError`]s.
pub fn query_error(error: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    let text = error.to_string();
    let text = text.strip_prefix("Query deserialize error: ").unwrap_or(&text);
    let described = crate::request_json::from_message(text);
    ApiError::BadRequest {
        message: format!("invalid query string: {}", described.message),
        param: described.param,
    }
    .into()
}

/// Turns path errors into [`ApiError`]s.
pub fn path_error(error: PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::NotFound(format!("invalid path: {error}")).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_full_is_429_with_retry_after() {
        let error = ApiError::QueueFull { message: "full".into(), retry_after: Duration::from_secs(2) };
        let response = error.error_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()), Some("2"));
    }
}
