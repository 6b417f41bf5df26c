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

use super::call::{Call, CallItems, Sample, Slot};
use super::control::LanePatch;
use super::item::{Answer, Item, ItemError, Withdrawal};
use super::mailbox::Mailbox;
use super::metrics::{FidelityCount, MetricsEvent, MetricsHub, Publish, UpstreamState, UpstreamStatus};
use super::pool::{ClientPool, ClientState, Released};
use super::supervisor::{PatchLane, Supervisor};
use super::wake::Wake;
use crate::config::{Concurrency, FIDELITY_MIN_SAMPLES, LaneConfig, LowFidelity, Mode, UpstreamConfig};
use crate::core::batching::LowerShare;
use crate::core::fair::JobId;
use crate::core::limits::{AdaptiveLimit, Limit, Limits, Permit};
use crate::core::{combine, estimate};
use crate::providers::{CallReply, CallRequest, ChatMessage, Provider, ProviderError, Usage};

use estimate::DEFAULT_REPLY_TOKENS;
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
    combined_calls: u64,
    split_failures: u64,
    resent_alone: u64,
}

/// Engine-wide settings a client follows.
pub(crate) struct ClientOptions {
    /// Log prompt and reply text.
    pub log_payloads: bool,
    /// The share of starts a waiting lower lane gets (`[batching] lower_share`).
    pub share: LowerShare,
    /// Each lane, by index: its parameter defaults and fidelity sampling.
    pub lanes: Arc<[LaneInfo]>,
    /// Where a lane whose fidelity is too low asks for fanout.
    pub supervisor: Addr<Supervisor>,
}

/// What a client needs of a lane (as configured at start): the parameters it gives items that
/// set none, and how its combined answers are sampled for fidelity.
#[derive(Debug, Clone)]
pub(crate) struct LaneInfo {
    name: Arc<str>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<i64>,
    verify_share: f64,
    min_fidelity: f64,
    on_low_fidelity: LowFidelity,
}

impl LaneInfo {
    pub(crate) fn of(name: &str, lane: &LaneConfig) -> Self {
        Self {
            name: Arc::from(name),
            temperature: lane.temperature,
            top_p: lane.top_p,
            seed: lane.seed,
            verify_share: lane.verify_share,
            min_fidelity: lane.min_fidelity,
            on_low_fidelity: lane.on_low_fidelity,
        }
    }
}

