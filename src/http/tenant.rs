//! A tenant's limits at the interactive doors: the caller's prompts are admitted whole under its
//! tenant's lanes, budget and `max_queued`, or refused with 403 (a lane not its own), 400 (more
//! than a minute of its budget in one request) or 429 with `Retry-After`.

use std::sync::Arc;

use super::{ApiError, Caller};
use crate::engine::{Engine, Prompt};
use crate::tenants::{Cost, Held, Refusal, Tenant};

/// The caller's tenant, when it has one.
pub fn tenant_of(engine: &Engine, caller: &Caller) -> Option<Arc<Tenant>> {
    named(engine, caller.tenant.as_deref())
}

fn named(engine: &Engine, tenant: Option<&str>) -> Option<Arc<Tenant>> {
    tenant.and_then(|name| engine.tenants().get(name)).cloned()
}

/// Admits `prompts` of `tenant` (a caller's, `None` without one) on `lane`: `None` for a caller
/// without a tenant, else what the tenant now holds for them until the hold is dropped (keep it
/// until the answers are in).
pub async fn admit(
    engine: &Engine,
    tenant: Option<&str>,
    lane: &str,
    prompts: &[Prompt],
) -> Result<Option<Held>, ApiError> {
    let Some(tenant) = named(engine, tenant) else { return Ok(None) };
    let cost =
        Cost { prompts: prompts.len() as u64, tokens: prompts.iter().map(Prompt::estimated_tokens).sum() };
    engine.tenants().admit(&tenant, lane, cost).await.map(Some).map_err(refused)
}

/// A tenant's refusal as the door answers it.
pub fn refused(refusal: Refusal) -> ApiError {
    match &refusal {
        Refusal::Lane { .. } => ApiError::Forbidden(refusal.to_string()),
        Refusal::TooBig { .. } => ApiError::BadRequest { message: refusal.to_string(), param: None },
        Refusal::Queue { .. } | Refusal::Budget { .. } => ApiError::QueueFull {
            retry_after: refusal.retry_after().unwrap_or_default(),
            message: refusal.to_string(),
        },
    }
}
