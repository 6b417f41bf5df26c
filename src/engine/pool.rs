//! ClientPool: routes calls to the upstream clients.
//!
//! For each call it picks a client whose upstream serves the model and can send it soonest —
//! given its rate windows (as the client last reported them), a 429 pause or a cooldown — least
//! loaded first among those that can send now, and never one that already failed the call. A
//! call whose deadline comes before any upstream could send it fails at once, naming the limit
//! in the way. It turns a batch into calls — one per item in fanout mode, one per
//! model group in combined mode — and reports its free call slots to the BatchFormer, which
//! releases batches only as fast as the clients can take them.

use actix::prelude::*;
use tokio::time::Instant;

use super::batch::Batch;
use super::batch_former::{BatchFormer, Capacity};
use super::call::{Call, CallItems, Slot};
use super::client::{Calls, LlmClient};
use super::item::{Item, ItemError};
use crate::config::{Mode, UpstreamConfig};
use crate::core::limits::Limit;

struct ClientSlot {
    addr: Addr<LlmClient>,
    config: UpstreamConfig,
    concurrency: usize,
    /// Calls routed to it and not yet released.
    assigned: usize,
    unavailable_until: Option<Instant>,
    /// When its rate windows next let a call start (if not now), and the limit in the way.
    budget: Option<(Instant, Limit)>,
}

impl ClientSlot {
    fn available(&self, now: Instant) -> bool {
        self.unavailable_until.is_none_or(|t| t <= now)
    }

    fn free(&self) -> usize {
        self.concurrency.saturating_sub(self.assigned)
    }

    /// The soonest it could start a call: now, or when its pause or rate window ends.
    fn start_at(&self, now: Instant) -> Instant {
        let budget = self.budget.map(|(at, _)| at);
        [Some(now), self.unavailable_until, budget].into_iter().flatten().max().unwrap_or(now)
    }

    /// What holds it back at `now`, in words.
    fn held_by(&self, now: Instant) -> String {
        let start = self.start_at(now);
        let wall = std::time::SystemTime::now() + start.saturating_duration_since(now);
        let until = time::OffsetDateTime::from(wall)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        match self.budget {
            Some((at, limit)) if at >= start => {
                format!("upstream `{}` has spent its {limit} until {until}", self.config.name)
            }
            _ => format!("upstream `{}` is paused until {until}", self.config.name),
        }
    }
}

/// The pool actor.
pub struct ClientPool {
    clients: Vec<ClientSlot>,
    former: Addr<BatchFormer>,
    report_scheduled: bool,
    #[cfg(feature = "fault-injection")]
    panic_on_next_batch: bool,
}

impl ClientPool {
    pub(crate) fn new(former: Addr<BatchFormer>) -> Self {
        Self {
            clients: Vec::new(),
            former,
            report_scheduled: false,
            #[cfg(feature = "fault-injection")]
            panic_on_next_batch: false,
        }
    }

    /// The client for a call of `model` that upstreams in `tried` already failed, or None if no
    /// other upstream serves the model: the one that can start it soonest, then the least loaded.
    fn route(&self, model: Option<&str>, tried: u64, now: Instant) -> Option<usize> {
        let candidates =
            self.clients.iter().enumerate().filter(|(i, slot)| {
                tried & (1 << (i % 64)) == 0 && model.is_none_or(|m| slot.config.serves(m))
            });
        let mut best: Option<(usize, (Instant, u128))> = None;
        for (i, slot) in candidates {
            // The lowest load as assigned/concurrency, compared as an integer ratio.
            let load = (slot.assigned as u128) * 1_000_000 / (slot.concurrency.max(1) as u128);
            let key = (slot.start_at(now), load);
            if best.as_ref().is_none_or(|(_, k)| key < *k) {
                best = Some((i, key));
            }
        }
        best.map(|(i, _)| i)
    }

