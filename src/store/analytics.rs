//! Seed 002's dashboard analytics, computed from the chats.
//!
//! Counts are of batches, not items (seed 002: "batch-level metrics"): distinct batch ids, where
//! a chat without a batch id counts as a batch of its own. A chat's priority is its `priority`
//! (`HIGH`/`MEDIUM`/`LOW` from `/v1/query`) or else its lane's name, so `/v1/chat/completions`
//! items sent to the `high` lane count as High. `total_requests` counts every batch, including
//! lanes outside the three priorities (`bulk`), so it can exceed their sum. Days are UTC dates of
//! completion; a batch whose items complete either side of midnight counts on both days.

use rusqlite::{Connection, ToSql};
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
pub(crate) fn compute(conn: &Connection, owner: Option<&str>) -> Result<Analytics, StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::migrations::migrate;

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
