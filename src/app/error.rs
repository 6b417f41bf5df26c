//! The application layer's one error type: what starting ferry or a use-case can fail with.
//! Each door maps it to its own answer (a status and JSON body, one CLI line).

use std::io;

use crate::config::ConfigError;
use crate::engine::{ControlError, EngineError};
use crate::jobs::JobError;
use crate::jobs::input::InputError;
use crate::store::StoreError;

/// Why ferry could not start, or a use-case failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    // ── Starting ──
    /// The config file could not be read, or holds bad values.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A door refused to start as configured (an API bound beyond loopback without keys, a key
    /// too short); the door's own error says what to change.
    #[error(transparent)]
    Refused(Box<dyn std::error::Error + Send + Sync>),
    /// The engine did not start.
    #[error("starting the engine: {0}")]
    Engine(#[from] EngineError),
    /// The store could not be opened.
    #[error("the store ([storage] path = {path}): {source}")]
    Store {
        /// The configured database file.
        path: String,
        /// What went wrong.
        source: StoreError,
    },
    /// The stored settings could not be applied to the engine at start.
    #[error("applying the stored settings (PUT /v1/settings) at start: {0}")]
    StoredSettings(ControlError),
    /// The job machinery could not start.
    #[error("starting batch jobs: {0}")]
    Jobs(JobError),
    /// The server could not bind.
    #[error("binding {bind}: {source}")]
    Bind {
        /// The configured address.
        bind: String,
        /// The I/O error.
        source: io::Error,
    },
    /// The server stopped with an error before it was asked to.
    #[error("the HTTP server failed: {0}")]
    Server(io::Error),

    // ── Use-cases ──
    /// A value a caller gave is refused; names the field and what would be valid.
    #[error("{message}")]
    Invalid {
        /// The field, as the caller named it (`completion_window`, `high_priority.tokens`).
        field: String,
        /// What is wrong and what would be valid.
        message: String,
    },
    /// The engine refused a live change.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The store failed during a use-case (`what` names it, for the log).
    #[error("{what}: {source}")]
    StoreFailed {
        /// What was being done.
        what: &'static str,
        /// What went wrong.
        source: StoreError,
    },
    /// The job machinery failed.
    #[error(transparent)]
    Job(#[from] JobError),

    // ── `ferry run` ──
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
    InvalidInput {
        /// The input file.
        path: String,
        /// How many problems are listed.
        count: usize,
        /// One per line.
        list: String,
    },
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
    /// A file's metadata could not be read, or a file could not be made.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the file system said.
        source: io::Error,
    },
}

impl AppError {
    /// A refused value in `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        AppError::Invalid { field: field.into(), message: message.into() }
    }
}
