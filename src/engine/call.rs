//! A call: what one upstream request answers (one item, or a combined batch), with the retry
//! bookkeeping that travels with it between the pool and the upstream clients.

use super::item::{Item, ItemError};

/// The items one upstream call answers.
pub(crate) enum CallItems {
    /// One item, one call.
    One(Item),
    /// Several items packed into one combined call.
    Combined(Vec<Item>),
}

/// One upstream call to make, with its retry bookkeeping.
pub(crate) struct Call {
    pub items: CallItems,
    pub rank: u32,
    /// Model asked for; None: the upstream's default.
    pub model: Option<String>,
    pub max_tokens: Option<u32>,
    pub retries: u32,
    pub rate_limited: u32,
    /// Bit i set: upstream i failed this call.
    pub tried: u64,
    pub last_error: Option<Box<ItemError>>,
    /// Whether this call counts against the pool's view of this client's load.
    pub holds_slot: bool,
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
            tried: 0,
            last_error: None,
            holds_slot: false,
        }
    }

    /// The call's items answered one by one, each a call of its own; the first keeps the slot.
    pub(crate) fn into_singles(self) -> Vec<Call> {
        let items = match self.items {
            CallItems::One(item) => vec![item],
            CallItems::Combined(items) => items,
        };
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| Call {
                items: CallItems::One(item),
                rank: self.rank,
                model: self.model.clone(),
                max_tokens: self.max_tokens,
                retries: 0,
                rate_limited: 0,
                tried: self.tried,
                last_error: self.last_error.clone(),
                holds_slot: self.holds_slot && i == 0,
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
