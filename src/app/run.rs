//! A file of prompts as a resumable job (`ferry run FILE`): the run's identity, its lock, its
//! input converted to batch lines, the job created or found again, and what its end means.
//!
//! The input (batch JSONL used as it is; `{"prompt"}` JSONL or CSV converted to batch JSONL
//! under the data directory) becomes a job of kind `run` in the store, with an id made from the
//! command itself (input file, its size and time, output, lane, template, model). Running the
//! same command again finds the same job and sends only what has no outcome yet — after Ctrl-C,
//! a kill -9 or a power cut. The output file gets one line per input line, in input order, in
//! OpenAI's batch output format, written once every line has its outcome.
//!
//! [`plan`] comes before [`App::start`] (it takes the run's lock, so a second process of the
//! same command stops before starting anything); [`App::create_run`] after it; the door follows
//! the job's progress and ends with [`RunPlan::ended`].

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{App, AppError};
use crate::config::Config;
use crate::jobs::input::{self, Conversion, Format};
use crate::jobs::{Created, Job, JobError, JobKind, JobStatus, LineError, NewJob};

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

/// A run checked and locked, ready to be created once ferry has started.
#[derive(Debug)]
pub struct RunPlan {
    /// The job id: the command's fingerprint.
    pub id: String,
    /// Where the results go (absolute).
    pub output: PathBuf,
    args: RunArgs,
    lane: String,
    model: String,
    format: Format,
    /// `runs/` under the data directory: locks and converted inputs.
    runs: PathBuf,
    /// Held for the run's life: the lock goes with the process, however it ends.
    _lock: std::fs::File,
}

/// The default output file for `input`: `name.results.jsonl` beside it.
pub fn default_output(input: &Path) -> PathBuf {
    let stem = input.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "input".into());
    input.with_file_name(format!("{stem}.results.jsonl"))
}

/// Checks `args` against `config` (lane, input format, options), works out the run's id and
/// takes its lock: one process per command, since a second would send every prompt again, and
/// `--fresh` in it would forget what the first has stored.
pub fn plan(config: &Config, args: RunArgs) -> Result<RunPlan, AppError> {
    let lane = args.lane.clone().unwrap_or_else(|| config.jobs_lane().to_string());
    if !config.lanes.contains_key(&lane) {
        let known: Vec<&str> = config.lanes.keys().map(String::as_str).collect();
        return Err(AppError::UnknownLane { lane, known: known.join(", ") });
    }
    let model = args.model.clone().unwrap_or_else(|| default_model(config, &lane));
    let output = absolute(&args.output.clone().unwrap_or_else(|| default_output(&args.input)));
    // Before any prompt is sent: a run whose output has nowhere to go would be paid for in vain.
    if let Some(folder) = output.parent().filter(|folder| !folder.is_dir()) {
        let missing = std::io::Error::new(std::io::ErrorKind::NotFound, "the output's folder does not exist");
        return Err(io(folder)(missing));
    }
    let id = fingerprint(&args, &output, &lane, &model)?;
    let format = input::detect(&args.input, args.template.as_deref())?;
    if format == Format::Batch && (args.temperature.is_some() || args.max_tokens.is_some()) {
        return Err(AppError::ParametersOnBatchLines);
    }
    let data_dir = config.storage.path.parent().map(Path::to_path_buf).unwrap_or_default();
    let runs = data_dir.join("runs");
    crate::jobs::create_private_dir(&runs).map_err(io(&runs))?;
    let lock = lock_run(&runs.join(format!("{id}.lock")))?;
    Ok(RunPlan { id, output, args, lane, model, format, runs, _lock: lock })
}

