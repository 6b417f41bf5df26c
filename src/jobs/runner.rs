//! The JobRunner actor: which jobs are running, and the signals that steer them.
//!
//! Each running job is a [`Feed`](super::feed::Feed) task; the runner holds its signal (run,
//! cancel, stop) and its progress, starts jobs (new ones and, at start-up, those left under
//! way), and knows when all have stopped so that a shutdown can wait for their last outcomes to
//! be stored.

use std::collections::HashMap;
use std::time::Duration;

use actix::{
    Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, ResponseActFuture, WrapFuture,
};
use tokio::sync::{oneshot, watch};

use super::feed::Feed;
use super::worker::JobWorker;
use super::{JobProgress, Signal};
use crate::engine::Engine;

/// Wait before running again a job whose feed failed (store busy, disk full).
const RETRY_AFTER: Duration = Duration::from_secs(5);

struct Running {
    signal: watch::Sender<Signal>,
    progress: watch::Receiver<JobProgress>,
}

/// See the module docs.
pub(crate) struct JobRunner {
    engine: Engine,
    worker: Addr<JobWorker>,
    max_in_flight: usize,
    running: HashMap<String, Running>,
    stopping: bool,
    idle: Vec<oneshot::Sender<()>>,
}

impl JobRunner {
    pub(crate) fn new(engine: Engine, worker: Addr<JobWorker>, max_in_flight: usize) -> Self {
        JobRunner {
            engine,
            worker,
            max_in_flight,
            running: HashMap::new(),
            stopping: false,
            idle: Vec::new(),
        }
    }
}

impl Actor for JobRunner {
    type Context = Context<Self>;
}

/// Start (or resume) a job unless it is running; answers its progress.
#[derive(Message)]
#[rtype(result = "Option<watch::Receiver<JobProgress>>")]
pub(crate) struct Run(pub String);

impl Handler<Run> for JobRunner {
    type Result = Option<watch::Receiver<JobProgress>>;

    fn handle(&mut self, msg: Run, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(running) = self.running.get(&msg.0) {
            return Some(running.progress.clone());
        }
        if self.stopping {
            return None;
        }
        let (signal, signal_rx) = watch::channel(Signal::Run);
        let (progress_tx, progress) = watch::channel(JobProgress::default());
        let feed = Feed {
            id: msg.0.clone(),
            engine: self.engine.clone(),
            worker: self.worker.clone(),
            max_in_flight: self.max_in_flight,
            signal: signal_rx,
            progress: progress_tx,
        };
        self.running.insert(msg.0.clone(), Running { signal, progress: progress.clone() });
        tracing::info!(event = "batch_job_started", batch = %msg.0);
        let id = msg.0;
        ctx.spawn(feed.run().into_actor(self).map(move |result, runner, ctx| {
            runner.running.remove(&id);
            if let Err(error) = result {
                // A store that was busy or full: the job is intact in the store; try again
                // later rather than leave it unattended until the next start.
                let retry_in_s = RETRY_AFTER.as_secs();
                tracing::error!(event = "batch_job_failed", batch = %id, error = %error, retry_in_s);
                if !runner.stopping {
                    ctx.run_later(RETRY_AFTER, move |_, ctx| ctx.notify(Run(id)));
                }
            }
            if runner.running.is_empty() {
                runner.idle.drain(..).for_each(|tx| {
                    let _ = tx.send(());
                });
            }
        }));
        Some(progress)
    }
}

/// Tell a running job to cancel; false if it is not running here.
#[derive(Message)]
#[rtype(result = "bool")]
pub(crate) struct Cancel(pub String);

impl Handler<Cancel> for JobRunner {
    type Result = bool;

    fn handle(&mut self, msg: Cancel, _: &mut Context<Self>) -> bool {
        match self.running.get(&msg.0) {
            Some(running) => {
                running.signal.send_replace(Signal::Cancel);
                true
            }
            None => false,
        }
    }
}

/// Stop feeding every job and answer once all have stored their last outcomes and stopped.
/// Jobs stay as they are in the store and resume on the next start.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StopAll;

impl Handler<StopAll> for JobRunner {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: StopAll, _: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        for running in self.running.values() {
            running.signal.send_replace(Signal::Stop);
        }
        let (tx, rx) = oneshot::channel();
        if self.running.is_empty() {
            let _ = tx.send(());
        } else {
            self.idle.push(tx);
        }
        Box::pin(async move { drop(rx.await) }.into_actor(self))
    }
}
