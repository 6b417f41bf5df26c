//! Files: OpenAI's file objects — uploaded batch input, and the output and error files batch jobs
//! write — as metadata rows over content kept on disk.
//!
//! A file's bytes live at `<dir of [storage] path>/files/<id>` (directory 0700, files 0600),
//! never in SQLite, so a 200 MB upload neither bloats the database nor passes through memory.
//! Content is written under a temporary name (`.tmp-…`), synced and renamed into place before
//! its row is inserted: a crash leaves at worst a temporary file or content without a row, both
//! removed when the store next opens an hour or more later (`sweep`), never a half file
//! under a real id.
//!
//! Ids look like OpenAI's, `file-` and a ULID. Rows are plain functions over a connection here;
//! the content on disk is [`content`](super::content)'s.

use std::collections::HashSet;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use super::StoreError;

/// What ids start with (OpenAI's prefix).
pub const FILE_ID_PREFIX: &str = "file-";

/// Where a file's content is written before it is complete; swept when the store opens.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

/// `purpose` of uploaded batch input.
pub const PURPOSE_BATCH: &str = "batch";
/// `purpose` of the output and error files a batch job writes.
pub const PURPOSE_BATCH_OUTPUT: &str = "batch_output";

/// A file, as OpenAI's API shows it: `{id, object: "file", bytes, created_at, filename, purpose,
/// status}`. The owner is ferry's and never serialized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "object", rename = "file")]
pub struct FileObject {
    /// `file-` and a ULID ([`new_file_id`]).
    pub id: String,
    /// The [owner id](super::owner) of the key that created it; `None` when auth is off.
    #[serde(skip)]
    pub owner: Option<String>,
    /// Size of the content in bytes.
    pub bytes: u64,
    /// When it was created, in unix seconds.
    pub created_at: i64,
    /// The name it was uploaded under (metadata only: never used as a path).
    pub filename: String,
    /// `batch` for uploads, `batch_output` for what batch jobs write.
    pub purpose: String,
    /// `processed` once its content is in place (OpenAI's word; ferry has no other state).
    pub status: String,
    /// When it is deleted, in unix seconds (OpenAI's `expires_after` on upload; batch output
    /// files after `[files] output_lifetime_secs`); absent: never.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

impl FileObject {
    /// A processed file created now, with a fresh id.
    pub fn new(owner: Option<String>, purpose: &str, filename: &str, bytes: u64) -> FileObject {
        FileObject {
            id: new_file_id(),
            owner,
            bytes,
            created_at: unix_seconds(SystemTime::now()),
            filename: filename.to_string(),
            purpose: purpose.to_string(),
            status: "processed".into(),
            expires_at: None,
        }
    }
}

/// A fresh file id: `file-` and a ULID.
pub fn new_file_id() -> String {
    format!("{FILE_ID_PREFIX}{}", ulid::Ulid::new())
}

/// Whether `id` has the shape of a file id ferry makes: `file-` and 26 base-32 characters. Only
/// such a name is ever looked up on disk, so a path cannot be smuggled in as an id.
pub fn is_file_id(id: &str) -> bool {
    id.strip_prefix(FILE_ID_PREFIX).is_some_and(|rest| rest.len() == 26 && rest.parse::<ulid::Ulid>().is_ok())
}

/// Which files to list: newest first, `limit` at most, after the file `after` (the last id of
/// the previous page).
#[derive(Debug, Clone, Default)]
pub struct FileQuery {
    /// Only this owner's files; `None` lists every owner's (use it only when auth is off).
    pub owner: Option<String>,
    /// Only files with this purpose.
    pub purpose: Option<String>,
    /// At most this many.
    pub limit: usize,
    /// Only files listed after this one (older, or as old with a smaller id).
    pub after: Option<String>,
}

/// One page of files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePage {
    /// The files, newest first.
    pub data: Vec<FileObject>,
    /// Whether more files follow the last one.
    pub has_more: bool,
}

const COLUMNS: &str = "id, owner, purpose, filename, bytes, created_at, status, expires_at";

/// Inserts a file's row (its content must already be in place).
pub(crate) fn insert(conn: &Connection, file: &FileObject) -> Result<(), StoreError> {
    let bytes = i64::try_from(file.bytes).map_err(|_| StoreError::OutOfRange("file bytes"))?;
    conn.prepare_cached(
        "INSERT INTO files (id, owner, purpose, filename, bytes, created_at, status, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        file.id,
        file.owner,
        file.purpose,
        file.filename,
        bytes,
        file.created_at,
        file.status,
        file.expires_at
    ])?;
    Ok(())
}

/// The file `id` if `owner` may see it (any owner's when `owner` is `None`).
pub(crate) fn get(
    conn: &Connection,
    owner: Option<&str>,
    id: &str,
) -> Result<Option<FileObject>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM files WHERE id = ?1 AND (?2 IS NULL OR owner = ?2)");
    Ok(conn.prepare_cached(&sql)?.query_row(params![id, owner], read).optional()?)
}

