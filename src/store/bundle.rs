//! `ferry support-bundle`: a copy of the database that can go into a bug report.
//!
//! The copy is built table by table from one read transaction on the live file, opened
//! read-only (`mode=ro`), so it is consistent while `ferry serve` keeps writing and the live
//! database is never written. Only scrubbed values are ever written to the copy: what a caller
//! sent or got back (prompts, answers, usernames, request ids, file names, batch metadata,
//! idempotency keys, custom ids, error messages) never reaches it, so nothing of it can linger
//! in the copy's free pages or journal. What stays is what a bug needs: row counts, states,
//! times, token counts, latencies, lanes, the stored lane budgets, the analytics counts and the
//! applied migrations. Owner ids (which, for databases from before keyed owner ids, can be an
//! unsalted hash of a key) become `owner-1`, `owner-2`, … consistently across tables.
//!
//! `docs/security.md` lists, column by column, what the bundle keeps.

use std::fmt::{self, Write as _};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::{StoreError, migrations};

/// What a bundle holds, for the command to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleSummary {
    /// Chats kept (their texts removed).
    pub chats: u64,
    /// File rows kept (names removed; no content).
    pub files: u64,
    /// Batch jobs kept.
    pub batches: u64,
    /// Batch items kept (custom ids and answers removed).
    pub batch_items: u64,
    /// Distinct owners, now `owner-1` … `owner-N`.
    pub owners: u64,
    /// The bundle's size in bytes.
    pub bytes: u64,
}

impl fmt::Display for BundleSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} bytes; {} chats, {} files, {} batches ({} items), {} owners; caller data removed",
            self.bytes, self.chats, self.files, self.batches, self.batch_items, self.owners
        )
    }
}

/// The owners of every table, each given a stable label (`owner-1` …) ordered by id; `''` and
/// `'*'` (the analytics rows for "no owner" and "everyone") are not owners.
const OWNER_MAP: &str = "
    CREATE TEMP TABLE owner_map (owner TEXT PRIMARY KEY, label TEXT NOT NULL) WITHOUT ROWID;
    INSERT INTO temp.owner_map (owner, label)
        SELECT owner, 'owner-' || row_number() OVER (ORDER BY owner) FROM (
            SELECT owner FROM live.chats UNION SELECT owner FROM live.files
            UNION SELECT owner FROM live.batches UNION SELECT owner FROM live.analytics_counts
            UNION SELECT owner FROM live.analytics_batches)
        WHERE owner IS NOT NULL AND owner NOT IN ('', '*');
";

/// One statement per table: the columns kept as they are, the others replaced. A column not
/// named here cannot reach the bundle.
const COPY: &str = "
    INSERT INTO main.chats (id, owner, username, request_id, lane, priority, batch_id, request,
                            response, ok, created_at, completed_at, tokens_used, latency_ms)
        SELECT id, (SELECT label FROM temp.owner_map AS m WHERE m.owner = c.owner), NULL, NULL,
               lane, upper(trim(priority)), batch_id, 'null', 'null', ok, created_at, completed_at,
               tokens_used, latency_ms
        FROM live.chats AS c;
    DELETE FROM main.sqlite_sequence;
    INSERT INTO main.sqlite_sequence (name, seq) SELECT name, seq FROM live.sqlite_sequence;
    INSERT INTO main.lane_budgets (priority, tokens, latency_ms)
        SELECT priority, tokens, latency_ms FROM live.lane_budgets;
    INSERT INTO main.files (id, owner, purpose, filename, bytes, created_at, status, expires_at)
        SELECT id, (SELECT label FROM temp.owner_map AS m WHERE m.owner = f.owner), purpose, '',
               bytes, created_at, status, expires_at
        FROM live.files AS f;
    INSERT INTO main.batches (id, kind, owner, input_file_id, input_path, output_path, endpoint,
                              completion_window, lane, metadata, status, errors, output_file_id,
                              error_file_id, idempotency_key, request_hash, total, completed,
                              failed, created_at, expires_at, in_progress_at, finalizing_at,
                              completed_at, failed_at, expired_at, cancelling_at, cancelled_at)
        SELECT id, kind, (SELECT label FROM temp.owner_map AS m WHERE m.owner = b.owner),
               input_file_id, '', NULL, endpoint, completion_window, lane, NULL, status,
               CASE WHEN json_valid(errors) THEN
                   (SELECT json_group_array(json_object(
                        'code', json_extract(e.value, '$.code'), 'message', 'removed',
                        'line', json_extract(e.value, '$.line')))
                    FROM json_each(b.errors) AS e)
               END,
               output_file_id, error_file_id, NULL, NULL, total, completed, failed, created_at,
               expires_at, in_progress_at, finalizing_at, completed_at, failed_at, expired_at,
               cancelling_at, cancelled_at
        FROM live.batches AS b;
    INSERT INTO main.batch_items (batch_id, line, custom_id, offset, len, state, result, out_offset,
                                  out_len)
        SELECT batch_id, line, 'line-' || line, offset, len, state, NULL, out_offset, out_len
        FROM live.batch_items;
    INSERT INTO main.analytics_counts (owner, scope, count)
        SELECT COALESCE((SELECT label FROM temp.owner_map AS m WHERE m.owner = a.owner), a.owner),
               scope, count
        FROM live.analytics_counts AS a;
    INSERT INTO main.analytics_batches (owner, batch, scope, seen_at)
        SELECT COALESCE((SELECT label FROM temp.owner_map AS m WHERE m.owner = a.owner), a.owner),
               batch, scope, seen_at
        FROM live.analytics_batches AS a;
    DELETE FROM main.schema_migrations;
    INSERT INTO main.schema_migrations (version, name, applied_at)
        SELECT version, name, applied_at FROM live.schema_migrations;
