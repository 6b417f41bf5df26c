//! The store: SQLite (WAL) behind a SyncArbiter actor.
//!
//! Chats (each finished item's request and response, with its batch, lane and owner), the
//! settings that override `config.toml`, and files (OpenAI's file objects: rows here, content on
//! disk beside the database). [`Store`] is the handle: cheap to clone, usable from any
//! thread; every call is a message to the store actor's one thread, so blocking SQLite never runs
//! on an async executor.
//!
//! - `connection`: the file (0600, its directory created), WAL and the other pragmas.
//! - [`migrations`]: versioned schema; a file from a newer ferry is refused.
//! - [`chats`], [`settings`], [`analytics`], [`files`]: one concern each, as plain functions
//!   over a connection, tested without the actor.
//! - [`content`]: file content on disk, written into place whole or not at all.
//! - [`bundle`]: `ferry support-bundle`, a copy of the database without the callers' data.
//!
//! Secrets: the caller's Bearer key never reaches the store — the HTTP layer records its
//! [`owner`] id (HMAC-SHA256 under the server secret in `<db>.owner-secret`) as the owner.
//! What the database does hold — chats among them — is listed in `docs/security.md`. The upstream API key from `PUT /v1/settings` lives in
//! its own 0600 file beside the database, not in it (see [`settings`]).

mod actor;
pub mod analytics;
pub mod bundle;
mod chat_log;
pub mod chats;
mod connection;
pub use connection::checkpoint_truncate;
pub mod content;
mod error;
pub mod files;
pub mod migrations;
pub mod owner;
pub mod settings;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use actix::{Addr, SyncArbiter};
use tokio::sync::{mpsc, oneshot};

use actor::{
    AddFile, ComputeAnalytics, DeleteFile, ExpireFiles, ForgetAnalyticsBatches, GetFile, ListChats,
    ListFiles, LoadSettings, OwnerBytes, PruneChats, RecordChat, RecordChats, SaveSettings, StoreActor,
};
pub use analytics::{Analytics, DateCount, NameValue};
use bytes::Bytes;
pub use chats::{ChatId, ChatQuery, ChatRecord, NewChat, Retention};
pub use content::ContentWriter;
pub use error::StoreError;
pub use files::{
    FileObject, FilePage, FileQuery, PURPOSE_BATCH, PURPOSE_BATCH_OUTPUT, is_file_id, new_file_id,
};
use futures_util::Stream;
pub use migrations::SCHEMA_VERSION;
pub use owner::{OwnerSecret, legacy_key_id};
pub use settings::{LaneBudget, StoredSettings};

/// How long a temporary file or content without a row must have lain untouched before an open
/// removes it as a crash's leftover (younger ones may be another ferry's upload in progress).
const LEFTOVER_AGE: Duration = Duration::from_secs(3600);

/// Chats deleted per statement by retention.
pub const RETENTION_SLICE: usize = 500;

/// How long a batch is remembered by the analytics counts so that its later chats do not count it
/// again: far longer than any batch takes to finish.
pub const ANALYTICS_GUARD: Duration = Duration::from_secs(2 * 86_400);

/// The handle to the store. Cheap to clone; usable from any thread (actix-web workers).
#[derive(Clone)]
pub struct Store {
    actor: Addr<StoreActor>,
    log: mpsc::UnboundedSender<chat_log::Write>,
    files_dir: Arc<Path>,
    owner_secret: Arc<OwnerSecret>,
}

