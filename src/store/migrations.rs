//! Versioned schema migrations.
//!
//! `PRAGMA user_version` holds the schema version (0 for a new file); `schema_migrations` keeps a
//! row per applied migration, for people reading the file. Each migration runs in its own
//! transaction with the version bump, so a crash leaves the file at a whole version. A file from a
//! newer ferry is refused rather than guessed at. Migrations are append-only: never edit one that
//! has shipped; add the next.

use rusqlite::Connection;

use super::StoreError;

/// One step of the schema.
struct Migration {
    version: u32,
    name: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "chats and lane budgets",
        sql: "
        CREATE TABLE chats (
            id           INTEGER PRIMARY KEY AUTOINCREMENT,
            owner        TEXT,
            username     TEXT,
            request_id   TEXT,
            lane         TEXT    NOT NULL,
            priority     TEXT,
            batch_id     TEXT,
            request      TEXT    NOT NULL,
            response     TEXT    NOT NULL,
            ok           INTEGER NOT NULL,
            created_at   INTEGER NOT NULL,
            completed_at INTEGER NOT NULL,
            tokens_used  INTEGER NOT NULL,
            latency_ms   REAL    NOT NULL
        );
        CREATE INDEX chats_owner_id ON chats (owner, id);
        CREATE INDEX chats_owner_username_id ON chats (owner, username, id);
        CREATE INDEX chats_username_id ON chats (username, id);
        CREATE INDEX chats_completed_at ON chats (completed_at);
        CREATE TABLE lane_budgets (
            priority   TEXT    PRIMARY KEY CHECK (priority IN ('high', 'medium', 'low')),
            tokens     INTEGER NOT NULL,
            latency_ms INTEGER NOT NULL
        );
    ",
    },
    Migration {
        version: 2,
        name: "files",
        sql: "
        CREATE TABLE files (
            id         TEXT    PRIMARY KEY,
            owner      TEXT,
            purpose    TEXT    NOT NULL,
            filename   TEXT    NOT NULL,
            bytes      INTEGER NOT NULL,
            created_at INTEGER NOT NULL, -- unix seconds, as OpenAI's file object has it
            status     TEXT    NOT NULL DEFAULT 'processed'
        );
        CREATE INDEX files_owner_created_at ON files (owner, created_at);
    ",
    },
    Migration {
        version: 3,
        name: "batch jobs and their items",
        sql: "
        CREATE TABLE batches (
            id                TEXT    PRIMARY KEY,
            kind              TEXT    NOT NULL CHECK (kind IN ('api', 'run')),
            owner             TEXT,
            input_file_id     TEXT    NOT NULL,
            input_path        TEXT    NOT NULL,
            output_path       TEXT,
            endpoint          TEXT    NOT NULL,
            completion_window TEXT    NOT NULL,
            lane              TEXT    NOT NULL,
            metadata          TEXT,
            status            TEXT    NOT NULL,
            errors            TEXT,
            output_file_id    TEXT,
            error_file_id     TEXT,
            idempotency_key   TEXT,
            request_hash      TEXT,
            total             INTEGER NOT NULL DEFAULT 0,
            completed         INTEGER NOT NULL DEFAULT 0,
            failed            INTEGER NOT NULL DEFAULT 0,
            created_at        INTEGER NOT NULL,
            expires_at        INTEGER,
            in_progress_at    INTEGER,
            finalizing_at     INTEGER,
            completed_at      INTEGER,
            failed_at         INTEGER,
            expired_at        INTEGER,
            cancelling_at     INTEGER,
            cancelled_at      INTEGER
        );
        CREATE INDEX batches_owner_id ON batches (owner, id);
        CREATE INDEX batches_status ON batches (status);
        CREATE UNIQUE INDEX batches_idempotency ON batches (coalesce(owner, ''), idempotency_key)
            WHERE idempotency_key IS NOT NULL;
        CREATE TABLE batch_items (
            batch_id  TEXT    NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
            line      INTEGER NOT NULL,
            custom_id TEXT    NOT NULL,
            offset    INTEGER NOT NULL,
            len       INTEGER NOT NULL,
            state     INTEGER NOT NULL DEFAULT 0,
            result    TEXT,
            PRIMARY KEY (batch_id, line),
            UNIQUE (batch_id, custom_id)
        );
    ",
    },
    Migration {
        version: 4,
        name: "an ended batch's results kept once, in its files",
        sql: "
        -- Where an item's output line sits in its batch's output or error file, once written
        -- there; its `result` is then cleared, so an answer is not kept twice.
        ALTER TABLE batch_items ADD COLUMN out_offset INTEGER;
        ALTER TABLE batch_items ADD COLUMN out_len INTEGER;
    ",
    },
    Migration {
        version: 5,
        name: "analytics kept as chats are recorded",
        sql: "
        -- Which batch each owner has been counted for, per scope ('total'; 'high', 'medium',
        -- 'low'; 'day:YYYY-MM-DD'), so a batch counts once however many chats it has. Rows are
        -- only needed while a batch may still get chats: housekeeping drops old ones.
        -- owner: the owner id, '' for chats without one, '*' for everyone (keys off).
        CREATE TABLE analytics_batches (
            owner   TEXT    NOT NULL,
            batch   TEXT    NOT NULL,
            scope   TEXT    NOT NULL,
            seen_at INTEGER NOT NULL,
            PRIMARY KEY (owner, batch, scope)
        ) WITHOUT ROWID;
        CREATE INDEX analytics_batches_seen_at ON analytics_batches (seen_at);
        -- Batches per owner and scope: what GET /v1/analytics reads. Outlives chat retention.
        CREATE TABLE analytics_counts (
            owner TEXT    NOT NULL,
            scope TEXT    NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (owner, scope)
        ) WITHOUT ROWID;
        CREATE TRIGGER chats_analytics AFTER INSERT ON chats BEGIN
            INSERT INTO analytics_counts (owner, scope, count)
                SELECT o.owner, s.scope, 1 FROM (SELECT COALESCE(NEW.owner, '') AS owner UNION ALL SELECT '*') AS o, (SELECT 'total' AS scope
              UNION ALL SELECT lower(COALESCE(NEW.priority, NEW.lane))
                WHERE lower(COALESCE(NEW.priority, NEW.lane)) IN ('high', 'medium', 'low')
              UNION ALL SELECT 'day:' || date(NEW.completed_at / 1000, 'unixepoch')
                WHERE date(NEW.completed_at / 1000, 'unixepoch') IS NOT NULL) AS s
                WHERE NOT EXISTS (SELECT 1 FROM analytics_batches AS b WHERE b.owner = o.owner
                    AND b.batch = COALESCE(NEW.batch_id, 'chat:' || NEW.id) AND b.scope = s.scope)
                ON CONFLICT (owner, scope) DO UPDATE SET count = count + 1;
            INSERT OR IGNORE INTO analytics_batches (owner, batch, scope, seen_at)
                SELECT o.owner, COALESCE(NEW.batch_id, 'chat:' || NEW.id), s.scope, NEW.completed_at
                FROM (SELECT COALESCE(NEW.owner, '') AS owner UNION ALL SELECT '*') AS o, (SELECT 'total' AS scope
              UNION ALL SELECT lower(COALESCE(NEW.priority, NEW.lane))
                WHERE lower(COALESCE(NEW.priority, NEW.lane)) IN ('high', 'medium', 'low')
              UNION ALL SELECT 'day:' || date(NEW.completed_at / 1000, 'unixepoch')
                WHERE date(NEW.completed_at / 1000, 'unixepoch') IS NOT NULL) AS s WHERE true;
        END;
        -- The chats already stored.
        WITH c AS (SELECT COALESCE(batch_id, 'chat:' || id) AS batch, COALESCE(owner, '') AS owner,
                          lower(COALESCE(priority, lane)) AS class, completed_at FROM chats),
             s AS (SELECT owner, batch, 'total' AS scope, completed_at FROM c
                   UNION ALL SELECT owner, batch, class, completed_at FROM c
                       WHERE class IN ('high', 'medium', 'low')
                   UNION ALL SELECT owner, batch, 'day:' || date(completed_at / 1000, 'unixepoch'), completed_at
                       FROM c WHERE date(completed_at / 1000, 'unixepoch') IS NOT NULL),
             a AS (SELECT owner, batch, scope, completed_at FROM s
                   UNION ALL SELECT '*', batch, scope, completed_at FROM s)
        INSERT OR IGNORE INTO analytics_batches (owner, batch, scope, seen_at)
            SELECT owner, batch, scope, MAX(completed_at) FROM a GROUP BY owner, batch, scope;
        INSERT INTO analytics_counts (owner, scope, count)
            SELECT owner, scope, COUNT(*) FROM analytics_batches WHERE true GROUP BY owner, scope;
    ",
    },
    Migration {
        version: 6,
        name: "files that expire",
        sql: "
        -- Unix seconds after which the file is deleted (row and content); NULL: never.
        ALTER TABLE files ADD COLUMN expires_at INTEGER;
        CREATE INDEX files_expires_at ON files (expires_at) WHERE expires_at IS NOT NULL;
    ",
    },
];

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: u32 = 6;

