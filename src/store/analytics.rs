//! Seed 002's dashboard analytics, computed from the chats.
//!
//! Counts are of batches, not items (seed 002: "batch-level metrics"): distinct batch ids, where
//! a chat without a batch id counts as a batch of its own. A chat's priority is its `priority`
//! (`HIGH`/`MEDIUM`/`LOW` from `/v1/query`) or else its lane's name, so `/v1/chat/completions`
//! items sent to the `high` lane count as High. `total_requests` counts every batch, including
//! lanes outside the three priorities (`bulk`), so it can exceed their sum. Days are UTC dates of
//! completion; a batch whose items complete either side of midnight counts on both days.

use rusqlite::Connection;
use serde::Serialize;

use super::StoreError;

/// `GET /v1/analytics`'s body, field for field as seed 002 has it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Analytics {
    /// Batches of every lane.
    pub total_requests: u64,
    /// Batches of HIGH priority.
    pub high_priority: u64,
    /// Batches of MEDIUM priority.
    pub medium_priority: u64,
    /// Batches of LOW priority.
    pub low_priority: u64,
    /// Batches per UTC day of completion, oldest day first; days without batches are absent.
    pub request_count_over_time: Vec<DateCount>,
    /// The three priorities' batch counts, High, Medium, Low, for a pie chart.
    pub priority_distribution: Vec<NameValue>,
}

/// Batches completed on one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DateCount {
    /// `YYYY-MM-DD`, UTC.
    pub date: String,
    /// Batches that day.
    pub count: u64,
}

/// One slice of the priority distribution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NameValue {
    /// `High`, `Medium` or `Low`.
    pub name: String,
    /// Batches of that priority.
    pub value: u64,
}

/// The chats counted, each with its batch key and priority class; `?1` is the owner.
#[cfg(test)]
macro_rules! counted_chats {
    ($filter:literal) => {
        concat!(
            "(SELECT COALESCE(batch_id, 'chat:' || id) AS batch, \
             lower(COALESCE(priority, lane)) AS class, completed_at FROM chats ",
            $filter,
            ")"
        )
    };
}

#[cfg(test)]
macro_rules! totals {
    ($filter:literal) => {
        concat!(
            "SELECT COUNT(DISTINCT batch), \
             COUNT(DISTINCT CASE WHEN class = 'high' THEN batch END), \
             COUNT(DISTINCT CASE WHEN class = 'medium' THEN batch END), \
             COUNT(DISTINCT CASE WHEN class = 'low' THEN batch END) FROM ",
            counted_chats!($filter)
        )
    };
}

#[cfg(test)]
macro_rules! per_day {
    ($filter:literal) => {
        concat!(
            "SELECT date(completed_at / 1000, 'unixepoch') AS day, COUNT(DISTINCT batch) FROM ",
            counted_chats!($filter),
            " GROUP BY day HAVING day IS NOT NULL ORDER BY day"
        )
    };
}

/// Computes the analytics over `owner`'s chats, or everyone's when `None`.
/// Seed 002's analytics for `owner` (everyone's when `None`), read from the counts the
/// `chats_analytics` trigger keeps as chats are recorded (migration 5): a look-up of one row per
/// scope, whatever the number of chats, and still there after chats are pruned.
pub(crate) fn compute(conn: &Connection, owner: Option<&str>) -> Result<Analytics, StoreError> {
    let owner = owner.unwrap_or("*");
    let count = |n: i64| u64::try_from(n).unwrap_or_default();
    let mut statement =
        conn.prepare_cached("SELECT scope, count FROM analytics_counts WHERE owner = ?1 ORDER BY scope")?;
    let rows = statement.query_map([owner], |row| Ok((row.get::<_, String>(0)?, count(row.get(1)?))))?;
    let mut analytics = Analytics::default();
    for row in rows {
        let (scope, n) = row?;
        match scope.as_str() {
            "total" => analytics.total_requests = n,
            "high" => analytics.high_priority = n,
            "medium" => analytics.medium_priority = n,
            "low" => analytics.low_priority = n,
            other => {
                if let Some(date) = other.strip_prefix("day:") {
                    analytics.request_count_over_time.push(DateCount { date: date.to_string(), count: n });
                }
            }
        }
    }
    let slice = |name: &str, value| NameValue { name: name.to_owned(), value };
    analytics.priority_distribution = vec![
        slice("High", analytics.high_priority),
        slice("Medium", analytics.medium_priority),
        slice("Low", analytics.low_priority),
    ];
    Ok(analytics)
}

