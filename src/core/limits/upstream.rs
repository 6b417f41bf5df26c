//! [`Limits`]: every window of one upstream (requests per minute, tokens per minute, requests
//! per day), taken from all at once or not at all, and adapted to the limits and allowances the
//! upstream announces in its rate headers.

use std::time::Duration;

use tokio::time::Instant;

use super::{DAY, MINUTE, SlidingWindow, Taken};
use crate::core::chat::RateHints;

/// One of an upstream's windows with where its limit comes from.
#[derive(Debug, Clone)]
struct Gate {
    window: SlidingWindow,
    /// From the config; `None` means no limit (takes are still counted, for the console).
    configured: Option<u64>,
    /// The limit the upstream last announced for this window, if any.
    announced: Option<u64>,
}

impl Gate {
    fn new(configured: Option<u64>, window: Duration) -> Self {
        let mut gate = Self { window: SlidingWindow::new(u64::MAX, window), configured, announced: None };
        gate.apply();
        gate
    }

    /// The limit in force: the configured one, lowered (never raised) by an announced one.
    fn effective(&self) -> Option<u64> {
        match (self.configured, self.announced) {
            (Some(configured), Some(announced)) => Some(configured.min(announced)),
            (configured, announced) => configured.or(announced),
        }
    }

    fn apply(&mut self) {
        self.window.set_limit(self.effective().unwrap_or(u64::MAX));
    }
}

/// "n more before `until`", as the upstream announced it in its remaining/reset headers.
#[derive(Debug, Clone, Copy)]
struct Allowance {
    remaining: u64,
    until: Instant,
    /// Tells a permit whether the allowance it drew from is still the one in force.
    epoch: u64,
}

impl Allowance {
    fn check(slot: &Option<Self>, now: Instant, amount: u64) -> Result<(), Instant> {
        match slot {
            Some(allowance) if now < allowance.until && allowance.remaining < amount => Err(allowance.until),
            _ => Ok(()),
        }
    }

    /// Draws `amount` from the allowance in force, returning its epoch.
    fn draw(slot: &mut Option<Self>, now: Instant, amount: u64) -> Option<u64> {
        match slot {
            Some(allowance) if now < allowance.until => {
                allowance.remaining = allowance.remaining.saturating_sub(amount);
                Some(allowance.epoch)
            }
            _ => {
                *slot = None;
                None
            }
        }
    }

    /// Returns `amount` to the allowance a permit drew from, if it is still in force.
    fn refund(slot: &mut Option<Self>, epoch: Option<u64>, amount: u64) {
        if let (Some(allowance), Some(epoch)) = (slot, epoch)
            && allowance.epoch == epoch
        {
            allowance.remaining = allowance.remaining.saturating_add(amount);
        }
    }
}

/// All limits of one upstream, checked and taken atomically (all or nothing).
#[derive(Debug, Clone)]
pub struct Limits {
    rpm: Gate,
    tpm: Gate,
    rpd: Gate,
    requests: Option<Allowance>,
    tokens: Option<Allowance>,
    next_epoch: u64,
}

/// What one call took from every limit; hand it back with [`Limits::give_back`] or
/// [`Limits::settle`]. Not `Clone`, so it cannot be returned twice; dropping it keeps the estimate
/// counted, which errs on the safe side.
#[derive(Debug)]
pub struct Permit {
    rpm: Taken,
    tpm: Taken,
    rpd: Taken,
    tokens: u64,
    requests_epoch: Option<u64>,
    tokens_epoch: Option<u64>,
}

impl Permit {
    /// The tokens estimated for the call when it was admitted.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }
}

/// Used and limit of each window, for the console and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LimitsSnapshot {
    /// Requests in the last minute.
    pub rpm_used: u64,
    /// Requests per minute in force, if any.
    pub rpm_limit: Option<u64>,
    /// Tokens in the last minute (estimated, corrected as calls finish).
    pub tpm_used: u64,
    /// Tokens per minute in force, if any.
    pub tpm_limit: Option<u64>,
    /// Requests in the last 24 hours.
    pub rpd_used: u64,
    /// Requests per day in force, if any.
    pub rpd_limit: Option<u64>,
}

