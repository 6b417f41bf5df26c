//! Tenants: named groups of keys (`[[tenants]]`) with limits of their own, shared by every door.
//!
//! A tenant's prompts are counted in three ways before they enter the engine: the lanes it may
//! use, how many it has accepted and not yet answered (`max_queued`, counted here with a
//! [`Held`] per request or job), and what its budget allows per minute (`rpm`, `tpm`, a
//! [`Budget`]). An interactive door refuses what does not fit ([`Tenants::admit`]: 429 with
//! the time until it would); a batch job waits for room instead ([`Tenants::hold_up_to`] and
//! [`Tenants::take`]).
//!
//! The engine holds one [`Tenants`] for everything it serves; without `[[tenants]]` it is empty
//! and nothing is counted.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::config::TenantConfig;

pub mod budget;

pub use budget::{Budget, Cost, MemoryBudget, Refused, TenantLimit};

/// What a tenant's work is owned by, in the store and in the engine's queues.
pub fn owner_of(name: &str) -> String {
    format!("{OWNER_PREFIX}{name}")
}

const OWNER_PREFIX: &str = "tenant:";

/// Why a tenant's request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The lane is not among the tenant's.
    #[error("tenant `{tenant}` may not use lane `{lane}`; its lanes: {allowed}")]
    Lane {
        /// The tenant.
        tenant: String,
        /// The lane asked for.
        lane: String,
        /// The lanes it may use, comma-separated.
        allowed: String,
    },
    /// One request asks for more than a whole window of the tenant's budget.
    #[error(
        "this request needs {amount} {} but tenant `{tenant}` has {max} a minute ({}); send fewer prompts per request",
        .limit.describe(), .limit.key()
    )]
    TooBig {
        /// The tenant.
        tenant: String,
        /// The limit.
        limit: TenantLimit,
        /// What the request needs.
        amount: u64,
        /// The limit's value.
        max: u64,
    },
    /// One request has more prompts than the tenant may have accepted at once: it could never fit.
    #[error(
        "this request has {amount} prompts but tenant `{tenant}` may have {max} accepted and not yet \
         answered (max_queued); send fewer prompts per request"
    )]
    TooMany {
        /// The tenant.
        tenant: String,
        /// Prompts in the request.
        amount: usize,
        /// `max_queued`.
        max: usize,
    },
    /// The tenant has `max_queued` prompts accepted and not yet answered.
    #[error(
        "tenant `{tenant}` would have more than {max} prompts accepted and not yet answered \
         (max_queued = {max}); retry when some are answered"
    )]
    Queue {
        /// The tenant.
        tenant: String,
        /// `max_queued`.
        max: usize,
    },
    /// The tenant's budget refused.
    #[error("tenant `{tenant}` is {refused}")]
    Budget {
        /// The tenant.
        tenant: String,
        /// What the budget said.
        refused: Refused,
    },
}

impl Refusal {
    /// How long to wait before trying again, when waiting helps.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Refusal::Budget { refused: Refused::Over { retry_after, .. }, .. } => Some(*retry_after),
            Refusal::Queue { .. } | Refusal::Budget { refused: Refused::Unavailable(_), .. } => {
                Some(Duration::from_secs(1))
            }
            Refusal::Lane { .. } | Refusal::TooBig { .. } | Refusal::TooMany { .. } => None,
        }
    }

    /// The reason label in metrics: `lane`, `too_big`, `max_queued`, `rpm`, `tpm`, `unavailable`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Lane { .. } => "lane",
            Refusal::TooBig { .. } | Refusal::TooMany { .. } => "too_big",
            Refusal::Queue { .. } => "max_queued",
            Refusal::Budget { refused: Refused::Over { limit, .. }, .. } => limit.key(),
            Refusal::Budget { refused: Refused::Unavailable(_), .. } => "unavailable",
        }
    }
}

/// Refusal reasons counted per tenant, in [`Refusal::reason`]'s names.
pub const REFUSAL_REASONS: [&str; 6] = ["lane", "too_big", "max_queued", "rpm", "tpm", "unavailable"];

