//! The OpenAI Batch API (seed 001, which self-hosted gateways answer with 501): create, retrieve,
//! list, cancel, and `GET /v1/batches/{id}/results`. Creating one is the app's use-case
//! ([`crate::app::batches`]); the rest reads and steers the job machinery.
//!
//! Create answers only once the job is committed to the store, with status `validating`; the
//! JobRunner then checks the input file and runs it. A batch belongs to the key that created
//! it: another key gets 404. An `Idempotency-Key` header makes create safe to retry: the same
//! key with the same body answers the same batch, with a different body 409.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use futures_util::stream;
use serde::Deserialize;
use serde_json::{Value, json};

use super::body::JsonBody;
use super::error::job_error;
use super::{ApiError, AppState, Caller};
use crate::app::batches::BatchRequest;
use crate::jobs::{Job, JobKind};

/// Batches per page when `limit` is absent (OpenAI's default).
const DEFAULT_LIMIT: usize = 20;
/// Most batches per page (OpenAI's limit).
const MAX_LIMIT: usize = 100;
/// Result lines fetched from the store per read while streaming `/results`.
const RESULTS_PAGE: usize = 1000;

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v1/batches").route(web::post().to(create)).route(web::get().to(list)))
        .service(web::resource("/v1/batches/{id}").route(web::get().to(retrieve)))
        .service(web::resource("/v1/batches/{id}/cancel").route(web::post().to(cancel)))
        .service(web::resource("/v1/batches/{id}/results").route(web::get().to(results)));
}

/// The list query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    limit: Option<String>,
    after: Option<String>,
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
    body: JsonBody<BatchRequest>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&http)?;
    // A tenant's batch runs in the jobs lane, which must be one of its lanes.
    if let Some(tenant) = super::tenant::tenant_of(&state.engine, &caller) {
        tenant.check_lane(state.config.jobs_lane()).map_err(super::tenant::refused)?;
    }
    let job = state.create_batch(caller.key_id.clone(), body.into_inner(), key).await?;
    Ok(HttpResponse::Ok().json(job.to_openai()))
}

/// The 404 message for batch `id`: the id only when it has a batch id's form.
pub(super) fn no_batch(id: &str) -> String {
    let shaped =
        id.strip_prefix("batch_").is_some_and(|rest| rest.len() == 26 && rest.parse::<ulid::Ulid>().is_ok());
    if shaped {
        format!("no batch `{id}`")
    } else {
        format!("no batch with that id (a value of {} bytes; batch ids are batch_<ULID>)", id.len())
    }
}

/// The caller's API job `id`, or 404.
async fn owned(state: &AppState, caller: &Caller, id: &str) -> Result<Job, ApiError> {
    let job = state.jobs.get(id).await.map_err(job_error("get_batch"))?;
    match job {
        Some(job) if job.kind == JobKind::Api && job.owner == caller.key_id => Ok(job),
        _ => Err(ApiError::NotFound(no_batch(id))),
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
