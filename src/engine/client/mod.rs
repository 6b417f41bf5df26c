//! LlmClient: one upstream's rate-limit mailbox.
//!
//! Calls wait in a [`Mailbox`] (by lane rank) and start only when every limit allows: the
//! concurrency cap, the requests/tokens/day windows of [`Limits`] (checked and taken atomically),
//! a 429 pause and a cooldown. Each started call runs as its own task and reports back with
//! `CallDone`; the client then settles the token estimate, retries with backoff, pauses, lowers
//! its concurrency on 503 backpressure, or gives the call back to the pool for another upstream.

mod failures;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::FutureExt;
use tokio::sync::watch;
use tokio::time::Instant;

use super::call::{Call, CallItems, Slot};
use super::item::{Answer, Item, ItemError, Withdrawal};
use super::mailbox::Mailbox;
use super::metrics::{MetricsEvent, MetricsHub, Publish, UpstreamState, UpstreamStatus};
use super::pool::{ClientPool, ClientState, Released};
use super::wake::Wake;
use crate::config::UpstreamConfig;
use crate::core::batching::LowerShare;
use crate::core::fair::JobId;
use crate::core::limits::{Limit, Limits, Permit};
use crate::core::{combine, estimate};
use crate::providers::{CallReply, CallRequest, ChatMessage, Provider, ProviderError, Usage};

/// Reply budget assumed for the token estimate when a call sets no `max_tokens`.
const DEFAULT_REPLY_TOKENS: u32 = 256;
/// 429s (or 503s at concurrency 1) one call may receive on an upstream before it gives up
/// there, so a call cannot wait forever.
const PATIENCE: u32 = 20;
/// Successful calls after which a concurrency lowered by 503s is raised again by one.
const RECOVER_AFTER: u32 = 8;
/// A wait for the rate windows at least this long offers the waiting calls to other upstreams.
const OFFER_AFTER: Duration = Duration::from_secs(1);
/// How often the client reports its status to the MetricsHub.
const STATUS_EVERY: Duration = Duration::from_millis(250);

#[derive(Default)]
struct Counters {
    calls: u64,
    ok: u64,
    failed: u64,
    retries: u64,
    duplicate_risk: u64,
    rate_limited: u64,
    backpressure: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    limit_waits: u64,
}

/// Engine-wide settings a client follows.
pub(crate) struct ClientOptions {
    /// Log prompt and reply text.
    pub log_payloads: bool,
    /// The share of starts a waiting lower lane gets (`[batching] lower_share`).
    pub share: LowerShare,
}

/// The client actor.
pub struct LlmClient {
    index: usize,
    name: Arc<str>,
    config: UpstreamConfig,
    default_model: Arc<str>,
    provider: Arc<dyn Provider>,
    pool: Addr<ClientPool>,
    metrics: Addr<MetricsHub>,
    mailbox: Mailbox<Call>,
    running: usize,
    concurrency: usize,
    success_streak: u32,
    limits: Limits,
    paused_until: Option<Instant>,
    cooldown_until: Option<Instant>,
    /// When the rate windows next let a call start, and which limit holds it, as last reported
    /// to the pool.
    budget: Option<(Instant, Limit)>,
    consecutive_failures: u32,
    wake: Wake,
    released: usize,
    release_scheduled: bool,
    counters: Counters,
    last_error: Option<String>,
    stop: watch::Receiver<bool>,
    log_payloads: bool,
    #[cfg(feature = "fault-injection")]
    panic_on_next_batch: bool,
}

impl LlmClient {
    pub(crate) fn new(
        index: usize,
        config: UpstreamConfig,
        provider: Arc<dyn Provider>,
        pool: Addr<ClientPool>,
        metrics: Addr<MetricsHub>,
        stop: watch::Receiver<bool>,
        options: ClientOptions,
    ) -> Self {
        let default_model: Arc<str> = Arc::from(config.models.first().map_or("default", String::as_str));
        Self {
            index,
            name: Arc::from(config.name.as_str()),
            default_model,
            provider,
            pool,
            metrics,
            mailbox: Mailbox::new(options.share),
            running: 0,
            concurrency: config.concurrency.max(1),
            success_streak: 0,
            limits: Limits::new(config.rpm, config.tpm, config.rpd),
            paused_until: None,
            cooldown_until: None,
            budget: None,
            consecutive_failures: 0,
            wake: Wake::default(),
            released: 0,
            release_scheduled: false,
            counters: Counters::default(),
            last_error: None,
            stop,
            log_payloads: options.log_payloads,
            #[cfg(feature = "fault-injection")]
            panic_on_next_batch: false,
            config,
        }
    }