/// Drops at most `slice` rows of `analytics_batches` last seen before `before_ms`: a batch that
/// old gets no more chats, so its row no longer guards against counting it twice. Returns how
/// many went.
pub(crate) fn forget_old_batches(
    conn: &Connection,
    before_ms: i64,
    slice: usize,
) -> Result<usize, StoreError> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM analytics_batches WHERE (owner, batch, scope) IN \
             (SELECT owner, batch, scope FROM analytics_batches WHERE seen_at < ?1 LIMIT ?2)",
        )?
        .execute(rusqlite::params![before_ms, i64::try_from(slice).unwrap_or(i64::MAX)])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::ToSql;

    use crate::store::chats::{NewChat, insert};
    use crate::store::migrations::migrate;

    // The scan the aggregates replace: the reference they must agree with.
    #[allow(clippy::type_complexity)]
    fn compute_by_scan(conn: &Connection, owner: Option<&str>) -> Result<Analytics, StoreError> {
        let (totals_sql, per_day_sql, params): (&str, &str, &[&dyn ToSql]) = match &owner {
            Some(owner) => (totals!("WHERE owner = ?1"), per_day!("WHERE owner = ?1"), &[owner]),
            None => (totals!(""), per_day!(""), &[]),
        };
        let count = |n: i64| u64::try_from(n).unwrap_or_default();
        let (total, high, medium, low) = conn.prepare_cached(totals_sql)?.query_row(params, |row| {
            Ok((count(row.get(0)?), count(row.get(1)?), count(row.get(2)?), count(row.get(3)?)))
        })?;
        let mut statement = conn.prepare_cached(per_day_sql)?;
        let over_time = statement
            .query_map(params, |row| Ok(DateCount { date: row.get(0)?, count: count(row.get(1)?) }))?
            .collect::<Result<Vec<_>, _>>()?;
        let slice = |name: &str, value| NameValue { name: name.to_owned(), value };
        Ok(Analytics {
            total_requests: total,
            high_priority: high,
            medium_priority: medium,
            low_priority: low,
            request_count_over_time: over_time,
            priority_distribution: vec![slice("High", high), slice("Medium", medium), slice("Low", low)],
        })
    }

    #[test]
    fn the_kept_counts_agree_with_a_scan_of_the_chats() -> Result<(), StoreError> {
        let mut conn = Connection::open_in_memory()?;
        // Chats before migration 5 are counted by its backfill, later ones by the trigger.
        let mut rng = fastrand::Rng::with_seed(11);
        let chat = |rng: &mut fastrand::Rng| NewChat {
            owner: [None, Some("a".to_string()), Some("b".to_string())][rng.usize(..3)].clone(),
            username: None,
            request_id: None,
            lane: ["high", "medium", "low", "bulk"][rng.usize(..4)].to_string(),
            priority: [None, Some("HIGH".to_string()), Some("LOW".to_string())][rng.usize(..3)].clone(),
            batch_id: [None, Some(format!("b{}", rng.usize(..40)))][rng.usize(..2)].clone(),
            request: serde_json::json!({}),
            response: serde_json::json!({}),
            ok: true,
            created_at: 0,
            completed_at: 1_769_472_000_000 + rng.i64(0..5 * 86_400_000),
            tokens_used: 1,
            latency_ms: 1.0,
        };
        conn.execute_batch(
            "PRAGMA user_version = 0; CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, \
             name TEXT NOT NULL, applied_at INTEGER NOT NULL DEFAULT 0)",
        )?;
        for step in super::super::migrations::tests_only_steps(4) {
            conn.execute_batch(step)?;
        }
        conn.execute_batch("PRAGMA user_version = 4")?;
        for _ in 0..150 {
            insert(&conn, &chat(&mut rng))?;
        }
        migrate(&mut conn)?;
        for _ in 0..150 {
            insert(&conn, &chat(&mut rng))?;
        }
        for owner in [None, Some("a"), Some("b")] {
            assert_eq!(compute(&conn, owner)?, compute_by_scan(&conn, owner)?, "{owner:?}");
        }
        assert!(compute(&conn, None)?.total_requests > 40);
        // Counts outlive the chats, and the guard rows of old batches.
        let before = compute(&conn, Some("a"))?;
        conn.execute_batch("DELETE FROM chats")?;
        assert_eq!(compute(&conn, Some("a"))?, before);
        assert_eq!(forget_old_batches(&conn, 1_769_472_000_000, 10)?, 0, "none is that old");
        while forget_old_batches(&conn, i64::MAX, 10)? == 10 {}
        let left: i64 = conn.query_row("SELECT COUNT(*) FROM analytics_batches", [], |r| r.get(0))?;
        assert_eq!((left, compute(&conn, Some("a"))?), (0, before));
        Ok(())
    }

    #[test]
    fn an_empty_store_has_zero_batches_and_three_slices() -> Result<(), StoreError> {
        let mut conn = Connection::open_in_memory()?;
        migrate(&mut conn)?;
        let analytics = compute(&conn, None)?;
        assert_eq!(analytics.total_requests, 0);
        assert!(analytics.request_count_over_time.is_empty());
        let names: Vec<_> = analytics.priority_distribution.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["High", "Medium", "Low"]);
        Ok(())
    }

    #[test]
    fn field_names_match_seed_002() -> Result<(), serde_json::Error> {
        let json = serde_json::to_value(Analytics {
            request_count_over_time: vec![DateCount { date: "2025-01-27".into(), count: 2 }],
            priority_distribution: vec![NameValue { name: "High".into(), value: 4 }],
            ..Analytics::default()
        })?;
        assert_eq!(
            json,
            serde_json::json!({
                "total_requests": 0, "high_priority": 0, "medium_priority": 0, "low_priority": 0,
                "request_count_over_time": [{"date": "2025-01-27", "count": 2}],
                "priority_distribution": [{"name": "High", "value": 4}]
            })
        );
        Ok(())
    }
}
