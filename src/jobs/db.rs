//! Jobs in SQLite: plain functions over a connection, run on the job store's thread.
//!
//! A job's items are rows made when its input is validated: line number, `custom_id`, and where
//! the line sits in the input file (offset, length) — never the request itself, so a job of a
//! million lines costs the database a few dozen bytes per line until results arrive. An item's
//! state moves once, from pending (0) to answered (1) or failed (2), by an `UPDATE … WHERE
//! state = 0`: however often an item's call ran (a resume re-sends what was in flight at a
//! crash), its result is stored once. The output line itself (OpenAI's
//! `{id, custom_id, response, error}`) is stored with it, so finalizing only copies rows out.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::{Map, Value};

use super::error::JobError;
use super::line::{self, BatchLine};
use super::model::{Job, JobKind, JobStatus, LineError, RequestCounts, StatusTimes};
use crate::config::UpstreamConfig;

/// Problems reported per refused file; the rest are counted.
const MAX_REPORTED: usize = 50;

/// A job to create.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Its id.
    pub id: String,
    /// Who starts it.
    pub kind: JobKind,
    /// The creator's key id.
    pub owner: Option<String>,
    /// The input file's id (or fingerprint).
    pub input_file_id: String,
    /// Where the input is.
    pub input_path: PathBuf,
    /// `ferry run`'s output file.
    pub output_path: Option<PathBuf>,
    /// The endpoint every line must name.
    pub endpoint: String,
    /// As given.
    pub completion_window: String,
    /// The lane its items go through.
    pub lane: String,
    /// The creator's metadata.
    pub metadata: Option<Map<String, Value>>,
    /// The `Idempotency-Key` header, if sent.
    pub idempotency_key: Option<String>,
    /// A digest of the create request, to tell a repeat from a different request.
    pub request_hash: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// When the window ends.
    pub expires_at: Option<i64>,
}

/// What `create` did.
#[derive(Debug)]
pub enum Created {
    /// A new job.
    New(Job),
    /// The job this request (same id, or same idempotency key and body) made before.
    Existing(Job),
}

/// How much input a job may have.
#[derive(Debug, Clone, Copy)]
pub struct InputLimits {
    /// Lines.
    pub max_lines: u64,
    /// Bytes.
    pub max_bytes: u64,
}

/// A pending item, read back from the input for sending.
#[derive(Debug)]
pub struct PendingItem {
    /// Its input line.
    pub line: u64,
    /// Its id.
    pub custom_id: String,
    /// The checked line (an error if the input changed since validation).
    pub parsed: Result<BatchLine, LineError>,
}

/// An item's outcome, ready to store.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Its input line.
    pub line: u64,
    /// Answered (goes to the output file) or failed (the error file).
    pub ok: bool,
    /// The output line: `{id, custom_id, response, error}` as JSON text.
    pub output: String,
}

const COLUMNS: &str = "id, kind, owner, input_file_id, input_path, output_path, endpoint, completion_window, \
     lane, metadata, status, errors, output_file_id, error_file_id, total, completed, failed, created_at, \
     expires_at, in_progress_at, finalizing_at, completed_at, failed_at, expired_at, cancelling_at, cancelled_at";

fn job_of(row: &Row<'_>) -> rusqlite::Result<(Job, Option<String>, Option<String>, String)> {
    let kind: String = row.get(1)?;
    let status: String = row.get(10)?;
    let output_path: Option<String> = row.get(5)?;
    let input_path: String = row.get(4)?;
    let job = Job {
        id: row.get(0)?,
        kind: if kind == "run" { JobKind::Run } else { JobKind::Api },
        owner: row.get(2)?,
        input_file_id: row.get(3)?,
        input_path: PathBuf::from(input_path),
        output_path: output_path.map(PathBuf::from),
        endpoint: row.get(6)?,
        completion_window: row.get(7)?,
        lane: row.get(8)?,
        metadata: None,
        status: JobStatus::Validating,
        errors: Vec::new(),
        output_file_id: row.get(12)?,
        error_file_id: row.get(13)?,
        counts: RequestCounts { total: row.get(14)?, completed: row.get(15)?, failed: row.get(16)? },
        created_at: row.get(17)?,
        expires_at: row.get(18)?,
        times: StatusTimes {
            in_progress_at: row.get(19)?,
            finalizing_at: row.get(20)?,
            completed_at: row.get(21)?,
            failed_at: row.get(22)?,
            expired_at: row.get(23)?,
            cancelling_at: row.get(24)?,
            cancelled_at: row.get(25)?,
        },
    };
    Ok((job, row.get(9)?, row.get(11)?, status))
}

