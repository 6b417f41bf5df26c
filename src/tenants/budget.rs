//! A tenant's budget: prompts and estimated tokens per minute, shared by all its keys.
//!
//! [`Budget`] is the interface; [`MemoryBudget`] keeps the windows in this process (exact sliding
//! windows, [`SlidingWindow`]). Several ferry instances serving the same tenants would share one
//! budget through a store that implements the same trait (e.g. Redis, with the windows as sorted
//! sets and the take as one script), which is why `take` is asynchronous and may fail.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use crate::config::TenantConfig;
use crate::core::limits::{MINUTE, SlidingWindow};

/// What one admission takes from a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cost {
    /// Prompts (each one upstream request, or one share of a combined one).
    pub prompts: u64,
    /// Estimated tokens: prompt plus reply budget.
    pub tokens: u64,
}

/// Which of a tenant's limits refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TenantLimit {
    /// Prompts per minute (`rpm`).
    Rpm,
    /// Estimated tokens per minute (`tpm`).
    Tpm,
}

impl TenantLimit {
    /// The config key.
    pub fn key(self) -> &'static str {
        match self {
            TenantLimit::Rpm => "rpm",
            TenantLimit::Tpm => "tpm",
        }
    }

    /// In words.
    pub fn describe(self) -> &'static str {
        match self {
            TenantLimit::Rpm => "prompts per minute",
            TenantLimit::Tpm => "tokens per minute",
        }
    }
}

/// Why a budget did not take a cost.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The cost does not fit now; it will after `retry_after` (given no other takes).
    #[error("over its {} ({}); room again in {} s", .limit.describe(), .limit.key(), .retry_after.as_millis().div_ceil(1000).max(1))]
    Over {
        /// The limit.
        limit: TenantLimit,
        /// How long until the cost fits.
        retry_after: Duration,
    },
    /// The budget's store could not be reached (a shared store; never the in-process one).
    #[error("the budget store is unavailable: {0}")]
    Unavailable(String),
}

/// Where tenants' windows are kept.
pub trait Budget: Send + Sync {
    /// Takes `cost` from `tenant`'s windows, from all of them or none. A tenant without limits
    /// (or unknown to the budget) always fits.
    fn take<'a>(&'a self, tenant: &'a str, cost: Cost) -> BoxFuture<'a, Result<(), Refused>>;

    /// Gives back `cost` a take took for work that was then refused (a full lane, shutdown): from
    /// the tenant's newest takes, all windows alike.
    fn give_back<'a>(&'a self, tenant: &'a str, cost: Cost) -> BoxFuture<'a, ()>;

    /// Prompts and tokens taken in `tenant`'s current windows (for metrics).
    fn used<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Cost>;
}

/// One tenant's windows.
struct Windows {
    rpm: Option<SlidingWindow>,
    tpm: Option<SlidingWindow>,
}

/// The windows of every tenant in this process.
pub struct MemoryBudget {
    tenants: Mutex<HashMap<String, Windows>>,
}

impl MemoryBudget {
    /// Windows for every tenant's `rpm` and `tpm`.
    pub fn new(tenants: &[TenantConfig]) -> MemoryBudget {
        let window = |limit: Option<u64>| limit.map(|limit| SlidingWindow::new(limit, MINUTE));
        let tenants = tenants
            .iter()
            .map(|t| (t.name.clone(), Windows { rpm: window(t.rpm), tpm: window(t.tpm) }))
            .collect();
        MemoryBudget { tenants: Mutex::new(tenants) }
    }

    /// [`Budget::take`] at `now`.
    pub fn take_at(&self, tenant: &str, cost: Cost, now: Instant) -> Result<(), Refused> {
        let mut tenants = self.tenants.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(windows) = tenants.get_mut(tenant) else { return Ok(()) };
        let checks = [
            (windows.rpm.as_mut().map(|w| w.check(now, cost.prompts)), TenantLimit::Rpm),
            (windows.tpm.as_mut().map(|w| w.check(now, cost.tokens)), TenantLimit::Tpm),
        ];
        let refusal = checks
            .into_iter()
            .filter_map(|(check, limit)| match check {
                Some(Err(at)) => Some((at, limit)),
                _ => None,
            })
            .max_by_key(|(at, _)| *at);
        if let Some((at, limit)) = refusal {
            return Err(Refused::Over { limit, retry_after: at.saturating_duration_since(now) });
        }
        if let Some(window) = windows.rpm.as_mut() {
            window.take(now, cost.prompts);
        }
        if let Some(window) = windows.tpm.as_mut() {
            window.take(now, cost.tokens);
        }
        Ok(())
    }