/// The SQL of the migrations up to `version`, to build an older schema in tests.
#[cfg(test)]
pub(crate) fn tests_only_steps(version: u32) -> impl Iterator<Item = &'static str> {
    MIGRATIONS.iter().filter(move |m| m.version <= version).map(|m| m.sql)
}

/// Brings `conn` to [`SCHEMA_VERSION`], or refuses a newer file.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let found: u32 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema { found, supported: SCHEMA_VERSION });
    }
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version    INTEGER PRIMARY KEY,
            name       TEXT    NOT NULL,
            applied_at INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER))
        )",
    )?;
    for step in MIGRATIONS.iter().filter(|m| m.version > found) {
        apply(conn, step).map_err(|source| StoreError::Migrate {
            version: step.version,
            name: step.name,
            source,
        })?;
        tracing::info!(event = "store_migrated", version = step.version, name = step.name);
    }
    Ok(())
}

fn apply(conn: &mut Connection, step: &Migration) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.execute_batch(step.sql)?;
    tx.execute("INSERT INTO schema_migrations (version, name) VALUES (?1, ?2)", (step.version, step.name))?;
    // PRAGMA takes no bound parameters; the version is our own constant.
    tx.execute_batch(&format!("PRAGMA user_version = {}", step.version))?;
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_and_end_at_the_schema_version() {
        for (index, step) in MIGRATIONS.iter().enumerate() {
            assert_eq!(step.version as usize, index + 1, "{}", step.name);
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(SCHEMA_VERSION));
    }

    #[test]
    fn migrating_twice_is_a_no_op() -> Result<(), StoreError> {
        let mut conn = Connection::open_in_memory()?;
        migrate(&mut conn)?;
        migrate(&mut conn)?;
        let applied: u32 = conn.query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))?;
        assert_eq!(applied, SCHEMA_VERSION);
        Ok(())
    }

    #[test]
    fn a_newer_schema_is_refused() -> Result<(), StoreError> {
        let mut conn = Connection::open_in_memory()?;
        conn.execute_batch("PRAGMA user_version = 99")?;
        match migrate(&mut conn) {
            Err(StoreError::NewerSchema { found: 99, supported: SCHEMA_VERSION }) => Ok(()),
            other => panic!("expected NewerSchema, got {other:?}"),
        }
    }
}
