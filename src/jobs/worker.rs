//! The job store: its own SQLite connection on its own SyncArbiter thread.
//!
//! Validating a 200 MB input, reading items back for sending and writing output files are
//! blocking work of seconds; they run here, beside (not inside) the chat store's thread, so a
//! big job never delays a chat write or a settings read. SQLite's WAL lets both connections
//! share the file; writes take turns under the busy timeout.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use actix::{Actor, Addr, Handler, Message, SyncArbiter, SyncContext};
use rusqlite::Connection;

use super::db::{self, Created, Finished, InputLimits, NewJob, PendingItem};
use super::error::JobError;
use super::model::{Job, JobKind, JobStatus, RequestCounts};
use super::output::Done;
use super::unix_now;
use crate::config::UpstreamConfig;
use crate::store::files::{self, FileObject};

/// What the job store needs to know besides the database.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// The database file (shared with the chat store).
    pub db_path: PathBuf,
    /// Where output and error files go (the Files API's folder).
    pub files_dir: PathBuf,
    /// Input limits for validation.
    pub limits: InputLimits,
    /// The upstreams, for the served models.
    pub upstreams: Arc<[UpstreamConfig]>,
    /// Seconds a batch's output and error files live before they expire; 0: for ever.
    pub output_lifetime_secs: u64,
}

impl WorkerSettings {
    /// Where API jobs keep their own name for their input (`<batch id>.jsonl`, inside the Files
    /// API's folder so that a hard link never crosses file systems), so that deleting the upload
    /// does not take the input from a job under way.
    pub fn inputs_dir(&self) -> PathBuf {
        self.files_dir.join("batch-inputs")
    }
}

/// How old a kept input without a job row must be before it is swept: older than any create in
/// progress in another ferry sharing the folder.
const ORPHAN_AGE: Duration = Duration::from_secs(600);

/// Holds the connection; see the module docs.
pub(crate) struct JobWorker {
    conn: Connection,
    settings: WorkerSettings,
    inputs: HashMap<String, File>,
}

impl Actor for JobWorker {
    type Context = SyncContext<Self>;
}

/// Opens a connection to the (already migrated) store and starts the worker thread.
pub(crate) fn start(settings: WorkerSettings) -> Result<Addr<JobWorker>, JobError> {
    let conn = crate::store::open_connection(&settings.db_path)?;
    sweep_inputs(&conn, &settings.inputs_dir());
    // A crash between a run's end and the drop of its items leaves them.
    if let Err(error) = db::drop_ended_run_items(&conn, None) {
        tracing::warn!(event = "store_failed", what = "drop_run_items", error = %error);
    }
    let handoff = Mutex::new(Some(conn));
    let fallback = settings.clone();
    Ok(SyncArbiter::start(1, move || {
        let conn = handoff.lock().ok().and_then(|mut slot| slot.take());
        let conn = match conn {
            Some(conn) => conn,
            // A restarted thread (after a panic) reopens the file.
            None => match crate::store::open_connection(&fallback.db_path) {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::error!(event = "store_failed", what = "jobs reopen", error = %error);
                    // An in-memory database answers every later call with "no such table",
                    // which the callers report; better than a thread that panics in a loop.
                    match Connection::open_in_memory() {
                        Ok(conn) => conn,
                        Err(_) => std::process::abort(),
                    }
                }
            },
        };
        JobWorker { conn, settings: fallback.clone(), inputs: HashMap::new() }
    }))
}

/// Create a job.
#[derive(Message)]
#[rtype(result = "Result<Created, JobError>")]
pub(crate) struct CreateJob(pub NewJob);

impl Handler<CreateJob> for JobWorker {
    type Result = Result<Created, JobError>;
    fn handle(&mut self, msg: CreateJob, _: &mut SyncContext<Self>) -> Self::Result {
        let mut new = msg.0;
        let kept = if new.kind == JobKind::Api { self.keep_input(&mut new)? } else { None };
        let created = db::create(&mut self.conn, &new);
        // An idempotent repeat answers the earlier job, which has its own input.
        if let Some(path) = kept
            && !matches!(created, Ok(Created::New(_)))
        {
            remove_input(&path);
        }
        created
    }
}