/// Fidelity samples of one lane and model.
#[derive(Default)]
struct Fidelity {
    /// Every sample, for the metrics.
    agreed: u64,
    samples: u64,
    /// The samples the next verdict judges: those of items accepted after the last one.
    round_agreed: u64,
    round_samples: u64,
    /// When it last fell under the lane's `min_fidelity`.
    low_since: Option<Instant>,
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
    /// With `concurrency = "auto"`: the limit that sets `concurrency`.
    limiter: Option<AdaptiveLimit>,
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
    lanes: Arc<[LaneInfo]>,
    supervisor: Addr<Supervisor>,
    fidelity: std::collections::BTreeMap<(usize, Arc<str>), Fidelity>,
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
            limiter: config
                .concurrency
                .is_auto()
                .then(|| AdaptiveLimit::new(Concurrency::AUTO_START, 1, Concurrency::AUTO_MAX)),
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
            lanes: options.lanes,
            supervisor: options.supervisor,
            fidelity: std::collections::BTreeMap::new(),
            config,
        }
    }

    fn request_for(&self, call: &Call) -> CallRequest {
        let (messages, combined_format): (Vec<ChatMessage>, _) = match &call.items {
            CallItems::One(item) => (item.prompt.messages.clone(), None),
            CallItems::Combined(items) => {
                let prompts: Vec<&str> = items.iter().map(|i| i.prompt.last_user_text()).collect();
                // The reply's schema, the way this upstream takes one (none: the prompt only).
                (
                    combine::build(&prompts),
                    combine::response_format(self.config.structured_output, items.len()),
                )
            }
        };
        // A combined call packs only items whose parameters agree, so the first speaks for all.
        let first_item = match &call.items {
            CallItems::One(item) => Some(item),
            CallItems::Combined(items) => items.first(),
        };
        let first = first_item.map(|i| &i.prompt);
        // The lane's defaults for what the item leaves unset.
        let lane = first_item.and_then(|i| self.lanes.get(i.lane));
        CallRequest {
            model: call.model.clone().unwrap_or_else(|| self.default_model.to_string()),
            messages,
            max_tokens: call.max_tokens,
            temperature: first.and_then(|p| p.temperature).or(lane.and_then(|l| l.temperature)),
            top_p: first.and_then(|p| p.top_p).or(lane.and_then(|l| l.top_p)),
            stop: first.map(|p| p.stop.clone()).unwrap_or_default(),
            seed: first.and_then(|p| p.seed).or(lane.and_then(|l| l.seed)),
            // Combined items have no format of their own (they would not be combinable).
            response_format: combined_format.or_else(|| first.and_then(|p| p.response_format.clone())),
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
            CallItems::Combined(items) => {
                self.counters.combined_calls += 1;
                items.iter_mut().for_each(|item| item.attempts += 1);
            }
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
        // A fixed setting lowered by 503s comes back step by step; `auto` has its own limit.
        if self.limiter.is_none() && self.concurrency < self.config.concurrency.ceiling() {
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
        let verify = call.verify.take();
        match call.items {
            CallItems::One(item) => {
                self.release(ctx, &mut call.slot);
                if let Some(sample) = verify {
                    // A fidelity sample: the answer alone is the one the item gets.
                    let agreed = combine::agrees(&sample.combined, &reply.text);
                    self.record_fidelity(&item, &model, agreed);
                }
                let answer = self.answer(&item, reply.text, usage, Arc::clone(&model));
                item.finish(Ok(answer));
            }
            CallItems::Combined(items) => {
                let n = items.len();
                let (answers, reason) = match combine::split(&reply.text, n) {
                    Ok(split) => {
                        let reason = format!(
                            "{} id(s) missing, {} answered twice, {} unknown",
                            split.missing, split.duplicated, split.unknown
                        );
                        (split.answers, reason)
                    }
                    Err(error) => (vec![None; n], error.to_string()),
                };
                // The call's usage is shared by the items it answered; the rest get their own.
                let answered = answers.iter().filter(|a| a.is_some()).count();
                let mut shares = share_usage(usage, answered).into_iter();
                // Nothing could be read: the first item sent alone carries the call's tokens.
                let mut unread = (answered == 0).then_some(usage);
                // Items to send alone: unanswered ones, and fidelity samples with the combined
                // answer to compare.
                let mut alone: Vec<(Item, Option<Sample>)> = Vec::new();
                let mut unanswered = 0;
                for (item, answer) in items.into_iter().zip(answers) {
                    let verify_share = self.lanes.get(item.lane).map_or(0.0, |l| l.verify_share);
                    match answer {
                        Some(text) if verify_share > 0.0 && self.sample(&item, &model, verify_share) => {
                            // It pays for both calls: its share of this one goes with it.
                            let mut item = item;
                            item.spent = item.spent.plus(shares.next().unwrap_or_default());
                            let (upstream, model) = (Arc::clone(&self.name), Arc::clone(&model));
                            alone.push((item, Some(Sample { combined: text, upstream, model })))
                        }
                        Some(text) => {
                            let share = shares.next().unwrap_or_default();
                            let answer = self.answer(&item, text, share, Arc::clone(&model));
                            item.finish(Ok(answer));
                        }
                        None => {
                            unanswered += 1;
                            let mut item = item;
                            if let Some(usage) = unread.take() {
                                item.spent = item.spent.plus(usage);
                            }
                            alone.push((item, None));
                        }
                    }
                }
                if unanswered > 0 {
                    self.counters.split_failures += 1;
                    self.counters.resent_alone += unanswered as u64;
                    tracing::warn!(event = "combined_split_failed", upstream = %self.name, items = n, resent = unanswered, reason = %reason, "sending the unanswered items alone");
                }
                if alone.is_empty() {
                    self.release(ctx, &mut call.slot);
                } else {
                    let (items, verify): (Vec<Item>, Vec<Option<Sample>>) = alone.into_iter().unzip();
                    let call = Call { items: CallItems::Combined(items), ..call };
                    for (mut single, verify) in call.into_singles().into_iter().zip(verify) {
                        single.verify = verify;
                        self.mailbox.push(Instant::now(), single.rank, single);
                    }
                }
            }
        }
    }

    /// With `auto`: feeds the call's outcome to the limit and follows it. Answers count with
    /// their latency; 429, 503 and timeouts count as drops; other failures say nothing about load.
    fn adapt(&mut self, result: &Result<CallReply, ProviderError>, latency: Duration) {
        let in_flight = self.running;
        let Some(limiter) = &mut self.limiter else { return };
        let changed = match result {
            Ok(_) => limiter.on_answer(latency, in_flight),
            Err(
                ProviderError::RateLimited { .. } | ProviderError::Overloaded { .. } | ProviderError::Timeout,
            ) => limiter.on_drop(in_flight),
            Err(_) => {
                limiter.on_other();
                false
            }
        };
        if changed {
            let (from, to) = (self.concurrency, limiter.limit());
            self.concurrency = to;
            let level = if to < from { "lowered" } else { "raised" };
            tracing::debug!(event = "concurrency_changed", upstream = %self.name, from, to, change = level);
            self.report_state();
        }
    }

    /// Whether to check `item`'s combined answer from `model` by asking it alone (the item then
    /// gets the answer alone): every one until [`FIDELITY_MIN_SAMPLES`] comparisons are in, so a
    /// lane that answers badly combined is found within its first few calls and no item keeps a
    /// combined answer before the verdict; every item accepted before its lane was found low and
    /// switched to fanout (the combined calls already formed then); else a `share`. Items of a
    /// lane set back to combined afterwards are checked at the share again.
    fn sample(&mut self, item: &Item, model: &Arc<str>, share: f64) -> bool {
        let switching = self.lanes.get(item.lane).is_some_and(|l| l.on_low_fidelity == LowFidelity::Fanout);
        let entry = self.fidelity.entry((item.lane, Arc::clone(model))).or_default();
        let formed_before_switch = switching && entry.low_since.is_some_and(|t| item.accepted_at < t);
        entry.samples < FIDELITY_MIN_SAMPLES || formed_before_switch || fastrand::f64() < share
    }

    /// Counts a fidelity sample of `item`'s lane and `model`; once enough samples agree too
    /// rarely, warns and, with `on_low_fidelity = "fanout"`, asks the supervisor to switch the lane
    /// to fanout. A verdict starts a new round: samples of items accepted before it count in the
    /// totals only, so a lane that stays low (`warn`, or set back to combined by hand) is judged
    /// again on new items, at most once per [`FIDELITY_MIN_SAMPLES`] of them.
    fn record_fidelity(&mut self, item: &Item, model: &Arc<str>, agreed: bool) {
        let entry = self.fidelity.entry((item.lane, Arc::clone(model))).or_default();
        entry.samples += 1;
        entry.agreed += u64::from(agreed);
        let Some(info) = self.lanes.get(item.lane) else { return };
        tracing::debug!(event = "fidelity_sample", upstream = %self.name, lane = %info.name, model = %model, agreed);
        if entry.low_since.is_some_and(|t| item.accepted_at < t) {
            return;
        }
        entry.round_samples += 1;
        entry.round_agreed += u64::from(agreed);
        let (samples, right) = (entry.round_samples, entry.round_agreed);
        if !combine::fidelity_low(info.min_fidelity, samples, right, FIDELITY_MIN_SAMPLES) {
            return;
        }
        entry.low_since = Some(Instant::now());
        entry.round_samples = 0;
        entry.round_agreed = 0;
        tracing::warn!(
            event = "low_fidelity",
            upstream = %self.name,
            lane = %info.name,
            model = %model,
            agreed = right,
            samples,
            min_fidelity = info.min_fidelity,
            action = info.on_low_fidelity.name(),
            "combined answers agree with the answers alone too rarely"
        );
        if info.on_low_fidelity == LowFidelity::Fanout {
            let patch = LanePatch { mode: Some(Mode::Fanout), ..LanePatch::default() };
            self.supervisor.do_send(PatchLane(info.name.to_string(), patch));
        }
    }

    fn answer(&self, item: &Item, text: String, usage: Usage, model: Arc<str>) -> Answer {
        item.answer(text, usage, Arc::clone(&self.name), model)
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
            concurrency_auto: self.limiter.is_some(),
            combined_calls: c.combined_calls,
            split_failures: c.split_failures,
            resent_alone: c.resent_alone,
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
            fidelity: self
                .fidelity
                .iter()
                .map(|((lane, model), f)| FidelityCount {
                    lane: self.lanes.get(*lane).map_or_else(|| Arc::from("?"), |l| Arc::clone(&l.name)),
                    model: Arc::clone(model),
                    agreed: f.agreed,
                    samples: f.samples,
                })
                .collect(),
        }
    }
}

