//! One job's life once it exists: validate, feed its items to the engine at a bounded rate,
//! store each outcome as it arrives, and finalize — or stop cleanly and leave it for a resume.
//!
//! At most `max_in_flight` items are in the engine at once, read back from the input in chunks,
//! so a million-line job holds a few thousand items in memory, not a million. Outcomes are
//! stored in lots (every 512 or every 200 ms). A crash loses at most the outcomes not yet
//! stored; their items are still pending in the database and are sent again on resume, and the
//! store keeps only the first outcome of each.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};

use super::db::PendingItem;
use super::error::JobError;
use super::model::{Job, JobStatus, LineError, RequestCounts};
use super::output::Done;
use super::pacing::{PACED_WAIT, Pacing, Paid};
use super::worker::{Finalize, GetJob, JobWorker, Pending, Record, SetStatus, Validate};
use super::{JobProgress, Signal, unix_now};
use crate::engine::{Engine, ItemError, Origin, Outcome, Prompt, SubmitError, Withdrawal};

/// Outcomes stored per transaction.
const FLUSH_LOT: usize = 512;
/// Longest an outcome waits to be stored.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Items read back per query.
const READ_CHUNK: usize = 512;
/// Wait before offering items again to a full lane.
const FULL_LANE_WAIT: Duration = Duration::from_millis(100);

/// What the feed needs.
pub(crate) struct Feed {
    pub id: String,
    pub engine: Engine,
    pub worker: Addr<JobWorker>,
    pub max_in_flight: usize,
    pub signal: watch::Receiver<Signal>,
    pub progress: watch::Sender<JobProgress>,
}

/// How the feeding part ended.
enum Stopped {
    /// Every item has an outcome, or the job was cancelled or expired: finalize with this.
    Finalize(JobStatus),
    /// ferry is stopping: leave the job as it is for the next start.
    Leave,
}

impl Feed {
    /// Runs the job until it ends or ferry stops.
    pub(crate) async fn run(mut self) -> Result<(), JobError> {
        let mut job = self.job().await?;
        if job.status == JobStatus::Validating {
            job = self.worker.send(Validate(job.id.clone())).await??;
            tracing::info!(event = "batch_job_validated", batch = %job.id, status = %job.status, total = job.counts.total);
        }
        self.report(&job, job.counts);
        let end = match job.status {
            status if status.is_terminal() => return Ok(()),
            JobStatus::Finalizing => unfinished_end(&job),
            JobStatus::Cancelling => Stopped::Finalize(JobStatus::Cancelled),
            _ if *self.signal.borrow() == Signal::Cancel => {
                self.set_status(JobStatus::Cancelling).await?;
                Stopped::Finalize(JobStatus::Cancelled)
            }
            _ => self.feed(&job).await?,
        };
        if let Stopped::Finalize(end) = end {
            let done = self.worker.send(Finalize { id: job.id.clone(), end }).await??;
            self.report(&done, done.counts);
        }
        Ok(())
    }

    async fn job(&self) -> Result<Job, JobError> {
        self.worker.send(GetJob(self.id.clone())).await??.ok_or_else(|| JobError::NotFound(self.id.clone()))
    }

    async fn set_status(&self, status: JobStatus) -> Result<(), JobError> {
        self.worker.send(SetStatus { id: self.id.clone(), status }).await?
    }

    fn report(&self, job: &Job, counts: RequestCounts) {
        self.progress.send_replace(JobProgress { status: job.status, counts });
    }

    async fn feed(&mut self, job: &Job) -> Result<Stopped, JobError> {
        let expires = job.expires_at.map(|at| {
            let left = u64::try_from(at.saturating_sub(unix_now())).unwrap_or(0);
            Instant::now() + Duration::from_secs(left)
        });
        // Every item of the job carries its owner, the job and the end of its window; cancel and
        // expiry withdraw what the engine still holds of it.
        let owner = job.owner.clone().unwrap_or_else(|| Origin::LOCAL.to_string());
        let origin = Origin::with_deadline(owner, job.id.clone(), expires);
        let fed = self.feed_from(job, &origin, expires).await;
        if fed.is_err() {
            // The job will run again (after a wait); nothing it had in the engine may be sent
            // for nobody meanwhile. Its items stay pending in the store.
            let withdrawn = self.engine.withdraw(&origin, Withdrawal::Interrupted).await;
            tracing::debug!(event = "batch_job_interrupted", batch = %job.id, withdrawn);
        }
        fed
    }