";

/// Writes a support bundle of the database at `db` to `out`, a new file (mode 0600). Refuses
/// with [`StoreError::BundleExists`] when `out` exists; on any failure, removes what it wrote.
/// Reads `db` read-only, in one transaction: safe while `ferry serve` runs. Blocks.
pub fn write(db: &Path, out: &Path) -> Result<BundleSummary, StoreError> {
    if !db.is_file() {
        let source = io::Error::new(io::ErrorKind::NotFound, "no database file there");
        return Err(StoreError::Open { path: db.to_path_buf(), source: Box::new(source) });
    }
    match crate::private_fs::write_options().create_new(true).open(out) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(StoreError::BundleExists { path: out.to_path_buf() });
        }
        Err(source) => return Err(StoreError::Content { path: out.to_path_buf(), source }),
    }
    let written = RemoveUnlessKept(Some(out.to_path_buf()));
    let summary = build(db, out)?;
    written.keep();
    Ok(summary)
}

fn build(db: &Path, out: &Path) -> Result<BundleSummary, StoreError> {
    let mut conn = Connection::open(out)?;
    // A scratch file until it is complete (any failure removes it): no journal needed.
    conn.execute_batch(
        "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA secure_delete = ON; \
         PRAGMA temp_store = MEMORY;",
    )?;
    migrations::migrate(&mut conn)?;
    conn.execute("ATTACH DATABASE ?1 AS live", [read_only_uri(db)])
        .map_err(|source| StoreError::Open { path: db.to_path_buf(), source: Box::new(source) })?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let found: u32 = conn.query_row("PRAGMA live.user_version", [], |row| row.get(0))?;
    if found > migrations::SCHEMA_VERSION {
        return Err(StoreError::NewerSchema { found, supported: migrations::SCHEMA_VERSION });
    }
    if found < migrations::SCHEMA_VERSION {
        return Err(StoreError::OlderSchema { found, supported: migrations::SCHEMA_VERSION });
    }
    // The copy's triggers would count the copied chats again; the counts are copied instead.
    let triggers: Vec<(String, String)> = conn
        .prepare("SELECT name, sql FROM main.sqlite_master WHERE type = 'trigger'")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (name, _) in &triggers {
        conn.execute_batch(&format!("DROP TRIGGER main.\"{}\"", name.replace('"', "\"\"")))?;
    }
    let tx = conn.transaction()?;
    tx.execute_batch(OWNER_MAP)?;
    tx.execute_batch(COPY)?;
    tx.commit()?;
    for (_, sql) in &triggers {
        conn.execute_batch(sql)?;
    }
    let count = |sql: &str| conn.query_row(sql, [], |row| row.get::<_, i64>(0)).map(|n| n.unsigned_abs());
    let mut summary = BundleSummary {
        chats: count("SELECT COUNT(*) FROM main.chats")?,
        files: count("SELECT COUNT(*) FROM main.files")?,
        batches: count("SELECT COUNT(*) FROM main.batches")?,
        batch_items: count("SELECT COUNT(*) FROM main.batch_items")?,
        owners: count("SELECT COUNT(*) FROM temp.owner_map")?,
        bytes: 0,
    };
    conn.execute_batch("DROP TABLE temp.owner_map; DETACH DATABASE live;")?;
    // Compact: the file holds the tables' pages only, no free page and no journal beside it.
    conn.execute_batch("VACUUM; PRAGMA journal_mode = DELETE;")?;
    conn.close().map_err(|(_, error)| error)?;
    let file = fs::File::open(out).map_err(|source| StoreError::Content { path: out.into(), source })?;
    file.sync_all().map_err(|source| StoreError::Content { path: out.into(), source })?;
    summary.bytes = file.metadata().map_err(|source| StoreError::Content { path: out.into(), source })?.len();
    Ok(summary)
}

