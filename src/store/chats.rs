//! Chats: one row per finished item — its request, its response and the batch it rode in.
//!
//! Times are unix milliseconds (UTC) going in, and an RFC 3339 UTC string (`…T12:00:00.123Z`)
//! coming out as [`ChatRecord::timestamp`], formatted by SQLite so ferry needs no date crate.
//! Listing is newest first and pages backwards by id: pass the last id seen as `before`.

use std::fmt;

use rusqlite::{Connection, OptionalExtension, ToSql, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::StoreError;

/// A chat's id: increasing with insertion and never reused, so it works as a paging cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChatId(pub i64);

impl fmt::Display for ChatId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A finished item to record.
#[derive(Debug, Clone)]
pub struct NewChat {
    /// Who made it: a [`key_id`](super::key_id) of the caller's Bearer key, never the key; `None`
    /// when auth is off.
    pub owner: Option<String>,
    /// The username the request gave (seed 002), if any.
    pub username: Option<String>,
    /// The request id the caller gave, if any.
    pub request_id: Option<String>,
    /// The lane the item went through (`high`, `medium`, `low`, `bulk`, …).
    pub lane: String,
    /// `HIGH`, `MEDIUM` or `LOW` when the item came from `/v1/query`.
    pub priority: Option<String>,
    /// The batch the item was dispatched in.
    pub batch_id: Option<String>,
    /// The request as the caller sent it (shape of the door's choosing).
    pub request: Value,
    /// The response or error as the caller received it.
    pub response: Value,
    /// Whether the item succeeded.
    pub ok: bool,
    /// When ferry accepted the item, in unix milliseconds (UTC).
    pub created_at: i64,
    /// When the item finished, in unix milliseconds (UTC).
    pub completed_at: i64,
    /// Tokens the upstream reported (or ferry estimated).
    pub tokens_used: u32,
    /// Time from acceptance to answer. A non-finite value is stored as 0.
    pub latency_ms: f64,
}

/// Which chats to list.
#[derive(Debug, Clone, Default)]
pub struct ChatQuery {
    /// Only this owner's chats; `None` lists every owner's (use it only when auth is off).
    pub owner: Option<String>,
    /// Only chats with this username.
    pub username: Option<String>,
    /// At most this many.
    pub limit: usize,
    /// Only chats older than this one (the last id of the previous page).
    pub before: Option<ChatId>,
}

/// A stored chat, as listed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatRecord {
    /// The chat's id (the paging cursor).
    pub id: ChatId,
    /// When it completed, RFC 3339 in UTC with milliseconds.
    pub timestamp: String,
    /// The batch it was dispatched in.
    pub batch_id: Option<String>,
    /// The lane it went through.
    pub lane: String,
    /// `HIGH`, `MEDIUM` or `LOW` for `/v1/query` items.
    pub priority: Option<String>,
    /// The username the request gave.
    pub username: Option<String>,
    /// The request id the caller gave.
    pub request_id: Option<String>,
    /// The request as recorded.
    pub request: Value,
    /// The response as recorded.
    pub response: Value,
    /// Whether the item succeeded.
    pub ok: bool,
    /// Tokens used.
    pub tokens_used: u32,
    /// Time from acceptance to answer.
    pub latency_ms: f64,
}

const INSERT: &str = "INSERT INTO chats (owner, username, request_id, lane, priority, batch_id, request, \
     response, ok, created_at, completed_at, tokens_used, latency_ms) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";

/// `?1` is `before`, `?2` the limit, then the filters in order.
macro_rules! select_chats {
    ($filter:literal) => {
        concat!(
            "SELECT id, COALESCE(strftime('%Y-%m-%dT%H:%M:%fZ', completed_at / 1000.0, 'unixepoch'), ''), \
             batch_id, lane, priority, username, request_id, request, response, ok, tokens_used, latency_ms \
             FROM chats WHERE id < ?1 ",
            $filter,
            " ORDER BY id DESC LIMIT ?2"
        )
    };
}

const SELECT_ALL: &str = select_chats!("");
const SELECT_OWNER: &str = select_chats!("AND owner = ?3");
const SELECT_USERNAME: &str = select_chats!("AND username = ?3");
const SELECT_OWNER_USERNAME: &str = select_chats!("AND owner = ?3 AND username = ?4");

/// Inserts one chat.
pub(crate) fn insert(conn: &Connection, chat: &NewChat) -> Result<ChatId, StoreError> {
    let latency_ms = if chat.latency_ms.is_finite() { chat.latency_ms } else { 0.0 };
    let mut statement = conn.prepare_cached(INSERT)?;
    let id = statement.insert(params![
        chat.owner,
        chat.username,
        chat.request_id,
        chat.lane,
        chat.priority,
        chat.batch_id,
        chat.request.to_string(),
        chat.response.to_string(),
        chat.ok,
        chat.created_at,
        chat.completed_at,
        chat.tokens_used,
        latency_ms,
    ])?;
    Ok(ChatId(id))
}

/// Inserts every chat in one transaction: all or none.
pub(crate) fn insert_all(conn: &mut Connection, chats: &[NewChat]) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    for chat in chats {
        insert(&tx, chat)?;
    }
    tx.commit()?;
    Ok(())
}

/// Lists chats newest first.
/// Which chats retention removes: those completed before `before_ms` (Unix ms), and all but the
/// newest `keep_newest`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Chats completed before this instant (Unix milliseconds) go.
    pub before_ms: Option<i64>,
    /// Only this many of the newest chats stay.
    pub keep_newest: Option<u64>,
}