    fn request_for(&self, call: &Call) -> CallRequest {
        let messages: Vec<ChatMessage> = match &call.items {
            CallItems::One(item) => item.prompt.messages.clone(),
            CallItems::Combined(items) => {
                let prompts: Vec<&str> = items.iter().map(|i| i.prompt.last_user_text()).collect();
                combine::build(&prompts)
            }
        };
        // A combined call packs only items whose parameters agree, so the first speaks for all.
        let first = match &call.items {
            CallItems::One(item) => Some(&item.prompt),
            CallItems::Combined(items) => items.first().map(|i| &i.prompt),
        };
        CallRequest {
            model: call.model.clone().unwrap_or_else(|| self.default_model.to_string()),
            messages,
            max_tokens: call.max_tokens,
            temperature: first.and_then(|p| p.temperature),
            top_p: first.and_then(|p| p.top_p),
            stop: first.map(|p| p.stop.clone()).unwrap_or_default(),
            seed: first.and_then(|p| p.seed),
            response_format: first.and_then(|p| p.response_format.clone()),
        }
    }

    /// When calls may not start at all (429 pause or cooldown), if that is now.
    fn blocked_until(&self, now: Instant) -> Option<Instant> {
        [self.paused_until, self.cooldown_until].into_iter().flatten().filter(|t| *t > now).max()
    }