/// `file:<path>?mode=ro`, the path percent-encoded as SQLite's URI filenames require.
fn read_only_uri(path: &Path) -> String {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut uri = String::from("file:");
    for byte in path_bytes(&absolute) {
        if byte.is_ascii_alphanumeric() || b"/-._~".contains(&byte) {
            uri.push(char::from(byte));
        } else {
            let _ = write!(uri, "%{byte:02X}");
        }
    }
    uri.push_str("?mode=ro");
    uri
}

#[cfg(unix)]
fn path_bytes(path: &Path) -> Vec<u8> {
    std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()).to_vec()
}

#[cfg(not(unix))]
fn path_bytes(path: &Path) -> Vec<u8> {
    path.to_string_lossy().replace('\\', "/").into_bytes()
}

/// Removes the bundle (and a journal SQLite may have left) when dropped before [`keep`](Self::keep).
struct RemoveUnlessKept(Option<PathBuf>);

impl RemoveUnlessKept {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveUnlessKept {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_file(&path);
            let mut journal = path.into_os_string();
            journal.push("-journal");
            let _ = fs::remove_file(journal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unmigrated_or_missing_database_leaves_no_bundle() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("old.db");
        let conn = Connection::open(&db)?;
        for step in migrations::tests_only_steps(4) {
            conn.execute_batch(step)?;
        }
        conn.execute_batch("PRAGMA user_version = 4")?;
        drop(conn);
        let out = dir.path().join("bundle.db");
        assert!(matches!(write(&db, &out), Err(StoreError::OlderSchema { found: 4, .. })));
        assert!(!out.exists(), "a failed bundle is removed");
        assert!(matches!(write(&dir.path().join("none.db"), &out), Err(StoreError::Open { .. })));
        assert!(!out.exists());
        Ok(())
    }

    #[test]
    fn a_stopped_wal_database_is_read_without_its_side_files() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("ferry.db");
        let mut conn = super::super::connection::open(&db)?;
        migrations::migrate(&mut conn)?;
        conn.execute_batch("INSERT INTO lane_budgets VALUES ('high', 5, 6)")?;
        drop(conn);
        assert!(!dir.path().join("ferry.db-wal").exists(), "the last close removes the WAL");
        let before = std::fs::read(&db)?;
        let summary = write(&db, &dir.path().join("bundle.db"))?;
        assert_eq!((summary.chats, summary.owners), (0, 0));
        assert_eq!(std::fs::read(&db)?, before, "the database is read, never written");
        let bundle = Connection::open(dir.path().join("bundle.db"))?;
        let budgets: i64 = bundle.query_row("SELECT tokens FROM lane_budgets", [], |row| row.get(0))?;
        assert_eq!(budgets, 5);
        Ok(())
    }

    #[test]
    fn uris_escape_what_sqlite_would_read_as_syntax() {
        let uri = read_only_uri(Path::new("/tmp/a b/f?x#y%.db"));
        assert_eq!(uri, "file:/tmp/a%20b/f%3Fx%23y%25.db?mode=ro");
    }
}
