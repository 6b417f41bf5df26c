//! A tenant's batch job paced to its budget and `max_queued` instead of refused: the job holds
//! room for what it has in the engine and takes from the budget per submission.

use std::sync::Arc;
use std::time::Duration;

use crate::engine::Prompt;
use crate::tenants::{Cost, Held, Refused, Tenant, Tenants};

/// The shortest wait before a paced job offers items again.
pub(super) const PACED_WAIT: Duration = Duration::from_millis(100);
/// The wait after the budget's store could not be reached.
const UNAVAILABLE_WAIT: Duration = Duration::from_secs(1);

/// What [`Pacing::pay`] decided for a submission.
pub(super) enum Paid {
    /// Taken from the budget (or already paid for): send it.
    Go(Cost),
    /// More than a minute of the tenant's tokens: offer this many prompts instead.
    Smaller(usize),
    /// The budget has no room: offer the prompts again after this wait.
    Wait(Duration),
}

/// One job's pacing for its tenant.
pub(super) struct Pacing {
    tenants: Tenants,
    tenant: Arc<Tenant>,
    /// Room held for the prompts the job has in the engine; released as outcomes come.
    held: Option<Held>,
    /// Budget taken for prompts a full lane then refused: spent first on the next submission,
    /// so offering a chunk again and again to a full lane does not use the budget up.
    paid: Cost,
}

impl Pacing {
    /// Pacing for the job owned by `owner`, when the owner is a tenant.
    pub(super) fn of(tenants: &Tenants, owner: Option<&str>) -> Option<Pacing> {
        let tenant = owner.and_then(|owner| tenants.by_owner(owner)).cloned()?;
        Some(Pacing { tenants: tenants.clone(), tenant, held: None, paid: Cost::default() })
    }

    /// The tenant's name.
    pub(super) fn tenant(&self) -> &str {
        self.tenant.name()
    }

    /// Holds room for up to `wanted` prompts (and no more than a minute's prompts), or none
    /// when the tenant's `max_queued` is full (counted as paced).
    pub(super) fn hold(&self, wanted: usize) -> Option<Held> {
        let rpm = self.tenant.config().rpm.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
        let hold = self.tenants.hold_up_to(&self.tenant, wanted.min(rpm));
        if hold.count() == 0 {
            self.tenants.count_paced(&self.tenant);
            return None;
        }
        Some(hold)
    }

    /// Takes `prompts`' cost from the budget, less what was paid for prompts a full lane
    /// refused; `hold` (from [`Pacing::hold`]) shrinks to the prompts read.
    pub(super) async fn pay(&mut self, hold: &mut Held, prompts: &[Prompt]) -> Paid {
        let count = prompts.len();
        hold.release(hold.count().saturating_sub(count));
        let tokens: u64 = prompts.iter().map(Prompt::estimated_tokens).sum();
        let max_tokens = self.tenant.config().tpm.unwrap_or(u64::MAX);
        if tokens > max_tokens && count > 1 {
            let fits = max_tokens.saturating_mul(count as u64) / tokens;
            return Paid::Smaller(usize::try_from(fits).unwrap_or(1).max(1));
        }
        let cost = Cost { prompts: count as u64, tokens };
        let owed = Cost {
            prompts: cost.prompts.saturating_sub(self.paid.prompts),
            tokens: cost.tokens.saturating_sub(self.paid.tokens),
        };
        if owed != Cost::default()
            && let Err(refused) = self.tenants.take(&self.tenant, owed).await
        {
            return Paid::Wait(match refused {
                Refused::Over { retry_after, .. } => retry_after.max(PACED_WAIT),
                Refused::Unavailable(_) => UNAVAILABLE_WAIT,
            });
        }
        self.paid = Cost {
            prompts: self.paid.prompts.saturating_sub(cost.prompts),
            tokens: self.paid.tokens.saturating_sub(cost.tokens),
        };
        Paid::Go(cost)
    }

    /// The lane refused a submission `pay` took `cost` for: the next one spends it first.
    pub(super) fn refund(&mut self, cost: Cost) {
        self.paid.prompts += cost.prompts;
        self.paid.tokens += cost.tokens;
    }