/// A combined call's usage spread over the `n` items it answered, so the shares add up to the
/// call's usage: each gets the even part, and the first items one token more of the remainder.
fn share_usage(usage: Usage, n: usize) -> Vec<Usage> {
    let Ok(count) = u32::try_from(n) else { return vec![Usage::default(); n] };
    if count == 0 {
        return Vec::new();
    }
    let part = |total: u32, i: u32| total / count + u32::from(i < total % count);
    (0..count)
        .map(|i| Usage {
            prompt_tokens: part(usage.prompt_tokens, i),
            completion_tokens: part(usage.completion_tokens, i),
        })
        .collect()
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
        self.adapt(&msg.result, msg.latency);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MockConfig, StructuredOutput};
    use crate::engine::item::{Origin, Prompt, Reply, Shared};
    use crate::providers::mock::MockProvider;

    fn client(upstream: UpstreamConfig, lane: LaneConfig) -> LlmClient {
        let (_, stop) = watch::channel(false);
        LlmClient::new(
            0,
            upstream,
            Arc::new(MockProvider::new(MockConfig::default())),
            Context::<ClientPool>::new().address(),
            Context::<MetricsHub>::new().address(),
            stop,
            ClientOptions {
                log_payloads: false,
                share: LowerShare::new(0.1),
                lanes: vec![LaneInfo::of("test", &lane)].into(),
                supervisor: Context::<Supervisor>::new().address(),
            },
        )
    }

    fn items(prompts: Vec<Prompt>) -> Vec<Item> {
        let (home, _) = tokio::sync::mpsc::unbounded_channel();
        let shared = Shared::new(home);
        prompts
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let origin = Origin::new(Origin::LOCAL, "test");
                Item::new(i as u64, 0, &origin, p, Reply::One(tokio::sync::oneshot::channel().0), &shared)
            })
            .collect()
    }

    #[actix_rt::test]
    async fn lane_parameters_fill_what_an_item_leaves_unset() {
        let lane =
            LaneConfig { temperature: Some(0.0), top_p: Some(0.9), seed: Some(7), ..LaneConfig::default() };
        let client = client(UpstreamConfig::mock("m"), lane);
        let mut own = Prompt::text("b");
        own.temperature = Some(1.0);
        let mut batch = items(vec![Prompt::text("a"), own]).into_iter();
        let plain = Call::new(CallItems::One(batch.next().expect("a")), 1, None, None);
        let request = client.request_for(&plain);
        assert_eq!((request.temperature, request.top_p, request.seed), (Some(0.0), Some(0.9), Some(7)));
        let own = Call::new(CallItems::One(batch.next().expect("b")), 1, None, None);
        assert_eq!(client.request_for(&own).temperature, Some(1.0), "the item's own wins");
    }

    #[actix_rt::test]
    async fn a_combined_call_sends_its_schema_as_the_upstream_takes_it() {
        for (style, kind) in [
            (StructuredOutput::JsonSchema, Some("json_schema")),
            (StructuredOutput::JsonObjectSchema, Some("json_object")),
            (StructuredOutput::None, None),
        ] {
            let client = client(
                UpstreamConfig { structured_output: style, ..UpstreamConfig::mock("m") },
                LaneConfig::default(),
            );
            let call = Call::new(
                CallItems::Combined(items(vec![Prompt::text("a"), Prompt::text("b")])),
                1,
                None,
                Some(32),
            );
            let request = client.request_for(&call);
            assert_eq!(request.response_format.as_ref().and_then(|f| f["type"].as_str()), kind, "{style}");
            assert_eq!(request.response_format, combine::response_format(style, 2), "{style}");
            assert_eq!(combine::parse_request(&request.messages).map(|p| p.len()), Some(2));
            // The combined budget is the items' (32 each, the lane's); alone again, each gets its own.
            assert_eq!(call.max_tokens, Some(64));
            for single in call.into_singles() {
                assert_eq!(single.max_tokens, Some(32));
            }
        }
    }

    #[test]
    fn usage_shares_add_up_to_the_call() {
        let usage = Usage { prompt_tokens: 10, completion_tokens: 7 };
        let shares = share_usage(usage, 3);
        assert_eq!(shares.iter().map(|u| u.prompt_tokens).collect::<Vec<_>>(), [4, 3, 3]);
        assert_eq!(shares.iter().map(|u| u.completion_tokens).collect::<Vec<_>>(), [3, 2, 2]);
        assert_eq!(share_usage(usage, 1), vec![usage]);
        assert!(share_usage(usage, 0).is_empty());
    }
}
