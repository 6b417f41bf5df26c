//! Owner ids: what the store records as the owner of a chat, a file or a batch instead of the
//! caller's key.
//!
//! An owner id is HMAC-SHA256 of the key under a server secret, in full (64 hex digits). The
//! secret is 32 random bytes made at the first start, kept in `<db file>.owner-secret` (mode
//! 0600, beside the database, never logged): without it, a copy of the database does not let
//! anyone test guesses of a key against the stored ids.
//!
//! Databases written before this scheme hold [`legacy_key_id`]s (the first 64 bits of an
//! unsalted SHA-256). They are mapped on first use: at every start, for each configured key,
//! rows owned by its legacy id are given its new id ([`adopt_legacy_owners`]), so a key keeps
//! seeing its chats, files and batches.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use rusqlite::Connection;
use sha2::{Digest, Sha256};

use super::StoreError;

/// Bytes of secret.
const SECRET_BYTES: usize = 32;

/// The server secret owner ids are keyed with. `Debug` never shows it.
#[derive(Clone)]
pub struct OwnerSecret([u8; SECRET_BYTES]);

impl std::fmt::Debug for OwnerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OwnerSecret(***)")
    }
}

/// Where the secret of the database at `db` lives: `<db>.owner-secret`.
pub fn secret_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_os_string();
    name.push(".owner-secret");
    PathBuf::from(name)
}

impl OwnerSecret {
    /// A secret given directly (tests, embedding).
    pub fn from_bytes(bytes: [u8; SECRET_BYTES]) -> OwnerSecret {
        OwnerSecret(bytes)
    }

    /// Reads the secret beside `db`, or makes one (from the OS's random source) and writes it
    /// there with mode 0600 if there is none.
    pub fn load_or_create(db: &Path) -> Result<OwnerSecret, StoreError> {
        let path = secret_path(db);
        let failed = |source: io::Error| StoreError::Open { path: path.clone(), source: Box::new(source) };
        match fs::read_to_string(&path) {
            Ok(text) => {
                return parse_hex(text.trim()).map(OwnerSecret).ok_or_else(|| {
                    failed(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the owner secret is not 64 hex digits",
                    ))
                });
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(failed(error)),
        }
        let mut bytes = [0u8; SECRET_BYTES];
        fs::File::open("/dev/urandom")
            .and_then(|mut random| random.read_exact(&mut bytes))
            .map_err(failed)?;
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(&path) {
            Ok(mut file) => {
                file.write_all(format!("{}\n", hex(&bytes)).as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(failed)?;
                Ok(OwnerSecret(bytes))
            }
            // Another ferry on the same database made it first: use theirs.
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => OwnerSecret::load_or_create(db),
            Err(error) => Err(failed(error)),
        }
    }

    /// The owner id of `api_key`: HMAC-SHA256 under this secret, 64 hex digits.
    pub fn owner_id(&self, api_key: &str) -> String {
        // HMAC takes a key of any length, so this cannot fail; the fallback keeps it total.
        match <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0) {
            Ok(mut mac) => {
                mac.update(api_key.as_bytes());
                hex(&mac.finalize().into_bytes())
            }
            Err(_) => hex(&Sha256::new().chain_update(self.0).chain_update(api_key.as_bytes()).finalize()),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

fn parse_hex(text: &str) -> Option<[u8; SECRET_BYTES]> {
    if text.len() != SECRET_BYTES * 2 || !text.is_ascii() {
        return None;
    }
    let mut bytes = [0u8; SECRET_BYTES];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(bytes)
}

/// Domain prefix of the legacy ids.
const LEGACY_DOMAIN: &[u8] = b"ferry key id v1\0";

/// The owner id ferry recorded before keyed owner ids: the first 16 hex digits of SHA-256 over a
/// fixed prefix and the key. Kept only to find and re-own rows of older databases.
pub fn legacy_key_id(api_key: &str) -> String {
    let digest = Sha256::new().chain_update(LEGACY_DOMAIN).chain_update(api_key.as_bytes()).finalize();
    hex(&digest[..8])
}

/// Gives rows owned by a legacy id the new id of the same key, in every table with an owner;
/// `pairs` are `(legacy id, new id)`. Returns how many rows changed. Indexed by owner, so a
/// start with nothing left to map costs a look-up per key and table.
pub fn adopt_legacy_owners(conn: &mut Connection, pairs: &[(String, String)]) -> Result<usize, StoreError> {
    let tx = conn.transaction()?;
    let mut changed = 0;
    for table in ["chats", "files", "batches"] {
        let mut update = tx.prepare(&format!("UPDATE {table} SET owner = ?2 WHERE owner = ?1"))?;
        for (legacy, new) in pairs {
            changed += update.execute((legacy, new))?;
        }
    }
    // The analytics kept per owner follow (counts are added, should the new id have some).
    for (legacy, new) in pairs {
        tx.execute(
            "INSERT INTO analytics_counts (owner, scope, count) \
             SELECT ?2, scope, count FROM analytics_counts WHERE owner = ?1 AND true \
             ON CONFLICT (owner, scope) DO UPDATE SET count = count + excluded.count",
            (legacy, new),
        )?;
        tx.execute("DELETE FROM analytics_counts WHERE owner = ?1", [legacy])?;
        tx.execute("UPDATE OR IGNORE analytics_batches SET owner = ?2 WHERE owner = ?1", (legacy, new))?;
        tx.execute("DELETE FROM analytics_batches WHERE owner = ?1", [legacy])?;
    }
    tx.commit()?;
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_ids_are_keyed_full_length_and_stable() {
        let secret = OwnerSecret::from_bytes([7; SECRET_BYTES]);
        let id = secret.owner_id("sk-one-0123456789");
        assert_eq!(id.len(), 64);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(id, secret.owner_id("sk-one-0123456789"));
        assert_ne!(id, secret.owner_id("sk-two-0123456789"));
        assert_ne!(id, OwnerSecret::from_bytes([8; SECRET_BYTES]).owner_id("sk-one-0123456789"));
        assert_eq!(format!("{secret:?}"), "OwnerSecret(***)");
    }

    #[test]
    fn the_secret_is_made_once_private_and_read_back() -> Result<(), StoreError> {
        let dir =
            tempfile::tempdir().map_err(|e| StoreError::Open { path: "tmp".into(), source: e.into() })?;
        let db = dir.path().join("ferry.db");
        let first = OwnerSecret::load_or_create(&db)?;
        let again = OwnerSecret::load_or_create(&db)?;
        assert_eq!(first.owner_id("k"), again.owner_id("k"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(secret_path(&db)).map(|m| m.permissions().mode() & 0o777).ok();
            assert_eq!(mode, Some(0o600));
        }
        fs::write(secret_path(&db), "not hex").ok();
        assert!(OwnerSecret::load_or_create(&db).is_err(), "a damaged secret is refused, not replaced");
        Ok(())
    }

    #[test]
    fn legacy_ids_are_the_old_16_digit_scheme() {
        let id = legacy_key_id("sk-one");
        assert_eq!(id.len(), 16);
        assert_eq!(id, legacy_key_id("sk-one"));
    }
}
