//! Settings that override `config.toml` (seed 002's `settings.json`): the upstream API key and a
//! token and latency budget per priority.
//!
//! The budgets live in SQLite. The upstream API key does not: it is kept in its own owner-only
//! file beside the database (`<db file>.upstream-key`, mode 0600, replaced atomically), so the
//! database holds no secret and can be copied, inspected with `sqlite3` or attached to a bug
//! report without leaking a credential. Nothing here logs the key, and [`StoredSettings`]'s
//! `Debug` masks it.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::StoreError;

/// A priority's budget: seed 002's `{tokens, latency_ms}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneBudget {
    /// Max output tokens for the priority.
    pub tokens: u32,
    /// Target latency; the `/v1/query` timeout is derived from it.
    pub latency_ms: u64,
}

/// Settings saved through `PUT /v1/settings`; `None` means "as in config.toml".
///
/// Saving replaces all of it: a partial update is the HTTP layer's load–merge–save.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StoredSettings {
    /// The upstream API key (a secret: never log it, mask it on output).
    pub api_key: Option<String>,
    /// The HIGH priority's budget.
    pub high: Option<LaneBudget>,
    /// The MEDIUM priority's budget.
    pub medium: Option<LaneBudget>,
    /// The LOW priority's budget.
    pub low: Option<LaneBudget>,
}

impl fmt::Debug for StoredSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredSettings")
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("high", &self.high)
            .field("medium", &self.medium)
            .field("low", &self.low)
            .finish()
    }
}

/// The file holding the upstream key for the database at `db`.
pub(crate) fn key_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".upstream-key");
    db.with_file_name(name)
}

/// Loads the settings: budgets from `conn`, the key from `key_file`.
pub(crate) fn load(conn: &Connection, key_file: &Path) -> Result<StoredSettings, StoreError> {
    let mut statement =
        conn.prepare_cached("SELECT tokens, latency_ms FROM lane_budgets WHERE priority = ?1")?;
    let mut budget = |priority: &str| {
        statement
            .query_row([priority], |row| {
                let latency_ms: i64 = row.get(1)?;
                let latency_ms = u64::try_from(latency_ms)
                    .map_err(|_| rusqlite::Error::IntegralValueOutOfRange(1, latency_ms))?;
                Ok(LaneBudget { tokens: row.get(0)?, latency_ms })
            })
            .optional()
    };
    Ok(StoredSettings {
        high: budget("high")?,
        medium: budget("medium")?,
        low: budget("low")?,
        api_key: read_key(key_file)?,
    })
}

/// Replaces the stored settings with `settings`.
pub(crate) fn save(
    conn: &mut Connection,
    key_file: &Path,
    settings: &StoredSettings,
) -> Result<(), StoreError> {
    write_key(key_file, settings.api_key.as_deref())?;
    let tx = conn.transaction()?;
    tx.execute("DELETE FROM lane_budgets", [])?;
    {
        let mut insert =
            tx.prepare_cached("INSERT INTO lane_budgets (priority, tokens, latency_ms) VALUES (?1, ?2, ?3)")?;
        for (priority, budget) in
            [("high", settings.high), ("medium", settings.medium), ("low", settings.low)]
        {
            if let Some(budget) = budget {
                let latency_ms =
                    i64::try_from(budget.latency_ms).map_err(|_| StoreError::OutOfRange("latency_ms"))?;
                insert.execute((priority, budget.tokens, latency_ms))?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}

fn read_key(path: &Path) -> Result<Option<String>, StoreError> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let key = text.trim_end_matches(['\n', '\r']);
            Ok((!key.is_empty()).then(|| key.to_owned()))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Secret { path: path.to_path_buf(), source }),
    }
}

/// Writes the key to a 0600 temporary file and renames it over the old one, so a crash leaves
/// the old key or the new one, never half of one. `None` removes the file.
fn write_key(path: &Path, key: Option<&str>) -> Result<(), StoreError> {
    let failed = |source| StoreError::Secret { path: path.to_path_buf(), source };
    let Some(key) = key else {
        return match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(failed(e)),
            _ => Ok(()),
        };
    };
    let mut temp = path.as_os_str().to_os_string();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    let written = crate::private_fs::create_file(&temp).and_then(|mut file| {
        file.write_all(key.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()
    });
    written.and_then(|()| fs::rename(&temp, path)).map_err(|e| {
        let _ = fs::remove_file(&temp);
        failed(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_file_sits_beside_the_database() {
        assert_eq!(key_path(Path::new("data/ferry.db")), Path::new("data/ferry.db.upstream-key"));
    }

    #[test]
    fn debug_masks_the_key() {
        let settings = StoredSettings { api_key: Some("sk-canary-123".into()), ..StoredSettings::default() };
        let shown = format!("{settings:?}");
        assert!(!shown.contains("canary"), "{shown}");
        assert!(shown.contains("***"), "{shown}");
    }
}