/// Read a job.
#[derive(Message)]
#[rtype(result = "Result<Option<Job>, JobError>")]
pub(crate) struct GetJob(pub String);

impl Handler<GetJob> for JobWorker {
    type Result = Result<Option<Job>, JobError>;
    fn handle(&mut self, msg: GetJob, _: &mut SyncContext<Self>) -> Self::Result {
        db::get(&self.conn, &msg.0)
    }
}

/// List an owner's API jobs.
#[derive(Message)]
#[rtype(result = "Result<Vec<Job>, JobError>")]
pub(crate) struct ListJobs {
    pub owner: Option<String>,
    pub limit: usize,
    pub after: Option<String>,
}

impl Handler<ListJobs> for JobWorker {
    type Result = Result<Vec<Job>, JobError>;
    fn handle(&mut self, msg: ListJobs, _: &mut SyncContext<Self>) -> Self::Result {
        db::list(&self.conn, msg.owner.as_deref(), msg.limit, msg.after.as_deref())
    }
}

/// Jobs under way at the last stop.
#[derive(Message)]
#[rtype(result = "Result<Vec<String>, JobError>")]
pub(crate) struct Unfinished(pub JobKind);

impl Handler<Unfinished> for JobWorker {
    type Result = Result<Vec<String>, JobError>;
    fn handle(&mut self, msg: Unfinished, _: &mut SyncContext<Self>) -> Self::Result {
        db::unfinished(&self.conn, msg.0)
    }
}

/// Validate a job's input and make its items.
#[derive(Message)]
#[rtype(result = "Result<Job, JobError>")]
pub(crate) struct Validate(pub String);

impl Handler<Validate> for JobWorker {
    type Result = Result<Job, JobError>;
    fn handle(&mut self, msg: Validate, _: &mut SyncContext<Self>) -> Self::Result {
        let s = &self.settings;
        let job = db::validate(&mut self.conn, &msg.0, s.limits, &s.upstreams, unix_now())?;
        if job.status.is_terminal() {
            self.release_input(&job);
        }
        Ok(job)
    }
}

/// Pending items after a line, read back from the input.
#[derive(Message)]
#[rtype(result = "Result<Vec<PendingItem>, JobError>")]
pub(crate) struct Pending {
    pub job: Job,
    pub after: u64,
    pub limit: usize,
}

impl Handler<Pending> for JobWorker {
    type Result = Result<Vec<PendingItem>, JobError>;
    fn handle(&mut self, msg: Pending, _: &mut SyncContext<Self>) -> Self::Result {
        if !self.inputs.contains_key(&msg.job.id) {
            let path = &msg.job.input_path;
            match File::open(path) {
                Ok(file) => {
                    self.inputs.insert(msg.job.id.clone(), file);
                }
                Err(error) => {
                    // The input was deleted (or moved) while the job waited for a restart: what
                    // has no outcome gets an error, so the job can still finish.
                    tracing::warn!(event = "batch_job_input_missing", batch = %msg.job.id, error = %error);
                    let message = format!("the input file is gone ({error}); the request was not sent");
                    db::close_rest(&mut self.conn, &msg.job.id, "input_file_missing", &message)?;
                    return Ok(Vec::new());
                }
            }
        }
        let Some(input) = self.inputs.get(&msg.job.id) else {
            return Err(JobError::NotFound(msg.job.id));
        };
        db::pending(&self.conn, &msg.job, input, msg.after, msg.limit, &self.settings.upstreams)
    }
}

/// Store outcomes; their output lines are built here, off the engine's thread.
#[derive(Message)]
#[rtype(result = "Result<RequestCounts, JobError>")]
pub(crate) struct Record {
    pub id: String,
    pub done: Vec<Done>,
}