fn decode(parts: (Job, Option<String>, Option<String>, String)) -> Result<Job, JobError> {
    let (mut job, metadata, errors, status) = parts;
    let bad = |column| JobError::Decode { id: job.id.clone(), column };
    job.status = JobStatus::parse(&status).ok_or_else(|| bad("status"))?;
    if let Some(text) = metadata {
        job.metadata = Some(serde_json::from_str(&text).map_err(|_| bad("metadata"))?);
    }
    if let Some(text) = errors {
        job.errors = serde_json::from_str(&text).map_err(|_| bad("errors"))?;
    }
    Ok(job)
}

/// The job `id`, if any.
pub fn get(conn: &Connection, id: &str) -> Result<Option<Job>, JobError> {
    let sql = format!("SELECT {COLUMNS} FROM batches WHERE id = ?1");
    let found = conn.prepare_cached(&sql)?.query_row([id], job_of).optional()?;
    found.map(decode).transpose()
}

/// Creates a job (status `validating`), or finds the one the same request made before.
pub fn create(conn: &mut Connection, new: &NewJob) -> Result<Created, JobError> {
    let tx = conn.transaction()?;
    if let Some(existing) = get(&tx, &new.id)? {
        return Ok(Created::Existing(existing));
    }
    if let Some(key) = &new.idempotency_key {
        let found: Option<(String, Option<String>)> = tx
            .query_row(
                "SELECT id, request_hash FROM batches WHERE coalesce(owner, '') = coalesce(?1, '') \
                 AND idempotency_key = ?2",
                params![new.owner, key],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        if let Some((id, hash)) = found {
            if hash != new.request_hash {
                return Err(JobError::IdempotencyConflict { existing: id });
            }
            let job = get(&tx, &id)?.ok_or(JobError::NotFound(id))?;
            return Ok(Created::Existing(job));
        }
    }
    let metadata = new.metadata.as_ref().map(|m| Value::Object(m.clone()).to_string());
    tx.execute(
        "INSERT INTO batches (id, kind, owner, input_file_id, input_path, output_path, endpoint, \
         completion_window, lane, metadata, status, idempotency_key, request_hash, created_at, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'validating', ?11, ?12, ?13, ?14)",
        params![
            new.id,
            new.kind.as_str(),
            new.owner,
            new.input_file_id,
            new.input_path.to_string_lossy(),
            new.output_path.as_ref().map(|p| p.to_string_lossy().into_owned()),
            new.endpoint,
            new.completion_window,
            new.lane,
            metadata,
            new.idempotency_key,
            new.request_hash,
            new.created_at,
            new.expires_at,
        ],
    )?;
    let job = get(&tx, &new.id)?.ok_or_else(|| JobError::NotFound(new.id.clone()))?;
    tx.commit()?;
    Ok(Created::New(job))
}

/// API jobs of `owner`, newest first, after the cursor `after` (a batch id), at most `limit`.
pub fn list(
    conn: &Connection,
    owner: Option<&str>,
    limit: usize,
    after: Option<&str>,
) -> Result<Vec<Job>, JobError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM batches WHERE kind = 'api' AND owner IS ?1 AND (?2 IS NULL OR id < ?2) \
         ORDER BY id DESC LIMIT ?3"
    );
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![owner, after, limit], job_of)?;
    rows.map(|row| decode(row?)).collect()
}

/// Jobs of `kind` that were under way when ferry last stopped.
pub fn unfinished(conn: &Connection, kind: JobKind) -> Result<Vec<String>, JobError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM batches WHERE kind = ?1 \
         AND status IN ('validating', 'in_progress', 'finalizing', 'cancelling') ORDER BY id",
    )?;
    let ids = stmt.query_map([kind.as_str()], |row| row.get(0))?;
    Ok(ids.collect::<rusqlite::Result<Vec<String>>>()?)
}

/// Moves job `id` to `status`, stamping its time column, unless it is already terminal.
pub fn set_status(conn: &Connection, id: &str, status: JobStatus, now: i64) -> Result<(), JobError> {
    let sql = format!(
        "UPDATE batches SET status = ?2, {} = coalesce({}, ?3) WHERE id = ?1 \
         AND status NOT IN ('failed', 'completed', 'expired', 'cancelled')",
        status.time_column(),
        status.time_column()
    );
    conn.execute(&sql, params![id, status.as_str(), now])?;
    Ok(())
}

