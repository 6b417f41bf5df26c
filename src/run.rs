//! `ferry run FILE`: a batch job on the command line, without a server.
//!
//! The input (batch JSONL used as it is; `{"prompt"}` JSONL or CSV converted to batch JSONL
//! under the data directory) becomes a job of kind `run` in the store, with an id made from the
//! command itself (input file, its size and time, output, lane, template, model). Running the
//! same command again finds the same job and sends only what has no outcome yet — after Ctrl-C,
//! a kill -9 or a power cut. The output file gets one line per input line, in input order, in
//! OpenAI's batch output format, written once every line has its outcome.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::engine::{Engine, EngineError};
use crate::jobs::input::{self, Conversion, Format, InputError};
use crate::jobs::{
    Created, InputLimits, JobError, JobKind, JobProgress, JobStatus, Jobs, LineError, NewJob, WorkerSettings,
};
use crate::store::StoreError;

/// Time given to in-flight items when a run is interrupted.
const INTERRUPT_GRACE: Duration = Duration::from_secs(2);

/// What to run.
#[derive(Debug, Clone)]
pub struct RunArgs {
    /// The input file.
    pub input: PathBuf,
    /// The output file (default: the input's name with `.results.jsonl`).
    pub output: Option<PathBuf>,
    /// The lane (default: `[jobs] lane`).
    pub lane: Option<String>,
    /// `{column}` template for CSV rows or JSONL objects.
    pub template: Option<String>,
    /// Model for lines that name none (default: the first model of the first upstream).
    pub model: Option<String>,
    /// Temperature for lines that set none.
    pub temperature: Option<f32>,
    /// Reply budget for lines that set none.
    pub max_tokens: Option<u32>,
    /// Ask again: forget what an earlier run of the same command stored.
    pub fresh: bool,
}

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

/// Why a run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The input cannot be read or converted.
    #[error(transparent)]
    Input(#[from] InputError),
    /// `--temperature` or `--max-tokens` given for OpenAI batch lines, whose bodies carry their own.
    #[error(
        "--temperature and --max-tokens apply to CSV and {{\"prompt\"}} lines; OpenAI batch lines \
         carry their own in each line's body"
    )]
    ParametersOnBatchLines,
    /// `--lane` names no lane.
    #[error("--lane: lane `{lane}` is not configured; lanes are: {known}")]
    UnknownLane {
        /// The name given.
        lane: String,
        /// The configured lanes.
        known: String,
    },
    /// The input has bad lines; nothing was run.
    #[error("{path}: {count} problem(s); nothing was run:\n{list}")]
    Invalid {
        /// The input file.
        path: String,
        /// How many problems are listed.
        count: usize,
        /// One per line.
        list: String,
    },
    /// The engine did not start.
    #[error("starting the engine: {0}")]
    Engine(#[from] EngineError),
    /// The store could not be opened.
    #[error("the store ([storage] path = {path}): {source}")]
    Store {
        /// The database file.
        path: String,
        /// What went wrong.
        source: StoreError,
    },
    /// The job machinery failed.
    #[error(transparent)]
    Job(#[from] JobError),
    /// The job stopped before it finished (its store failed); the log says why.
    #[error("the job stopped while {status}; see the log, then run the same command again to resume")]
    Stopped {
        /// Where it was.
        status: String,
    },
    /// This command ran to the end before, and its output file is gone.
    #[error(
        "this command ran to the end before and wrote {path}, which is gone; answers are kept only \
         in the output file — add --fresh to ask every prompt again"
    )]
    OutputGone {
        /// The output file.
        path: String,
    },
    /// Another `ferry run` of the same command is running.
    #[error(
        "another `ferry run` of this same command (input, output, lane, template, model) is running; \
         wait for it, or stop it — the next run resumes where it stopped"
    )]
    Busy,
    /// The input file's metadata could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the file system said.
        source: std::io::Error,
    },
}

/// The default output file for `input`: `name.results.jsonl` beside it.
pub fn default_output(input: &Path) -> PathBuf {
    let stem = input.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "input".into());
    input.with_file_name(format!("{stem}.results.jsonl"))
}

