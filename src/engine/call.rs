//! A call: what one upstream request answers (one item, or a combined batch), with the retry
//! bookkeeping that travels with it between the pool and the upstream clients.

use actix::Addr;

use std::sync::Arc;

use super::item::{Item, ItemError};
use super::pool::{ClientPool, Released};
use crate::providers::Usage;

/// A fidelity sample: the answer a combined call gave one item, to compare with its answer
/// alone, and who gave it. (Its share of the combined call's usage is in the item's `spent`.)
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub(crate) combined: String,
    pub(crate) upstream: Arc<str>,
    pub(crate) model: Arc<str>,
}

/// A pool slot a call holds on one client. The client gives it back explicitly (coalesced with
/// others); if the call is dropped instead — its holder panicked — the slot gives itself back,
/// so a pool that counts itself full cannot stay full.
pub(crate) struct Slot(Option<(Addr<ClientPool>, usize)>);

impl Slot {
    /// No slot.
    pub(crate) fn none() -> Self {
        Self(None)
    }

    /// A slot on `client` of `pool`.
    pub(crate) fn held(pool: Addr<ClientPool>, client: usize) -> Self {
        Self(Some((pool, client)))
    }

    /// The client the slot is on, if there is one.
    pub(crate) fn client(&self) -> Option<usize> {
        self.0.as_ref().map(|(_, client)| *client)
    }

    /// Takes the slot for an explicit release; true if there was one.
    pub(crate) fn take(&mut self) -> bool {
        self.0.take().is_some()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((pool, client)) = self.0.take() {
            pool.do_send(Released { client, calls: 1 });
        }
    }
}

/// The items one upstream call answers.
#[expect(
    clippy::large_enum_variant,
    reason = "a fanout call is the common case; boxing its item would cost an allocation per call"
)]
pub(crate) enum CallItems {
    /// One item, one call.
    One(Item),
    /// Several items packed into one combined call.
    Combined(Vec<Item>),
}

/// One upstream call to make, with its retry bookkeeping.
pub(crate) struct Call {
    /// What the call answers.
    pub items: CallItems,
    /// Rank of the lane it came from.
    pub rank: u32,
    /// Model asked for; None: the upstream's default.
    pub model: Option<String>,
    /// Reply budget: the item's own (else the lane's), for a combined call the sum of them.
    pub max_tokens: Option<u32>,
    /// The lane's per-item budget for items that set none.
    pub lane_max_tokens: Option<u32>,
    /// Retryable failures on the current upstream.
    pub retries: u32,
    /// 429s received on the current upstream.
    pub rate_limited: u32,
    /// 503s received while already at concurrency 1.
    pub overloaded: u32,
    /// Bit i set: upstream i failed this call.
    pub tried: u64,
    /// Bit i set: upstream i offered this call to the others while it waited for its rate
    /// windows (it does so once).
    pub offered: u64,
    /// The last upstream's error, reported if no upstream is left to try.
    pub last_error: Option<Box<ItemError>>,
    /// The pool slot it holds on the client it was routed to.
    pub slot: Slot,
    /// A fidelity sample: what a combined call gave this (single) item, to compare with the
    /// answer alone.
    pub(crate) verify: Option<Sample>,
}

impl Call {
    pub(crate) fn new(
        items: CallItems,
        rank: u32,
        model: Option<String>,
        lane_max_tokens: Option<u32>,
    ) -> Self {
        Self {
            max_tokens: budget(&items, lane_max_tokens),
            items,
            rank,
            model,
            lane_max_tokens,
            retries: 0,
            rate_limited: 0,
            overloaded: 0,
            tried: 0,
            offered: 0,
            last_error: None,
            slot: Slot::none(),
            verify: None,
        }
    }

    /// The same call with other items (of the same owner and parameters), its budget theirs.
    fn with_items(self, mut items: Vec<Item>) -> Call {
        let items = match items.len() {
            1 => CallItems::One(items.remove(0)),
            _ => CallItems::Combined(items),
        };
        Call { max_tokens: budget(&items, self.lane_max_tokens), items, ..self }
    }