/// Reads the job's input line by line, checks every line and makes its item rows. A file with
/// any bad line is refused as a whole (as OpenAI does): the job becomes `failed` with the first
/// problems listed and no items. Otherwise it becomes `in_progress`.
pub fn validate(
    conn: &mut Connection,
    id: &str,
    limits: InputLimits,
    upstreams: &[UpstreamConfig],
    now: i64,
) -> Result<Job, JobError> {
    let job = get(conn, id)?.ok_or_else(|| JobError::NotFound(id.to_string()))?;
    if job.status != JobStatus::Validating {
        return Ok(job);
    }
    // Rows go in by slices of their own transactions, so a big input never holds the write lock
    // for long; until the status moves on, a crash leaves the job `validating`, and validating
    // again starts by removing what an earlier attempt inserted.
    drop_items(conn, id)?;
    let mut slices = Slices::begin(conn)?;
    let mut problems: Vec<LineError> = Vec::new();
    let mut more = 0usize;
    let total = read_items(&mut slices, &job, limits, upstreams, &mut |problem| {
        if problems.len() < MAX_REPORTED {
            problems.push(problem);
        } else {
            more += 1;
        }
    })?;
    if total == 0 && problems.is_empty() {
        problems.push(LineError::new("empty_file", "the input file has no request lines", None, 0));
    }
    if problems.is_empty() {
        conn.execute("UPDATE batches SET total = ?2 WHERE id = ?1", params![id, total])?;
        set_status(conn, id, JobStatus::InProgress, now)?;
        slices.commit()?;
    } else {
        drop(slices);
        drop_items(conn, id)?;
        if more > 0 {
            problems.push(LineError::new(
                "too_many_errors",
                format!("{more} more problems not listed"),
                None,
                0,
            ));
        }
        let errors = serde_json::to_string(&problems).unwrap_or_else(|_| "[]".into());
        conn.execute("UPDATE batches SET errors = ?2 WHERE id = ?1", params![id, errors])?;
        set_status(conn, id, JobStatus::Failed, now)?;
    }
    get(conn, id)?.ok_or_else(|| JobError::NotFound(id.to_string()))
}

/// Rows inserted per transaction while validating.
const VALIDATE_SLICE: u64 = 10_000;

/// A run of write transactions on one connection, committed every [`VALIDATE_SLICE`] rows;
/// the open one is rolled back if it is dropped before [`Slices::commit`].
struct Slices<'c> {
    conn: &'c Connection,
    rows: u64,
    open: bool,
}

impl<'c> Slices<'c> {
    fn begin(conn: &'c Connection) -> rusqlite::Result<Self> {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(Slices { conn, rows: 0, open: true })
    }

    /// Counts a row; commits and begins the next slice when this one is full.
    fn row(&mut self) -> rusqlite::Result<()> {
        self.rows += 1;
        if self.rows.is_multiple_of(VALIDATE_SLICE) {
            self.open = false;
            self.conn.execute_batch("COMMIT; BEGIN IMMEDIATE")?;
            self.open = true;
        }
        Ok(())
    }

    fn commit(mut self) -> rusqlite::Result<()> {
        self.open = false;
        self.conn.execute_batch("COMMIT")
    }
}

