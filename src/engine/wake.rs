//! One wake-up timer per actor, armed for the earliest instant anything becomes possible.
//!
//! The former waits for the next lane window to close; a client waits for its pause to end, a
//! rate window to open or a backoff to expire. Both keep a single timer: arming for a later
//! instant than the one pending changes nothing, arming for an earlier one replaces it.

use actix::prelude::*;
use tokio::time::Instant;

/// A pending wake-up.
#[derive(Default)]
pub(crate) struct Wake(Option<(Instant, SpawnHandle)>);

impl Wake {
    /// Runs `then` at `at`, unless a wake-up at or before `at` is already pending. `then` must
    /// call [`fired`](Self::fired) first.
    pub(crate) fn arm<A>(
        &mut self,
        ctx: &mut Context<A>,
        at: Instant,
        now: Instant,
        then: fn(&mut A, &mut Context<A>),
    ) where
        A: Actor<Context = Context<A>>,
    {
        if let Some((pending, handle)) = self.0 {
            if pending <= at {
                return;
            }
            ctx.cancel_future(handle);
        }
        let handle = ctx.run_later(at.saturating_duration_since(now), then);
        self.0 = Some((at, handle));
    }

    /// Whether no wake-up is pending.
    pub(crate) fn is_idle(&self) -> bool {
        self.0.is_none()
    }

    /// The wake-up ran.
    pub(crate) fn fired(&mut self) {
        self.0 = None;
    }

    /// Cancels the pending wake-up, if any.
    pub(crate) fn cancel<A>(&mut self, ctx: &mut Context<A>)
    where
        A: Actor<Context = Context<A>>,
    {
        if let Some((_, handle)) = self.0.take() {
            ctx.cancel_future(handle);
        }
    }
}
