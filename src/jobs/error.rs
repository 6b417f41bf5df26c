//! The jobs' one error type.

use std::path::PathBuf;

/// Why a job operation failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A query failed.
    #[error("job store query failed: {0}")]
    Query(#[from] rusqlite::Error),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A job's file could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// A stored column does not hold what it should (the file was edited or damaged).
    #[error("batch {id} holds an invalid {column}")]
    Decode {
        /// The job.
        id: String,
        /// The column.
        column: &'static str,
    },
    /// An ended batch's results are read from its output and error files, and one was deleted.
    #[error("the results of batch {id} were in file {file}, which was deleted")]
    ResultsGone {
        /// The batch.
        id: String,
        /// The deleted file.
        file: String,
    },
    /// The same `Idempotency-Key` came with a different request.
    #[error("Idempotency-Key was already used for a different request (batch {existing})")]
    IdempotencyConflict {
        /// The batch the key made first.
        existing: String,
    },
    /// No such job.
    #[error("no batch {0}")]
    NotFound(String),
    /// The job is in a status that does not allow the operation.
    #[error("batch {id} is {status}; {what}")]
    WrongStatus {
        /// The job.
        id: String,
        /// Its status.
        status: String,
        /// What cannot be done.
        what: &'static str,
    },
    /// The job actors have stopped.
    #[error("the job runner has stopped")]
    Stopped,
}

impl From<actix::MailboxError> for JobError {
    fn from(_: actix::MailboxError) -> Self {
        JobError::Stopped
    }
}

impl JobError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        JobError::Io { path: path.to_path_buf(), source }
    }
}
