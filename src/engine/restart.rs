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
//! [`Item`]: super::item::Item

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use actix::dev::ContextFut;
use actix::prelude::*;

use super::metrics::{MetricsEvent, MetricsHub, Publish};

/// Starts `actor` in `ctx` on the current arbiter, restarting it after a panic.
pub(crate) fn start<A>(ctx: Context<A>, actor: A, name: String, metrics: Option<Addr<MetricsHub>>) -> Addr<A>
where
    A: Actor<Context = Context<A>> + Supervised,
{
    let addr = ctx.address();
    actix::spawn(Restarting { fut: ctx.into_future(actor), name, metrics });
    addr
}

struct Restarting<A: Actor<Context = Context<A>>> {
    fut: ContextFut<A, Context<A>>,
    name: String,
    metrics: Option<Addr<MetricsHub>>,
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
