//! What an upstream client does when a call fails: pause on 429, shrink on 503, retry with
//! backoff, cool down after repeated failures, and give a call up — to another upstream or as a
//! per-item error.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::time::Instant;

use super::{LlmClient, PATIENCE};
use crate::core::limits::Permit;
use crate::core::retry;
use crate::engine::call::{Call, CallItems};
use crate::engine::item::ItemError;
use crate::engine::pool::Reroute;
use crate::providers::{ProviderError, RateHints};

impl LlmClient {
    pub(super) fn on_error(
        &mut self,
        ctx: &mut Context<Self>,
        call: Call,
        permit: Permit,
        error: ProviderError,
    ) {
        let now = Instant::now();
        self.settle_failed(permit, &error);
        self.counters.failed += 1;
        self.last_error = Some(error.to_string());
        tracing::debug!(event = "llm_call", upstream = %self.name, ok = false, error = error.kind());
        match error {
            ProviderError::RateLimited { retry_after, hints } => {
                self.on_rate_limited(ctx, call, retry_after, hints, now)
            }
            ProviderError::Overloaded { .. } => self.on_overloaded(ctx, call, error, now),
            // The request itself is wrong: no retry here, and no other upstream either.
            ProviderError::Rejected { .. } => self.give_up(ctx, call, error, false),
            // A bug does not go away on retry; another upstream (another provider) may do.
            ProviderError::Panicked { .. } => self.give_up(ctx, call, error, true),
            error if error.sent() && !self.config.retry_after_send => self.fail_sent(ctx, call, error),
            error => self.retry(ctx, call, error, now),
        }
    }

    /// What a failed call costs against the limits.
    fn settle_failed(&mut self, permit: Permit, error: &ProviderError) {
        match error {
            // Refused before any work: the request counts, its tokens do not.
            ProviderError::RateLimited { .. } => self.limits.settle(permit, 0),
            // Never sent, or not known to have been: everything goes back.
            ProviderError::Connect { .. } | ProviderError::Panicked { .. } => self.limits.give_back(permit),
            // It reached the upstream: it counts, at its estimate.
            _ => {
                let estimated = permit.tokens();
                self.limits.settle(permit, estimated);
            }
        }
    }

    /// A 429: pause the whole mailbox until Retry-After (clamped), else back off.
    fn on_rate_limited(
        &mut self,
        ctx: &mut Context<Self>,
        mut call: Call,
        retry_after: Option<Duration>,
        hints: Box<RateHints>,
        now: Instant,
    ) {
        self.counters.rate_limited += 1;
        self.limits.apply_hints(now, &hints);
        let max = Duration::from_millis(self.config.retry_after_max_ms);
        let pause = retry::clamp_retry_after(retry_after, max)
            .filter(|d| !d.is_zero())
            .unwrap_or_else(|| self.backoff(call.rate_limited));
        let until = now + pause;
        self.paused_until = Some(self.paused_until.map_or(until, |t| t.max(until)));
        tracing::info!(event = "rate_limited", upstream = %self.name, pause_ms = pause.as_millis() as u64);
        call.rate_limited += 1;
        if call.rate_limited > PATIENCE {
            self.give_up(ctx, call, ProviderError::RateLimited { retry_after, hints }, true);
        } else {
            self.mailbox.push(now, call.rank, call);
        }
        self.report_state();
    }

    /// A 503: a local server with no free slot. Backpressure, not failure: ask less of it (down
    /// to one call at a time) and try again after a backoff.
    fn on_overloaded(&mut self, ctx: &mut Context<Self>, mut call: Call, error: ProviderError, now: Instant) {
        self.counters.backpressure += 1;
        self.success_streak = 0;
        // With `auto` the limit has taken the 503 as a drop already (see `adapt`).
        if self.limiter.is_none() && self.concurrency > 1 {
            self.concurrency -= 1;
            tracing::info!(event = "backpressure", upstream = %self.name, concurrency = self.concurrency);
            self.report_state();
        }
        call.overloaded += 1;
        if call.overloaded > PATIENCE {
            self.give_up(ctx, call, error, true);
            return;
        }
        let delay = self.backoff(call.overloaded - 1);
        self.mailbox.push_at(now + delay, call.rank, call);
    }

