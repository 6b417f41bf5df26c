//! Opening the database file: its directory, owner-only permissions, and the pragmas every
//! connection runs with.

use std::fs;
use std::io;
use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::StoreError;

/// How long a statement waits for a lock held by another connection (a second ferry, or a
/// `sqlite3` shell) before failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements kept per connection; the store uses fewer than this.
const STATEMENT_CACHE: usize = 32;

/// Opens `path`, creating it and its directory when missing, and sets the connection's pragmas.
/// Does not migrate.
pub(crate) fn open(path: &Path) -> Result<Connection, StoreError> {
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    create_parent(path).map_err(|e| failed(Box::new(e)))?;
    create_private_file(path).map_err(|e| failed(Box::new(e)))?;
    let conn = Connection::open(path).map_err(|e| failed(Box::new(e)))?;
    configure(&conn).map_err(|e| failed(Box::new(e)))?;
    Ok(conn)
}

/// WAL lets readers run beside the one writer; NORMAL sync is durable across a crash of ferry
/// (only an OS crash can lose the last commits), which is the usual WAL trade. `secure_delete`
/// overwrites deleted content with zeros, so what is dropped (a batch's answers once they are in
/// its files) does not linger in free pages; see [`checkpoint_truncate`] for the WAL.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(event = "store_open", journal_mode = %mode, "SQLite refused WAL mode");
    }
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON;")?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// Copies every committed page from the WAL into the database file and truncates the WAL to
/// nothing, so content dropped from the tables is no longer in `-wal` either. Returns whether it
/// completed: a reader holding an old snapshot makes it stop short (it is tried again after the
/// next drop).
pub fn checkpoint_truncate(conn: &Connection) -> rusqlite::Result<bool> {
    let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))?;
    Ok(busy == 0)
}

fn create_parent(path: &Path) -> io::Result<()> {
    let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(());
    };
    if parent.exists() {
        return Ok(());
    }
    crate::private_fs::create_dir_all(parent)
}

/// Creates the file with mode 0600 before SQLite sees it; SQLite then gives its `-wal` and
/// `-shm` files the same mode. An existing file keeps the mode its owner chose, with a warning
/// when others can read it.
fn create_private_file(path: &Path) -> io::Result<()> {
    match crate::private_fs::write_options().create_new(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            warn_if_shared(path);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[cfg(unix)]
fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            event = "store_open",
            path = %path.display(),
            mode = format_args!("{:o}", meta.permissions().mode() & 0o777),
            "the store file is readable by other users; chmod 600 it"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_path: &Path) {}
