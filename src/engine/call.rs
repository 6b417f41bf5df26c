//! A call: what one upstream request answers (one item, or a combined batch), with the retry
//! bookkeeping that travels with it between the pool and the upstream clients.

use actix::Addr;

use super::item::{Item, ItemError};
use super::pool::{ClientPool, Released};

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
    /// Reply budget.
    pub max_tokens: Option<u32>,
    /// Retryable failures on the current upstream.
    pub retries: u32,
    /// 429s received on the current upstream.
    pub rate_limited: u32,
    /// 503s received while already at concurrency 1.
    pub overloaded: u32,
    /// Bit i set: upstream i failed this call.
    pub tried: u64,
    /// The last upstream's error, reported if no upstream is left to try.
    pub last_error: Option<Box<ItemError>>,
    /// The pool slot it holds on the client it was routed to.
    pub slot: Slot,
    /// A fidelity sample: the answer a combined call gave this (single) item, to compare with
    /// the answer alone.
    pub verify: Option<String>,
}

impl Call {
    pub(crate) fn new(items: CallItems, rank: u32, model: Option<String>, max_tokens: Option<u32>) -> Self {
        Self {
            items,
            rank,
            model,
            max_tokens,
            retries: 0,
            rate_limited: 0,
            overloaded: 0,
            tried: 0,
            last_error: None,
            slot: Slot::none(),
            verify: None,
        }
    }

    /// The call's items answered one by one, each a call of its own; the first keeps the slot.
    pub(crate) fn into_singles(self) -> Vec<Call> {
        let Call { items, rank, model, max_tokens, tried, last_error, slot, .. } = self;
        let items = match items {
            CallItems::One(item) => vec![item],
            CallItems::Combined(items) => items,
        };
        // A combined call's budget is the per-item budget times its items (see the pool); each
        // item alone gets its own again, or its share.
        let n = u32::try_from(items.len().max(1)).unwrap_or(u32::MAX);
        let mut slot = Some(slot);
        items
            .into_iter()
            .map(|item| Call {
                max_tokens: item.prompt.max_tokens.or(max_tokens.map(|t| (t / n).max(1))),
                items: CallItems::One(item),
                rank,
                model: model.clone(),
                retries: 0,
                rate_limited: 0,
                overloaded: 0,
                tried,
                last_error: last_error.clone(),
                slot: slot.take().unwrap_or_else(Slot::none),
                verify: None,
            })
            .collect()
    }

    /// Fails every item of the call with `error`.
    pub(crate) fn fail(self, error: ItemError) {
        match self.items {
            CallItems::One(item) => item.finish(Err(error)),
            CallItems::Combined(items) => items.into_iter().for_each(|item| item.finish(Err(error.clone()))),
        }
    }
}