    /// A retryable failure (5xx, timeout, dropped connection, malformed reply): back off and try
    /// again, up to `max_retries`; count towards a cooldown.
    fn retry(&mut self, ctx: &mut Context<Self>, mut call: Call, error: ProviderError, now: Instant) {
        self.consecutive_failures += 1;
        if self.consecutive_failures >= self.config.cooldown_failures {
            self.enter_cooldown(ctx, now);
        }
        if call.retries >= self.config.max_retries {
            self.give_up(ctx, call, error, true);
            return;
        }
        let delay = self.backoff(call.retries);
        call.retries += 1;
        self.counters.retries += 1;
        if error.sent() {
            self.counters.duplicate_risk += 1;
        }
        tracing::debug!(event = "retry", upstream = %self.name, attempt = call.retries, delay_ms = delay.as_millis() as u64, error = error.kind());
        if self.cooldown_until.is_some_and(|until| until > now) {
            // Cooling down: the retry goes to another upstream if one can take it.
            self.offer_elsewhere(ctx, vec![call]);
        } else {
            self.mailbox.push_at(now + delay, call.rank, call);
        }
    }

    pub(super) fn backoff(&self, attempt: u32) -> Duration {
        retry::backoff(
            attempt,
            Duration::from_millis(self.config.backoff_base_ms),
            Duration::from_millis(self.config.backoff_max_ms),
            fastrand::f64(),
        )
    }

    /// This upstream is done with the call: a combined call is retried item by item first;
    /// a single call goes back to the pool, which tries another upstream (with `fallback`) or
    /// reports the error.
    fn give_up(&mut self, ctx: &mut Context<Self>, mut call: Call, error: ProviderError, fallback: bool) {
        if let CallItems::Combined(items) = &call.items {
            self.counters.resent_alone += items.len() as u64;
            tracing::warn!(event = "combined_failed", upstream = %self.name, error = error.kind(), "sending the batch item by item");
            for single in call.into_singles() {
                self.mailbox.push(Instant::now(), single.rank, single);
            }
            return;
        }
        if call.verify.is_some() {
            // A fidelity sample that could not be asked alone keeps its combined answer, which
            // counts in no comparison (`Call::fail`).
            self.release(ctx, &mut call.slot);
            call.fail(ItemError::Upstream { upstream: Arc::clone(&self.name), error, attempts: 0 });
            return;
        }
        let attempts = match &call.items {
            CallItems::One(item) => item.attempts,
            CallItems::Combined(_) => 0,
        };
        tracing::debug!(event = "failed", upstream = %self.name, error = error.kind(), attempts);
        let error = ItemError::Upstream { upstream: Arc::clone(&self.name), error, attempts };
        self.release(ctx, &mut call.slot);
        if !fallback {
            call.fail(error);
            return;
        }
        call.tried |= 1 << (self.index % 64);
        call.last_error = Some(Box::new(error));
        // The next upstream gets its own full set of retries.
        (call.retries, call.rate_limited, call.overloaded) = (0, 0, 0);
        self.pool.do_send(Reroute { from: self.index, calls: vec![call], final_failure: true });
    }

    /// `retry_after_send = false` and the call may have run upstream: it is not sent again — not
    /// here, not on another upstream, and a combined call's items not one by one — so its items
    /// end in the error (a fidelity sample keeps its combined answer).
    fn fail_sent(&mut self, ctx: &mut Context<Self>, mut call: Call, error: ProviderError) {
        let CallItems::Combined(items) = &call.items else {
            return self.give_up(ctx, call, error, false);
        };
        let attempts = items.iter().map(|item| item.attempts).max().unwrap_or(1);
        tracing::debug!(event = "failed", upstream = %self.name, error = error.kind(), attempts, items = items.len());
        self.release(ctx, &mut call.slot);
        call.fail(ItemError::Upstream { upstream: Arc::clone(&self.name), error, attempts });
    }

    /// Hands calls to the pool to run on another upstream (or come back here if none can).
    pub(super) fn offer_elsewhere(&mut self, ctx: &mut Context<Self>, calls: Vec<Call>) {
        let mut offered = Vec::with_capacity(calls.len());
        for mut call in calls {
            self.release(ctx, &mut call.slot);
            offered.push(call);
        }
        if !offered.is_empty() {
            self.pool.do_send(Reroute { from: self.index, calls: offered, final_failure: false });
        }
    }

    /// Repeated failures: stop calling for a while, and offer waiting calls to other upstreams.
    fn enter_cooldown(&mut self, ctx: &mut Context<Self>, now: Instant) {
        let until = now + Duration::from_millis(self.config.cooldown_ms);
        self.cooldown_until = Some(until);
        self.consecutive_failures = 0;
        tracing::warn!(event = "cooldown", upstream = %self.name, for_ms = self.config.cooldown_ms);
        let waiting = self.mailbox.drain();
        self.offer_elsewhere(ctx, waiting);
        self.report_state();
    }
}
