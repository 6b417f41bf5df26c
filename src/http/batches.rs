//! The OpenAI Batch API (seed 001, which self-hosted gateways answer with 501): create, retrieve,
//! list, cancel, and `GET /v1/batches/{id}/results`.
//!
//! Create answers only once the job is committed to the store, with status `validating`; the
//! JobRunner then checks the input file and runs it. A batch belongs to the key that created
//! it: another key gets 404. An `Idempotency-Key` header makes create safe to retry: the same
//! key with the same body answers the same batch, with a different body 409.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use futures_util::stream;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::body::JsonBody;
use super::{ApiError, AppState, Caller};
use crate::jobs::line::CHAT_ENDPOINT;
use crate::jobs::{Created, Job, JobError, JobKind, NewJob};

/// Batches per page when `limit` is absent (OpenAI's default).
const DEFAULT_LIMIT: usize = 20;
/// Most batches per page (OpenAI's limit).
const MAX_LIMIT: usize = 100;
/// Result lines fetched from the store per read while streaming `/results`.
const RESULTS_PAGE: usize = 1000;
/// Longest completion window accepted: a week.
const MAX_WINDOW_SECS: u64 = 7 * 24 * 3600;

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v1/batches").route(web::post().to(create)).route(web::get().to(list)))
        .service(web::resource("/v1/batches/{id}").route(web::get().to(retrieve)))
        .service(web::resource("/v1/batches/{id}/cancel").route(web::post().to(cancel)))
        .service(web::resource("/v1/batches/{id}/results").route(web::get().to(results)));
}

/// The create body; other fields OpenAI clients send are ignored. Serialized again (keys in
/// order) for the idempotency hash, so two bodies that mean the same hash the same.
#[derive(Debug, Deserialize, Serialize)]
struct CreateBody {
    input_file_id: String,
    endpoint: String,
    completion_window: String,
    metadata: Option<Map<String, Value>>,
}

/// The list query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    limit: Option<String>,
    after: Option<String>,
}

