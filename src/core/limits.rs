//! (placeholder until the core branch lands)
use crate::providers::RateHints;
use std::time::Duration;
use tokio::time::Instant;
/// x
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct LimitsSnapshot {
    pub rpm_used: u64,
    pub rpm_limit: Option<u64>,
    pub tpm_used: u64,
    pub tpm_limit: Option<u64>,
    pub rpd_used: u64,
    pub rpd_limit: Option<u64>,
}
/// x
pub struct Limits;
/// x
#[derive(Debug)]
pub struct Permit(u64);
impl Permit {
    /// x
    pub fn tokens(&self) -> u64 {
        self.0
    }
}
impl Limits {
    /// x
    pub fn new(_rpm: Option<u64>, _tpm: Option<u64>, _rpd: Option<u64>) -> Self {
        Limits
    }
    /// x
    pub fn try_acquire(&mut self, _now: Instant, tokens: u64) -> Result<Permit, Instant> {
        Ok(Permit(tokens))
    }
    /// x
    pub fn give_back(&mut self, _permit: Permit) {}
    /// x
    pub fn settle(&mut self, _permit: Permit, _actual_tokens: u64) {}
    /// x
    pub fn apply_hints(&mut self, _now: Instant, _hints: &RateHints) {}
    /// x
    pub fn snapshot(&mut self, _now: Instant) -> LimitsSnapshot {
        LimitsSnapshot::default()
    }
}
#[allow(dead_code)]
fn _d(_: Duration) {}