/// Which limit holds a call back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// Requests per minute.
    Rpm,
    /// Tokens per minute.
    Tpm,
    /// Requests per day.
    Rpd,
    /// Requests the upstream announced as remaining.
    AnnouncedRequests,
    /// Tokens the upstream announced as remaining.
    AnnouncedTokens,
}

impl Limit {
    /// The limit in words, for errors and the console.
    pub fn describe(self) -> &'static str {
        match self {
            Limit::Rpm => "requests per minute",
            Limit::Tpm => "tokens per minute",
            Limit::Rpd => "requests per day",
            Limit::AnnouncedRequests => "requests the upstream allows",
            Limit::AnnouncedTokens => "tokens the upstream allows",
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// Folds one check into the latest refusal so far: the instant every refusing limit allows.
fn later(wait: Option<Instant>, check: Result<(), Instant>) -> Option<Instant> {
    match (wait, check) {
        (Some(wait), Err(t)) => Some(wait.max(t)),
        (None, Err(t)) => Some(t),
        (wait, Ok(())) => wait,
    }
}

impl Limits {
    /// Limits of one upstream; `None` means that limit is not enforced.
    pub fn new(rpm: Option<u64>, tpm: Option<u64>, rpd: Option<u64>) -> Self {
        Self {
            rpm: Gate::new(rpm, MINUTE),
            tpm: Gate::new(tpm, MINUTE),
            rpd: Gate::new(rpd, DAY),
            requests: None,
            tokens: None,
            next_epoch: 0,
        }
    }

    /// Takes one request and `tokens` estimated tokens from every limit, or nothing:
    /// Err(t) = the instant at which to try again (the latest of the limits' earliest times).
    pub fn try_acquire(&mut self, now: Instant, tokens: u64) -> Result<Permit, Instant> {
        let mut wait = later(None, self.rpm.window.check(now, 1));
        wait = later(wait, self.tpm.window.check(now, tokens));
        wait = later(wait, self.rpd.window.check(now, 1));
        wait = later(wait, Allowance::check(&self.requests, now, 1));
        wait = later(wait, Allowance::check(&self.tokens, now, tokens));
        if let Some(wait) = wait {
            return Err(wait);
        }
        Ok(Permit {
            rpm: self.rpm.window.take(now, 1),
            tpm: self.tpm.window.take(now, tokens),
            rpd: self.rpd.window.take(now, 1),
            tokens,
            requests_epoch: Allowance::draw(&mut self.requests, now, 1),
            tokens_epoch: Allowance::draw(&mut self.tokens, now, tokens),
        })
    }

    /// When a call of `tokens` could start, if not now, and the limit that holds it back the
    /// longest. Takes nothing.
    pub fn blocked(&mut self, now: Instant, tokens: u64) -> Option<(Instant, Limit)> {
        let checks = [
            (self.rpm.window.check(now, 1), Limit::Rpm),
            (self.tpm.window.check(now, tokens), Limit::Tpm),
            (self.rpd.window.check(now, 1), Limit::Rpd),
            (Allowance::check(&self.requests, now, 1), Limit::AnnouncedRequests),
            (Allowance::check(&self.tokens, now, tokens), Limit::AnnouncedTokens),
        ];
        checks
            .into_iter()
            .filter_map(|(check, limit)| check.err().map(|at| (at, limit)))
            .max_by_key(|(at, _)| *at)
    }

    /// The call never went out: return its request and tokens to every window.
    pub fn give_back(&mut self, permit: Permit) {
        self.rpm.window.give_back(permit.rpm, 1);
        self.tpm.window.give_back(permit.tpm, permit.tokens);
        self.rpd.window.give_back(permit.rpd, 1);
        Allowance::refund(&mut self.requests, permit.requests_epoch, 1);
        Allowance::refund(&mut self.tokens, permit.tokens_epoch, permit.tokens);
    }

    /// The call finished: correct the token window from estimated to `actual` tokens (up or down).
    pub fn settle(&mut self, permit: Permit, actual_tokens: u64) {
        if actual_tokens < permit.tokens {
            let over = permit.tokens - actual_tokens;
            self.tpm.window.give_back(permit.tpm, over);
            Allowance::refund(&mut self.tokens, permit.tokens_epoch, over);
        } else if actual_tokens > permit.tokens {
            let under = actual_tokens - permit.tokens;
            self.tpm.window.add(&permit.tpm, under);
            if let Some(allowance) = &mut self.tokens
                && Some(allowance.epoch) == permit.tokens_epoch
            {
                allowance.remaining = allowance.remaining.saturating_sub(under);
            }
        }
    }

    /// Adapts to what the upstream announced.
    ///
    /// - A limit lower than the configured one lowers it (never above the configured value; a later
    ///   higher announcement lifts it back up to at most the configured one). A zero limit is
    ///   ignored as garbage. The requests limit applies to the day window when its reset is longer
    ///   than a minute (some tiers announce requests per day), else to the minute window.
    /// - remaining n with reset d: at most n more calls (tokens) before `now + d`, drawn by
    ///   [`Self::try_acquire`]; remaining 0 therefore means no call before `now + d`. A remaining
    ///   without a reset is ignored: with no end to it, the windows and the 429 path are safer.
    /// - While an earlier announcement with a later or equal reset is in force, the lower remaining
    ///   wins: a reply that arrives late must not undo calls made since.
    pub fn apply_hints(&mut self, now: Instant, hints: &RateHints) {
        if let Some(limit) = hints.limit_requests.filter(|&limit| limit > 0) {
            let gate = if hints.reset_requests.is_some_and(|reset| reset > MINUTE) {
                &mut self.rpd
            } else {
                &mut self.rpm
            };
            gate.announced = Some(limit);
            gate.apply();
        }
        if let Some(limit) = hints.limit_tokens.filter(|&limit| limit > 0) {
            self.tpm.announced = Some(limit);
            self.tpm.apply();
        }
        if let (Some(remaining), Some(reset)) = (hints.remaining_requests, hints.reset_requests) {
            let epoch = self.epoch();
            Self::announce(&mut self.requests, now, remaining, now + reset, epoch);
        }
        if let (Some(remaining), Some(reset)) = (hints.remaining_tokens, hints.reset_tokens) {
            let epoch = self.epoch();
            Self::announce(&mut self.tokens, now, remaining, now + reset, epoch);
        }
    }

    /// Until when the upstream's announcements allow no call at all (remaining 0), if so.
    pub fn paused_until(&self, now: Instant) -> Option<Instant> {
        [self.requests, self.tokens]
            .into_iter()
            .flatten()
            .filter(|allowance| allowance.remaining == 0 && now < allowance.until)
            .map(|allowance| allowance.until)
            .max()
    }

    /// Used and limit of each window at `now`.
    pub fn snapshot(&mut self, now: Instant) -> LimitsSnapshot {
        LimitsSnapshot {
            rpm_used: self.rpm.window.used(now),
            rpm_limit: self.rpm.effective(),
            tpm_used: self.tpm.window.used(now),
            tpm_limit: self.tpm.effective(),
            rpd_used: self.rpd.window.used(now),
            rpd_limit: self.rpd.effective(),
        }
    }

    /// Changes the configured limits live; what was taken still counts against the new ones.
    pub fn set_limits(&mut self, rpm: Option<u64>, tpm: Option<u64>, rpd: Option<u64>) {
        for (gate, configured) in [(&mut self.rpm, rpm), (&mut self.tpm, tpm), (&mut self.rpd, rpd)] {
            gate.configured = configured;
            gate.apply();
        }
    }

    fn epoch(&mut self) -> u64 {
        self.next_epoch += 1;
        self.next_epoch
    }

    fn announce(slot: &mut Option<Allowance>, now: Instant, remaining: u64, until: Instant, epoch: u64) {
        match slot {
            Some(current) if now < current.until && until <= current.until => {
                current.remaining = current.remaining.min(remaining);
            }
            _ => *slot = Some(Allowance { remaining, until, epoch }),
        }
    }
}

#[cfg(test)]
mod tests;
