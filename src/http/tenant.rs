//! A tenant's limits at the interactive doors: the caller's prompts are admitted whole under its
//! tenant's lanes, budget and `max_queued`, or refused with 403 (a lane not its own), 400 (more
//! than a minute of its budget in one request) or 429 with `Retry-After`.

use std::sync::Arc;

use super::{ApiError, Caller};
use crate::engine::{Engine, Prompt, SubmitError};
use crate::tenants::{Cost, Held, Refusal, Tenant, Tenants};

/// The caller's tenant, when it has one.
pub fn tenant_of(engine: &Engine, caller: &Caller) -> Option<Arc<Tenant>> {
    named(engine, caller.tenant.as_deref())
}

fn named(engine: &Engine, tenant: Option<&str>) -> Option<Arc<Tenant>> {
    tenant.and_then(|name| engine.tenants().get(name)).cloned()
}

/// What a tenant's admission holds: room under its `max_queued` until dropped (keep it until the
/// answers are in), and what it took from the budget, given back if the engine refuses the prompts.
pub struct Admission {
    tenants: Tenants,
    tenant: Arc<Tenant>,
    cost: Cost,
    _held: Held,
}

impl Admission {
    /// The engine refused the prompts (a full lane, shutdown): they were never accepted, so they
    /// cost the tenant nothing.
    pub async fn refused(self) {
        self.tenants.give_back(&self.tenant, self.cost).await;
    }
}

/// Admits `prompts` of `tenant` (a caller's, `None` without one) on `lane`: `None` for a caller
/// without a tenant.
pub async fn admit(
    engine: &Engine,
    tenant: Option<&str>,
    lane: &str,
    prompts: &[Prompt],
) -> Result<Option<Admission>, ApiError> {
    let Some(tenant) = named(engine, tenant) else { return Ok(None) };
    let cost =
        Cost { prompts: prompts.len() as u64, tokens: prompts.iter().map(Prompt::estimated_tokens).sum() };
    let tenants = engine.tenants().clone();
    let held = tenants.admit(&tenant, lane, cost).await.map_err(refused)?;
    Ok(Some(Admission { tenants, tenant, cost, _held: held }))
}

/// A submission the engine refused, after `admission`: the budget is given back, and the error
/// is the door's.
pub async fn submit_refused(admission: Option<Admission>, error: SubmitError) -> ApiError {
    if let Some(admission) = admission {
        admission.refused().await;
    }
    error.into()
}

/// A tenant's refusal as the door answers it.
pub fn refused(refusal: Refusal) -> ApiError {
    match &refusal {
        Refusal::Lane { .. } => ApiError::Forbidden(refusal.to_string()),
        Refusal::TooBig { .. } | Refusal::TooMany { .. } => {
            ApiError::BadRequest { message: refusal.to_string(), param: None }
        }
        Refusal::Queue { .. } | Refusal::Budget { .. } => ApiError::QueueFull {
            retry_after: refusal.retry_after().unwrap_or_default(),
            message: refusal.to_string(),
        },
    }
}