/// Ids of at most `limit` files that expired at or before `now` (unix seconds).
pub(crate) fn expired(conn: &Connection, now: i64, limit: usize) -> Result<Vec<String>, StoreError> {
    let mut statement = conn
        .prepare_cached("SELECT id FROM files WHERE expires_at IS NOT NULL AND expires_at <= ?1 LIMIT ?2")?;
    let ids =
        statement.query_map(params![now, i64::try_from(limit).unwrap_or(i64::MAX)], |row| row.get(0))?;
    Ok(ids.collect::<Result<Vec<String>, _>>()?)
}

/// Bytes of all the files `owner` holds (uploads and batch output files); with `None` (keys
/// off), of the files without an owner.
pub(crate) fn owner_bytes(conn: &Connection, owner: Option<&str>) -> Result<u64, StoreError> {
    let total: i64 = conn
        .prepare_cached("SELECT COALESCE(SUM(bytes), 0) FROM files WHERE owner IS ?1")?
        .query_row([owner], |row| row.get(0))?;
    Ok(u64::try_from(total).unwrap_or(0))
}

/// Lists files newest first (by `created_at`, then id), paged by [`FileQuery::after`]. An
/// `after` that names no file the owner can see gives an empty page.
pub(crate) fn list(conn: &Connection, query: &FileQuery) -> Result<FilePage, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM files \
         WHERE (?1 IS NULL OR owner = ?1) AND (?2 IS NULL OR purpose = ?2) \
           AND (?3 IS NULL OR (created_at, id) < \
                (SELECT created_at, id FROM files WHERE id = ?3 AND (?1 IS NULL OR owner = ?1))) \
         ORDER BY created_at DESC, id DESC LIMIT ?4"
    );
    // One more than asked, to tell whether more follow.
    let fetch = i64::try_from(query.limit.saturating_add(1)).unwrap_or(i64::MAX);
    let mut statement = conn.prepare_cached(&sql)?;
    let rows = statement.query_map(params![query.owner, query.purpose, query.after, fetch], read)?;
    let mut data = rows.collect::<Result<Vec<_>, _>>()?;
    let has_more = data.len() > query.limit;
    data.truncate(query.limit);
    Ok(FilePage { data, has_more })
}

/// Deletes the row of file `id` if `owner` may see it; true if there was one. The caller
/// removes the content.
pub(crate) fn delete(conn: &Connection, owner: Option<&str>, id: &str) -> Result<bool, StoreError> {
    let deleted = conn
        .prepare_cached("DELETE FROM files WHERE id = ?1 AND (?2 IS NULL OR owner = ?2)")?
        .execute(params![id, owner])?;
    Ok(deleted > 0)
}