impl App {
    /// Creates the job of `plan`, or finds the one an earlier run of the same command made
    /// (forgotten first with `--fresh`), converting the input to batch lines when it needs it.
    /// Returns the job as it stands (its counts say what an earlier run already did).
    pub async fn create_run(&self, plan: &RunPlan) -> Result<Job, AppError> {
        let id = &plan.id;
        if plan.args.fresh && self.jobs.forget_run(id).await? {
            tracing::info!(event = "run_forgotten", job = %id);
        }
        let earlier = self.jobs.get(id).await?;
        // CSV and `{"prompt"}` lines are converted to batch lines for the run's life; a finished
        // run needs them no more.
        let input_path = match plan.converted() {
            None => absolute(&plan.args.input),
            Some(converted) => {
                if plan.args.fresh {
                    remove_converted(&converted);
                }
                let finished = earlier.as_ref().is_some_and(|job| job.status.is_terminal());
                if !finished && !converted.exists() {
                    let how = Conversion {
                        template: plan.args.template.as_deref(),
                        model: &plan.model,
                        temperature: plan.args.temperature,
                        max_tokens: plan.args.max_tokens,
                    };
                    input::convert(&plan.args.input, plan.format, &how, &converted)?;
                }
                converted
            }
        };
        let new = NewJob {
            id: id.clone(),
            kind: JobKind::Run,
            owner: None,
            input_file_id: id.trim_start_matches("run_").to_string(),
            input_path,
            output_path: Some(plan.output.clone()),
            endpoint: crate::jobs::line::CHAT_ENDPOINT.to_string(),
            completion_window: String::new(),
            lane: plan.lane.clone(),
            metadata: None,
            idempotency_key: None,
            request_hash: None,
            created_at: crate::jobs::unix_now(),
            expires_at: None,
        };
        let job = match self.jobs.create(new).await? {
            Created::New(job) | Created::Existing(job) => job,
        };
        // Run before and finished; its answers went to the output, which is gone since.
        if job.status == JobStatus::Completed && !plan.output.exists() {
            return Err(AppError::OutputGone { path: plan.output.display().to_string() });
        }
        Ok(job)
    }
}

impl RunPlan {
    /// The converted input, for CSV and `{"prompt"}` lines.
    fn converted(&self) -> Option<PathBuf> {
        (self.format != Format::Batch).then(|| self.runs.join(format!("{}.jsonl", self.id)))
    }

    /// What the job's state after a run means: the converted input is removed once the job has
    /// ended (its outcomes are stored, or the input was refused); a refused input lists its
    /// problems; a job that stopped unfinished without an interrupt is an error.
    pub fn ended(&self, job: &Job, interrupted: bool) -> Result<(), AppError> {
        if let Some(path) = self.converted().filter(|_| job.status.is_terminal()) {
            remove_converted(&path);
        }
        if job.status == JobStatus::Failed {
            return Err(invalid(&self.args.input, &job.errors));
        }
        if !interrupted && !job.status.is_terminal() {
            return Err(AppError::Stopped { status: job.status.to_string() });
        }
        Ok(())
    }

    /// The job as stored now.
    pub async fn job(&self, app: &App) -> Result<Job, AppError> {
        Ok(app.jobs.get(&self.id).await?.ok_or_else(|| JobError::NotFound(self.id.clone()))?)
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> AppError {
    let path = path.display().to_string();
    move |source| AppError::Io { path: path.clone(), source }
}

/// Takes the lock of one command's run, or says another process holds it.
fn lock_run(path: &Path) -> Result<std::fs::File, AppError> {
    let file =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).map_err(io(path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(AppError::Busy),
        Err(std::fs::TryLockError::Error(source)) => Err(io(path)(source)),
    }
}

fn remove_converted(path: &Path) {
    crate::jobs::remove_if_there(path, "remove_converted_input");
}

fn invalid(path: &Path, errors: &[LineError]) -> AppError {
    let list: Vec<String> = errors
        .iter()
        .map(|e| match e.line {
            Some(line) => format!("  line {line}: {} ({})", e.message, e.code),
            None => format!("  {} ({})", e.message, e.code),
        })
        .collect();
    AppError::InvalidInput { path: path.display().to_string(), count: errors.len(), list: list.join("\n") }
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
fn fingerprint(args: &RunArgs, output: &Path, lane: &str, model: &str) -> Result<String, AppError> {
    let io = io(&args.input);
    let meta = std::fs::metadata(&args.input).map_err(&io)?;
    let modified = meta.modified().map_err(&io)?;
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