    /// Routes `calls`, grouping them per client so each client gets one message. Calls all
    /// routed to one client (one upstream: the usual case) go in the vector they came in.
    fn send_calls(&mut self, ctx: &mut Context<Self>, mut calls: Vec<Call>, offered_by: Option<usize>) {
        let now = Instant::now();
        let pool = ctx.address();
        // Calls that go nowhere, by index, with why; the others hold a slot on their client.
        let mut failed: Vec<(usize, ItemError)> = Vec::new();
        let (mut first, mut mixed) = (None, false);
        for (index, call) in calls.iter_mut().enumerate() {
            let target = match offered_by {
                // A client that cannot send soon (cooling down, or waiting for its rate windows)
                // offers its waiting calls: another upstream takes them if it can send them
                // sooner, else they go back.
                Some(from) => {
                    let other = self.route(call.model.as_deref(), call.tried | (1 << (from % 64)), now);
                    match (other, self.clients.get(from)) {
                        (Some(i), Some(back)) if self.clients[i].start_at(now) < back.start_at(now) => {
                            Some(i)
                        }
                        (_, Some(_)) => Some(from),
                        (other, None) => other,
                    }
                }
                None => self.route(call.model.as_deref(), call.tried, now),
            };
            // Nobody waits for an answer that cannot start before the deadline.
            if let (Some(i), Some(deadline)) = (target, call.deadline())
                && self.clients[i].start_at(now) > deadline
            {
                let slot = &self.clients[i];
                let retry_after_s = slot.start_at(now).saturating_duration_since(now).as_secs();
                let limit = slot.held_by(now);
                tracing::debug!(event = "over_budget", upstream = %slot.config.name, limit = %limit);
                failed.push((index, ItemError::OverBudget { limit, retry_after_s }));
                continue;
            }
            match target {
                Some(i) => {
                    call.slot = Slot::held(pool.clone(), i);
                    self.clients[i].assigned += 1;
                    mixed |= *first.get_or_insert(i) != i;
                }
                None => {
                    let error = call.last_error.take().map(|e| *e).unwrap_or_else(|| ItemError::NoUpstream {
                        model: call.model.clone().unwrap_or_else(|| "(default)".into()),
                    });
                    failed.push((index, error));
                }
            }
        }
        match first {
            Some(i) if failed.is_empty() && !mixed => self.clients[i].addr.do_send(Calls(calls)),
            _ => self.send_grouped(calls, failed),
        }
        self.schedule_report(ctx);
    }

    /// Sends routed `calls` to their clients, one message each, and answers the `failed` ones
    /// (by index, in order) with their errors.
    fn send_grouped(&mut self, calls: Vec<Call>, failed: Vec<(usize, ItemError)>) {
        let mut per_client: Vec<Vec<Call>> = (0..self.clients.len()).map(|_| Vec::new()).collect();
        let mut failed = failed.into_iter().peekable();
        for (index, call) in calls.into_iter().enumerate() {
            if let Some((_, error)) = failed.next_if(|(at, _)| *at == index) {
                call.fail(error);
                continue;
            }
            match call.slot.client().and_then(|i| per_client.get_mut(i)) {
                Some(group) => group.push(call),
                None => {
                    // Every call not failed holds a slot; were one not to, it is answered, not lost.
                    let model = call.model.clone().unwrap_or_else(|| "(default)".into());
                    call.fail(ItemError::NoUpstream { model });
                }
            }
        }
        for (i, calls) in per_client.into_iter().enumerate() {
            if !calls.is_empty() {
                self.clients[i].addr.do_send(Calls(calls));
            }
        }
    }

    fn schedule_report(&mut self, ctx: &mut Context<Self>) {
        if !self.report_scheduled {
            self.report_scheduled = true;
            ctx.notify(ReportCapacity);
        }
    }

    /// Free call slots, and all slots, of the clients that can take calls now.
    fn capacity(&self) -> Capacity {
        let now = Instant::now();
        let available = || self.clients.iter().filter(|c| c.available(now));
        Capacity {
            free: available().map(ClientSlot::free).sum(),
            total: available().map(|c| c.concurrency).sum(),
        }
    }
}

/// Turns a batch into upstream calls. A combined batch becomes one call per group of items
/// that share an owner and ask the same way (model and sampling parameters); items that are
/// whole conversations or set their own reply format go alone.
fn calls_for(batch: Batch) -> Vec<Call> {
    let Batch { mode, rank, model, max_tokens, mix_owners, items } = batch;
    let call_of = |items: CallItems, prompt_model: Option<String>| {
        Call::new(items, rank, prompt_model.or_else(|| model.clone()), max_tokens)
    };
    match mode {
        Mode::Fanout => items
            .into_iter()
            .map(|item| {
                let m = item.prompt.model.clone();
                call_of(CallItems::One(item), m)
            })
            .collect(),
        Mode::Combined => {
            let mut calls = Vec::new();
            let mut groups: Vec<Vec<Item>> = Vec::new();
            for item in items {
                if !item.prompt.combinable() {
                    let m = item.prompt.model.clone();
                    calls.push(call_of(CallItems::One(item), m));
                    continue;
                }
                let fits = |group: &Vec<Item>| {
                    group.first().is_some_and(|first| {
                        (mix_owners || first.origin.owner == item.origin.owner)
                            && first.prompt.same_parameters(&item.prompt)
                    })
                };
                match groups.iter_mut().find(|group| fits(group)) {
                    Some(group) => group.push(item),
                    None => groups.push(vec![item]),
                }
            }
            for mut group in groups {
                let group_model = group.first().and_then(|item| item.prompt.model.clone());
                let items = match group.len() {
                    1 => CallItems::One(group.remove(0)),
                    _ => CallItems::Combined(group),
                };
                calls.push(call_of(items, group_model));
            }
            calls
        }
    }
}