impl Store {
    /// Opens (creating the file, mode 0600 on Unix, and its directory if missing) and migrates
    /// the database at `path`, creates the files folder beside it (`files/`, mode 0700) and
    /// sweeps what a crash left there (untouched for an hour), then starts its actor. Refuses a database from a newer
    /// ferry with [`StoreError::NewerSchema`].
    ///
    /// Must be called inside a running actix System (it panics otherwise, as actix does). It
    /// blocks while opening and migrating: call it at start-up, not from a request handler.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let mut conn = connection::open(path)?;
        migrations::migrate(&mut conn)?;
        let owner_secret = Arc::new(OwnerSecret::load_or_create(path)?);
        let files_dir = files_dir_of(path);
        content::create_dir(&files_dir)?;
        let swept = files::sweep(&conn, &files_dir, SystemTime::now() - LEFTOVER_AGE)?;
        tracing::info!(
            event = "store_open",
            path = %path.display(),
            schema_version = SCHEMA_VERSION,
            files_swept = swept
        );
        // The factory runs once on the actor's thread; it takes the connection opened here so
        // that errors reach the caller. A later call (after a restart) reopens lazily.
        let handoff = Mutex::new(Some(conn));
        let path = path.to_path_buf();
        let actor_files_dir = files_dir.clone();
        let actor = SyncArbiter::start(1, move || {
            let conn = handoff.lock().ok().and_then(|mut slot| slot.take());
            StoreActor::new(conn, path.clone(), actor_files_dir.clone())
        });
        let (log, queue) = mpsc::unbounded_channel();
        actix::spawn(chat_log::run(queue, actor.clone()));
        Ok(Store { actor, log, files_dir: files_dir.into(), owner_secret })
    }

    /// The secret owner ids are keyed with (see [`owner`]).
    pub fn owner_secret(&self) -> &OwnerSecret {
        &self.owner_secret
    }

    /// Queues a finished item's chat for recording and returns at once; it is written with
    /// whatever else has queued, in one transaction. A write failure is logged
    /// (`event=store_failed`), never returned: the reply must not wait on the chat log.
    pub fn record_later(&self, chat: NewChat) {
        if self.log.send(chat_log::Write::Chat(Box::new(chat))).is_err() {
            tracing::warn!(
                event = "store_failed",
                what = "record_later",
                error = "the chat writer has stopped"
            );
        }
    }

    /// Waits until every chat queued before this call is written (or failed).
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.log.send(chat_log::Write::Flush(done)).is_ok() {
            let _ = written.await;
        }
    }

    /// Records one finished item and returns its id.
    pub async fn record_chat(&self, chat: NewChat) -> Result<ChatId, StoreError> {
        self.actor.send(RecordChat(chat)).await?
    }

    /// Records many finished items in one transaction: all are stored or none.
    pub async fn record_chats(&self, chats: Vec<NewChat>) -> Result<(), StoreError> {
        if chats.is_empty() {
            return Ok(());
        }
        self.actor.send(RecordChats(chats)).await?
    }

    /// Lists chats newest first, filtered and paged by `query`.
    pub async fn chats(&self, query: ChatQuery) -> Result<Vec<ChatRecord>, StoreError> {
        self.flush().await;
        self.actor.send(ListChats(query)).await?
    }

    /// Deletes the chats `retention` removes, `slice` at a time: each slice is its own message to
    /// the store's thread, so chat writes and reads queue behind one slice at most. Returns how
    /// many went.
    pub async fn prune_chats(&self, retention: Retention, slice: usize) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let deleted = self.actor.send(PruneChats { retention, slice }).await??;
            total += deleted;
            if deleted < slice {
                return Ok(total);
            }
            tokio::task::yield_now().await;
        }
    }

    /// Drops the analytics rows that guard against counting a batch twice once the batch is
    /// older than `before_ms` (Unix ms), `slice` at a time; the counts stay. Returns how many.
    pub async fn forget_analytics_batches(&self, before_ms: i64, slice: usize) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let deleted = self.actor.send(ForgetAnalyticsBatches { before_ms, slice }).await??;
            total += deleted;
            if deleted < slice {
                return Ok(total);
            }
            tokio::task::yield_now().await;
        }
    }

    /// Deletes the files (row and content) that expired at or before `now` (unix seconds),
    /// `slice` at a time. Returns how many.
    pub async fn expire_files(&self, now: i64, slice: usize) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let deleted = self.actor.send(ExpireFiles { now, slice }).await??;
            total += deleted;
            if deleted < slice {
                return Ok(total);
            }
            tokio::task::yield_now().await;
        }
    }

    /// Every `every`, in the background until the store stops: deletes expired files, prunes chats by
    /// `[storage] chat_retention_days` and `max_chats` (when set), and drops analytics guard rows
    /// of batches older than [`ANALYTICS_GUARD`].
    pub fn spawn_retention(&self, storage: &crate::config::StorageConfig, every: Duration) {
        let days = storage.chat_retention_days;
        let max = storage.max_chats;
        let store = self.clone();
        actix::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            loop {
                ticks.tick().await;
                let now_ms =
                    SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
                let before =
                    |age: Duration| i64::try_from(now_ms.saturating_sub(age.as_millis())).unwrap_or(0);
                if days > 0 || max > 0 {
                    let retention = Retention {
                        before_ms: (days > 0)
                            .then(|| before(Duration::from_secs(days.saturating_mul(86_400)))),
                        keep_newest: (max > 0).then_some(max),
                    };
                    match store.prune_chats(retention, RETENTION_SLICE).await {
                        Ok(0) => {}
                        Ok(deleted) => tracing::info!(event = "chats_pruned", deleted),
                        Err(error) => {
                            tracing::warn!(event = "store_failed", what = "prune_chats", error = %error)
                        }
                    }
                }
                let now_secs = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
                match store.expire_files(now_secs, RETENTION_SLICE).await {
                    Ok(0) => {}
                    Ok(deleted) => tracing::info!(event = "files_expired", deleted),
                    Err(error) => {
                        tracing::warn!(event = "store_failed", what = "expire_files", error = %error)
                    }
                }
                if let Err(error) =
                    store.forget_analytics_batches(before(ANALYTICS_GUARD), RETENTION_SLICE).await
                {
                    tracing::warn!(event = "store_failed", what = "forget_analytics_batches", error = %error);
                }
            }
        });
    }

    /// Loads the stored settings (all `None` until something is saved).
    pub async fn settings(&self) -> Result<StoredSettings, StoreError> {
        self.actor.send(LoadSettings).await?
    }

    /// Replaces the stored settings with `settings` (merge a partial update before calling).
    pub async fn save_settings(&self, settings: StoredSettings) -> Result<(), StoreError> {
        self.actor.send(SaveSettings(settings)).await?
    }

    /// Computes seed 002's batch-level analytics over `owner`'s chats, or everyone's when `None`.
    pub async fn analytics(&self, owner: Option<String>) -> Result<Analytics, StoreError> {
        self.flush().await;
        self.actor.send(ComputeAnalytics(owner)).await?
    }
}

