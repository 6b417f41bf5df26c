//! The store's one error type.

use std::path::PathBuf;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file (or its directory) could not be created or opened.
    #[error("cannot open the store at {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite or the file system said.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A schema migration failed; the database is left at the last version that applied.
    #[error("cannot migrate the store to schema version {version} ({name}): {source}")]
    Migrate {
        /// The version being applied.
        version: u32,
        /// What that migration does.
        name: &'static str,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The database was written by a newer ferry; this one will not touch it.
    #[error(
        "the store's schema version is {found} but this ferry supports up to {supported}; \
         run a newer ferry or point [storage] path at another file"
    )]
    NewerSchema {
        /// The version in the file.
        found: u32,
        /// The newest version this build knows.
        supported: u32,
    },
    /// The database was written by an older ferry and not migrated yet; a support bundle reads
    /// only the current schema (and never writes the live database to migrate it).
    #[error(
        "the store's schema version is {found} but this ferry bundles version {supported}; \
         start this ferry on it once (`ferry serve`) to migrate it, then make the bundle"
    )]
    OlderSchema {
        /// The version in the file.
        found: u32,
        /// The version this build writes.
        supported: u32,
    },
    /// `ferry support-bundle` was pointed at a file that already exists.
    #[error("{path} already exists; a support bundle never replaces a file: pick a new name")]
    BundleExists {
        /// The file given as the bundle.
        path: PathBuf,
    },
    /// A query failed.
    #[error("store query failed: {0}")]
    Query(#[from] rusqlite::Error),
    /// A stored JSON column does not parse (the file was edited or damaged).
    #[error("chat {id} holds invalid JSON in {column}: {source}")]
    Decode {
        /// The chat's id.
        id: i64,
        /// The column.
        column: &'static str,
        /// What the parser said.
        source: serde_json::Error,
    },
    /// The upstream API key file could not be read or written.
    #[error("cannot access the upstream key file {path}: {source}")]
    Secret {
        /// The key file.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// A file's content (or the folder holding it) could not be read or written.
    #[error("cannot access file content at {path}: {source}")]
    Content {
        /// The file or folder.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// A value does not fit the column (a count or id out of range).
    #[error("{0} is out of range for the store")]
    OutOfRange(&'static str),
    /// The store actor has stopped (its thread ended or the actix System is shutting down).
    #[error("the store has stopped")]
    Stopped,
}

impl From<actix::MailboxError> for StoreError {
    fn from(_: actix::MailboxError) -> Self {
        StoreError::Stopped
    }
}
