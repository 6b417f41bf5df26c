//! Durable batch jobs: a file of requests in, every request's outcome out, across crashes and
//! restarts. The OpenAI Batch API (`/v1/batches`) and `ferry run FILE` are two doors on this
//! one machinery.
//!
//! - [`model`]: a job, its statuses and counts, as OpenAI's batch object.
//! - [`line`]: one input line checked and turned into an engine prompt.
//! - [`db`]: jobs and their items in SQLite (plain functions), run by the job store's thread
//!   ([`worker`]), apart from the chat store's.
//! - [`runner`]: the JobRunner actor; each running job is a [`feed`] task that sends items to
//!   the engine at a bounded rate and stores outcomes as they arrive.
//! - `output`: an outcome as a line of the output or error file, built on the job store's thread.
//! - [`input`]: `ferry run`'s input formats (batch JSONL, `{"prompt"}` JSONL, CSV with a
//!   template) turned into batch JSONL.
//!
//! [`Jobs`] is the handle the app and the doors use.

pub mod db;
mod error;
mod feed;
pub mod input;
pub mod line;
pub mod model;
mod output;
mod pacing;
mod runner;
mod worker;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::{Actor, Addr};
use tokio::sync::watch;

pub use db::{Created, InputLimits, NewJob};
pub use error::JobError;
pub use model::{Job, JobKind, JobStatus, LineError, RequestCounts};
use runner::{Cancel, JobRunner, Run, StopAll};
pub use worker::WorkerSettings;
use worker::{CreateJob, ForgetRun, GetJob, JobWorker, ListJobs, Results, SetStatus, Unfinished};
pub(crate) use worker::{create_private_dir, remove_if_there};

use crate::engine::Engine;

/// What a running job tells its watchers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobProgress {
    /// Its status.
    pub status: JobStatus,
    /// Its counts.
    pub counts: RequestCounts,
}

impl Default for JobProgress {
    fn default() -> Self {
        JobProgress { status: JobStatus::Validating, counts: RequestCounts::default() }
    }
}

/// What the runner tells a running job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Keep going.
    Run,
    /// Send nothing more, let in-flight items finish, then end as `cancelled`.
    Cancel,
    /// ferry is stopping: send nothing more, store what arrives, leave the job for a resume.
    Stop,
}

