//! The console's controls over HTTP, beside the batch-size and batch-delay endpoints of
//! [`config_api`](super::config_api): one lane's settings, and pausing and resuming dispatch.
//! Admin endpoints (under `/api/v1/config`); each answers with the live configuration, as
//! `GET /api/v1/config` does, and the engine logs `event=config_changed`.
//!
//! - `POST /api/v1/config/lanes/{lane}` `{"window_ms"?, "max_batch"?, "delay_ms"?}` (at least one)
//! - `POST /api/v1/config/pause`, `POST /api/v1/config/resume` (no body needed)

use actix_web::web;
use serde_json::Value;

use super::body::JsonBody;
use super::config_api::integer_field;
use super::{ApiError, AppState, Caller};
use crate::app::{MAX_BATCH_DELAY_MS, MAX_BATCH_SIZE};
use crate::engine::{LanePatch, RuntimeConfig};

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api/v1/config/lanes/{lane}").route(web::post().to(patch_lane)))
        .service(web::resource("/api/v1/config/pause").route(web::post().to(pause)))
        .service(web::resource("/api/v1/config/resume").route(web::post().to(resume)));
}

/// Fields a lane patch may set, with their ranges.
const LANE_FIELDS: [(&str, u64, u64); 3] = [
    ("window_ms", 0, MAX_BATCH_DELAY_MS),
    ("max_batch", 1, MAX_BATCH_SIZE),
    ("delay_ms", 0, MAX_BATCH_DELAY_MS),
];

async fn patch_lane(
    state: web::Data<AppState>,
    _: Caller,
    lane: web::Path<String>,
    body: JsonBody<Value>,
) -> Result<web::Json<RuntimeConfig>, ApiError> {
    let patch = lane_patch(&body.0)?;
    Ok(web::Json(state.engine.update_lane(&lane, patch).await?))
}

/// `{"window_ms"?, "max_batch"?, "delay_ms"?}` as a patch; each field in range, no other field,
/// at least one.
fn lane_patch(body: &Value) -> Result<LanePatch, ApiError> {
    let Value::Object(object) = body else {
        return Err(ApiError::bad("body", "the body must be a JSON object like {\"max_batch\": 8}"));
    };
    let names: Vec<&str> = LANE_FIELDS.iter().map(|(name, _, _)| *name).collect();
    if let Some(unknown) = object.keys().find(|k| !names.contains(&k.as_str())) {
        let unknown = crate::request_json::shown_name(unknown);
        return Err(ApiError::bad(
            unknown.clone(),
            format!("unknown field `{unknown}`; expected one of `window_ms`, `max_batch`, `delay_ms`"),
        ));
    }
    if object.is_empty() {
        return Err(ApiError::bad("body", "set at least one of `window_ms`, `max_batch`, `delay_ms`"));
    }
    let mut patch = LanePatch::default();
    for (name, min, max) in LANE_FIELDS {
        let Some(value) = object.get(name) else { continue };
        let one = Value::Object([(name.to_string(), value.clone())].into_iter().collect());
        let n = integer_field(&one, name, min, max)?;
        match name {
            "window_ms" => patch.window_ms = Some(n),
            "max_batch" => {
                patch.max_batch = Some(usize::try_from(n).map_err(|_| ApiError::bad(name, "is too large"))?)
            }
            _ => patch.delay_ms = Some(n),
        }
    }
    Ok(patch)
}

async fn pause(state: web::Data<AppState>, _: Caller) -> Result<web::Json<RuntimeConfig>, ApiError> {
    Ok(web::Json(state.engine.pause().await?))
}

async fn resume(state: web::Data<AppState>, _: Caller) -> Result<web::Json<RuntimeConfig>, ApiError> {
    Ok(web::Json(state.engine.resume().await?))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn lane_patches_take_known_fields_in_range() {
        let patch = lane_patch(&json!({"window_ms": 50, "max_batch": 8})).ok();
        assert_eq!(
            patch,
            Some(LanePatch { window_ms: Some(50), max_batch: Some(8), ..LanePatch::default() })
        );
        for (body, field) in [
            (json!({"max_batch": 0}), "max_batch"),
            (json!({"window_ms": -1}), "window_ms"),
            (json!({"mode": "fanout"}), "mode"),
            (json!({}), "body"),
            (json!([1]), "body"),
        ] {
            match lane_patch(&body) {
                Err(ApiError::BadRequest { param: Some(p), .. }) => assert_eq!(p, field, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }
}