/// Runs `args` to completion (or until `interrupt` completes), reporting progress to `watch`.
/// Call inside a running actix System.
pub async fn run(
    config: Config,
    args: RunArgs,
    mut watch: impl FnMut(&JobProgress),
    interrupt: impl Future<Output = ()>,
) -> Result<RunReport, RunError> {
    let started = Instant::now();
    let lane = args.lane.clone().unwrap_or_else(|| config.jobs_lane().to_string());
    if !config.lanes.contains_key(&lane) {
        let known: Vec<&str> = config.lanes.keys().map(String::as_str).collect();
        return Err(RunError::UnknownLane { lane, known: known.join(", ") });
    }
    let model = args.model.clone().unwrap_or_else(|| default_model(&config, &lane));
    let output = args.output.clone().unwrap_or_else(|| default_output(&args.input));
    let output = absolute(&output);
    let id = fingerprint(&args, &output, &lane, &model)?;
    let data_dir = config.storage.path.parent().map(Path::to_path_buf).unwrap_or_default();
    let format = input::detect(&args.input, args.template.as_deref())?;
    if format == Format::Batch && (args.temperature.is_some() || args.max_tokens.is_some()) {
        return Err(RunError::ParametersOnBatchLines);
    }
    let runs = data_dir.join("runs");
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| RunError::Io { path, source }
    };
    crate::jobs::create_private_dir(&runs).map_err(io(&runs))?;
    // One process per command: a second would send every prompt again, and `--fresh` in it
    // would forget what the first has stored. The lock goes with the process, however it ends.
    let _lock = lock_run(&runs.join(format!("{id}.lock")))?;

    let engine = Engine::start(&config)?;
    let settings = WorkerSettings {
        db_path: config.storage.path.clone(),
        files_dir: data_dir.join("files"),
        limits: InputLimits { max_lines: u64::MAX, max_bytes: u64::MAX },
        upstreams: Arc::from(config.upstreams.clone()),
        // `ferry run` writes its output where the caller said, not into the Files API.
        output_lifetime_secs: 0,
    };
    // The job store opens and migrates the database itself.
    let jobs = Jobs::start(engine.clone(), settings, config.jobs.max_in_flight).map_err(|e| match e {
        JobError::Store(source) => {
            RunError::Store { path: config.storage.path.display().to_string(), source }
        }
        other => RunError::Job(other),
    })?;
    if args.fresh && jobs.forget_run(&id).await? {
        tracing::info!(event = "run_forgotten", job = %id);
    }
    let earlier = jobs.get(&id).await?;
    // CSV and `{"prompt"}` lines are converted to batch lines for the run's life; a finished
    // run needs them no more.
    let (input_path, converted) = match format {
        Format::Batch => (absolute(&args.input), None),
        Format::Prompts | Format::Csv => {
            let converted = runs.join(format!("{id}.jsonl"));
            if args.fresh {
                remove_converted(&converted);
            }
            let finished = earlier.as_ref().is_some_and(|job| job.status.is_terminal());
            if !finished && !converted.exists() {
                let how = Conversion {
                    template: args.template.as_deref(),
                    model: &model,
                    temperature: args.temperature,
                    max_tokens: args.max_tokens,
                };
                input::convert(&args.input, format, &how, &converted)?;
            }
            (converted.clone(), Some(converted))
        }
    };
    let new = NewJob {
        id: id.clone(),
        kind: JobKind::Run,
        owner: None,
        input_file_id: id.trim_start_matches("run_").to_string(),
        input_path,
        output_path: Some(output.clone()),
        endpoint: crate::jobs::line::CHAT_ENDPOINT.to_string(),
        completion_window: String::new(),
        lane,
        metadata: None,
        idempotency_key: None,
        request_hash: None,
        created_at: crate::jobs::unix_now(),
        expires_at: None,
    };
    let job = match jobs.create(new).await? {
        Created::New(job) | Created::Existing(job) => job,
    };
    let resumed_from = job.counts.done();
    // Run before and finished; its answers went to the output, which is gone since.
    if job.status == JobStatus::Completed && !output.exists() {
        return Err(RunError::OutputGone { path: output.display().to_string() });
    }
    let mut progress = match jobs.run(&id).await? {
        Some(progress) => progress,
        None => return Err(RunError::Job(JobError::Stopped)),
    };
    let mut current = JobProgress { status: job.status, counts: job.counts };
    watch(&current);
    tokio::pin!(interrupt);
    let mut interrupted = false;
    loop {
        if current.status.is_terminal() {
            break;
        }
        tokio::select! {
            changed = progress.changed() => {
                if changed.is_err() {
                    break;
                }
                current = *progress.borrow_and_update();
                watch(&current);
            }
            () = &mut interrupt => {
                interrupted = true;
                let stopped = jobs.stop(INTERRUPT_GRACE * 2);
                engine.shutdown(INTERRUPT_GRACE).await;
                stopped.await;
                break;
            }
        }
    }
    if !interrupted {
        engine.shutdown(Duration::ZERO).await;
    }
    let job = jobs.get(&id).await?.ok_or_else(|| JobError::NotFound(id.clone()))?;
    current = JobProgress { status: job.status, counts: job.counts };
    watch(&current);
    // The outcomes are stored (or the input was refused): the converted input has served.
    if let Some(path) = converted.filter(|_| job.status.is_terminal()) {
        remove_converted(&path);
    }
    if job.status == JobStatus::Failed {
        return Err(invalid(&args.input, &job.errors));
    }
    if !interrupted && !job.status.is_terminal() {
        return Err(RunError::Stopped { status: job.status.to_string() });
    }
    Ok(RunReport {
        job_id: id,
        output,
        progress: current,
        resumed_from,
        elapsed: started.elapsed(),
        interrupted,
    })
}