/// The handle to the job machinery. Cheap to clone.
#[derive(Clone)]
pub struct Jobs {
    runner: Addr<JobRunner>,
    worker: Addr<JobWorker>,
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Jobs {
    /// Starts the job store's thread and the runner. Must run inside an actix System, after the
    /// store has migrated the database. Nothing is resumed until [`Jobs::resume`].
    pub fn start(engine: Engine, settings: WorkerSettings, max_in_flight: usize) -> Result<Jobs, JobError> {
        let worker = worker::start(settings)?;
        let runner = JobRunner::new(engine, worker.clone(), max_in_flight.max(1)).start();
        Ok(Jobs { runner, worker })
    }

    /// Starts the job machinery for `config`: input limits from `[files]`, output files in the
    /// Files API's folder beside the database, `[jobs] max_in_flight`.
    pub fn for_config(engine: Engine, config: &crate::config::Config) -> Result<Jobs, JobError> {
        let settings = WorkerSettings {
            db_path: config.storage.path.clone(),
            files_dir: crate::store::files_dir_of(&config.storage.path),
            limits: InputLimits { max_lines: config.files.max_lines, max_bytes: config.files.max_bytes },
            upstreams: Arc::from(config.upstreams.clone()),
            output_lifetime_secs: config.files.output_lifetime_secs,
        };
        Jobs::start(engine, settings, config.jobs.max_in_flight)
    }

    /// Creates a job and starts it; answers once the job is committed. A repeat of an earlier
    /// request (same id, or same idempotency key and body) answers the earlier job.
    pub async fn create(&self, new: NewJob) -> Result<Created, JobError> {
        // A task of its own: a caller that goes away between the commit and the start must not
        // leave a job committed and never run.
        let (worker, runner) = (self.worker.clone(), self.runner.clone());
        let task = actix::spawn(async move {
            let created = worker.send(CreateJob(new)).await??;
            let job = match &created {
                Created::New(job) | Created::Existing(job) => job,
            };
            if !job.status.is_terminal() {
                runner.send(Run(job.id.clone())).await?;
            }
            Ok(created)
        });
        task.await.unwrap_or(Err(JobError::Stopped))
    }

    /// The job `id`, if any.
    pub async fn get(&self, id: &str) -> Result<Option<Job>, JobError> {
        self.worker.send(GetJob(id.to_string())).await?
    }

    /// `owner`'s API jobs, newest first, after the batch id `after`.
    pub async fn list(
        &self,
        owner: Option<String>,
        limit: usize,
        after: Option<String>,
    ) -> Result<Vec<Job>, JobError> {
        self.worker.send(ListJobs { owner, limit, after }).await?
    }

    /// Up to `limit` output lines (with their input line numbers) of items with an outcome,
    /// after input line `after`, in input order.
    pub async fn results(&self, id: &str, after: u64, limit: usize) -> Result<Vec<(u64, String)>, JobError> {
        self.worker.send(Results { id: id.to_string(), after, limit }).await?
    }

    /// Cancels job `id`: it becomes `cancelling`, sends nothing more, and ends `cancelled` once
    /// its in-flight items are done. A job already ended is returned unchanged.
    pub async fn cancel(&self, id: &str) -> Result<Job, JobError> {
        let job = self.get(id).await?.ok_or_else(|| JobError::NotFound(id.to_string()))?;
        if job.status.is_terminal() || job.status == JobStatus::Finalizing {
            return Ok(job);
        }
        // As for create: once `cancelling` is stored, the signal goes whether or not the caller
        // is still there.
        let (worker, runner, job_id) = (self.worker.clone(), self.runner.clone(), id.to_string());
        let task = actix::spawn(async move {
            worker.send(SetStatus { id: job_id.clone(), status: JobStatus::Cancelling }).await??;
            if !runner.send(Cancel(job_id.clone())).await? {
                runner.send(Run(job_id)).await?;
            }
            Ok::<(), JobError>(())
        });
        task.await.unwrap_or(Err(JobError::Stopped))?;
        self.get(id).await?.ok_or_else(|| JobError::NotFound(id.to_string()))
    }

    /// Starts (or resumes) job `id` and returns its progress; `None` when ferry is stopping.
    pub async fn run(&self, id: &str) -> Result<Option<watch::Receiver<JobProgress>>, JobError> {
        Ok(self.runner.send(Run(id.to_string())).await?)
    }

    /// Forgets `ferry run` job `id` and its stored outcomes, so the same command asks again;
    /// true if there was one. Only for a job not running.
    pub async fn forget_run(&self, id: &str) -> Result<bool, JobError> {
        self.worker.send(ForgetRun(id.to_string())).await?
    }

    /// Resumes every job of `kind` left under way by the last stop; returns their ids.
    pub async fn resume(&self, kind: JobKind) -> Result<Vec<String>, JobError> {
        let ids = self.worker.send(Unfinished(kind)).await??;
        for id in &ids {
            tracing::info!(event = "batch_job_resumed", batch = %id);
            self.runner.send(Run(id.clone())).await?;
        }
        Ok(ids)
    }

    /// Stops feeding every job and waits (up to `deadline`) until each has stored the outcomes
    /// that arrived and stopped. Call it before shutting the engine down, and await it after:
    /// the engine's shutdown answers what is still in flight.
    pub fn stop(&self, deadline: Duration) -> impl Future<Output = ()> + use<> {
        let stopped = self.runner.send(StopAll);
        async move {
            if tokio::time::timeout(deadline, stopped).await.is_err() {
                tracing::warn!(event = "batch_jobs_stop_timeout", deadline_ms = deadline.as_millis() as u64);
            }
        }
    }
}