    /// The engine refused a submission `pay` took `cost` for, and it will not be offered again
    /// in this run (an unknown lane, shutdown): the budget gets it back.
    pub(super) async fn give_back(&self, cost: Cost) {
        self.tenants.give_back(&self.tenant, cost).await;
    }

    /// The submission `hold` was for is in the engine: keep its room until its outcomes come.
    pub(super) fn keep(&mut self, hold: Held) {
        match self.held.as_mut() {
            Some(held) => held.absorb(hold),
            None => self.held = Some(hold),
        }
    }

    /// An outcome came: one prompt's room is free.
    pub(super) fn release_one(&mut self) {
        if let Some(held) = self.held.as_mut() {
            held.release(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TenantConfig;
    use crate::tenants::owner_of;

    fn pacing(rpm: Option<u64>, tpm: Option<u64>, max_queued: Option<usize>) -> (Tenants, Pacing) {
        let config = TenantConfig { rpm, tpm, max_queued, ..TenantConfig::new("acme", "FERRY_ACME") };
        let tenants = Tenants::new(&[config]);
        let Some(pacing) = Pacing::of(&tenants, Some(&owner_of("acme"))) else { panic!("acme is a tenant") };
        (tenants, pacing)
    }

    fn prompts(n: usize) -> Vec<Prompt> {
        (0..n).map(|i| Prompt { max_tokens: Some(10), ..Prompt::text(format!("q{i}")) }).collect()
    }

    #[tokio::test]
    async fn a_refused_submission_is_not_paid_for_twice() {
        let (tenants, mut pacing) = pacing(Some(10), None, None);
        let Some(mut hold) = pacing.hold(8) else { panic!("room") };
        let batch = prompts(8);
        let Paid::Go(cost) = pacing.pay(&mut hold, &batch).await else { panic!("the budget has room") };
        // The lane refused it: offered again (three times), it is not taken from the budget again.
        pacing.refund(cost);
        for _ in 0..3 {
            let Paid::Go(again) = pacing.pay(&mut hold, &batch).await else { panic!("already paid") };
            assert_eq!(again, cost);
            pacing.refund(again);
        }
        let Some(acme) = tenants.get("acme") else { panic!("acme") };
        assert_eq!(tenants.used(acme).await.prompts, 8);
        // A bigger one pays only the difference, and then the rest of the minute is spent.
        let Some(mut hold) = pacing.hold(10) else { panic!("room") };
        assert!(matches!(pacing.pay(&mut hold, &prompts(10)).await, Paid::Go(_)));
        assert_eq!(tenants.used(acme).await.prompts, 10);
        let Some(mut hold) = pacing.hold(1) else { panic!("room") };
        let Paid::Wait(wait) = pacing.pay(&mut hold, &prompts(1)).await else {
            panic!("the minute is spent")
        };
        assert!(wait > Duration::from_secs(50), "{wait:?}");
    }

    #[tokio::test]
    async fn holds_stop_at_max_queued_and_a_minute_of_prompts() {
        let (_tenants, mut pacing) = pacing(Some(5), None, Some(8));
        let Some(first) = pacing.hold(100) else { panic!("room") };
        assert_eq!(first.count(), 5, "no more than a minute's prompts at once");
        pacing.keep(first);
        let Some(second) = pacing.hold(100) else { panic!("room") };
        assert_eq!(second.count(), 3, "max_queued 8 with 5 held");
        pacing.keep(second);
        assert!(pacing.hold(1).is_none(), "max_queued is full");
        pacing.release_one();
        assert_eq!(pacing.hold(100).map(|h| h.count()), Some(1));
    }

    #[tokio::test]
    async fn more_than_a_minute_of_tokens_is_offered_smaller() {
        let (_tenants, mut pacing) = pacing(None, Some(100), None);
        let batch = prompts(20);
        let per_prompt = batch[0].estimated_tokens();
        let Some(mut hold) = pacing.hold(20) else { panic!("room") };
        let Paid::Smaller(fits) = pacing.pay(&mut hold, &batch).await else { panic!("too many tokens") };
        assert_eq!(fits as u64, 100 / per_prompt);
        assert_eq!(hold.count(), 20, "the hold keeps the prompts read");
    }
}