/// One tenant: its config and what it has now.
#[derive(Debug)]
pub struct Tenant {
    config: TenantConfig,
    owner: String,
    queued: AtomicUsize,
    accepted: AtomicU64,
    refused: [AtomicU64; REFUSAL_REASONS.len()],
    paced: AtomicU64,
}

impl Tenant {
    fn new(config: TenantConfig) -> Tenant {
        Tenant {
            owner: owner_of(&config.name),
            config,
            queued: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            refused: Default::default(),
            paced: AtomicU64::new(0),
        }
    }

    /// The tenant's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The owner its work is recorded and queued under ([`owner_of`]).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Its `[[tenants]]` entry.
    pub fn config(&self) -> &TenantConfig {
        &self.config
    }

    /// Prompts accepted and not yet answered.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Prompts accepted since start.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Requests refused since start, per reason ([`REFUSAL_REASONS`]).
    pub fn refused(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        REFUSAL_REASONS.iter().zip(&self.refused).map(|(reason, n)| (*reason, n.load(Ordering::Relaxed)))
    }

    /// Times a batch job of the tenant waited for its budget or queue room.
    pub fn paced(&self) -> u64 {
        self.paced.load(Ordering::Relaxed)
    }

    /// Whether the tenant may use `lane` (a refusal is counted in its figures).
    pub fn check_lane(&self, lane: &str) -> Result<(), Refusal> {
        self.lane_allowed(lane).inspect_err(|refusal| self.count_refusal(refusal))
    }

    fn lane_allowed(&self, lane: &str) -> Result<(), Refusal> {
        if self.config.allows_lane(lane) {
            return Ok(());
        }
        let allowed = self.config.lanes.as_deref().unwrap_or_default().join(", ");
        Err(Refusal::Lane { tenant: self.config.name.clone(), lane: lane.to_string(), allowed })
    }