impl Drop for Slices<'_> {
    fn drop(&mut self) {
        if self.open && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// Inserts one item row per line of the job's input; returns the number of lines, reporting
/// each bad one to `problem`.
fn read_items(
    slices: &mut Slices<'_>,
    job: &Job,
    limits: InputLimits,
    upstreams: &[UpstreamConfig],
    problem: &mut dyn FnMut(LineError),
) -> Result<u64, JobError> {
    // `ferry run` has no limits: its input is the user's own file on the user's own disk.
    let limits = match job.kind {
        JobKind::Api => limits,
        JobKind::Run => InputLimits { max_lines: u64::MAX, max_bytes: u64::MAX },
    };
    let path = &job.input_path;
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) => {
            // Deleted between create and validation: the batch fails, naming why.
            problem(LineError::new(
                "input_file_missing",
                format!("the input file cannot be read: {error}"),
                None,
                0,
            ));
            return Ok(0);
        }
    };
    let size = file.metadata().map_err(|e| JobError::io(path, e))?.len();
    if size > limits.max_bytes {
        problem(LineError::new(
            "file_too_large",
            format!("the input holds {size} bytes; the limit is {}", limits.max_bytes),
            None,
            0,
        ));
        return Ok(0);
    }
    let conn = slices.conn;
    let mut insert = conn.prepare_cached(
        "INSERT INTO batch_items (batch_id, line, custom_id, offset, len) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut buffer = Vec::with_capacity(4096);
    let (mut offset, mut number, mut items) = (0u64, 0u64, 0u64);
    loop {
        buffer.clear();
        let read = reader.read_until(b'\n', &mut buffer).map_err(|e| JobError::io(path, e))?;
        if read == 0 {
            break;
        }
        number += 1;
        let text = buffer.trim_ascii();
        // Where the trimmed text starts, so reading it back by offset gets exactly it.
        let start = offset + (buffer.len() - buffer.trim_ascii_start().len()) as u64;
        offset += read as u64;
        if text.is_empty() {
            continue;
        }
        items += 1;
        if items > limits.max_lines {
            problem(LineError::new(
                "too_many_lines",
                format!("the input holds more than {} request lines", limits.max_lines),
                None,
                number,
            ));
            break;
        }
        match line::parse(text, number, upstreams) {
            Ok(parsed) => {
                let inserted =
                    insert.execute(params![job.id, number, parsed.custom_id, start, text.len() as u64]);
                match inserted {
                    Ok(_) => slices.row()?,
                    Err(rusqlite::Error::SqliteFailure(e, _))
                        if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                    {
                        problem(LineError::new(
                            "duplicate_custom_id",
                            "this custom_id appears on an earlier line",
                            Some("custom_id"),
                            number,
                        ));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Err(bad) => problem(bad),
        }
    }
    Ok(items)
}

/// Up to `limit` pending items after line `after`, in input order, read back from `input`.
pub fn pending(
    conn: &Connection,
    job: &Job,
    input: &File,
    after: u64,
    limit: usize,
    upstreams: &[UpstreamConfig],
) -> Result<Vec<PendingItem>, JobError> {
    let mut stmt = conn.prepare_cached(
        "SELECT line, custom_id, offset, len FROM batch_items \
         WHERE batch_id = ?1 AND line > ?2 AND state = 0 ORDER BY line LIMIT ?3",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map(params![job.id, after, limit], |row| {
        Ok((row.get::<_, u64>(0)?, row.get::<_, String>(1)?, row.get::<_, u64>(2)?, row.get::<_, u64>(3)?))
    })?;
    let mut items = Vec::new();
    let mut buffer = Vec::new();
    for row in rows {
        let (line, custom_id, offset, len) = row?;
        buffer.resize(usize::try_from(len).unwrap_or(0), 0);
        let parsed = match read_at(input, &mut buffer, offset) {
            Ok(()) => line::parse(&buffer, line, upstreams).and_then(|parsed| {
                if parsed.custom_id == custom_id { Ok(parsed) } else { Err(changed(line)) }
            }),
            Err(_) => Err(changed(line)),
        };
        items.push(PendingItem { line, custom_id, parsed });
    }
    Ok(items)
}

fn changed(line: u64) -> LineError {
    LineError::new("input_changed", "the input file changed or was removed after validation", None, line)
}

#[cfg(unix)]
fn read_at(file: &File, buffer: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buffer, offset)
}

#[cfg(not(unix))]
fn read_at(file: &File, buffer: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = file.try_clone()?;
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buffer)
}

/// Stores outcomes (each item once: an item that already has one keeps it) and returns the
/// job's counts after them.
pub fn record(conn: &mut Connection, id: &str, finished: &[Finished]) -> Result<RequestCounts, JobError> {
    let tx = conn.transaction()?;
    let (mut ok, mut failed) = (0u64, 0u64);
    {
        let mut update = tx.prepare_cached(
            "UPDATE batch_items SET state = ?3, result = ?4 WHERE batch_id = ?1 AND line = ?2 AND state = 0",
        )?;
        for item in finished {
            let changed = update.execute(params![id, item.line, if item.ok { 1 } else { 2 }, item.output])?;
            if changed > 0 {
                if item.ok {
                    ok += 1;
                } else {
                    failed += 1;
                }
            }
        }
    }
    tx.execute(
        "UPDATE batches SET completed = completed + ?2, failed = failed + ?3 WHERE id = ?1",
        params![id, ok, failed],
    )?;
    let counts = counts(&tx, id)?;
    tx.commit()?;
    Ok(counts)
}

/// The job's counts.
pub fn counts(conn: &Connection, id: &str) -> Result<RequestCounts, JobError> {
    conn.prepare_cached("SELECT total, completed, failed FROM batches WHERE id = ?1")?
        .query_row([id], |row| {
            Ok(RequestCounts { total: row.get(0)?, completed: row.get(1)?, failed: row.get(2)? })
        })
        .optional()?
        .ok_or_else(|| JobError::NotFound(id.to_string()))
}

/// Gives every item still pending the error `code`; returns how many.
pub fn close_rest(conn: &mut Connection, id: &str, code: &str, message: &str) -> Result<u64, JobError> {
    let tx = conn.transaction()?;
    let closed = tx.execute(
        "UPDATE batch_items SET state = 2, result = json_object(\
             'id', 'batch_req_' || lower(hex(randomblob(13))), 'custom_id', custom_id, \
             'response', NULL, 'error', json_object('code', ?2, 'message', ?3)) \
         WHERE batch_id = ?1 AND state = 0",
        params![id, code, message],
    )? as u64;
    tx.execute("UPDATE batches SET failed = failed + ?2 WHERE id = ?1", params![id, closed])?;
    tx.commit()?;
    Ok(closed)
}

/// Drops every item of job `id` (a job not validated, or whose input was refused).
pub fn drop_items(conn: &Connection, id: &str) -> Result<usize, JobError> {
    Ok(conn.execute("DELETE FROM batch_items WHERE batch_id = ?1", [id])?)
}

/// Drops the items (and their output lines) of ended `ferry run` job `id` (all ended runs when
/// `id` is None: the sweep at start, after a crash between a run's end and this): their output
/// file holds the lines, and a run of a million prompts must not leave a copy of every answer
/// in the database. The job rows, with their counts, stay. Returns the items dropped.
pub fn drop_ended_run_items(conn: &Connection, id: Option<&str>) -> Result<usize, JobError> {
    Ok(conn.execute(
        "DELETE FROM batch_items WHERE batch_id IN \
         (SELECT id FROM batches WHERE kind = 'run' AND (?1 IS NULL OR id = ?1) \
          AND status IN ('completed', 'failed', 'cancelled', 'expired'))",
        params![id],
    )?)
}

/// Forgets `ferry run` job `id` and its stored outcomes (`ferry run --fresh`); true if there was
/// one. API batches are never forgotten this way.
pub fn forget_run(conn: &mut Connection, id: &str) -> Result<bool, JobError> {
    let tx = conn.transaction()?;
    tx.execute(
        "DELETE FROM batch_items WHERE batch_id = (SELECT id FROM batches WHERE id = ?1 AND kind = 'run')",
        params![id],
    )?;
    let deleted = tx.execute("DELETE FROM batches WHERE id = ?1 AND kind = 'run'", params![id])?;
    tx.commit()?;
    Ok(deleted > 0)
}

/// What [`write_lines`] wrote.
#[derive(Debug, Default)]
pub struct Written {
    /// Bytes in the file.
    pub bytes: u64,
}

/// Rows [`keep_in_files`] updates per transaction.
const KEEP_SLICE: usize = 4096;

/// Writes the stored output lines of job `id` whose state is in `states`, in input order, to
/// `path`, through `temp` (same folder) renamed into place, mode 0600.
pub fn write_lines(
    conn: &Connection,
    id: &str,
    states: &[u8],
    path: &Path,
    temp: &Path,
) -> Result<Written, JobError> {
    let written = write_lines_to(conn, id, states, path, temp);
    if written.is_err() {
        // Nothing half-written is left behind (the rename is the last step).
        let _ = std::fs::remove_file(temp);
    }
    written
}

fn write_lines_to(
    conn: &Connection,
    id: &str,
    states: &[u8],
    path: &Path,
    temp: &Path,
) -> Result<Written, JobError> {
    use std::io::Write;
    let file = private_file(temp).map_err(|e| JobError::io(temp, e))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, file);
    let (low, high) = (states.iter().min().copied().unwrap_or(1), states.iter().max().copied().unwrap_or(2));
    let mut stmt = conn.prepare_cached(
        "SELECT result FROM batch_items WHERE batch_id = ?1 AND state BETWEEN ?2 AND ?3 ORDER BY line",
    )?;
    let mut rows = stmt.query(params![id, low, high])?;
    let mut written = Written::default();
    while let Some(row) = rows.next()? {
        let Some(text) = row.get::<_, Option<String>>(0)? else {
            return Err(JobError::Decode { id: id.to_string(), column: "result" });
        };
        out.write_all(text.as_bytes())
            .and_then(|()| out.write_all(b"\n"))
            .map_err(|e| JobError::io(temp, e))?;
        written.bytes += text.len() as u64 + 1;
    }
    let file = out.into_inner().map_err(|e| JobError::io(temp, e.into_error()))?;
    file.sync_all().map_err(|e| JobError::io(temp, e))?;
    std::fs::rename(temp, path).map_err(|e| JobError::io(path, e))?;
    Ok(written)
}

/// Records where each of job `id`'s output lines sits in its written files — the lines of state 1
/// in the output file and of state 2 in the error file, each as [`write_lines`] wrote them: in
/// line order, one after the other — and clears the stored copy: an ended batch keeps its answers
/// once, in its files, and [`results`] reads them from there. Works a slice of rows at a time, so
/// memory does not grow with the job; a row already kept keeps its place.
pub fn keep_in_files(conn: &mut Connection, id: &str) -> Result<(), JobError> {
    keep_in_files_by(conn, id, KEEP_SLICE)
}

fn keep_in_files_by(conn: &mut Connection, id: &str, slice: usize) -> Result<(), JobError> {
    let limit = i64::try_from(slice).unwrap_or(i64::MAX);
    for state in [1u8, 2] {
        let (mut after, mut offset) = (-1i64, 0u64);
        loop {
            let tx = conn.transaction()?;
            let rows: Vec<(i64, u64)> = {
                let mut select = tx.prepare_cached(
                    "SELECT line, COALESCE(length(CAST(result AS BLOB)), out_len) FROM batch_items \
                     WHERE batch_id = ?1 AND state = ?2 AND line > ?3 ORDER BY line LIMIT ?4",
                )?;
                let rows = select.query_map(params![id, state, after, limit], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, Option<u64>>(1)?.unwrap_or(0)))
                })?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let Some(&(last, _)) = rows.last() else { break };
            {
                let mut update = tx.prepare_cached(
                    "UPDATE batch_items SET result = NULL, out_offset = ?3, out_len = ?4 \
                     WHERE batch_id = ?1 AND line = ?2",
                )?;
                for (line, len) in rows {
                    update.execute(params![id, line, offset, len])?;
                    offset += len + 1;
                }
            }
            tx.commit()?;
            after = last;
        }
    }
    Ok(())
}