    /// The call's items answered one by one, each a call of its own with its own budget; the
    /// first keeps the slot.
    pub(crate) fn into_singles(self) -> Vec<Call> {
        let Call { items, rank, model, lane_max_tokens, tried, offered, last_error, slot, .. } = self;
        let items = match items {
            CallItems::One(item) => vec![item],
            CallItems::Combined(items) => items,
        };
        let mut slot = Some(slot);
        items
            .into_iter()
            .map(|item| Call {
                max_tokens: item.prompt.max_tokens.or(lane_max_tokens),
                items: CallItems::One(item),
                rank,
                model: model.clone(),
                lane_max_tokens,
                retries: 0,
                rate_limited: 0,
                overloaded: 0,
                tried,
                offered,
                last_error: last_error.clone(),
                slot: slot.take().unwrap_or_else(Slot::none),
                verify: None,
            })
            .collect()
    }

    /// The soonest deadline of its items: after it, somebody's answer is no longer wanted.
    pub(crate) fn deadline(&self) -> Option<tokio::time::Instant> {
        match &self.items {
            CallItems::One(item) => item.origin.deadline,
            CallItems::Combined(items) => items.iter().filter_map(|item| item.origin.deadline).min(),
        }
    }

    /// Whether an item of the call belongs to a withdrawn job.
    pub(crate) fn has_withdrawn(&self) -> bool {
        match &self.items {
            CallItems::One(item) => item.withdrawn().is_some(),
            CallItems::Combined(items) => items.iter().any(|item| item.withdrawn().is_some()),
        }
    }

    /// Whether an item of the call is part of `job`.
    pub(crate) fn holds_job(&self, job: &str) -> bool {
        match &self.items {
            CallItems::One(item) => &*item.origin.job == job,
            CallItems::Combined(items) => items.iter().any(|item| &*item.origin.job == job),
        }
    }

    /// Splits off the items of withdrawn jobs: the call with what is left, or its slot when
    /// nothing is.
    pub(crate) fn without_withdrawn(self) -> (Result<Call, Slot>, Vec<Item>) {
        match self.items {
            CallItems::One(ref item) if item.withdrawn().is_none() => (Ok(self), Vec::new()),
            CallItems::One(item) => (Err(self.slot), vec![item]),
            CallItems::Combined(items) => {
                let (gone, kept): (Vec<Item>, Vec<Item>) =
                    items.into_iter().partition(|item| item.withdrawn().is_some());
                let call = Call { items: CallItems::Combined(Vec::new()), ..self };
                match kept.len() {
                    0 => (Err(call.slot), gone),
                    _ => (Ok(call.with_items(kept)), gone),
                }
            }
        }
    }

    /// Fails every item of the call with `error` — but a fidelity sample keeps its combined
    /// answer (shutdown, a budget it cannot start within, a failed call alone).
    pub(crate) fn fail(self, error: ItemError) {
        match self.items {
            CallItems::One(item) => match self.verify {
                Some(sample) => {
                    tracing::debug!(event = "fidelity_sample_failed", error = %error);
                    let answer =
                        item.answer(sample.combined, Usage::default(), sample.upstream, sample.model);
                    item.finish(Ok(answer));
                }
                None => item.finish(Err(error)),
            },
            CallItems::Combined(items) => items.into_iter().for_each(|item| item.finish(Err(error.clone()))),
        }
    }
}

/// The reply budget of a call: each item's own `max_tokens`, else the lane's; a combined call
/// gets their sum (none when an item has no budget at all).
fn budget(items: &CallItems, lane_max_tokens: Option<u32>) -> Option<u32> {
    let one = |item: &Item| item.prompt.max_tokens.or(lane_max_tokens);
    match items {
        CallItems::One(item) => one(item),
        CallItems::Combined(items) => {
            items.iter().try_fold(0u32, |sum, item| Some(sum.saturating_add(one(item)?)))
        }
    }
}