    fn count_refusal(&self, refusal: &Refusal) {
        if let Some(i) = REFUSAL_REASONS.iter().position(|r| *r == refusal.reason()) {
            self.refused[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Prompts of a tenant counted as accepted and not yet answered; released when dropped (or
/// one by one with [`Held::release`]).
#[derive(Debug)]
pub struct Held {
    tenant: Arc<Tenant>,
    count: usize,
}

impl Held {
    /// Prompts held.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Releases `n` of them (an answer came).
    pub fn release(&mut self, n: usize) {
        let n = n.min(self.count);
        self.count -= n;
        self.tenant.queued.fetch_sub(n, Ordering::Relaxed);
    }

    /// Adds `other`'s prompts to this hold (of the same tenant).
    pub fn absorb(&mut self, mut other: Held) {
        self.count += std::mem::take(&mut other.count);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.tenant.queued.fetch_sub(self.count, Ordering::Relaxed);
    }
}

/// Every configured tenant and the budget they draw from. Cheap to clone.
#[derive(Clone)]
pub struct Tenants {
    by_name: Arc<HashMap<String, Arc<Tenant>>>,
    budget: Arc<dyn Budget>,
}

impl std::fmt::Debug for Tenants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tenants({})", self.by_name.len())
    }
}

impl Tenants {
    /// The tenants of `configs`, their windows kept in this process.
    pub fn new(configs: &[TenantConfig]) -> Tenants {
        Tenants::with_budget(configs, Arc::new(MemoryBudget::new(configs)))
    }

    /// The tenants of `configs`, their windows kept by `budget`.
    pub fn with_budget(configs: &[TenantConfig], budget: Arc<dyn Budget>) -> Tenants {
        let by_name = configs.iter().map(|c| (c.name.clone(), Arc::new(Tenant::new(c.clone())))).collect();
        Tenants { by_name: Arc::new(by_name), budget }
    }

    /// Whether no tenant is configured.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The tenant named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Tenant>> {
        self.by_name.get(name)
    }

    /// The tenant whose work is owned by `owner` ([`owner_of`]), if any.
    pub fn by_owner(&self, owner: &str) -> Option<&Arc<Tenant>> {
        owner.strip_prefix(OWNER_PREFIX).and_then(|name| self.get(name))
    }

    /// Every tenant, by name.
    pub fn all(&self) -> Vec<&Arc<Tenant>> {
        let mut all: Vec<&Arc<Tenant>> = self.by_name.values().collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }

    /// What the tenant has used of its windows now.
    pub async fn used(&self, tenant: &Tenant) -> Cost {
        self.budget.used(tenant.name()).await
    }

    /// Admits an interactive request of `cost` on `lane`, or refuses it whole: the lane must be
    /// the tenant's, the request must fit a minute of its budget, its prompts must fit under
    /// `max_queued`, and the budget must have room now. Counted in the tenant's figures.
    pub async fn admit(&self, tenant: &Arc<Tenant>, lane: &str, cost: Cost) -> Result<Held, Refusal> {
        let admitted = self.try_admit(tenant, lane, cost).await;
        match &admitted {
            Ok(_) => {
                tenant.accepted.fetch_add(cost.prompts, Ordering::Relaxed);
            }
            Err(refusal) => {
                tenant.count_refusal(refusal);
                tracing::debug!(event = "tenant_refused", tenant = tenant.name(), reason = refusal.reason());
            }
        }
        admitted
    }

    async fn try_admit(&self, tenant: &Arc<Tenant>, lane: &str, cost: Cost) -> Result<Held, Refusal> {
        tenant.lane_allowed(lane)?;
        let config = &tenant.config;
        for (limit, max, amount) in
            [(TenantLimit::Rpm, config.rpm, cost.prompts), (TenantLimit::Tpm, config.tpm, cost.tokens)]
        {
            if let Some(max) = max.filter(|max| amount > *max) {
                return Err(Refusal::TooBig { tenant: config.name.clone(), limit, amount, max });
            }
        }
        let wanted = usize::try_from(cost.prompts).unwrap_or(usize::MAX);
        if let Some(max) = config.max_queued.filter(|max| wanted > *max) {
            return Err(Refusal::TooMany { tenant: config.name.clone(), amount: wanted, max });
        }
        let held = self.hold_up_to(tenant, wanted);
        if held.count < wanted {
            let max = config.max_queued.unwrap_or(usize::MAX);
            return Err(Refusal::Queue { tenant: config.name.clone(), max });
        }
        // The hold is dropped (released) if the budget refuses.
        self.budget
            .take(tenant.name(), cost)
            .await
            .map_err(|refused| Refusal::Budget { tenant: config.name.clone(), refused })?;
        Ok(held)
    }

    /// Gives back what [`Tenants::admit`] took for `cost` when the engine then refused the prompts
    /// (a full lane, shutdown): they were never accepted. (The admitted counter stays: it counts.)
    pub async fn give_back(&self, tenant: &Tenant, cost: Cost) {
        self.budget.give_back(tenant.name(), cost).await;
    }

    /// Holds as many of `wanted` prompts as fit under the tenant's `max_queued` (all of them
    /// when it has none), possibly none.
    pub fn hold_up_to(&self, tenant: &Arc<Tenant>, wanted: usize) -> Held {
        let count = match tenant.config.max_queued {
            None => {
                tenant.queued.fetch_add(wanted, Ordering::Relaxed);
                wanted
            }
            Some(max) => {
                let mut count = 0;
                let _ = tenant.queued.fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                    count = wanted.min(max.saturating_sub(queued));
                    Some(queued + count)
                });
                count
            }
        };
        Held { tenant: Arc::clone(tenant), count }
    }