impl Handler<Record> for JobWorker {
    type Result = Result<RequestCounts, JobError>;
    fn handle(&mut self, msg: Record, _: &mut SyncContext<Self>) -> Self::Result {
        let finished: Vec<Finished> = msg.done.into_iter().map(Done::finished).collect();
        db::record(&mut self.conn, &msg.id, &finished)
    }
}

/// Output lines of finished items, a page at a time.
#[derive(Message)]
#[rtype(result = "Result<Vec<(u64, String)>, JobError>")]
pub(crate) struct Results {
    pub id: String,
    pub after: u64,
    pub limit: usize,
}

impl Handler<Results> for JobWorker {
    type Result = Result<Vec<(u64, String)>, JobError>;
    fn handle(&mut self, msg: Results, _: &mut SyncContext<Self>) -> Self::Result {
        let job = db::get(&self.conn, &msg.id)?.ok_or_else(|| JobError::NotFound(msg.id.clone()))?;
        db::results(&self.conn, &job, &self.settings.files_dir, msg.after, msg.limit)
    }
}

/// Move a job to a status.
#[derive(Message)]
#[rtype(result = "Result<(), JobError>")]
pub(crate) struct SetStatus {
    pub id: String,
    pub status: JobStatus,
}

impl Handler<SetStatus> for JobWorker {
    type Result = Result<(), JobError>;
    fn handle(&mut self, msg: SetStatus, _: &mut SyncContext<Self>) -> Self::Result {
        db::set_status(&self.conn, &msg.id, msg.status, unix_now())
    }
}

/// Forget a `ferry run` job and its outcomes.
#[derive(Message)]
#[rtype(result = "Result<bool, JobError>")]
pub(crate) struct ForgetRun(pub String);

impl Handler<ForgetRun> for JobWorker {
    type Result = Result<bool, JobError>;
    fn handle(&mut self, msg: ForgetRun, _: &mut SyncContext<Self>) -> Self::Result {
        self.inputs.remove(&msg.0);
        db::forget_run(&mut self.conn, &msg.0)
    }
}

/// Close what is left, write the files, and end the job in `end`.
#[derive(Message)]
#[rtype(result = "Result<Job, JobError>")]
pub(crate) struct Finalize {
    pub id: String,
    pub end: JobStatus,
}

impl Handler<Finalize> for JobWorker {
    type Result = Result<Job, JobError>;
    fn handle(&mut self, msg: Finalize, _: &mut SyncContext<Self>) -> Self::Result {
        self.inputs.remove(&msg.id);
        let job = self.finalize(&msg.id, msg.end)?;
        self.release_input(&job);
        Ok(job)
    }
}