fn job_error(what: &'static str) -> impl Fn(JobError) -> ApiError {
    move |error| match error {
        JobError::NotFound(id) => ApiError::NotFound(format!("no batch `{id}`")),
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

/// Seconds in a completion window like `24h`, `90m` or `30s`.
fn window_secs(window: &str) -> Result<u64, ApiError> {
    let bad = || {
        ApiError::bad(
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

fn check_metadata(metadata: &Map<String, Value>) -> Result<(), ApiError> {
    if metadata.len() > 16 {
        return Err(ApiError::bad("metadata", "metadata holds at most 16 pairs"));
    }
    for (key, value) in metadata {
        if key.len() > 64 {
            return Err(ApiError::bad("metadata", "metadata keys are at most 64 characters"));
        }
        match value {
            Value::String(text) if text.len() <= 512 => {}
            _ => {
                return Err(ApiError::bad(
                    format!("metadata.{}", crate::request_json::shown_name(key)),
                    "metadata values are strings of at most 512 characters",
                ));
            }
        }
    }
    Ok(())
}

fn idempotency_key(http: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = http.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let key =
        value.to_str().map_err(|_| ApiError::bad("Idempotency-Key", "the header must be plain text"))?;
    if key.is_empty() || key.len() > 255 {
        return Err(ApiError::bad("Idempotency-Key", "the key must be 1 to 255 characters"));
    }
    Ok(Some(key.to_string()))
}

async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    http: HttpRequest,
    body: JsonBody<CreateBody>,
) -> Result<HttpResponse, ApiError> {
    let request = body.into_inner();
    let canonical = serde_json::to_vec(&request).map_err(|_| ApiError::Internal("unhashable body".into()))?;
    let request_hash: String = Sha256::digest(&canonical).iter().map(|b| format!("{b:02x}")).collect();
    if request.endpoint != CHAT_ENDPOINT {
        return Err(ApiError::bad(
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
    let key = idempotency_key(&http)?;
    let lane = state.config.jobs_lane().to_string();
    if let Some(tenant) = super::tenant::tenant_of(&state.engine, &caller) {
        tenant.check_lane(&lane).map_err(super::tenant::refused)?;
    }
    let file = state
        .store
        .file(caller.key_id.clone(), request.input_file_id.clone())
        .await
        .map_err(super::record::store_unavailable("get_file"))?
        .ok_or_else(|| ApiError::bad("input_file_id", "no such file of this key's"))?;
    if file.purpose != "batch" {
        return Err(ApiError::bad(
            "input_file_id",
            format!("file `{}` has purpose `{}`; upload it with purpose=batch", file.id, file.purpose),
        ));
    }
    let now = crate::jobs::unix_now();
    let new = NewJob {
        id: format!("batch_{}", ulid::Ulid::new()),
        kind: JobKind::Api,
        owner: caller.key_id.clone(),
        input_file_id: file.id.clone(),
        input_path: state.store.file_path(&file.id),
        output_path: None,
        endpoint: request.endpoint,
        completion_window: request.completion_window,
        lane,
        metadata: request.metadata,
        idempotency_key: key,
        request_hash: Some(request_hash),
        created_at: now,
        expires_at: Some(now.saturating_add(i64::try_from(window).unwrap_or(i64::MAX))),
    };
    let job = match state.jobs.create(new).await.map_err(job_error("create_batch"))? {
        Created::New(job) => {
            tracing::info!(event = "batch_job_created", batch = %job.id, input_file = %job.input_file_id);
            job
        }
        Created::Existing(job) => job,
    };
    Ok(HttpResponse::Ok().json(job.to_openai()))
}

/// The caller's API job `id`, or 404.
async fn owned(state: &AppState, caller: &Caller, id: &str) -> Result<Job, ApiError> {
    let job = state.jobs.get(id).await.map_err(job_error("get_batch"))?;
    match job {
        Some(job) if job.kind == JobKind::Api && job.owner == caller.key_id => Ok(job),
        _ => Err(ApiError::NotFound(format!("no batch `{id}`"))),
    }
}

async fn retrieve(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let job = owned(&state, &caller, &id).await?;
    Ok(HttpResponse::Ok().json(job.to_openai()))
}

async fn cancel(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    owned(&state, &caller, &id).await?;
    let job = state.jobs.cancel(&id).await.map_err(job_error("cancel_batch"))?;
    tracing::info!(event = "batch_job_cancel", batch = %job.id, status = %job.status);
    Ok(HttpResponse::Ok().json(job.to_openai()))
}

async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    let params = params.into_inner();
    let limit = match params.limit {
        None => DEFAULT_LIMIT,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad(
                    "limit",
                    format!("limit must be a whole number from 1 to {MAX_LIMIT}"),
                ));
            }
        },
    };
    let mut jobs = state
        .jobs
        .list(caller.key_id.clone(), limit + 1, params.after)
        .await
        .map_err(job_error("list_batches"))?;
    let has_more = jobs.len() > limit;
    jobs.truncate(limit);
    let data: Vec<Value> = jobs.iter().map(Job::to_openai).collect();
    Ok(HttpResponse::Ok().json(json!({
        "object": "list",
        "data": data,
        "first_id": jobs.first().map(|j| j.id.clone()),
        "last_id": jobs.last().map(|j| j.id.clone()),
        "has_more": has_more,
    })))
}

/// Every item with an outcome so far, answered or failed, in input order, as JSONL in the
/// batch output format; streamed page by page from the store.
async fn results(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let job = owned(&state, &caller, &id).await?;
    let jobs = state.jobs.clone();
    // The first page before the answer, so that results that cannot be read (an ended batch's
    // output file deleted) get a status of their own rather than an empty 200.
    let first = jobs.results(&job.id, 0, RESULTS_PAGE).await.map_err(job_error("batch_results"))?;
    let pages = stream::unfold(Some(first), move |page| {
        let jobs = jobs.clone();
        let id = job.id.clone();
        async move {
            let lines = match page? {
                lines if !lines.is_empty() => lines,
                _ => return None,
            };
            let after = lines.last().map_or(0, |(line, _)| *line);
            let mut chunk = Vec::with_capacity(lines.iter().map(|(_, text)| text.len() + 1).sum());
            for (_, text) in lines {
                chunk.extend_from_slice(text.as_bytes());
                chunk.push(b'\n');
            }
            let next = match jobs.results(&id, after, RESULTS_PAGE).await {
                Ok(lines) => Some(lines),
                Err(error) => {
                    // Mid-stream there is no status to give: the body ends short, and says so in the log.
                    tracing::warn!(event = "store_failed", what = "batch_results", batch = %id, error = %error);
                    None
                }
            };
            Some((Ok::<_, actix_web::Error>(Bytes::from(chunk)), next))
        }
    });
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, HeaderValue::from_static("application/jsonl")))
        .streaming(pages))
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
                Err(ApiError::BadRequest { param: Some(p), .. }) => assert_eq!(p, "completion_window"),
                other => panic!("{bad}: expected a 400, got {other:?}"),
            }
        }
    }
}
