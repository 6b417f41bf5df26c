//! Restart-on-panic for the engine's actors.
//!
//! actix's own `Supervisor` restarts an actor that *stops*; a panic in a handler instead unwinds
//! out of the actor's task and kills its mailbox, so every `Addr` to it goes dead. This wrapper
//! polls the actor's context under `catch_unwind` and, on a panic, restarts the actor in place
//! through [`Supervised::restarting`]: the mailbox and every `Addr` survive, queued messages are
//! still delivered, and each actor decides in `restarting` what state it keeps. The message being
//! handled when the panic hit is lost, but the items it carried are not: an [`Item`] dropped
//! unanswered sends itself home (see `item.rs`).
//!
//! Restarts are bounded: an actor that panics again after [`MAX_RESTARTS`] restarts within
//! [`RESTART_WINDOW`] is declared failed and stopped instead of restarted in a loop (a panic on a
//! message that carries no items would otherwise loop for ever). [`Health`] records it; the
//! engine then refuses new work, and `/health` and the console say which actor failed.
//!
//! [`Item`]: crate::engine::item::Item

use std::collections::VecDeque;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use actix::dev::ContextFut;
use actix::prelude::*;

use crate::engine::metrics::{MetricsEvent, MetricsHub, Publish};

/// Restarts an actor may have within [`RESTART_WINDOW`]; one more panic declares it failed.
pub const MAX_RESTARTS: usize = 5;
/// The window [`MAX_RESTARTS`] counts in.
pub const RESTART_WINDOW: Duration = Duration::from_secs(10);

/// The actors declared failed, shared by every actor's restart loop and the engine handle.
#[derive(Debug, Default)]
pub(crate) struct Health {
    failed: Mutex<Vec<String>>,
}

impl Health {
    /// The names of the actors declared failed, in the order they failed.
    pub(crate) fn failed(&self) -> Vec<String> {
        self.failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn declare_failed(&self, name: &str) {
        self.failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(name.to_string());
    }
}

/// Starts `actor` in `ctx` on the current arbiter, restarting it after a panic (within the
/// restart intensity; past it, the actor is stopped and recorded in `health`).
pub(crate) fn start<A>(
    ctx: Context<A>,
    actor: A,
    name: String,
    metrics: Option<Addr<MetricsHub>>,
    health: &Arc<Health>,
) -> Addr<A>
where
    A: Actor<Context = Context<A>> + Supervised,
{
    let addr = ctx.address();
    let health = Arc::clone(health);
    actix::spawn(Restarting {
        fut: ctx.into_future(actor),
        name,
        metrics,
        health,
        restarts: VecDeque::new(),
    });
    addr
}

struct Restarting<A: Actor<Context = Context<A>>> {
    fut: ContextFut<A, Context<A>>,
    name: String,
    metrics: Option<Addr<MetricsHub>>,
    health: Arc<Health>,
    /// When the restarts within the last [`RESTART_WINDOW`] happened.
    restarts: VecDeque<Instant>,
}

impl<A: Actor<Context = Context<A>>> Restarting<A> {
    /// Records a panic; true when the actor may restart, false when it is declared failed.
    fn may_restart(&mut self, now: Instant) -> bool {
        while self.restarts.front().is_some_and(|at| now.duration_since(*at) > RESTART_WINDOW) {
            self.restarts.pop_front();
        }
        if self.restarts.len() >= MAX_RESTARTS {
            return false;
        }
        self.restarts.push_back(now);
        true
    }
}

impl<A> Future for Restarting<A>
where
    A: Actor<Context = Context<A>> + Supervised,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = self.get_mut();
        match catch_unwind(AssertUnwindSafe(|| Pin::new(&mut this.fut).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            // A clean stop (every Addr dropped, or the actor stopped itself) ends it.
            Ok(Poll::Ready(())) => Poll::Ready(()),
            Err(_) => {
                if !this.may_restart(Instant::now()) {
                    // Stopped: its mailbox closes, and the items in it go home (see `item.rs`).
                    tracing::error!(
                        event = "actor_failed",
                        actor = %this.name,
                        restarts = MAX_RESTARTS,
                        window_s = RESTART_WINDOW.as_secs(),
                        "panicked again after {MAX_RESTARTS} restarts in {}s; ferry takes no new work",
                        RESTART_WINDOW.as_secs()
                    );
                    this.health.declare_failed(&this.name);
                    if let Some(metrics) = &this.metrics {
                        metrics.do_send(Publish(MetricsEvent::ActorFailed { actor: this.name.clone() }));
                    }
                    return Poll::Ready(());
                }
                tracing::error!(event = "actor_restarted", actor = %this.name);
                if let Some(metrics) = &this.metrics {
                    metrics.do_send(Publish(MetricsEvent::ActorRestarted { actor: this.name.clone() }));
                }
                if !this.fut.restart() {
                    return Poll::Ready(());
                }
                // Let the rest of the arbiter run before the restarted actor does: an actor that
                // panics again at once must not hold the thread in a loop here.
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
}
