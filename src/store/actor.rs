//! The actor that owns the SQLite connection, on one SyncArbiter thread.
//!
//! One thread because SQLite has one writer at a time anyway; a second connection would only
//! add lock waits. Requests queue in the actor's mailbox and run in order. Handlers must never
//! panic: a panic would end the thread and every later call would fail with `Stopped`.

use std::path::PathBuf;

use actix::{Actor, Handler, Message, SyncContext};
use rusqlite::Connection;

use super::chats::{self, ChatId, ChatQuery, ChatRecord, NewChat};
use super::files::{self, FileObject, FilePage, FileQuery};
use super::settings::{self, StoredSettings};
use super::{StoreError, analytics, connection, migrations};

/// Holds the connection; see the module docs.
pub(crate) struct StoreActor {
    conn: Option<Connection>,
    path: PathBuf,
    key_file: PathBuf,
    files_dir: PathBuf,
}

impl StoreActor {
    /// An actor over an already migrated connection (`None` reopens `path` on first use).
    pub(crate) fn new(conn: Option<Connection>, path: PathBuf, files_dir: PathBuf) -> Self {
        let key_file = settings::key_path(&path);
        StoreActor { conn, path, key_file, files_dir }
    }

    fn conn(&mut self) -> Result<&mut Connection, StoreError> {
        if self.conn.is_none() {
            let mut conn = connection::open(&self.path)?;
            migrations::migrate(&mut conn)?;
            self.conn = Some(conn);
        }
        self.conn.as_mut().ok_or(StoreError::Stopped)
    }
}

impl Actor for StoreActor {
    type Context = SyncContext<Self>;
}

/// Record one chat.
#[derive(Message)]
#[rtype(result = "Result<ChatId, StoreError>")]
pub(crate) struct RecordChat(pub NewChat);

impl Handler<RecordChat> for StoreActor {
    type Result = Result<ChatId, StoreError>;

    fn handle(&mut self, msg: RecordChat, _: &mut SyncContext<Self>) -> Self::Result {
        chats::insert(self.conn()?, &msg.0)
    }
}

/// Record many chats in one transaction.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub(crate) struct RecordChats(pub Vec<NewChat>);

impl Handler<RecordChats> for StoreActor {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, msg: RecordChats, _: &mut SyncContext<Self>) -> Self::Result {
        chats::insert_all(self.conn()?, &msg.0)
    }
}

/// Delete one slice of chats that retention removes.
#[derive(Message)]
#[rtype(result = "Result<usize, StoreError>")]
pub(crate) struct PruneChats {
    pub retention: chats::Retention,
    pub slice: usize,
}

impl Handler<PruneChats> for StoreActor {
    type Result = Result<usize, StoreError>;

    fn handle(&mut self, msg: PruneChats, _: &mut SyncContext<Self>) -> Self::Result {
        chats::prune_slice(self.conn()?, msg.retention, msg.slice)
    }
}

/// Drop one slice of old `analytics_batches` rows.
#[derive(Message)]
#[rtype(result = "Result<usize, StoreError>")]
pub(crate) struct ForgetAnalyticsBatches {
    pub before_ms: i64,
    pub slice: usize,
}

impl Handler<ForgetAnalyticsBatches> for StoreActor {
    type Result = Result<usize, StoreError>;

    fn handle(&mut self, msg: ForgetAnalyticsBatches, _: &mut SyncContext<Self>) -> Self::Result {
        analytics::forget_old_batches(self.conn()?, msg.before_ms, msg.slice)
    }
}

/// List chats.
#[derive(Message)]
#[rtype(result = "Result<Vec<ChatRecord>, StoreError>")]
pub(crate) struct ListChats(pub ChatQuery);

impl Handler<ListChats> for StoreActor {
    type Result = Result<Vec<ChatRecord>, StoreError>;

    fn handle(&mut self, msg: ListChats, _: &mut SyncContext<Self>) -> Self::Result {
        chats::list(self.conn()?, &msg.0)
    }
}

/// Load the stored settings.
#[derive(Message)]
#[rtype(result = "Result<StoredSettings, StoreError>")]
pub(crate) struct LoadSettings;

impl Handler<LoadSettings> for StoreActor {
    type Result = Result<StoredSettings, StoreError>;

    fn handle(&mut self, _: LoadSettings, _: &mut SyncContext<Self>) -> Self::Result {
        let key_file = self.key_file.clone();
        settings::load(self.conn()?, &key_file)
    }
}

