//! `ferry run FILE`: a batch job on the command line, without a server — the door over
//! [`crate::app::run`], which says what a run is (its id, lock, input and resume). This file
//! starts ferry for it, follows the job's progress and stops on an interrupt.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::app::run::RunPlan;
pub use crate::app::run::{RunArgs, default_output};
use crate::app::{App, AppError, Purpose};
use crate::config::Config;
use crate::jobs::{JobError, JobProgress};

/// Time given to in-flight items when a run is interrupted.
const INTERRUPT_GRACE: Duration = Duration::from_secs(2);

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The job's id in the store.
    pub job_id: String,
    /// Where the results are.
    pub output: PathBuf,
    /// The job's status: `completed`, or `in_progress` when interrupted.
    pub progress: JobProgress,
    /// Items that already had an outcome when this run started (a resume).
    pub resumed_from: u64,
    /// Wall time of this run.
    pub elapsed: Duration,
    /// Whether the run was interrupted (run the same command again to go on).
    pub interrupted: bool,
}

/// Runs `args` to completion (or until `interrupt` completes), reporting progress to `watch`.
/// Call inside a running actix System.
pub async fn run(
    config: Config,
    args: RunArgs,
    mut watch: impl FnMut(&JobProgress),
    interrupt: impl Future<Output = ()>,
) -> Result<RunReport, AppError> {
    let started = Instant::now();
    let plan = crate::app::run::plan(&config, args)?;
    let app = App::start(config, Purpose::Run).await?;
    let job = app.create_run(&plan).await?;
    let resumed_from = job.counts.done();
    let Some(mut progress) = app.jobs.run(&plan.id).await? else {
        return Err(AppError::Job(JobError::Stopped));
    };
    let mut current = JobProgress { status: job.status, counts: job.counts };
    watch(&current);
    let interrupted = follow(&app, &mut progress, &mut current, &mut watch, interrupt).await;
    if !interrupted {
        app.engine.shutdown(Duration::ZERO).await;
    }
    let job = plan.job(&app).await?;
    current = JobProgress { status: job.status, counts: job.counts };
    watch(&current);
    plan.ended(&job, interrupted)?;
    Ok(report(&plan, current, resumed_from, started, interrupted))
}

/// Shows the job's progress until it ends or `interrupt` completes (then stops ferry's work
/// within [`INTERRUPT_GRACE`]); true when interrupted.
async fn follow(
    app: &App,
    progress: &mut tokio::sync::watch::Receiver<JobProgress>,
    current: &mut JobProgress,
    watch: &mut impl FnMut(&JobProgress),
    interrupt: impl Future<Output = ()>,
) -> bool {
    tokio::pin!(interrupt);
    while !current.status.is_terminal() {
        tokio::select! {
            changed = progress.changed() => {
                if changed.is_err() {
                    return false;
                }
                *current = *progress.borrow_and_update();
                watch(current);
            }
            () = &mut interrupt => {
                app.drain(INTERRUPT_GRACE * 2, INTERRUPT_GRACE).await;
                return true;
            }
        }
    }
    false
}

fn report(
    plan: &RunPlan,
    progress: JobProgress,
    resumed_from: u64,
    started: Instant,
    interrupted: bool,
) -> RunReport {
    RunReport {
        job_id: plan.id.clone(),
        output: plan.output.clone(),
        progress,
        resumed_from,
        elapsed: started.elapsed(),
        interrupted,
    }
}