    /// Starts every call that limits allow, then arms the timer for the next possible start.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if *self.stop.borrow() {
            // Shutdown past its deadline: start nothing, answer what waits.
            self.fail_waiting(ItemError::ShuttingDown);
            return;
        }
        let now = Instant::now();
        self.mailbox.promote(now);
        if let Some(until) = self.blocked_until(now) {
            if !self.mailbox.is_empty() {
                self.wake_at(ctx, until, now);
            }
            return;
        }
        // The estimate of the next call to start (a typical reply when none waits), for the
        // budget the pool routes by.
        let mut next_tokens = u64::from(DEFAULT_REPLY_TOKENS);
        while self.running < self.concurrency {
            let Some(call) = self.mailbox.peek() else { break };
            if call.has_withdrawn() {
                // Its job was withdrawn on the way here: answer those items, send the rest.
                if let Some(call) = self.mailbox.pop() {
                    self.settle_withdrawn(ctx, call);
                }
                continue;
            }
            let request = self.request_for(call);
            let tokens = estimate::call_tokens(&request.messages, request.max_tokens, DEFAULT_REPLY_TOKENS);
            next_tokens = tokens;
            match self.limits.try_acquire(now, tokens) {
                Ok(permit) => {
                    if let Some(call) = self.mailbox.pop() {
                        self.start(ctx, call, request, permit);
                    }
                }
                Err(at) => {
                    if self.wake.is_idle() {
                        // Count each stretch of waiting once, not every look at the limits.
                        self.counters.limit_waits += 1;
                    }
                    self.wake_at(ctx, at, now);
                    if at.saturating_duration_since(now) >= OFFER_AFTER {
                        // A long wait here: calls not yet offered go to the pool, which moves
                        // them to an upstream that can send them sooner, or back here. The
                        // pool hears of the wait first, to compare.
                        self.report_budget(now, tokens);
                        let here = 1u64 << (self.index % 64);
                        let waiting = self.mailbox.extract(|call| call.offered & here == 0);
                        let offered: Vec<Call> = waiting
                            .into_iter()
                            .map(|mut call| {
                                call.offered |= here;
                                call
                            })
                            .collect();
                        self.offer_elsewhere(ctx, offered);
                    }
                    break;
                }
            }
        }
        self.report_budget(now, next_tokens);
        if let Some(due) = self.mailbox.next_due() {
            self.wake_at(ctx, due, now);
        }
    }

    fn wake_at(&mut self, ctx: &mut Context<Self>, at: Instant, now: Instant) {
        self.wake.arm(ctx, at, now, |client, ctx| {
            client.wake.fired();
            client.pump(ctx);
        });
    }

    fn start(&mut self, ctx: &mut Context<Self>, mut call: Call, request: CallRequest, permit: Permit) {
        self.running += 1;
        self.counters.calls += 1;
        match &mut call.items {
            CallItems::One(item) => item.attempts += 1,
            CallItems::Combined(items) => items.iter_mut().for_each(|item| item.attempts += 1),
        }
        if self.log_payloads {
            tracing::debug!(event = "llm_request", upstream = %self.name, messages = ?request.messages);
        }
        // A panic inside the provider must not take the call's items and slot with it.
        let future = AssertUnwindSafe(self.provider.call(request)).catch_unwind().map(|result| {
            result.unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".into());
                Err(ProviderError::Panicked { message })
            })
        });
        let client = ctx.address();
        let mut stop = self.stop.clone();
        actix::spawn(async move {
            let started = Instant::now();
            let stopped = async move {
                // A closed channel (engine dropped without a shutdown) is not a stop signal.
                if stop.wait_for(|stopped| *stopped).await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                biased;
                result = future => client.do_send(CallDone { call, permit, result, latency: started.elapsed() }),
                // Shutdown past its deadline: dropping the call sends its items home, where
                // the Supervisor answers them.
                () = stopped => drop(call),
            }
        });
    }

    /// Answers every waiting call with `error`; returns the number of items.
    fn fail_waiting(&mut self, error: ItemError) -> usize {
        let mut n = 0;
        for call in self.mailbox.drain() {
            n += match &call.items {
                CallItems::One(_) => 1,
                CallItems::Combined(items) => items.len(),
            };
            call.fail(error.clone());
        }
        n
    }

    /// Answers a call's withdrawn items and puts back what is left of it (at the back of its
    /// rank); a call left with nothing gives its slot back.
    fn settle_withdrawn(&mut self, ctx: &mut Context<Self>, call: Call) -> usize {
        let (rest, gone) = call.without_withdrawn();
        let n = gone.len();
        for item in gone {
            let why = item.withdrawn().unwrap_or(Withdrawal::Cancelled);
            item.finish(Err(ItemError::Withdrawn(why)));
        }
        match rest {
            Ok(call) => self.mailbox.push(Instant::now(), call.rank, call),
            Err(mut slot) => self.release(ctx, &mut slot),
        }
        n
    }

    /// Gives a call's pool slot back, coalescing releases into one message per burst.
    fn release(&mut self, ctx: &mut Context<Self>, slot: &mut Slot) {
        if !slot.take() {
            return;
        }
        self.released += 1;
        if !self.release_scheduled {
            // Completions arrive in bursts; one Released per burst spares the pool a message
            // per call.
            self.release_scheduled = true;
            ctx.notify(FlushReleased);
        }
    }

    fn on_success(
        &mut self,
        ctx: &mut Context<Self>,
        mut call: Call,
        permit: Permit,
        reply: CallReply,
        latency: Duration,
    ) {
        let now = Instant::now();
        let estimated = permit.tokens();
        let usage = reply.usage.unwrap_or_default();
        self.limits.settle(permit, if reply.usage.is_some() { u64::from(usage.total()) } else { estimated });
        if !reply.hints.is_empty() {
            self.limits.apply_hints(now, &reply.hints);
        }
        self.counters.ok += 1;
        self.counters.prompt_tokens += u64::from(usage.prompt_tokens);
        self.counters.completion_tokens += u64::from(usage.completion_tokens);
        self.consecutive_failures = 0;
        if self.concurrency < self.config.concurrency {
            self.success_streak += 1;
            if self.success_streak >= RECOVER_AFTER {
                self.success_streak = 0;
                self.concurrency += 1;
                self.report_state();
            }
        }
        tracing::debug!(event = "llm_call", upstream = %self.name, ok = true, latency_ms = latency.as_secs_f64() * 1000.0, tokens = usage.total());
        if self.log_payloads {
            tracing::debug!(event = "llm_reply", upstream = %self.name, text = %reply.text);
        }
        let model = match &call.model {
            Some(model) => Arc::from(model.as_str()),
            None => Arc::clone(&self.default_model),
        };
        match call.items {
            CallItems::One(item) => {
                self.release(ctx, &mut call.slot);
                let answer = self.answer(&item, reply.text, usage, Arc::clone(&model));
                item.finish(Ok(answer));
            }
            CallItems::Combined(items) => match combine::split(&reply.text, items.len()) {
                Ok(texts) => {
                    self.release(ctx, &mut call.slot);
                    let share = share_usage(usage, items.len());
                    for (item, text) in items.into_iter().zip(texts) {
                        let answer = self.answer(&item, text, share, Arc::clone(&model));
                        item.finish(Ok(answer));
                    }
                }
                Err(error) => {
                    tracing::warn!(event = "combined_split_failed", upstream = %self.name, items = items.len(), reason = %error);
                    let call = Call { items: CallItems::Combined(items), ..call };
                    for single in call.into_singles() {
                        self.mailbox.push(Instant::now(), single.rank, single);
                    }
                }
            },
        }
    }

    fn answer(&self, item: &Item, text: String, usage: Usage, model: Arc<str>) -> Answer {
        Answer {
            text,
            usage,
            upstream: Arc::clone(&self.name),
            model,
            batch_id: item.batch_id(),
            attempts: item.attempts,
            latency: item.accepted_at.elapsed(),
        }
    }

    /// Tells the pool when the rate windows next let a call of `tokens` start, if that changed.
    fn report_budget(&mut self, now: Instant, tokens: u64) {
        let budget = self.limits.blocked(now, tokens);
        let moved = match (self.budget, budget) {
            (None, None) => false,
            (Some((a, la)), Some((b, lb))) => la != lb || a.max(b) - a.min(b) > Duration::from_millis(250),
            _ => true,
        };
        if moved {
            self.budget = budget;
            self.report_state();
        }
    }

    fn report_state(&mut self) {
        let now = Instant::now();
        self.pool.do_send(ClientState {
            client: self.index,
            concurrency: self.concurrency,
            unavailable_until: self.blocked_until(now),
            budget: self.budget.filter(|(at, _)| *at > now),
        });
        let status = self.status(now);
        self.metrics.do_send(Publish(MetricsEvent::Upstream(status)));
    }

    fn status(&mut self, now: Instant) -> UpstreamStatus {
        let exhausted = self.limits.blocked(now, 1).filter(|(_, limit)| *limit == Limit::Rpd);
        let state = match (self.cooldown_until.filter(|t| *t > now), self.paused_until.filter(|t| *t > now)) {
            (Some(until), _) => UpstreamState::CoolingDown { for_ms: (until - now).as_millis() as u64 },
            (None, Some(until)) => UpstreamState::BackingOff { for_ms: (until - now).as_millis() as u64 },
            (None, None) => match exhausted {
                Some((until, limit)) => UpstreamState::Exhausted {
                    for_ms: (until - now).as_millis() as u64,
                    until: std::time::SystemTime::now() + (until - now),
                    limit,
                },
                None => UpstreamState::Ok,
            },
        };
        let c = &self.counters;
        UpstreamStatus {
            name: Arc::clone(&self.name),
            state,
            in_flight: self.running,
            queued: self.mailbox.len(),
            concurrency: self.concurrency,
            limits: self.limits.snapshot(now),
            calls: c.calls,
            ok: c.ok,
            failed: c.failed,
            retries: c.retries,
            duplicate_risk: c.duplicate_risk,
            rate_limited: c.rate_limited,
            backpressure: c.backpressure,
            prompt_tokens: c.prompt_tokens,
            completion_tokens: c.completion_tokens,
            limit_waits: c.limit_waits,
            last_error: self.last_error.clone(),
        }
    }
}