/// Replace the stored settings.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub(crate) struct SaveSettings(pub StoredSettings);

impl Handler<SaveSettings> for StoreActor {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, msg: SaveSettings, _: &mut SyncContext<Self>) -> Self::Result {
        let key_file = self.key_file.clone();
        settings::save(self.conn()?, &key_file, &msg.0)
    }
}

/// Compute the analytics, for one owner or all.
#[derive(Message)]
#[rtype(result = "Result<analytics::Analytics, StoreError>")]
pub(crate) struct ComputeAnalytics(pub Option<String>);

impl Handler<ComputeAnalytics> for StoreActor {
    type Result = Result<analytics::Analytics, StoreError>;

    fn handle(&mut self, msg: ComputeAnalytics, _: &mut SyncContext<Self>) -> Self::Result {
        analytics::compute(self.conn()?, msg.0.as_deref())
    }
}

/// Insert a file's row (its content is in place).
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub(crate) struct AddFile(pub FileObject);

impl Handler<AddFile> for StoreActor {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, msg: AddFile, _: &mut SyncContext<Self>) -> Self::Result {
        files::insert(self.conn()?, &msg.0)
    }
}

/// Look a file up, for its owner (any owner when `None`).
#[derive(Message)]
#[rtype(result = "Result<Option<FileObject>, StoreError>")]
pub(crate) struct GetFile {
    pub owner: Option<String>,
    pub id: String,
}

impl Handler<GetFile> for StoreActor {
    type Result = Result<Option<FileObject>, StoreError>;

    fn handle(&mut self, msg: GetFile, _: &mut SyncContext<Self>) -> Self::Result {
        files::get(self.conn()?, msg.owner.as_deref(), &msg.id)
    }
}

/// Bytes of an owner's files.
#[derive(Message)]
#[rtype(result = "Result<u64, StoreError>")]
pub(crate) struct OwnerBytes(pub Option<String>);

impl Handler<OwnerBytes> for StoreActor {
    type Result = Result<u64, StoreError>;

    fn handle(&mut self, msg: OwnerBytes, _: &mut SyncContext<Self>) -> Self::Result {
        files::owner_bytes(self.conn()?, msg.0.as_deref())
    }
}

/// List files.
#[derive(Message)]
#[rtype(result = "Result<FilePage, StoreError>")]
pub(crate) struct ListFiles(pub FileQuery);

impl Handler<ListFiles> for StoreActor {
    type Result = Result<FilePage, StoreError>;

    fn handle(&mut self, msg: ListFiles, _: &mut SyncContext<Self>) -> Self::Result {
        files::list(self.conn()?, &msg.0)
    }
}

/// Delete a file's row and then its content, for its owner (any owner when `None`).
#[derive(Message)]
#[rtype(result = "Result<bool, StoreError>")]
pub(crate) struct DeleteFile {
    pub owner: Option<String>,
    pub id: String,
}

/// Delete one slice of expired files; answers how many.
#[derive(Message)]
#[rtype(result = "Result<usize, StoreError>")]
pub(crate) struct ExpireFiles {
    pub now: i64,
    pub slice: usize,
}

impl Handler<ExpireFiles> for StoreActor {
    type Result = Result<usize, StoreError>;

    fn handle(&mut self, msg: ExpireFiles, ctx: &mut SyncContext<Self>) -> Self::Result {
        let ids = files::expired(self.conn()?, msg.now, msg.slice)?;
        for id in &ids {
            self.handle(DeleteFile { owner: None, id: id.clone() }, ctx)?;
            tracing::debug!(event = "file_expired", file_id = %id);
        }
        Ok(ids.len())
    }
}

impl Handler<DeleteFile> for StoreActor {
    type Result = Result<bool, StoreError>;

    fn handle(&mut self, msg: DeleteFile, _: &mut SyncContext<Self>) -> Self::Result {
        if !files::delete(self.conn()?, msg.owner.as_deref(), &msg.id)? {
            return Ok(false);
        }
        // The row is gone, so the file is gone for every reader; content that cannot be removed
        // now is an orphan the next open sweeps.
        let path = self.files_dir.join(&msg.id);
        if let Err(error) = std::fs::remove_file(&path)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(event = "store_failed", what = "delete_file_content", file_id = %msg.id, error = %error);
        }
        Ok(true)
    }
}