    async fn feed_from(
        &mut self,
        job: &Job,
        origin: &Arc<Origin>,
        expires: Option<Instant>,
    ) -> Result<Stopped, JobError> {
        let (tx, mut rx) = mpsc::unbounded_channel::<(u64, String, Outcome)>();
        // A tenant's job is paced to its budget and `max_queued` instead of refused.
        let mut pacing = Pacing::of(self.engine.tenants(), job.owner.as_deref());
        let mut lot: Vec<Done> = Vec::with_capacity(FLUSH_LOT);
        let mut flush_at = Instant::now() + FLUSH_EVERY;
        let (mut cursor, mut in_flight, mut exhausted) = (0u64, 0usize, false);
        // ferry may already be stopping (the signal came while the input was being validated).
        let mut stopping: Option<Signal> = (*self.signal.borrow() == Signal::Stop).then_some(Signal::Stop);
        // The engine refused work for good (an actor declared failed) while ferry itself runs on:
        // the feed stops sending, but cancel and expiry still end the job.
        let mut engine_failed = false;
        let mut retry_at: Option<Instant> = None;
        // Items per submission: a lane that refused a chunk as too big gets smaller ones.
        let mut chunk = READ_CHUNK;
        loop {
            if expires.is_some_and(|at| Instant::now() >= at)
                && (stopping != Some(Signal::Stop) || engine_failed)
            {
                let withdrawn = self.engine.withdraw(origin, Withdrawal::Expired).await;
                tracing::info!(event = "batch_job_expired", batch = %job.id, in_flight, withdrawn);
                // Answers that came in before the window ended are kept.
                while let Ok((line, custom_id, outcome)) = rx.try_recv() {
                    if let Some(done) = arrived(line, custom_id, outcome, &mut stopping) {
                        lot.push(done);
                    }
                }
                self.flush(job, &mut lot).await?;
                return Ok(Stopped::Finalize(JobStatus::Expired));
            }
            // Feed while there is room for a whole chunk (refilling one item per finished one
            // would make every read, submission and batch one item long).
            let refill = chunk.min(self.max_in_flight / 2).max(1);
            while stopping.is_none()
                && !exhausted
                && in_flight + refill <= self.max_in_flight
                && retry_at.is_none()
            {
                if lot.len() >= FLUSH_LOT {
                    self.flush(job, &mut lot).await?;
                }
                let mut limit = chunk.min(self.max_in_flight - in_flight);
                let mut room = None;
                if let Some(pacing) = &pacing {
                    let Some(hold) = pacing.hold(limit) else {
                        retry_at = Some(Instant::now() + PACED_WAIT);
                        break;
                    };
                    limit = hold.count();
                    room = Some(hold);
                }
                let pending = Pending { job: job.clone(), after: cursor, limit };
                let items = self.worker.send(pending).await??;
                let Some(last) = items.last().map(|item| item.line) else {
                    exhausted = true;
                    break;
                };
                let before = cursor;
                cursor = last;
                let (prompts, meta) = split(items, &mut lot);
                if prompts.is_empty() {
                    continue;
                }
                let count = prompts.len();
                let mut room_cost = None;
                if let (Some(pacing), Some(hold)) = (pacing.as_mut(), room.as_mut()) {
                    match pacing.pay(hold, &prompts).await {
                        Paid::Go(cost) => room_cost = Some(cost),
                        Paid::Smaller(fits) => {
                            cursor = before;
                            chunk = fits;
                            continue;
                        }
                        Paid::Wait(wait) => {
                            tracing::debug!(event = "batch_job_paced", batch = %job.id, tenant = pacing.tenant(), wait_ms = wait.as_millis() as u64);
                            cursor = before;
                            retry_at = Some(Instant::now() + wait);
                            break;
                        }
                    }
                }
                match self.engine.submit_from(&job.lane, origin, prompts).await {
                    Ok(mut submission) => {
                        in_flight += count;
                        // A lane that refused a chunk as too big may take more again.
                        chunk = (chunk * 2).min(READ_CHUNK);
                        if let (Some(pacing), Some(hold)) = (pacing.as_mut(), room.take()) {
                            pacing.keep(hold);
                        }
                        let tx = tx.clone();
                        actix::spawn(async move {
                            while let Some((index, outcome)) = submission.next().await {
                                if let Some((line, custom_id)) = meta.get(index) {
                                    let _ = tx.send((*line, custom_id.clone(), outcome));
                                }
                            }
                        });
                    }
                    Err(SubmitError::QueueFull { held, capacity, .. }) => {
                        // The lane takes a submission whole or not at all: offer what fits (at
                        // least one item) after a short wait, so a small lane still drains.
                        cursor = before;
                        chunk = capacity.saturating_sub(held).clamp(1, READ_CHUNK);
                        if let (Some(pacing), Some(cost)) = (pacing.as_mut(), room_cost) {
                            pacing.refund(cost);
                        }
                        retry_at = Some(Instant::now() + FULL_LANE_WAIT);
                    }
                    Err(SubmitError::UnknownLane { .. }) => {
                        if let (Some(pacing), Some(cost)) = (pacing.as_ref(), room_cost) {
                            pacing.give_back(cost).await;
                        }
                        let error = LineError::new(
                            "unknown_lane",
                            format!("lane `{}` does not exist", job.lane),
                            None,
                            0,
                        );
                        meta.into_iter().for_each(|(line, custom_id)| {
                            lot.push(Done { line, custom_id, result: Err(error.clone()) })
                        });
                    }
                    Err(
                        error @ (SubmitError::ShuttingDown
                        | SubmitError::Stopped
                        | SubmitError::Failed { .. }),
                    ) => {
                        if let (Some(pacing), Some(cost)) = (pacing.as_ref(), room_cost) {
                            pacing.give_back(cost).await;
                        }
                        engine_failed = matches!(error, SubmitError::Failed { .. });
                        stopping = Some(Signal::Stop)
                    }
                }
            }
            if lot.len() >= FLUSH_LOT {
                self.flush(job, &mut lot).await?;
            }
            if in_flight == 0 && (exhausted || stopping.is_some()) {
                self.flush(job, &mut lot).await?;
                match stopping {
                    Some(Signal::Cancel) => return Ok(Stopped::Finalize(JobStatus::Cancelled)),
                    Some(_) => return Ok(Stopped::Leave),
                    None => {
                        // Items refused by a full lane after the cursor passed them are still
                        // pending: sweep again from the start until none is.
                        let probe = Pending { job: job.clone(), after: 0, limit: 1 };
                        if self.worker.send(probe).await??.is_empty() {
                            return Ok(Stopped::Finalize(JobStatus::Completed));
                        }
                        cursor = 0;
                        exhausted = false;
                        continue;
                    }
                }
            }
            let far = Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                Some((line, custom_id, outcome)) = rx.recv() => {
                    in_flight = in_flight.saturating_sub(1);
                    if let Some(pacing) = pacing.as_mut() {
                        pacing.release_one();
                    }
                    if let Some(done) = arrived(line, custom_id, outcome, &mut stopping) {
                        lot.push(done);
                    }
                }
                () = sleep_until(flush_at) => {
                    self.flush(job, &mut lot).await?;
                    flush_at = Instant::now() + FLUSH_EVERY;
                }
                () = sleep_until(retry_at.unwrap_or(far)), if retry_at.is_some() => retry_at = None,
                () = sleep_until(expires.unwrap_or(far)), if expires.is_some() && (stopping != Some(Signal::Stop) || engine_failed) => {}
                changed = self.signal.changed() => {
                    let signal = if changed.is_ok() { *self.signal.borrow_and_update() } else { Signal::Stop };
                    match signal {
                        Signal::Cancel if stopping.is_none() || engine_failed => {
                            // What has not been sent is not sent: only calls under way finish.
                            let withdrawn = self.engine.withdraw(origin, Withdrawal::Cancelled).await;
                            self.set_status(JobStatus::Cancelling).await?;
                            stopping = Some(Signal::Cancel);
                            tracing::info!(event = "batch_job_cancelling", batch = %job.id, in_flight, withdrawn);
                        }
                        Signal::Stop => {
                            engine_failed = false;
                            stopping = Some(Signal::Stop)
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    async fn flush(&self, job: &Job, lot: &mut Vec<Done>) -> Result<(), JobError> {
        if lot.is_empty() {
            return Ok(());
        }
        let done = std::mem::take(lot);
        let counts = self.worker.send(Record { id: job.id.clone(), done }).await??;
        self.report(job, counts);
        Ok(())
    }
}

/// An item's outcome as the feed stores it, or nothing: shutting down (not the item's fault: it
/// stays pending and runs on the next start; the feed stops) or withdrawn (never sent: it stays
/// pending, and the job's end — cancelled, expired — gives it its error).
fn arrived(line: u64, custom_id: String, outcome: Outcome, stopping: &mut Option<Signal>) -> Option<Done> {
    match outcome {
        Err(ItemError::ShuttingDown) => {
            *stopping = Some(Signal::Stop);
            None
        }
        Err(ItemError::Withdrawn(_)) => None,
        outcome => Some(Done { line, custom_id, result: Ok(outcome) }),
    }
}

/// The end a job left in `finalizing` was heading for.
fn unfinished_end(job: &Job) -> Stopped {
    if job.times.cancelling_at.is_some() {
        Stopped::Finalize(JobStatus::Cancelled)
    } else if job.expires_at.is_some_and(|at| job.times.finalizing_at.is_some_and(|f| f >= at)) {
        Stopped::Finalize(JobStatus::Expired)
    } else {
        Stopped::Finalize(JobStatus::Completed)
    }
}

/// The prompts to send and, per prompt, its line and id; lines that no longer parse become
/// failures in `lot` at once.
fn split(items: Vec<PendingItem>, lot: &mut Vec<Done>) -> (Vec<Prompt>, Vec<(u64, String)>) {
    let mut prompts = Vec::with_capacity(items.len());
    let mut meta = Vec::with_capacity(items.len());
    for item in items {
        match item.parsed {
            Ok(parsed) => {
                prompts.push(parsed.prompt);
                meta.push((item.line, item.custom_id));
            }
            Err(error) => lot.push(Done { line: item.line, custom_id: item.custom_id, result: Err(error) }),
        }
    }
    (prompts, meta)
}