/// Files: OpenAI's file objects. A file is made in two steps: its content is written into place
/// ([`Store::content_writer`] or [`Store::write_file_content`], under a fresh [`new_file_id`]),
/// then its row is added ([`Store::add_file`]). Reads and deletes take the caller's owner: a file
/// of another owner is not found (`None` as owner means auth is off and sees every file).
impl Store {
    /// The folder holding every file's content: `<dir of [storage] path>/files` (mode 0700).
    pub fn files_dir(&self) -> &Path {
        &self.files_dir
    }

    /// Where the content of file `id` lives. Use it only with ids of files the store knows (or a
    /// fresh [`new_file_id`]): the id is joined to the folder as it is.
    pub fn file_path(&self, id: &str) -> PathBuf {
        self.files_dir.join(id)
    }

    /// Starts writing the content of file `id` (a [`new_file_id`]): it appears under the id only
    /// when [`ContentWriter::finish`] succeeds; dropped unfinished, it leaves nothing.
    pub async fn content_writer(&self, id: &str) -> Result<ContentWriter, StoreError> {
        ContentWriter::create(self.checked_path(id)?).await
    }

    /// Writes the content of file `id` (a [`new_file_id`]) from `chunks` into place and returns
    /// its size; the first error leaves nothing behind.
    pub async fn write_file_content<S, E>(&self, id: &str, chunks: S) -> Result<u64, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: Into<io::Error>,
    {
        content::write_all(self.checked_path(id)?, chunks).await
    }

    /// Records a file whose content is already in place (see [`Store::write_file_content`]).
    pub async fn add_file(&self, file: FileObject) -> Result<(), StoreError> {
        self.actor.send(AddFile(file)).await?
    }

    /// The file `id`, if `owner` may see it.
    pub async fn file(&self, owner: Option<String>, id: String) -> Result<Option<FileObject>, StoreError> {
        self.actor.send(GetFile { owner, id }).await?
    }

    /// Bytes of all the files `owner` holds (uploads and batch output files), for the quota.
    pub async fn owner_bytes(&self, owner: Option<String>) -> Result<u64, StoreError> {
        self.actor.send(OwnerBytes(owner)).await?
    }

    /// `owner`'s files newest first, with `purpose` if given, at most `limit`, those after the
    /// file `after` (the last id of the previous page; one the owner cannot see gives an empty
    /// page).
    pub async fn list_files(
        &self,
        owner: Option<String>,
        purpose: Option<String>,
        limit: usize,
        after: Option<String>,
    ) -> Result<FilePage, StoreError> {
        self.actor.send(ListFiles(FileQuery { owner, purpose, limit, after })).await?
    }

    /// Deletes file `id` (its row, then its content) if `owner` may see it; false if there was
    /// no such file.
    pub async fn delete_file(&self, owner: Option<String>, id: String) -> Result<bool, StoreError> {
        self.actor.send(DeleteFile { owner, id }).await?
    }

    /// The content of `file` as a stream of chunks, with its size.
    pub async fn file_content(
        &self,
        file: &FileObject,
    ) -> Result<(u64, impl Stream<Item = io::Result<Bytes>> + use<>), StoreError> {
        content::read_stream(&self.checked_path(&file.id)?).await
    }

    fn checked_path(&self, id: &str) -> Result<PathBuf, StoreError> {
        if !is_file_id(id) {
            let source = io::Error::new(io::ErrorKind::InvalidInput, "not a file id (file- and a ULID)");
            return Err(StoreError::Content { path: self.files_dir.join("<invalid id>"), source });
        }
        Ok(self.file_path(id))
    }
}

/// `<dir of the database>/files`.
pub(crate) fn files_dir_of(db: &Path) -> PathBuf {
    db.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).join("files")
}

/// A second connection to the store's file, opened and migrated like the store's own: for the
/// job runner's thread (see `jobs`), so that big jobs never queue behind chat writes.
pub(crate) fn open_connection(path: &Path) -> Result<rusqlite::Connection, StoreError> {
    let mut conn = connection::open(path)?;
    migrations::migrate(&mut conn)?;
    Ok(conn)
}

/// Re-owns the rows of the database at `db` that older ferry versions recorded under legacy
/// ids: `pairs` are `(legacy id, owner id)` of the configured keys (see [`owner`]). Blocks;
/// call at start-up.
pub fn adopt_legacy_owners(db: &Path, pairs: &[(String, String)]) -> Result<usize, StoreError> {
    if pairs.is_empty() {
        return Ok(0);
    }
    let mut conn = open_connection(db)?;
    owner::adopt_legacy_owners(&mut conn, pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handle_can_be_shared_across_worker_threads() {
        fn shareable<T: Clone + Send + Sync + 'static>() {}
        shareable::<Store>();
    }
}