/// Takes the lock of one command's run, or says another process holds it.
fn lock_run(path: &Path) -> Result<std::fs::File, RunError> {
    let io = |source| RunError::Io { path: path.display().to_string(), source };
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(RunError::Busy),
        Err(std::fs::TryLockError::Error(source)) => Err(io(source)),
    }
}

fn remove_converted(path: &Path) {
    crate::jobs::remove_if_there(path, "remove_converted_input");
}

fn invalid(path: &Path, errors: &[LineError]) -> RunError {
    let list: Vec<String> = errors
        .iter()
        .map(|e| match e.line {
            Some(line) => format!("  line {line}: {} ({})", e.message, e.code),
            None => format!("  {} ({})", e.message, e.code),
        })
        .collect();
    RunError::Invalid { path: path.display().to_string(), count: errors.len(), list: list.join("\n") }
}

/// The model for lines that name none: the lane's, else the first upstream's first.
fn default_model(config: &Config, lane: &str) -> String {
    config
        .lanes
        .get(lane)
        .and_then(|l| l.model.clone())
        .or_else(|| config.upstreams.iter().find_map(|u| u.models.first().cloned()))
        .unwrap_or_else(|| "mock".into())
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The job id of this command: the same input (path, size, modification time), output, lane,
/// template, model, temperature and reply budget give the same id, so a second run resumes the
/// first; a different temperature or budget is a different run.
fn fingerprint(args: &RunArgs, output: &Path, lane: &str, model: &str) -> Result<String, RunError> {
    let io = |source| RunError::Io { path: args.input.display().to_string(), source };
    let meta = std::fs::metadata(&args.input).map_err(io)?;
    let modified = meta.modified().map_err(io)?;
    let nanos = modified.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut hash = Sha256::new();
    for part in [
        absolute(&args.input).to_string_lossy().as_bytes(),
        &meta.len().to_le_bytes(),
        &nanos.to_le_bytes(),
        output.to_string_lossy().as_bytes(),
        lane.as_bytes(),
        args.template.as_deref().unwrap_or("\u{0}").as_bytes(),
        model.as_bytes(),
    ] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    // Set only: a run without them keeps the id it had before these options existed.
    let parameters = [
        args.temperature.map(|t| format!("temperature={}", t.to_bits())),
        args.max_tokens.map(|n| format!("max_tokens={n}")),
    ];
    for part in parameters.iter().flatten() {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    let digest = hash.finalize();
    Ok(format!("run_{}", digest.iter().take(12).map(|b| format!("{b:02x}")).collect::<String>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temperature_and_reply_budget_make_a_different_run() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let input = dir.path().join("in.jsonl");
        std::fs::write(&input, "{\"prompt\":\"hi\"}\n")?;
        let args = RunArgs {
            input,
            output: None,
            lane: None,
            template: None,
            model: None,
            temperature: None,
            max_tokens: None,
            fresh: false,
        };
        let out = dir.path().join("out.jsonl");
        let id = |args: &RunArgs| fingerprint(args, &out, "low", "m");
        let plain = id(&args)?;
        assert_eq!(id(&args.clone())?, plain, "the same command is the same run");
        let cold = id(&RunArgs { temperature: Some(0.0), ..args.clone() })?;
        let warm = id(&RunArgs { temperature: Some(0.8), ..args.clone() })?;
        let short = id(&RunArgs { max_tokens: Some(16), ..args.clone() })?;
        let ids = std::collections::HashSet::from([&plain, &cold, &warm, &short]);
        assert_eq!(ids.len(), 4, "{plain} {cold} {warm} {short}");
        Ok(())
    }
}