    /// [`Budget::give_back`] at `now`.
    pub fn give_back_at(&self, tenant: &str, cost: Cost, now: Instant) {
        let mut tenants = self.tenants.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(windows) = tenants.get_mut(tenant) else { return };
        if let Some(window) = windows.rpm.as_mut() {
            window.give_back_latest(now, cost.prompts);
        }
        if let Some(window) = windows.tpm.as_mut() {
            window.give_back_latest(now, cost.tokens);
        }
    }

    /// [`Budget::used`] at `now`.
    pub fn used_at(&self, tenant: &str, now: Instant) -> Cost {
        let mut tenants = self.tenants.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(windows) = tenants.get_mut(tenant) else { return Cost::default() };
        Cost {
            prompts: windows.rpm.as_mut().map_or(0, |w| w.used(now)),
            tokens: windows.tpm.as_mut().map_or(0, |w| w.used(now)),
        }
    }
}

impl Budget for MemoryBudget {
    fn take<'a>(&'a self, tenant: &'a str, cost: Cost) -> BoxFuture<'a, Result<(), Refused>> {
        let taken = self.take_at(tenant, cost, Instant::now());
        Box::pin(std::future::ready(taken))
    }

    fn give_back<'a>(&'a self, tenant: &'a str, cost: Cost) -> BoxFuture<'a, ()> {
        self.give_back_at(tenant, cost, Instant::now());
        Box::pin(std::future::ready(()))
    }

    fn used<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Cost> {
        let used = self.used_at(tenant, Instant::now());
        Box::pin(std::future::ready(used))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(rpm: Option<u64>, tpm: Option<u64>) -> MemoryBudget {
        MemoryBudget::new(&[TenantConfig { rpm, tpm, ..TenantConfig::new("acme", "FERRY_ACME") }])
    }

    #[test]
    fn takes_until_a_window_is_full_then_says_when_there_is_room() {
        let budget = budget(Some(3), None);
        let start = Instant::now();
        let one = Cost { prompts: 1, tokens: 10 };
        for second in 0..3 {
            assert_eq!(budget.take_at("acme", one, start + Duration::from_secs(second)), Ok(()));
        }
        let refused = budget.take_at("acme", one, start + Duration::from_secs(10));
        assert_eq!(
            refused,
            Err(Refused::Over { limit: TenantLimit::Rpm, retry_after: Duration::from_secs(50) })
        );
        assert_eq!(budget.take_at("acme", one, start + Duration::from_secs(60)), Ok(()));
        assert_eq!(budget.used_at("acme", start + Duration::from_secs(61)).prompts, 2);
    }

    #[test]
    fn all_or_nothing_and_the_longest_wait_is_named() {
        let budget = budget(Some(100), Some(1_000));
        let start = Instant::now();
        assert_eq!(budget.take_at("acme", Cost { prompts: 1, tokens: 900 }, start), Ok(()));
        let refused =
            budget.take_at("acme", Cost { prompts: 1, tokens: 200 }, start + Duration::from_secs(1));
        assert!(matches!(refused, Err(Refused::Over { limit: TenantLimit::Tpm, .. })), "{refused:?}");
        // Nothing was taken from the request window by the refused take.
        assert_eq!(budget.used_at("acme", start + Duration::from_secs(2)), Cost { prompts: 1, tokens: 900 });
    }

    #[test]
    fn a_refused_request_gives_its_cost_back() {
        let budget = budget(Some(2), Some(100));
        let start = Instant::now();
        let one = Cost { prompts: 1, tokens: 50 };
        assert_eq!(budget.take_at("acme", one, start), Ok(()));
        assert_eq!(budget.take_at("acme", one, start), Ok(()));
        assert!(budget.take_at("acme", one, start).is_err());
        budget.give_back_at("acme", one, start);
        assert_eq!(budget.used_at("acme", start), one);
        assert_eq!(budget.take_at("acme", one, start), Ok(()));
    }

    #[test]
    fn unknown_and_unlimited_tenants_always_fit() {
        let budget = budget(None, None);
        let huge = Cost { prompts: u64::MAX, tokens: u64::MAX };
        assert_eq!(budget.take_at("acme", huge, Instant::now()), Ok(()));
        assert_eq!(budget.take_at("nobody", huge, Instant::now()), Ok(()));
    }
}