impl JobWorker {
    /// Gives API job `new` its own name for its input: a hard link in [`WorkerSettings::inputs_dir`]
    /// (a copy where the file system refuses links), and points the job at it. Returns that
    /// path; None when the upload's content is not there (validation then reports it).
    fn keep_input(&self, new: &mut NewJob) -> Result<Option<PathBuf>, JobError> {
        let dir = self.settings.inputs_dir();
        create_private_dir(&dir).map_err(|e| JobError::io(&dir, e))?;
        let kept = dir.join(format!("{}.jsonl", new.id));
        match std::fs::hard_link(&new.input_path, &kept) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                tracing::warn!(event = "batch_input_copied", batch = %new.id, reason = %error, "cannot hard-link the input; copying it");
                if let Err(error) = std::fs::copy(&new.input_path, &kept) {
                    remove_input(&kept);
                    if error.kind() == std::io::ErrorKind::NotFound {
                        return Ok(None);
                    }
                    return Err(JobError::io(&kept, error));
                }
            }
        }
        new.input_path = kept.clone();
        Ok(Some(kept))
    }

    /// Removes an ended API job's own input (never an input ferry did not make for it).
    fn release_input(&self, job: &Job) {
        if job.kind == JobKind::Api && job.input_path.starts_with(self.settings.inputs_dir()) {
            remove_input(&job.input_path);
        }
    }

    fn finalize(&mut self, id: &str, end: JobStatus) -> Result<Job, JobError> {
        let job = db::get(&self.conn, id)?.ok_or_else(|| JobError::NotFound(id.to_string()))?;
        if job.status.is_terminal() {
            return Ok(job);
        }
        let (code, message) = match end {
            JobStatus::Expired => {
                ("batch_expired", "This request could not be executed before the completion window expired.")
            }
            JobStatus::Cancelled => {
                ("batch_cancelled", "This request was not executed because the batch was cancelled.")
            }
            _ => ("internal_error", "This request was left without an outcome."),
        };
        if job.times.in_progress_at.is_none() {
            // Never validated (cancelled, or expired, while validating; a crash may have left
            // some of its rows): it has no items, and no line is counted.
            db::drop_items(&self.conn, id)?;
        }
        db::close_rest(&mut self.conn, id, code, message)?;
        db::set_status(&self.conn, id, JobStatus::Finalizing, unix_now())?;
        let counts = db::counts(&self.conn, id)?;
        match job.kind {
            JobKind::Api => {
                // The files' ids are fixed in the job's row before anything is written, so a
                // finalize cut short by a crash writes the same files again, not new ones.
                let output = (counts.completed > 0)
                    .then(|| job.output_file_id.clone().unwrap_or_else(files::new_file_id));
                let error =
                    (counts.failed > 0).then(|| job.error_file_id.clone().unwrap_or_else(files::new_file_id));
                db::set_files(&self.conn, id, output.as_deref(), error.as_deref())?;
                if let Some(file_id) = &output {
                    self.write_file(&job, file_id, &[1], "output")?;
                }
                if let Some(file_id) = &error {
                    self.write_file(&job, file_id, &[2], "error")?;
                }
            }
            JobKind::Run => {
                if let Some(path) = &job.output_path {
                    db::write_lines(&self.conn, id, &[1, 2], path, &partial_of(path))?;
                }
            }
        }
        db::set_status(&self.conn, id, end, unix_now())?;
        // The answers are in the files now: the store keeps no second copy. (A crash before this
        // leaves the copy, which serves as well.)
        let kept = match job.kind {
            JobKind::Api => db::keep_in_files(&mut self.conn, id),
            JobKind::Run => db::drop_ended_run_items(&self.conn, Some(id)).map(drop),
        };
        if let Err(error) = kept {
            tracing::warn!(event = "store_failed", what = "drop_stored_answers", batch = id, error = %error);
        }
        // Nor in the WAL: its frames still hold the answers until they are checkpointed away.
        match crate::store::checkpoint_truncate(&self.conn) {
            Ok(true) => {}
            Ok(false) => tracing::debug!(event = "wal_checkpoint", batch = id, complete = false),
            Err(error) => {
                tracing::warn!(event = "store_failed", what = "wal_checkpoint", batch = id, error = %error)
            }
        }
        tracing::info!(
            event = "batch_job_finished",
            batch = id,
            status = %end,
            total = counts.total,
            completed = counts.completed,
            failed = counts.failed
        );
        db::get(&self.conn, id)?.ok_or_else(|| JobError::NotFound(id.to_string()))
    }

    /// Writes one of an API job's result files into the Files API's folder under `file_id` and
    /// lists it there (once: a second finalize rewrites the content and keeps the row).
    fn write_file(
        &self,
        job: &Job,
        file_id: &str,
        states: &[u8],
        which: &str,
    ) -> Result<db::Written, JobError> {
        let dir = &self.settings.files_dir;
        create_private_dir(dir).map_err(|e| JobError::io(dir, e))?;
        // A temporary name the store's sweep knows, so a crash leaves nothing for good.
        let temp = dir.join(format!("{}{}", files::TEMP_PREFIX, ulid::Ulid::new()));
        let written = db::write_lines(&self.conn, &job.id, states, &dir.join(file_id), &temp)?;
        if files::get(&self.conn, None, file_id)?.is_none() {
            let filename = format!("{}_{which}.jsonl", job.id);
            let mut file = FileObject {
                id: file_id.to_string(),
                ..FileObject::new(job.owner.clone(), files::PURPOSE_BATCH_OUTPUT, &filename, written.bytes)
            };
            let lifetime = i64::try_from(self.settings.output_lifetime_secs).unwrap_or(i64::MAX);
            file.expires_at = (lifetime > 0).then(|| file.created_at.saturating_add(lifetime));
            files::insert(&self.conn, &file)?;
        }
        Ok(written)
    }
}