/// Every file id with a row.
pub(crate) fn ids(conn: &Connection) -> Result<HashSet<String>, StoreError> {
    let mut statement = conn.prepare("SELECT id FROM files")?;
    let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Removes what a crash can leave in `dir`, last modified before `cutoff`: temporary files, and
/// content whose row was never inserted (the crash fell between the rename and the insert).
/// Returns how many were removed. The cutoff spares the files of an upload in progress in another
/// ferry sharing the folder (`ferry run` beside `ferry serve`).
pub(crate) fn sweep(conn: &Connection, dir: &Path, cutoff: SystemTime) -> Result<usize, StoreError> {
    let known = ids(conn)?;
    let entries =
        std::fs::read_dir(dir).map_err(|source| StoreError::Content { path: dir.into(), source })?;
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let leftover = name.starts_with(TEMP_PREFIX) || (is_file_id(name) && !known.contains(name));
        let old = entry.metadata().and_then(|m| m.modified()).is_ok_and(|modified| modified < cutoff);
        if leftover && old && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

fn read(row: &Row<'_>) -> rusqlite::Result<FileObject> {
    Ok(FileObject {
        id: row.get(0)?,
        owner: row.get(1)?,
        purpose: row.get(2)?,
        filename: row.get(3)?,
        bytes: u64::try_from(row.get::<_, i64>(4)?).unwrap_or(0),
        created_at: row.get(5)?,
        status: row.get(6)?,
        expires_at: row.get(7)?,
    })
}

/// `at` in unix seconds (0 before 1970).
fn unix_seconds(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::migrations::migrate;

    fn conn() -> Result<Connection, StoreError> {
        let mut conn = Connection::open_in_memory()?;
        migrate(&mut conn)?;
        Ok(conn)
    }

    fn file(owner: Option<&str>, purpose: &str, created_at: i64) -> FileObject {
        FileObject { created_at, ..FileObject::new(owner.map(Into::into), purpose, "in.jsonl", 42) }
    }

    fn query(owner: Option<&str>, limit: usize) -> FileQuery {
        FileQuery { owner: owner.map(Into::into), limit, ..FileQuery::default() }
    }

    fn ids_of(page: &FilePage) -> Vec<&str> {
        page.data.iter().map(|f| f.id.as_str()).collect()
    }

    #[test]
    fn serializes_as_openais_file_object_without_the_owner() {
        let file =
            FileObject { id: "file-x".into(), ..file(Some("secret-owner"), PURPOSE_BATCH, 1_700_000_000) };
        let json = serde_json::to_value(&file).unwrap_or_default();
        assert_eq!(
            json,
            serde_json::json!({"id": "file-x", "object": "file", "bytes": 42, "created_at": 1_700_000_000,
                "filename": "in.jsonl", "purpose": "batch", "status": "processed"})
        );
    }

    #[test]
    fn ids_are_file_and_a_ulid_and_nothing_else_passes() {
        let id = new_file_id();
        assert!(is_file_id(&id), "{id}");
        assert_ne!(id, new_file_id());
        for bad in [
            "file-",
            "file-../../etc/passwd",
            "x-01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "file-01ARZ3NDEKTSV4RRFFQ69G5FA/",
        ] {
            assert!(!is_file_id(bad), "{bad}");
        }
        assert!(is_file_id("file-01ARZ3NDEKTSV4RRFFQ69G5FAV"));
    }

    #[test]
    fn a_file_is_seen_by_its_owner_only() -> Result<(), StoreError> {
        let conn = conn()?;
        let mine = file(Some("a"), PURPOSE_BATCH, 10);
        insert(&conn, &mine)?;
        assert_eq!(get(&conn, Some("a"), &mine.id)?, Some(mine.clone()));
        assert_eq!(get(&conn, Some("b"), &mine.id)?, None);
        assert_eq!(get(&conn, None, &mine.id)?, Some(mine.clone()), "auth off sees every file");
        assert!(list(&conn, &query(Some("b"), 10))?.data.is_empty());
        assert!(!delete(&conn, Some("b"), &mine.id)?);
        assert!(delete(&conn, Some("a"), &mine.id)?);
        assert_eq!(get(&conn, Some("a"), &mine.id)?, None);
        assert!(!delete(&conn, Some("a"), &mine.id)?, "a second delete finds nothing");
        Ok(())
    }

    #[test]
    fn listing_is_newest_first_filtered_and_paged() -> Result<(), StoreError> {
        let conn = conn()?;
        let files: Vec<FileObject> = (0..5)
            .map(|i| file(Some("a"), if i == 2 { PURPOSE_BATCH_OUTPUT } else { PURPOSE_BATCH }, 100 + i))
            .collect();
        for f in &files {
            insert(&conn, f)?;
        }
        insert(&conn, &file(Some("b"), PURPOSE_BATCH, 500))?;
        let all = list(&conn, &query(Some("a"), 10))?;
        let newest_first: Vec<&str> = files.iter().rev().map(|f| f.id.as_str()).collect();
        assert_eq!((ids_of(&all), all.has_more), (newest_first.clone(), false));

        let page1 = list(&conn, &query(Some("a"), 2))?;
        assert_eq!((ids_of(&page1), page1.has_more), (newest_first[..2].to_vec(), true));
        let after = Some(newest_first[1].to_string());
        let page2 = list(&conn, &FileQuery { after, ..query(Some("a"), 2) })?;
        assert_eq!((ids_of(&page2), page2.has_more), (newest_first[2..4].to_vec(), true));
        let after = Some(newest_first[3].to_string());
        let page3 = list(&conn, &FileQuery { after, ..query(Some("a"), 2) })?;
        assert_eq!((ids_of(&page3), page3.has_more), (newest_first[4..].to_vec(), false));

        let outputs =
            list(&conn, &FileQuery { purpose: Some(PURPOSE_BATCH_OUTPUT.into()), ..query(Some("a"), 10) })?;
        assert_eq!(ids_of(&outputs), [files[2].id.as_str()]);
        assert_eq!(list(&conn, &query(None, 10))?.data.len(), 6);
        let unknown = FileQuery { after: Some(new_file_id()), ..query(Some("a"), 10) };
        assert!(list(&conn, &unknown)?.data.is_empty());
        Ok(())
    }

    #[test]
    fn files_as_old_as_each_other_page_by_id() -> Result<(), StoreError> {
        let conn = conn()?;
        for _ in 0..3 {
            insert(&conn, &file(None, PURPOSE_BATCH, 7))?;
        }
        let all = list(&conn, &query(None, 10))?;
        let after = Some(all.data[0].id.clone());
        let rest = list(&conn, &FileQuery { after, ..query(None, 10) })?;
        assert_eq!(ids_of(&rest), ids_of(&all)[1..]);
        Ok(())
    }

    #[test]
    fn sweep_removes_temporary_files_and_content_without_a_row() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let conn = conn()?;
        let kept = file(None, PURPOSE_BATCH, 1);
        insert(&conn, &kept)?;
        let orphan = new_file_id();
        for name in [kept.id.as_str(), orphan.as_str(), ".tmp-half", "README"] {
            std::fs::write(dir.path().join(name), b"x")?;
        }
        let past = SystemTime::now() - std::time::Duration::from_secs(3600);
        assert_eq!(sweep(&conn, dir.path(), past)?, 0, "fresh files may be another ferry's upload");
        let future = SystemTime::now() + std::time::Duration::from_secs(3600);
        assert_eq!(sweep(&conn, dir.path(), future)?, 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["README".to_string(), kept.id]);
        Ok(())
    }
}