    /// Takes `cost` from the tenant's budget for a batch job; on refusal the job waits (counted as
    /// paced) and tries again.
    pub async fn take(&self, tenant: &Tenant, cost: Cost) -> Result<(), Refused> {
        let taken = self.budget.take(tenant.name(), cost).await;
        match taken {
            Ok(()) => {
                tenant.accepted.fetch_add(cost.prompts, Ordering::Relaxed);
            }
            Err(_) => {
                tenant.paced.fetch_add(1, Ordering::Relaxed);
            }
        }
        taken
    }

    /// Counts a batch job's wait for queue room.
    pub fn count_paced(&self, tenant: &Tenant) {
        tenant.paced.fetch_add(1, Ordering::Relaxed);
    }
}

impl Default for Tenants {
    fn default() -> Self {
        Tenants::new(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_queued: Option<usize>, rpm: Option<u64>, lanes: Option<&[&str]>) -> TenantConfig {
        TenantConfig {
            rpm,
            max_queued,
            lanes: lanes.map(|l| l.iter().map(|s| s.to_string()).collect()),
            ..TenantConfig::new("acme", "FERRY_ACME")
        }
    }

    fn one(prompts: u64) -> Cost {
        Cost { prompts, tokens: prompts * 10 }
    }

    #[tokio::test]
    async fn admission_checks_lane_size_queue_and_budget_in_turn() {
        let tenants = Tenants::new(&[config(Some(5), Some(8), Some(&["low"]))]);
        let Some(acme) = tenants.get("acme").cloned() else { panic!("acme is configured") };
        assert!(matches!(tenants.admit(&acme, "high", one(1)).await, Err(Refusal::Lane { .. })));
        assert!(matches!(
            tenants.admit(&acme, "low", one(9)).await,
            Err(Refusal::TooBig { amount: 9, max: 8, .. })
        ));
        let first = tenants.admit(&acme, "low", one(4)).await;
        assert!(first.as_ref().is_ok_and(|held| held.count() == 4), "{first:?}");
        assert_eq!(acme.queued(), 4);
        let full = tenants.admit(&acme, "low", one(2)).await;
        assert!(matches!(full, Err(Refusal::Queue { max: 5, .. })), "{full:?}");
        assert_eq!(acme.queued(), 4, "a refused request holds nothing");
        drop(first);
        assert_eq!(acme.queued(), 0);
        // 4 of the 8 a minute are spent: 5 more do not fit now.
        let over = tenants.admit(&acme, "low", one(5)).await;
        assert_eq!(over.as_ref().err().and_then(Refusal::retry_after).map(|d| d.as_secs() >= 59), Some(true));
        assert_eq!(over.err().map(|r| r.reason()), Some("rpm"));
        assert_eq!(acme.queued(), 0, "the hold is given back when the budget refuses");
        let refused: HashMap<&str, u64> = acme.refused().collect();
        assert_eq!(
            (refused["lane"], refused["too_big"], refused["max_queued"], refused["rpm"]),
            (1, 1, 1, 1)
        );
        assert_eq!(acme.accepted(), 4);
    }

    #[test]
    fn holds_take_what_fits_and_release_one_by_one() {
        let tenants = Tenants::new(&[config(Some(10), None, None)]);
        let Some(acme) = tenants.get("acme").cloned() else { panic!("acme is configured") };
        let mut held = tenants.hold_up_to(&acme, 7);
        assert_eq!(held.count(), 7);
        let more = tenants.hold_up_to(&acme, 7);
        assert_eq!(more.count(), 3);
        held.absorb(more);
        assert_eq!((held.count(), acme.queued()), (10, 10));
        held.release(4);
        assert_eq!(acme.queued(), 6);
        drop(held);
        assert_eq!(acme.queued(), 0);
    }

    #[test]
    fn owners_map_back_to_tenants() {
        let tenants = Tenants::new(&[config(None, None, None)]);
        assert_eq!(owner_of("acme"), "tenant:acme");
        assert!(tenants.by_owner("tenant:acme").is_some());
        assert!(tenants.by_owner("acme").is_none() && tenants.by_owner("tenant:other").is_none());
        assert!(Tenants::default().is_empty());
    }
}