/// Creates (or truncates) `path` readable by its owner only.
pub(crate) use crate::private_fs::create_file as private_file;

/// Records the job's output and error file ids.
pub fn set_files(
    conn: &Connection,
    id: &str,
    output: Option<&str>,
    error: Option<&str>,
) -> Result<(), JobError> {
    conn.execute(
        "UPDATE batches SET output_file_id = ?2, error_file_id = ?3 WHERE id = ?1",
        params![id, output, error],
    )?;
    Ok(())
}

/// Up to `limit` output lines of items with an outcome, after line `after`, in input order:
/// the stored copy while the job runs, then (see [`keep_in_files`]) the line in its output or
/// error file in `files_dir`.
pub fn results(
    conn: &Connection,
    job: &Job,
    files_dir: &Path,
    after: u64,
    limit: usize,
) -> Result<Vec<(u64, String)>, JobError> {
    let mut stmt = conn.prepare_cached(
        "SELECT line, state, result, out_offset, out_len FROM batch_items \
         WHERE batch_id = ?1 AND line > ?2 AND state > 0 ORDER BY line LIMIT ?3",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut rows = stmt.query(params![job.id, after, limit])?;
    // The output file for state 1, the error file for state 2, opened when first needed.
    let mut files: [Option<File>; 2] = [None, None];
    let mut lines = Vec::new();
    while let Some(row) = rows.next()? {
        let line: u64 = row.get(0)?;
        if let Some(text) = row.get::<_, Option<String>>(2)? {
            lines.push((line, text));
            continue;
        }
        let state: u8 = row.get(1)?;
        let (offset, len): (Option<u64>, Option<u64>) = (row.get(3)?, row.get(4)?);
        let (Some(offset), Some(len), Some(slot)) = (offset, len, state.checked_sub(1)) else {
            return Err(JobError::Decode { id: job.id.clone(), column: "result" });
        };
        let file_id = if slot == 0 { &job.output_file_id } else { &job.error_file_id };
        let Some(file_id) = file_id else {
            return Err(JobError::Decode { id: job.id.clone(), column: "output_file_id" });
        };
        let file = match &mut files[usize::from(slot.min(1))] {
            Some(file) => file,
            empty => {
                let path = files_dir.join(file_id);
                match File::open(&path) {
                    Ok(file) => empty.insert(file),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(JobError::ResultsGone { id: job.id.clone(), file: file_id.clone() });
                    }
                    Err(e) => return Err(JobError::io(&path, e)),
                }
            }
        };
        let mut buffer = vec![0; usize::try_from(len).unwrap_or(usize::MAX)];
        read_at(file, &mut buffer, offset).map_err(|e| JobError::io(&files_dir.join(file_id), e))?;
        let text = String::from_utf8(buffer)
            .map_err(|_| JobError::Decode { id: job.id.clone(), column: "result" })?;
        lines.push((line, text));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamConfig;

    fn conn() -> Connection {
        let mut conn = Connection::open_in_memory().expect("in-memory db");
        crate::store::migrations::migrate(&mut conn).expect("migrate");
        conn
    }

    fn line(id: &str) -> String {
        serde_json::json!({"custom_id": id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}})
        .to_string()
    }

    fn new_job(id: &str, input: &Path) -> NewJob {
        NewJob {
            id: id.into(),
            kind: JobKind::Api,
            owner: Some("owner-1".into()),
            input_file_id: "file-x".into(),
            input_path: input.to_path_buf(),
            output_path: None,
            endpoint: "/v1/chat/completions".into(),
            completion_window: "24h".into(),
            lane: "low".into(),
            metadata: None,
            idempotency_key: Some("key-1".into()),
            request_hash: Some("hash-1".into()),
            created_at: 1,
            expires_at: Some(86_401),
        }
    }

    const LIMITS: InputLimits = InputLimits { max_lines: 100, max_bytes: 1 << 20 };

    fn validated(conn: &mut Connection, dir: &Path, lines: &[String]) -> Job {
        let input = dir.join("in.jsonl");
        std::fs::write(&input, lines.join("\n") + "\n\n").expect("write input");
        create(conn, &new_job("batch_1", &input)).expect("create");
        validate(conn, "batch_1", LIMITS, &[UpstreamConfig::mock("mock")], 2).expect("validate")
    }

    #[test]
    fn an_outcome_is_stored_once_however_often_it_arrives() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = conn();
        let job = validated(&mut conn, dir.path(), &[line("a"), line("b")]);
        assert_eq!((job.status, job.counts.total), (JobStatus::InProgress, 2));
        let ok = |n: u64, text: &str| Finished { line: n, ok: true, output: text.into() };
        let counts = record(&mut conn, "batch_1", &[ok(1, "first"), ok(1, "second")]).expect("record");
        assert_eq!((counts.completed, counts.failed), (1, 0));
        let again = record(&mut conn, "batch_1", &[Finished { line: 1, ok: false, output: "late".into() }]);
        assert_eq!(again.expect("record").failed, 0, "a stored outcome is never replaced");
        assert_eq!(close_rest(&mut conn, "batch_1", "batch_expired", "too late").expect("close"), 1);
        let rows = results(&conn, &job, dir.path(), 0, 10).expect("results");
        assert_eq!(rows[0], (1, "first".to_string()));
        let expired: Value = serde_json::from_str(&rows[1].1).expect("JSON");
        assert_eq!(
            (expired["custom_id"].as_str(), expired["error"]["code"].as_str()),
            (Some("b"), Some("batch_expired"))
        );
        assert_eq!(counts_of(&conn), (1, 1));
    }

    /// Once an ended job's lines are in its files, the store keeps where they are, not a copy,
    /// and results read the same from the files; with a file deleted they say so.
    #[test]
    fn results_of_an_ended_job_come_from_its_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = conn();
        let lines: Vec<String> = ["a", "b", "c", "d"].into_iter().map(line).collect();
        let mut job = validated(&mut conn, dir.path(), &lines);
        // Answers with characters of more than one byte: offsets are in bytes.
        let done = |n: u64, ok: bool| Finished {
            line: n,
            ok,
            output: format!("{{\"line\":{n},\"ok\":{ok},\"text\":\"{}\"}}", "é".repeat(n as usize)),
        };
        record(&mut conn, "batch_1", &[done(1, true), done(2, false), done(3, true), done(4, false)])
            .expect("record");
        let before = results(&conn, &job, dir.path(), 0, 10).expect("results");
        for (file, state) in [("file-out", 1), ("file-err", 2)] {
            write_lines(&conn, "batch_1", &[state], &dir.path().join(file), &dir.path().join("tmp"))
                .expect("write");
        }
        job.output_file_id = Some("file-out".into());
        job.error_file_id = Some("file-err".into());
        // Slices of 1 row: every slice boundary is crossed.
        keep_in_files_by(&mut conn, "batch_1", 1).expect("keep");
        let stored: i64 = conn
            .query_row("SELECT count(*) FROM batch_items WHERE result IS NOT NULL", [], |r| r.get(0))
            .expect("count");
        assert_eq!(stored, 0, "no second copy");
        assert_eq!(results(&conn, &job, dir.path(), 0, 10).expect("from files"), before);
        assert_eq!(results(&conn, &job, dir.path(), 2, 1).expect("a page"), before[2..3]);
        std::fs::remove_file(dir.path().join("file-err")).expect("delete");
        match results(&conn, &job, dir.path(), 0, 10) {
            Err(JobError::ResultsGone { file, .. }) => assert_eq!(file, "file-err"),
            other => panic!("expected ResultsGone, got {other:?}"),
        }
    }

    fn counts_of(conn: &Connection) -> (u64, u64) {
        let c = counts(conn, "batch_1").expect("counts");
        (c.completed, c.failed)
    }

    /// Past a slice of rows the earlier slices are committed: a duplicate found later still fails
    /// the file and leaves no items; a good file of several slices keeps them all.
    #[test]
    fn validation_in_slices_is_still_all_or_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let limits = InputLimits { max_lines: 100_000, max_bytes: 1 << 30 };
        let mut lines: Vec<String> = (0..25_000).map(|i| line(&format!("r{i}"))).collect();
        let input = dir.path().join("in.jsonl");
        let upstreams = [UpstreamConfig::mock("mock")];
        let items = |conn: &Connection| -> u64 {
            conn.query_row("SELECT count(*) FROM batch_items", [], |r| r.get(0)).expect("count")
        };

        let mut conn = conn();
        std::fs::write(&input, lines.join("\n")).expect("write input");
        create(&mut conn, &new_job("batch_1", &input)).expect("create");
        let job = validate(&mut conn, "batch_1", limits, &upstreams, 2).expect("validate");
        assert_eq!((job.status, job.counts.total, items(&conn)), (JobStatus::InProgress, 25_000, 25_000));

        let mut conn = super::tests::conn();
        lines.push(line("r3"));
        std::fs::write(&input, lines.join("\n")).expect("write input");
        create(&mut conn, &new_job("batch_1", &input)).expect("create");
        let job = validate(&mut conn, "batch_1", limits, &upstreams, 2).expect("validate");
        assert_eq!(job.status, JobStatus::Failed);
        assert_eq!((job.errors[0].code.as_str(), job.errors[0].line), ("duplicate_custom_id", Some(25_001)));
        assert_eq!(items(&conn), 0, "a refused file leaves no items");
        assert!(conn.is_autocommit(), "no transaction left open");
    }

    #[test]
    fn a_missing_input_fails_the_batch_naming_why() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = conn();
        create(&mut conn, &new_job("batch_1", &dir.path().join("gone.jsonl"))).expect("create");
        let job =
            validate(&mut conn, "batch_1", LIMITS, &[UpstreamConfig::mock("mock")], 2).expect("validate");
        assert_eq!(job.status, JobStatus::Failed);
        assert_eq!(job.errors[0].code, "input_file_missing");
    }

    #[test]
    fn indented_lines_are_read_back_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = conn();
        let job =
            validated(&mut conn, dir.path(), &[format!("  \t{}", line("a")), format!("{}  ", line("b"))]);
        assert_eq!(job.status, JobStatus::InProgress, "{:?}", job.errors);
        let input = File::open(&job.input_path).expect("input");
        let items = pending(&conn, &job, &input, 0, 10, &[UpstreamConfig::mock("mock")]).expect("pending");
        let parsed: Vec<bool> = items.iter().map(|item| item.parsed.is_ok()).collect();
        assert_eq!(parsed, [true, true], "{items:?}");
    }

    #[test]
    fn duplicates_and_bad_lines_fail_the_file_with_every_line_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = conn();
        let job = validated(&mut conn, dir.path(), &[line("a"), "{oops".into(), line("a")]);
        assert_eq!(job.status, JobStatus::Failed);
        let found: Vec<(&str, Option<u64>)> = job.errors.iter().map(|e| (e.code.as_str(), e.line)).collect();
        assert_eq!(found, vec![("invalid_json_line", Some(2)), ("duplicate_custom_id", Some(3))]);
        let items: u64 = conn.query_row("SELECT count(*) FROM batch_items", [], |r| r.get(0)).expect("count");
        assert_eq!(items, 0, "a refused file leaves no items");
    }

    #[test]
    fn an_idempotency_key_finds_the_first_job_or_refuses_another_request() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = conn();
        let input = dir.path().join("in.jsonl");
        assert!(matches!(create(&mut conn, &new_job("batch_1", &input)), Ok(Created::New(_))));
        let repeat = NewJob { id: "batch_2".into(), ..new_job("batch_2", &input) };
        assert!(matches!(create(&mut conn, &repeat), Ok(Created::Existing(job)) if job.id == "batch_1"));
        let other = NewJob { request_hash: Some("hash-2".into()), ..new_job("batch_3", &input) };
        assert!(
            matches!(create(&mut conn, &other), Err(JobError::IdempotencyConflict { existing }) if existing == "batch_1")
        );
        let other_owner = NewJob { owner: Some("owner-2".into()), ..new_job("batch_4", &input) };
        assert!(matches!(create(&mut conn, &other_owner), Ok(Created::New(_))), "keys are per owner");
    }
}
