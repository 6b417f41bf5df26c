//! The console's controls over HTTP, beside the batch-size and batch-delay endpoints of
//! [`config_api`](super::config_api): one lane's settings, and pausing and resuming dispatch.
//! Admin endpoints (under `/api/v1/config`); each answers with the live configuration, as
//! `GET /api/v1/config` does, and the engine logs `event=config_changed`.
//!
//! - `POST /api/v1/config/lanes/{lane}` `{"window_ms"?, "max_batch"?, "delay_ms"?}` (at least one)
//! - `POST /api/v1/config/pause`, `POST /api/v1/config/resume` (no body needed)

use actix_web::web;
use serde::Deserialize;

use super::body::JsonBody;
use super::fields::{Object, Shape, Whole, present};
use super::{ApiError, AppState, Caller};
use crate::app::{MAX_BATCH_DELAY_MS, MAX_BATCH_SIZE};
use crate::engine::{LanePatch, RuntimeConfig};

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api/v1/config/lanes/{lane}").route(web::post().to(patch_lane)))
        .service(web::resource("/api/v1/config/pause").route(web::post().to(pause)))
        .service(web::resource("/api/v1/config/resume").route(web::post().to(resume)));
}

/// `POST /api/v1/config/lanes/{lane}`'s body: the settings to change, at least one.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LanePatchBody {
    /// How long the lane's batch waits to fill, in milliseconds.
    #[serde(default, deserialize_with = "present")]
    pub window_ms: Option<Whole<0, MAX_BATCH_DELAY_MS>>,
    /// Most items per batch.
    #[serde(default, deserialize_with = "present")]
    pub max_batch: Option<Whole<1, MAX_BATCH_SIZE>>,
    /// Pause between the lane's batches, in milliseconds.
    #[serde(default, deserialize_with = "present")]
    pub delay_ms: Option<Whole<0, MAX_BATCH_DELAY_MS>>,
}

impl Shape for LanePatchBody {
    const SHAPE: &'static str =
        "an object with any of `window_ms`, `max_batch`, `delay_ms`, like {\"max_batch\": 8}";
}

async fn patch_lane(
    state: web::Data<AppState>,
    _: Caller,
    lane: web::Path<String>,
    body: JsonBody<Object<LanePatchBody>>,
) -> Result<web::Json<RuntimeConfig>, ApiError> {
    let patch = lane_patch(body.into_inner().0)?;
    Ok(web::Json(state.engine.update_lane(&lane, patch).await?))
}

/// The body as a patch; refuses an empty one.
fn lane_patch(body: LanePatchBody) -> Result<LanePatch, ApiError> {
    let LanePatchBody { window_ms, max_batch, delay_ms } = body;
    if window_ms.is_none() && max_batch.is_none() && delay_ms.is_none() {
        return Err(ApiError::bad("body", "set at least one of `window_ms`, `max_batch`, `delay_ms`"));
    }
    let max_batch = match max_batch {
        Some(n) => Some(usize::try_from(n.0).map_err(|_| ApiError::bad("max_batch", "is too large"))?),
        None => None,
    };
    Ok(LanePatch {
        window_ms: window_ms.map(|n| n.0),
        max_batch,
        delay_ms: delay_ms.map(|n| n.0),
        ..LanePatch::default()
    })
}

async fn pause(state: web::Data<AppState>, _: Caller) -> Result<web::Json<RuntimeConfig>, ApiError> {
    Ok(web::Json(state.engine.pause().await?))
}

async fn resume(state: web::Data<AppState>, _: Caller) -> Result<web::Json<RuntimeConfig>, ApiError> {
    Ok(web::Json(state.engine.resume().await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_patches_take_known_fields_in_range() {
        let patch = |text: &str| -> Result<LanePatch, ApiError> {
            lane_patch(crate::request_json::parse::<Object<LanePatchBody>>(text.as_bytes())?.0)
        };
        assert_eq!(
            patch(r#"{"window_ms": 50, "max_batch": 8}"#).ok(),
            Some(LanePatch { window_ms: Some(50), max_batch: Some(8), ..LanePatch::default() })
        );
        for (body, field) in [
            (r#"{"max_batch": 0}"#, Some("max_batch")),
            (r#"{"window_ms": -1}"#, Some("window_ms")),
            (r#"{"delay_ms": null}"#, Some("delay_ms")),
            (r#"{"mode": "fanout"}"#, Some("mode")),
            ("{}", Some("body")),
            ("[1]", None),
        ] {
            match patch(body) {
                Err(ApiError::BadRequest { param, .. }) => assert_eq!(param.as_deref(), field, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }
}
