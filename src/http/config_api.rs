//! `/api/v1/config` (seed 000): the live batching configuration, and the batch size and batch
//! delay changed without a restart. Admin endpoints (see [`auth`](super::auth)).

use actix_web::web;
use serde::Serialize;
use serde_json::Value;

use super::body::JsonBody;
use super::prompts::{kind, only_fields};
use super::{ApiError, AppState, Caller};
use crate::app::{MAX_BATCH_DELAY_MS, MAX_BATCH_SIZE};
use crate::engine::RuntimeConfig;

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api/v1/config").route(web::get().to(get_config)))
        .service(web::resource("/api/v1/config/batch-size").route(web::post().to(set_batch_size)))
        .service(web::resource("/api/v1/config/batch-delay").route(web::post().to(set_batch_delay)));
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
    body: JsonBody<Value>,
) -> Result<web::Json<BatchSizeReply>, ApiError> {
    let size = integer_field(&body.0, "size", 1, MAX_BATCH_SIZE)?;
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
    body: JsonBody<Value>,
) -> Result<web::Json<BatchDelayReply>, ApiError> {
    let delay_ms = integer_field(&body.0, "delay_ms", 0, MAX_BATCH_DELAY_MS)?;
    let config = state.engine.set_batch_delay(delay_ms).await?;
    Ok(web::Json(BatchDelayReply {
        message: format!(
            "batch delay set to {} ms; lanes that follow [batching] use it from their next batch",
            config.batch_delay_ms
        ),
        batch_delay_ms: config.batch_delay_ms,
    }))
}

/// The one field of `{"<field>": n}`, an integer in `min..=max`.
pub fn integer_field(body: &Value, field: &str, min: u64, max: u64) -> Result<u64, ApiError> {
    let range = format!("an integer from {min} to {max}");
    let Value::Object(object) = body else {
        return Err(ApiError::bad(
            field,
            format!("the body must be a JSON object like {{\"{field}\": {min}}}"),
        ));
    };
    only_fields(object, "", &[field])?;
    let value =
        object.get(field).ok_or_else(|| ApiError::bad(field, format!("missing field `{field}`: {range}")))?;
    match value.as_u64() {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        Some(_) => {
            Err(ApiError::bad(field, format!("`{field}` must be {range} (got a number out of range)")))
        }
        None if value.is_number() => Err(ApiError::bad(
            field,
            format!("`{field}` must be {range} (got a negative or fractional number)"),
        )),
        None => Err(ApiError::bad(field, format!("`{field}` must be {range} (got {})", kind(value)))),
    }
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
    use serde_json::json;

    use super::*;

    #[test]
    fn integer_fields_take_only_integers_in_range() {
        assert_eq!(integer_field(&json!({"size": 5}), "size", 1, 10).ok(), Some(5));
        for body in [
            json!({"size": 0}),
            json!({"size": -1}),
            json!({"size": 2.5}),
            json!({"size": "5"}),
            json!({"size": 11}),
            json!({}),
            json!([5]),
            json!({"size": 5, "sise": 5}),
        ] {
            match integer_field(&body, "size", 1, 10) {
                Err(ApiError::BadRequest { param: Some(p), message }) => {
                    assert!(p == "size" || p == "sise", "{body}: {p}");
                    assert!(message.contains('`') || message.contains("size"), "{message}");
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn credentials_in_urls_are_hidden() {
        assert_eq!(without_credentials("https://u:p@host:1/v1"), "https://***@host:1/v1");
        assert_eq!(without_credentials("http://127.0.0.1:8080/v1?a=b@c"), "http://127.0.0.1:8080/v1?a=b@c");
    }
}
