//! `GET /v1/analytics` (seed 002): batch-level counts from the stored chats, for the caller's
//! own chats (every chat when keys are off). The shape is [`Analytics`]'s.

use actix_web::web;

use super::record::store_unavailable;
use super::{ApiError, AppState, Caller};
use crate::store::Analytics;

/// Registers the route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v1/analytics").route(web::get().to(analytics)));
}

async fn analytics(state: web::Data<AppState>, caller: Caller) -> Result<web::Json<Analytics>, ApiError> {
    let analytics = state.store.analytics(caller.key_id).await.map_err(store_unavailable("analytics"))?;
    Ok(web::Json(analytics))
}
