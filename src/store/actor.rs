//! The actor that owns the SQLite connection, on one SyncArbiter thread.
//!
//! One thread because SQLite has one writer at a time anyway; a second connection would only
//! add lock waits. Requests queue in the actor's mailbox and run in order. Handlers must never
//! panic: a panic would end the thread and every later call would fail with `Stopped`.

use std::path::PathBuf;

use actix::{Actor, Handler, Message, SyncContext};
use rusqlite::Connection;

use super::chats::{self, ChatId, ChatQuery, ChatRecord, NewChat};
use super::settings::{self, StoredSettings};
use super::{StoreError, analytics, connection, migrations};

/// Holds the connection; see the module docs.
pub(crate) struct StoreActor {
    conn: Option<Connection>,
    path: PathBuf,
    key_file: PathBuf,
}

impl StoreActor {
    /// An actor over an already migrated connection (`None` reopens `path` on first use).
    pub(crate) fn new(conn: Option<Connection>, path: PathBuf) -> Self {
        let key_file = settings::key_path(&path);
        StoreActor { conn, path, key_file }
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