impl Actor for ClientPool {
    type Context = Context<Self>;
}

impl Supervised for ClientPool {
    fn restarting(&mut self, ctx: &mut Context<Self>) {
        #[cfg(feature = "fault-injection")]
        {
            self.panic_on_next_batch = false;
        }
        self.report_scheduled = false;
        self.schedule_report(ctx);
        // The restart cancelled the timers that report a paused client's slots coming back.
        let now = Instant::now();
        for until in self.clients.iter().filter_map(|c| c.unavailable_until).filter(|t| *t > now) {
            ctx.run_later(until - now, |pool, ctx| pool.schedule_report(ctx));
        }
    }
}

/// Register the upstream clients, in index order (sent once at start).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct AddClients(pub Vec<(Addr<LlmClient>, UpstreamConfig)>);

/// A batch released by a lane.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Dispatch(pub Batch);

/// Calls a client finished (or gave back) since its last report.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Released {
    pub client: usize,
    pub calls: usize,
}

/// A client's effective concurrency and when it can take calls again.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ClientState {
    pub client: usize,
    pub concurrency: usize,
    pub unavailable_until: Option<Instant>,
    /// When its rate windows next let a call start, and the limit in the way (None: now).
    pub budget: Option<(Instant, Limit)>,
}

/// Calls a client cannot finish: `final_failure` — it failed them, try another upstream or
/// report the error; otherwise it is cooling down, so offer them elsewhere first.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Reroute {
    pub from: usize,
    pub calls: Vec<Call>,
    pub final_failure: bool,
}

/// Send the free slot count to the former (coalesced).
#[derive(Message)]
#[rtype(result = "()")]
struct ReportCapacity;

/// Fault injection: panic while handling the next `Dispatch`.
#[derive(Message)]
#[rtype(result = "()")]
#[cfg(feature = "fault-injection")]
pub(crate) struct PanicOnNextBatch;

impl Handler<AddClients> for ClientPool {
    type Result = ();
    fn handle(&mut self, msg: AddClients, ctx: &mut Context<Self>) {
        self.clients = msg
            .0
            .into_iter()
            .map(|(addr, config)| ClientSlot {
                addr,
                concurrency: config.concurrency.max(1),
                config,
                assigned: 0,
                unavailable_until: None,
                budget: None,
            })
            .collect();
        self.schedule_report(ctx);
    }
}

impl Handler<Dispatch> for ClientPool {
    type Result = ();
    fn handle(&mut self, msg: Dispatch, ctx: &mut Context<Self>) {
        #[cfg(feature = "fault-injection")]
        if self.panic_on_next_batch {
            self.panic_on_next_batch = false;
            panic!("fault injection: pool panics holding a batch of {}", msg.0.items.len());
        }
        let calls = calls_for(msg.0);
        self.send_calls(ctx, calls, None);
    }
}

impl Handler<Released> for ClientPool {
    type Result = ();
    fn handle(&mut self, msg: Released, ctx: &mut Context<Self>) {
        if let Some(slot) = self.clients.get_mut(msg.client) {
            slot.assigned = slot.assigned.saturating_sub(msg.calls);
        }
        self.schedule_report(ctx);
    }
}

impl Handler<ClientState> for ClientPool {
    type Result = ();
    fn handle(&mut self, msg: ClientState, ctx: &mut Context<Self>) {
        if let Some(slot) = self.clients.get_mut(msg.client) {
            slot.concurrency = msg.concurrency.max(1);
            slot.unavailable_until = msg.unavailable_until;
            slot.budget = msg.budget;
            if let Some(until) = msg.unavailable_until {
                // Its slots come back when the pause ends; tell the former then.
                ctx.run_later(until.saturating_duration_since(Instant::now()), |pool, ctx| {
                    pool.schedule_report(ctx)
                });
            }
        }
        self.schedule_report(ctx);
    }
}

impl Handler<Reroute> for ClientPool {
    type Result = ();
    fn handle(&mut self, msg: Reroute, ctx: &mut Context<Self>) {
        let offered_by = if msg.final_failure { None } else { Some(msg.from) };
        self.send_calls(ctx, msg.calls, offered_by);
    }
}

impl Handler<ReportCapacity> for ClientPool {
    type Result = ();
    fn handle(&mut self, _: ReportCapacity, _: &mut Context<Self>) {
        self.report_scheduled = false;
        self.former.do_send(self.capacity());
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<PanicOnNextBatch> for ClientPool {
    type Result = ();
    fn handle(&mut self, _: PanicOnNextBatch, _: &mut Context<Self>) {
        self.panic_on_next_batch = true;
    }
}