/// Deletes at most `slice` chats that `retention` removes, oldest first; returns how many. One
/// short statement, so writes waiting behind it wait little.
pub(crate) fn prune_slice(
    conn: &Connection,
    retention: Retention,
    slice: usize,
) -> Result<usize, StoreError> {
    // The id below which `keep_newest` removes everything (ids grow with time).
    let keep_from: Option<i64> = match retention.keep_newest {
        None => None,
        Some(keep) => conn
            .prepare_cached("SELECT id FROM chats ORDER BY id DESC LIMIT 1 OFFSET ?1")?
            .query_row([i64::try_from(keep).unwrap_or(i64::MAX)], |row| row.get(0))
            .optional()?
            .map(|id: i64| id + 1),
    };
    let deleted = conn
        .prepare_cached(
            "DELETE FROM chats WHERE id IN (SELECT id FROM chats              WHERE (?1 IS NOT NULL AND completed_at < ?1) OR (?2 IS NOT NULL AND id < ?2)              ORDER BY id LIMIT ?3)",
        )?
        .execute(params![retention.before_ms, keep_from, i64::try_from(slice).unwrap_or(i64::MAX)])?;
    Ok(deleted)
}

pub(crate) fn list(conn: &Connection, query: &ChatQuery) -> Result<Vec<ChatRecord>, StoreError> {
    let before = query.before.map_or(i64::MAX, |id| id.0);
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    match (&query.owner, &query.username) {
        (None, None) => select(conn, SELECT_ALL, params![before, limit]),
        (Some(owner), None) => select(conn, SELECT_OWNER, params![before, limit, owner]),
        (None, Some(username)) => select(conn, SELECT_USERNAME, params![before, limit, username]),
        (Some(owner), Some(username)) => {
            select(conn, SELECT_OWNER_USERNAME, params![before, limit, owner, username])
        }
    }
}

/// A row before its JSON columns are parsed (parsing errors are ours, not SQLite's).
struct RawChat {
    record: ChatRecord,
    request: String,
    response: String,
}

fn select(conn: &Connection, sql: &str, params: &[&dyn ToSql]) -> Result<Vec<ChatRecord>, StoreError> {
    let mut statement = conn.prepare_cached(sql)?;
    let rows = statement.query_map(params, |row| {
        Ok(RawChat {
            record: ChatRecord {
                id: ChatId(row.get(0)?),
                timestamp: row.get(1)?,
                batch_id: row.get(2)?,
                lane: row.get(3)?,
                priority: row.get(4)?,
                username: row.get(5)?,
                request_id: row.get(6)?,
                request: Value::Null,
                response: Value::Null,
                ok: row.get(9)?,
                tokens_used: row.get(10)?,
                latency_ms: row.get(11)?,
            },
            request: row.get(7)?,
            response: row.get(8)?,
        })
    })?;
    rows.map(|row| decode(row?)).collect()
}

fn decode(raw: RawChat) -> Result<ChatRecord, StoreError> {
    let id = raw.record.id.0;
    let parse = |column: &'static str, text: &str| {
        serde_json::from_str(text).map_err(|source| StoreError::Decode { id, column, source })
    };
    Ok(ChatRecord {
        request: parse("request", &raw.request)?,
        response: parse("response", &raw.response)?,
        ..raw.record
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::migrations::migrate;

    fn chat(completed_at: i64) -> NewChat {
        NewChat {
            owner: None,
            username: Some("ada".into()),
            request_id: Some("r1".into()),
            lane: "high".into(),
            priority: Some("HIGH".into()),
            batch_id: Some("b1".into()),
            request: json!({"prompt": "hi"}),
            response: json!({"text": "hello"}),
            ok: true,
            created_at: completed_at - 5,
            completed_at,
            tokens_used: 7,
            latency_ms: f64::NAN,
        }
    }

    #[test]
    fn timestamp_is_rfc3339_utc_with_milliseconds() -> Result<(), StoreError> {
        let mut conn = Connection::open_in_memory()?;
        migrate(&mut conn)?;
        insert(&conn, &chat(1_769_947_200_123))?;
        let listed = list(&conn, &ChatQuery { limit: 10, ..ChatQuery::default() })?;
        assert_eq!(listed[0].timestamp, "2026-02-01T12:00:00.123Z");
        assert_eq!(listed[0].latency_ms, 0.0, "NaN is stored as 0");
        assert_eq!(listed[0].request, json!({"prompt": "hi"}));
        Ok(())
    }

    #[test]
    fn a_batch_is_stored_whole_or_not_at_all() -> Result<(), StoreError> {
        let mut conn = Connection::open_in_memory()?;
        migrate(&mut conn)?;
        conn.execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON chats WHEN NEW.lane = 'refused' \
             BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )?;
        let refused = NewChat { lane: "refused".into(), ..chat(2) };
        assert!(insert_all(&mut conn, &[chat(1), refused, chat(3)]).is_err());
        let count: i64 = conn.query_row("SELECT COUNT(*) FROM chats", [], |row| row.get(0))?;
        assert_eq!(count, 0);
        Ok(())
    }

    #[test]
    fn damaged_json_is_reported_with_the_chat_id() -> Result<(), StoreError> {
        let mut conn = Connection::open_in_memory()?;
        migrate(&mut conn)?;
        let id = insert(&conn, &chat(0))?;
        conn.execute("UPDATE chats SET response = '{oops' WHERE id = ?1", [id.0])?;
        match list(&conn, &ChatQuery { limit: 1, ..ChatQuery::default() }) {
            Err(StoreError::Decode { id: bad, column: "response", .. }) => assert_eq!(bad, id.0),
            other => panic!("expected Decode, got {other:?}"),
        }
        Ok(())
    }
}
