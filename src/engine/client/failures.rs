//! What an upstream client does when a call fails: pause on 429, shrink on 503, retry with
//! backoff, cool down after repeated failures, and give a call up — to another upstream or as a
//! per-item error.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::time::Instant;

use super::{LlmClient, RATE_LIMIT_GIVE_UP};
use crate::core::limits::Permit;
use crate::core::retry;
use crate::engine::call::{Call, CallItems};
use crate::engine::item::ItemError;
use crate::engine::pool::Reroute;
use crate::providers::ProviderError;

impl LlmClient {
    pub(super) fn on_error(
        &mut self,
        ctx: &mut Context<Self>,
        mut call: Call,
        permit: Permit,
        error: ProviderError,
    ) {
        let now = Instant::now();
        if error.sent() {
            // It reached the upstream: it counts, at its estimate.
            let estimated = permit.tokens();
            self.limits.settle(permit, estimated);
        } else {
            self.limits.give_back(permit);
        }
        self.counters.failed += 1;
        self.last_error = Some(error.to_string());
        tracing::debug!(event = "llm_call", upstream = %self.name, ok = false, error = error.kind());
        match error {
            ProviderError::RateLimited { retry_after, hints } => {
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
                if call.rate_limited > RATE_LIMIT_GIVE_UP {
                    self.give_up(ctx, call, ProviderError::RateLimited { retry_after, hints }, true);
                } else {
                    self.mailbox.push(call.rank, call);
                }
                self.report_state();
            }
            ProviderError::Overloaded { .. } if self.concurrency > 1 => {
                // A local server with no free slot: ask less of it rather than fail.
                self.counters.backpressure += 1;
                self.concurrency -= 1;
                self.success_streak = 0;
                tracing::info!(event = "backpressure", upstream = %self.name, concurrency = self.concurrency);
                let delay = self.backoff(0);
                self.mailbox.push_at(now + delay, call.rank, call);
                self.report_state();
            }
            // The request itself is wrong: no retry here, and no other upstream either.
            ProviderError::Rejected { .. } => self.give_up(ctx, call, error, false),
            // A bug does not go away on retry; another upstream (another provider) may do.
            ProviderError::Panicked { .. } => self.give_up(ctx, call, error, true),
            error if error.sent() && !self.config.retry_after_send => self.give_up(ctx, call, error, true),
            error => {
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
        if matches!(call.items, CallItems::Combined(_)) {
            tracing::warn!(event = "combined_failed", upstream = %self.name, error = error.kind(), "sending the batch item by item");
            for single in call.into_singles() {
                self.mailbox.push(single.rank, single);
            }
            return;
        }
        let attempts = match &call.items {
            CallItems::One(item) => item.attempts,
            CallItems::Combined(_) => 0,
        };
        tracing::debug!(event = "failed", upstream = %self.name, error = error.kind(), attempts);
        let error = ItemError::Upstream { upstream: Arc::clone(&self.name), error, attempts };
        self.release(ctx, call.holds_slot);
        call.holds_slot = false;
        if !fallback {
            call.fail(error);
            return;
        }
        call.tried |= 1 << (self.index % 64);
        call.last_error = Some(Box::new(error));
        self.pool.do_send(Reroute { from: self.index, calls: vec![call], final_failure: true });
    }

    /// Hands calls to the pool to run on another upstream (or come back here if none can).
    fn offer_elsewhere(&mut self, ctx: &mut Context<Self>, calls: Vec<Call>) {
        let mut offered = Vec::with_capacity(calls.len());
        for mut call in calls {
            self.release(ctx, call.holds_slot);
            call.holds_slot = false;
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