/// A combined call's usage spread over its items (rounded up, so no item shows zero).
fn share_usage(usage: Usage, n: usize) -> Usage {
    let n = u32::try_from(n.max(1)).unwrap_or(u32::MAX);
    Usage {
        prompt_tokens: usage.prompt_tokens.div_ceil(n),
        completion_tokens: usage.completion_tokens.div_ceil(n),
    }
}

impl Actor for LlmClient {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.released > 0 {
            // Releases counted before a restart whose flush the restart cancelled.
            self.release_scheduled = true;
            ctx.notify(FlushReleased);
        }
        ctx.run_interval(STATUS_EVERY, |client, _| {
            let status = client.status(Instant::now());
            client.metrics.do_send(Publish(MetricsEvent::Upstream(status)));
        });
        self.pump(ctx);
    }
}

impl Supervised for LlmClient {
    fn restarting(&mut self, _: &mut Context<Self>) {
        // Timers were cancelled by the restart; `started` re-arms them. Waiting calls are
        // dropped: their items go home to their lanes (counting a requeue, so an item that
        // makes this client panic every time ends in an error instead of a restart loop) and
        // their slots go back to the pool.
        self.wake.fired();
        self.release_scheduled = false;
        #[cfg(feature = "fault-injection")]
        {
            self.panic_on_next_batch = false;
        }
        drop(self.mailbox.drain());
    }
}