/// Where a `ferry run` output is written before it is renamed into place: beside it, hidden,
/// under a name of its own (two runs may share an output path).
fn partial_of(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.partial", ulid::Ulid::new()))
}

/// Removes `path` if it is there; a failure is logged as `what` (the file is only left behind).
pub(crate) fn remove_if_there(path: &Path, what: &str) {
    if let Err(error) = std::fs::remove_file(path)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(event = "store_failed", what, path = %path.display(), error = %error);
    }
}

fn remove_input(path: &Path) {
    remove_if_there(path, "remove_batch_input");
}

/// Removes kept inputs a crash left behind: those of jobs that have ended, and those without a
/// job row (the crash fell between the link and the insert) once older than [`ORPHAN_AGE`].
fn sweep_inputs(conn: &rusqlite::Connection, dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let cutoff = SystemTime::now().checked_sub(ORPHAN_AGE).unwrap_or(SystemTime::UNIX_EPOCH);
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".jsonl")) else { continue };
        let leftover = match db::get(conn, id) {
            Ok(Some(job)) => job.status.is_terminal(),
            Ok(None) => entry.metadata().is_ok_and(|m| linked_before(&m, cutoff)),
            Err(_) => false,
        };
        if leftover {
            remove_input(&entry.path());
        }
    }
}

/// Whether the link was made before `cutoff`: its inode's change time, which making a hard link
/// sets (its modification time is the upload's).
#[cfg(unix)]
fn linked_before(meta: &std::fs::Metadata, cutoff: SystemTime) -> bool {
    use std::os::unix::fs::MetadataExt;
    let changed = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(meta.ctime()).unwrap_or(0));
    changed < cutoff
}

#[cfg(not(unix))]
fn linked_before(meta: &std::fs::Metadata, cutoff: SystemTime) -> bool {
    meta.modified().is_ok_and(|m| m < cutoff)
}

