//! [`JsonBody`]: the extractor every JSON endpoint reads its body with.
//!
//! The body is read as bytes (up to `[server] max_body_bytes`: 413 past it), must be sent as
//! JSON (415 otherwise), and is parsed once into the endpoint's type by
//! [`crate::request_json::parse`], in time linear in its size. A body larger than
//! [`INLINE_BYTES`] is parsed on the blocking pool, so a large body never holds the HTTP worker
//! that serves other requests (`/health` among them) while it is read into structs. Errors name
//! the field and never quote a value the caller sent.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::mime;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use serde::de::DeserializeOwned;

use super::{ApiError, AppState};
use crate::request_json::{self, JsonError};

/// Bodies up to this size are parsed on the worker that received them (faster than a hand-off);
/// larger ones on the blocking pool.
pub const INLINE_BYTES: usize = 64 * 1024;

/// A JSON request body parsed into `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T> JsonBody<T> {
    /// The parsed body.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl From<JsonError> for ApiError {
    fn from(error: JsonError) -> Self {
        ApiError::BadRequest { message: error.message, param: error.param }
    }
}

impl<T: DeserializeOwned + Send + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let is_json = matches!(req.mime_type(), Ok(Some(mime))
            if mime.subtype() == mime::JSON || mime.suffix() == Some(mime::JSON));
        let limit = req.app_data::<web::Data<AppState>>().map_or(0, |s| s.config.server.max_body_bytes);
        let bytes = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            if !is_json {
                return Err(ApiError::UnsupportedMediaType(
                    "the body must be JSON, sent with Content-Type: application/json".into(),
                ));
            }
            let bytes = bytes.await.map_err(|error| {
                if error.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge { limit }
                } else {
                    ApiError::BadRequest { message: "the body could not be read".into(), param: None }
                }
            })?;
            if bytes.len() <= INLINE_BYTES {
                return Ok(JsonBody(request_json::parse(&bytes)?));
            }
            let parsed = web::block(move || request_json::parse::<T>(&bytes))
                .await
                .map_err(|_| ApiError::Internal("the body could not be parsed".into()))?;
            Ok(JsonBody(parsed?))
        })
    }
}
