//! `/api/v1/config` (seed 000): the live batching configuration, and the batch size and batch
//! delay changed without a restart. Admin endpoints (see [`auth`](super::auth)).

use actix_web::web;
use serde::{Deserialize, Serialize};

use super::body::JsonBody;
use super::fields::{Object, Shape, Whole};
use super::{ApiError, AppState, Caller};
use crate::app::{MAX_BATCH_DELAY_MS, MAX_BATCH_SIZE};
use crate::engine::RuntimeConfig;

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api/v1/config").route(web::get().to(get_config)))
        .service(web::resource("/api/v1/config/batch-size").route(web::post().to(set_batch_size)))
        .service(web::resource("/api/v1/config/batch-delay").route(web::post().to(set_batch_delay)));
}

/// `POST /api/v1/config/batch-size`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSizeBody {
    /// Items per batch.
    pub size: Whole<1, MAX_BATCH_SIZE>,
}

impl Shape for BatchSizeBody {
    const SHAPE: &'static str = "an object like {\"size\": 8}";
}

/// `POST /api/v1/config/batch-delay`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchDelayBody {
    /// Milliseconds between batches.
    pub delay_ms: Whole<0, MAX_BATCH_DELAY_MS>,
}

impl Shape for BatchDelayBody {
    const SHAPE: &'static str = "an object like {\"delay_ms\": 250}";
}

/// Reply to a batch-size change (seed 000).
#[derive(Debug, Serialize)]
pub struct BatchSizeReply {
    /// What changed.
    pub message: String,
    /// The batch size now.
    pub batch_size: usize,
}

/// Reply to a batch-delay change.
#[derive(Debug, Serialize)]
pub struct BatchDelayReply {
    /// What changed.
    pub message: String,
    /// The delay between batches now, in milliseconds.
    pub batch_delay_ms: u64,
}

async fn get_config(state: web::Data<AppState>, _: Caller) -> Result<web::Json<RuntimeConfig>, ApiError> {
    let mut config = state.engine.config().await?;
    for upstream in &mut config.upstreams {
        upstream.base_url = upstream.base_url.as_deref().map(without_credentials);
    }
    Ok(web::Json(config))
}

async fn set_batch_size(
    state: web::Data<AppState>,
    _: Caller,
    body: JsonBody<Object<BatchSizeBody>>,
) -> Result<web::Json<BatchSizeReply>, ApiError> {
    let size = body.into_inner().0.size.0;
    let size = usize::try_from(size).map_err(|_| ApiError::bad("size", "is too large"))?;
    let config = state.engine.set_batch_size(size).await?;
    Ok(web::Json(BatchSizeReply {
        message: format!(
            "batch size set to {}; lanes that follow [batching] use it from their next batch",
            config.batch_size
        ),
        batch_size: config.batch_size,
    }))
}

async fn set_batch_delay(
    state: web::Data<AppState>,
    _: Caller,
    body: JsonBody<Object<BatchDelayBody>>,
) -> Result<web::Json<BatchDelayReply>, ApiError> {
    let delay_ms = body.into_inner().0.delay_ms.0;
    let config = state.engine.set_batch_delay(delay_ms).await?;
    Ok(web::Json(BatchDelayReply {
        message: format!(
            "batch delay set to {} ms; lanes that follow [batching] use it from their next batch",
            config.batch_delay_ms
        ),
        batch_delay_ms: config.batch_delay_ms,
    }))
}

/// `base_url` with any `user:password@` replaced by `***@`: credentials are secrets too.
fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_delays_take_only_integers_in_range() {
        use crate::request_json::parse;
        assert_eq!(parse::<Object<BatchSizeBody>>(br#"{"size": 5}"#).map(|b| b.0.size.0).ok(), Some(5));
        assert_eq!(
            parse::<Object<BatchDelayBody>>(br#"{"delay_ms": 0}"#).map(|b| b.0.delay_ms.0).ok(),
            Some(0)
        );
        for (body, field) in [
            (r#"{"size": 0}"#, Some("size")),
            (r#"{"size": -1}"#, Some("size")),
            (r#"{"size": 2.5}"#, Some("size")),
            (r#"{"size": "5"}"#, Some("size")),
            (r#"{"size": 10001}"#, Some("size")),
            (r#"{"size": null}"#, Some("size")),
            ("{}", Some("size")),
            ("[5]", None),
            (r#"{"size": 5, "sise": 5}"#, Some("sise")),
        ] {
            match parse::<Object<BatchSizeBody>>(body.as_bytes()) {
                Err(error) => {
                    assert_eq!(error.param.as_deref(), field, "{body}");
                    assert!(
                        error.message.contains("1 to 10000") || field != Some("size") || body == "{}",
                        "{}",
                        error.message
                    );
                }
                Ok(parsed) => panic!("{body}: {parsed:?}"),
            }
        }
    }

    #[test]
    fn credentials_in_urls_are_hidden() {
        assert_eq!(without_credentials("https://u:p@host:1/v1"), "https://***@host:1/v1");
        assert_eq!(without_credentials("http://127.0.0.1:8080/v1?a=b@c"), "http://127.0.0.1:8080/v1?a=b@c");
    }
}