/// Creates `dir` (and its parents) readable by its owner only.
pub(crate) use crate::private_fs::create_dir_all as create_private_dir;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::db::{Finished, NewJob};

    /// What a crash leaves in the kept inputs' folder: an ended job's input is swept, a running
    /// job's is kept, and so is a fresh one without a row (a create may be under way elsewhere).
    #[test]
    fn the_sweep_removes_only_inputs_of_ended_jobs_and_old_orphans() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let mut conn = crate::store::open_connection(&dir.path().join("ferry.db"))?;
        let inputs = dir.path().join("batch-inputs");
        std::fs::create_dir(&inputs)?;
        for (id, status) in [("batch_ended", "completed"), ("batch_running", "in_progress")] {
            let path = inputs.join(format!("{id}.jsonl"));
            std::fs::write(&path, "{}\n")?;
            db::create(&mut conn, &NewJob { input_path: path, ..new_job(id) })?;
            conn.execute("UPDATE batches SET status = ?1 WHERE id = ?2", rusqlite::params![status, id])?;
        }
        std::fs::write(inputs.join("batch_fresh_orphan.jsonl"), "{}\n")?;
        sweep_inputs(&conn, &inputs);
        let mut left: Vec<String> = std::fs::read_dir(&inputs)?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["batch_fresh_orphan.jsonl", "batch_running.jsonl"]);
        Ok(())
    }

    fn new_job(id: &str) -> NewJob {
        NewJob {
            id: id.into(),
            kind: JobKind::Api,
            owner: None,
            input_file_id: "file-x".into(),
            input_path: PathBuf::new(),
            output_path: None,
            endpoint: "/v1/chat/completions".into(),
            completion_window: "24h".into(),
            lane: "low".into(),
            metadata: None,
            idempotency_key: None,
            request_hash: None,
            created_at: 1,
            expires_at: None,
        }
    }

    /// A worker over a database in `dir` holding API job `batch_1`, validated, of one line per
    /// custom id.
    fn worker_with_job(dir: &Path, custom_ids: &[&str]) -> Result<JobWorker, Box<dyn std::error::Error>> {
        let db_path = dir.join("ferry.db");
        let input = dir.join("in.jsonl");
        let lines: Vec<String> = custom_ids
            .iter()
            .map(|id| {
                serde_json::json!({"custom_id": id, "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}})
                .to_string()
            })
            .collect();
        std::fs::write(&input, lines.join("\n") + "\n")?;
        let settings = WorkerSettings {
            db_path: db_path.clone(),
            files_dir: dir.join("files"),
            limits: InputLimits { max_lines: 10, max_bytes: 1 << 20 },
            upstreams: Arc::from(vec![UpstreamConfig::mock("mock")]),
            output_lifetime_secs: 0,
        };
        let mut worker =
            JobWorker { conn: crate::store::open_connection(&db_path)?, settings, inputs: HashMap::new() };
        db::create(&mut worker.conn, &NewJob { input_path: input, ..new_job("batch_1") })?;
        db::validate(&mut worker.conn, "batch_1", worker.settings.limits, &worker.settings.upstreams, 2)?;
        Ok(worker)
    }

    /// A finalize cut short (here: the job put back to `finalizing` after it ended, as a crash
    /// before its last write would leave it) writes the same files again, not a second set.
    #[test]
    fn a_second_finalize_rewrites_the_same_files() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut worker = worker_with_job(dir.path(), &["a"])?;
        db::record(
            &mut worker.conn,
            "batch_1",
            &[Finished { line: 1, ok: true, output: "{\"x\":1}".into() }],
        )?;
        let first = worker.finalize("batch_1", JobStatus::Completed)?;
        // As a crash before the end leaves it: still finalizing, the answers still stored.
        worker.conn.execute("UPDATE batches SET status = 'finalizing' WHERE id = 'batch_1'", [])?;
        worker
            .conn
            .execute("UPDATE batch_items SET result = '{\"x\":1}', out_offset = NULL, out_len = NULL", [])?;
        let second = worker.finalize("batch_1", JobStatus::Completed)?;
        assert_eq!(second.status, JobStatus::Completed);
        assert!(first.output_file_id.is_some());
        assert_eq!(first.output_file_id, second.output_file_id);
        let rows: i64 = worker.conn.query_row("SELECT count(*) FROM files", [], |r| r.get(0))?;
        assert_eq!(rows, 1);
        let on_disk = std::fs::read_dir(dir.path().join("files"))?.count();
        assert_eq!(on_disk, 1, "no second file, no temporary left");
        Ok(())
    }

    /// A job killed while validating and cancelled before it validated again: the rows the first
    /// validation left are not counted as cancelled lines (no counts above `total`).
    #[test]
    fn a_job_cancelled_before_it_validated_counts_no_lines() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut worker = worker_with_job(dir.path(), &["a", "b"])?;
        // As a kill -9 part-way through validation leaves it: rows, no total, still validating;
        // then a cancel.
        worker.conn.execute(
            "UPDATE batches SET status = 'cancelling', total = 0, in_progress_at = NULL WHERE id = 'batch_1'",
            [],
        )?;
        let done = worker.finalize("batch_1", JobStatus::Cancelled)?;
        assert_eq!(done.status, JobStatus::Cancelled);
        assert_eq!((done.counts.total, done.counts.completed, done.counts.failed), (0, 0, 0));
        let rows: i64 = worker.conn.query_row("SELECT count(*) FROM batch_items", [], |r| r.get(0))?;
        assert_eq!(rows, 0);
        Ok(())
    }
}