/// Calls routed to this upstream by the pool.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Calls(pub Vec<Call>);

/// A started call ended.
#[derive(Message)]
#[rtype(result = "()")]
struct CallDone {
    call: Call,
    permit: Permit,
    result: Result<CallReply, ProviderError>,
    latency: Duration,
}

/// Tell the pool about calls finished since the last flush.
#[derive(Message)]
#[rtype(result = "()")]
struct FlushReleased;

/// Answer every waiting call with `error` (shutdown); returns the number of items.
#[derive(Message)]
#[rtype(result = "usize")]
pub(crate) struct FailWaiting(pub ItemError);

/// Take out the waiting calls' items of a withdrawn job (their origin is already marked);
/// returns how many items.
#[derive(Message)]
#[rtype(result = "usize")]
pub(crate) struct Withdraw(pub JobId);

impl Handler<Withdraw> for LlmClient {
    type Result = usize;
    fn handle(&mut self, msg: Withdraw, ctx: &mut Context<Self>) -> usize {
        let calls = self.mailbox.extract(|call| call.holds_job(&msg.0));
        let n = calls.into_iter().map(|call| self.settle_withdrawn(ctx, call)).sum();
        if n > 0 {
            tracing::debug!(event = "withdrawn", upstream = %self.name, job = %msg.0, count = n);
            self.pump(ctx);
        }
        n
    }
}

/// Use a new provider (same API, new key) for calls from now on; running calls finish on the old.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ReplaceProvider(pub Arc<dyn Provider>);

impl Handler<ReplaceProvider> for LlmClient {
    type Result = ();
    fn handle(&mut self, msg: ReplaceProvider, _: &mut Context<Self>) {
        self.provider = msg.0;
    }
}

/// Fault injection: panic while handling the next `Calls`.
#[derive(Message)]
#[rtype(result = "()")]
#[cfg(feature = "fault-injection")]
pub(crate) struct PanicOnNextBatch;

impl Handler<Calls> for LlmClient {
    type Result = ();
    fn handle(&mut self, msg: Calls, ctx: &mut Context<Self>) {
        #[cfg(feature = "fault-injection")]
        if self.panic_on_next_batch {
            self.panic_on_next_batch = false;
            panic!("fault injection: upstream client `{}` panics holding {} calls", self.name, msg.0.len());
        }
        let now = Instant::now();
        for call in msg.0 {
            self.mailbox.push(now, call.rank, call);
        }
        self.pump(ctx);
    }
}

impl Handler<CallDone> for LlmClient {
    type Result = ();
    fn handle(&mut self, msg: CallDone, ctx: &mut Context<Self>) {
        self.running = self.running.saturating_sub(1);
        match msg.result {
            Ok(reply) => self.on_success(ctx, msg.call, msg.permit, reply, msg.latency),
            Err(error) => self.on_error(ctx, msg.call, msg.permit, error),
        }
        self.pump(ctx);
    }
}

impl Handler<FlushReleased> for LlmClient {
    type Result = ();
    fn handle(&mut self, _: FlushReleased, _: &mut Context<Self>) {
        self.release_scheduled = false;
        let calls = std::mem::take(&mut self.released);
        if calls > 0 {
            self.pool.do_send(Released { client: self.index, calls });
        }
    }
}

impl Handler<FailWaiting> for LlmClient {
    type Result = usize;
    fn handle(&mut self, msg: FailWaiting, _: &mut Context<Self>) -> usize {
        self.fail_waiting(msg.0)
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<PanicOnNextBatch> for LlmClient {
    type Result = ();
    fn handle(&mut self, _: PanicOnNextBatch, _: &mut Context<Self>) {
        self.panic_on_next_batch = true;
    }
}
