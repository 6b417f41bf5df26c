//! OpenAI-compatible `POST /v1/chat/completions` (non-streaming) and `GET /v1/models`, through the
//! queues: any OpenAI client can point its base URL at ferry. The lane comes from the
//! `x-ferry-priority` header (HIGH/MEDIUM/LOW or a lane name), default `medium`. The request and
//! reply shapes live in [`crate::chat_format`], shared with batch jobs.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::Value;

use super::body::JsonBody;
use super::peer::Peer;
use super::priority;
use super::record::{ChatMeta, answer_one};
use super::{ApiError, AppState, Caller};
use crate::chat_format::{self, Completion, CompletionRequest, FieldError};

/// The header that picks the lane.
pub const PRIORITY_HEADER: &str = "x-ferry-priority";
/// The lane when the header is absent.
const DEFAULT_LANE: &str = "medium";

impl From<FieldError> for ApiError {
    fn from(error: FieldError) -> Self {
        ApiError::bad(error.param, error.message)
    }
}

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/chat/completions", web::post().to(complete)).route("/v1/models", web::get().to(models));
}

async fn complete(
    state: web::Data<AppState>,
    caller: Caller,
    http: HttpRequest,
    peer: Peer,
    body: JsonBody<CompletionRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.into_inner();
    let prompt = request.prompt()?;
    chat_format::check_model(&state.config.upstreams, &request.model)?;
    let engine = &state.engine;
    let priority = match http.headers().get(PRIORITY_HEADER) {
        Some(value) => value
            .to_str()
            .map_err(|_| ApiError::bad(PRIORITY_HEADER, "the header must be plain text"))?
            .to_string(),
        None => DEFAULT_LANE.to_string(),
    };
    let lane = priority::lane_for(engine, &priority, PRIORITY_HEADER)?;
    let request = serde_json::json!({ "model": request.model, "messages": prompt.messages });
    let answer = answer_one(&state, &ChatMeta::new(&caller, &lane), request, prompt, &peer).await?;
    let batch_id = answer.batch_id.to_string();
    Ok(HttpResponse::Ok().insert_header(("x-ferry-batch-id", batch_id)).json(Completion::of(answer)))
}

async fn models(state: web::Data<AppState>) -> HttpResponse {
    let (served, _) = chat_format::served_models(&state.config.upstreams);
    let data: Vec<Value> = served
        .into_iter()
        .map(|(id, owner)| serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": owner}))
        .collect();
    HttpResponse::Ok().json(serde_json::json!({"object": "list", "data": data}))
}
