//! What the chats table costs as it grows, in two parts.
//!
//! 1. `GET /v1/analytics` time: the store's analytics for one owner over 10,000 chats and over
//!    2,000,000 (`FERRY_BENCH_CHATS`), spread over 3 owners, 4 lanes and 60 days, in batches of
//!    4, written straight into the store's schema (its trigger keeps the counts). The analytics
//!    read counts kept as chats are recorded, so the two should be within 2× of each other.
//! 2. Database size: 1,000,000 chats (`FERRY_BENCH_SIZE_CHATS`) recorded through the store's own
//!    `record_chats`, shaped as `/v1/chat/completions` records them (a 64-digit owner id, the
//!    request body with a 49-byte prompt, the answer with a 48-byte text, 4 chats per batch),
//!    once with the default retention (none: every chat kept) and once with `max_chats =
//!    100000`, pruned as the background task does after every 100,000 chats. Prints the file
//!    size after a WAL checkpoint, the pages in use, and bytes per chat; then the pages in use
//!    once the analytics guard rows are dropped, as housekeeping does two days after a batch.
//!
//! `cargo bench --bench analytics` (about 10 minutes after the build on 2 cores);
//! `FERRY_BENCH_CHATS=0` runs the second part only.

use std::path::Path;
use std::time::{Duration, Instant};

use ferry::store::{NewChat, RETENTION_SLICE, Retention, Store};
use serde_json::json;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Adds `n` chats through the store's own schema (its trigger keeps the counts).
fn fill(db: &Path, n: u64) -> rusqlite::Result<()> {
    let conn = rusqlite::Connection::open(db)?;
    conn.execute_batch("PRAGMA synchronous = OFF")?;
    conn.execute(
        "WITH RECURSIVE i(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM i WHERE n + 1 < ?1)
         INSERT INTO chats (owner, username, request_id, lane, priority, batch_id, request, response,
                            ok, created_at, completed_at, tokens_used, latency_ms)
         SELECT 'owner-' || (n % 3), 'user', 'r' || n, CASE n % 4 WHEN 0 THEN 'high' WHEN 1 THEN 'medium'
                WHEN 2 THEN 'low' ELSE 'bulk' END, NULL, 'batch-' || (n / 4),
                '{\"prompt\":\"What is the capital of France?\"}', '{\"text\":\"Paris.\"}', 1,
                1769472000000 + (n % 60) * 86400000, 1769472000000 + (n % 60) * 86400000 + 50, 12, 50.0
         FROM i",
        [n],
    )?;
    Ok(())
}

fn measure(chats: u64, runs: usize) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("ferry.db");
    let system = actix::System::new();
    let store = system.block_on(async { Store::open(&db).expect("store opens") });
    let filling = Instant::now();
    fill(&db, chats).expect("fill");
    let filled = filling.elapsed();
    let took = system.block_on(async {
        let mut times = Vec::new();
        for _ in 0..runs {
            let started = Instant::now();
            let analytics = store.analytics(Some("owner-1".into())).await.expect("analytics");
            times.push(started.elapsed());
            assert!(analytics.total_requests > 0);
        }
        times.sort();
        times[times.len() / 2]
    });
    println!("  ({chats} chats written in {:.1} s)", filled.as_secs_f64());
    took
}

/// A chat as `/v1/chat/completions` records it: the request body, the answer with its figures.
fn chat(n: u64, owner: &str, batch: &str, now_ms: i64) -> NewChat {
    let completed_at = now_ms + i64::try_from(n).unwrap_or(0);
    NewChat {
        owner: Some(owner.to_string()),
        username: None,
        request_id: None,
        lane: "high".into(),
        priority: None,
        batch_id: Some(batch.to_string()),
        request: json!({"model": "gpt-4o-mini", "messages": [
            {"role": "user", "content": format!("What is the capital of France? (question {:07})", n % 10_000_000)}]}),
        response: json!({"text": format!("The capital of France is Paris. (answer {:07})", n % 10_000_000),
                         "tokens_used": 31, "latency_ms": 412.5}),
        ok: true,
        created_at: completed_at - 412,
        completed_at,
        tokens_used: 31,
        latency_ms: 412.5,
    }
}

/// The database's file size (after a WAL checkpoint) and the bytes its pages in use hold.
fn sizes(db: &Path) -> (u64, u64) {
    let conn = rusqlite::Connection::open(db).expect("open");
    let _ = ferry::store::checkpoint_truncate(&conn);
    let pragma = |name: &str| -> u64 {
        conn.query_row(&format!("PRAGMA {name}"), [], |row| row.get::<_, i64>(0))
            .map_or(0, |n| n.unsigned_abs())
    };
    let used = (pragma("page_count") - pragma("freelist_count")) * pragma("page_size");
    let file: u64 = ["", "-wal"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", db.display())).ok())
        .map(|m| m.len())
        .sum();
    (file, used)
}

/// Records `chats` chats through the store in lots of 1,000; with `keep`, prunes to the newest
/// `keep` after every 100,000. Returns (file bytes, bytes in use, chats kept, seconds, bytes in
/// use once housekeeping has dropped the analytics guard rows, as it does two days on).
fn size_after(chats: u64, keep: Option<u64>) -> (u64, u64, u64, f64, u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("ferry.db");
    let system = actix::System::new();
    let started = Instant::now();
    let owners: Vec<String> = (0..3).map(|i| format!("{:064x}", 0xfe77_u64 * (i + 1))).collect();
    let now_ms = 1_769_472_000_000;
    system.block_on(async {
        let store = Store::open(&db).expect("store opens");
        let mut n = 0;
        while n < chats {
            let lot: Vec<NewChat> = (n..(n + 1000).min(chats))
                .map(|i| chat(i, &owners[(i / 4 % 3) as usize], &format!("01JBATCH{:018}", i / 4), now_ms))
                .collect();
            n += lot.len() as u64;
            store.record_chats(lot).await.expect("record");
            if let Some(keep) = keep
                && n % 100_000 == 0
            {
                let retention = Retention { before_ms: None, keep_newest: Some(keep) };
                store.prune_chats(retention, RETENTION_SLICE).await.expect("prune");
            }
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    let conn = rusqlite::Connection::open(&db).expect("open");
    let kept: i64 = conn.query_row("SELECT COUNT(*) FROM chats", [], |row| row.get(0)).expect("count");
    let guards: i64 =
        conn.query_row("SELECT COUNT(*) FROM analytics_batches", [], |row| row.get(0)).expect("count");
    println!("  ({guards} analytics guard rows, dropped by housekeeping two days after their batch)");
    drop(conn);
    let (file, used) = sizes(&db);
    system.block_on(async {
        let store = Store::open(&db).expect("store reopens");
        store.forget_analytics_batches(i64::MAX, RETENTION_SLICE).await.expect("forget guard rows");
    });
    let (_, settled) = sizes(&db);
    (file, used, kept.unsigned_abs(), seconds, settled)
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    // 0 skips the first part.
    let large = env("FERRY_BENCH_CHATS", 2_000_000);
    if large > 0 {
        let runs = 21;
        let small_time = measure(10_000, runs);
        let large_time = measure(large, runs);
        let ratio = large_time.as_secs_f64() / small_time.as_secs_f64();
        println!(
            "analytics: 10000 chats {:.3} ms | {large} chats {:.3} ms | ratio {ratio:.2} ({})",
            small_time.as_secs_f64() * 1000.0,
            large_time.as_secs_f64() * 1000.0,
            if ratio <= 2.0 { "within 2×" } else { "NOT within 2×" },
        );
    }

    let chats = env("FERRY_BENCH_SIZE_CHATS", 1_000_000);
    for (name, keep) in [("default retention (keep all)", None), ("max_chats = 100000", Some(100_000))] {
        let (file, used, kept, seconds, settled) = size_after(chats, keep);
        println!(
            "size: {chats} chats, {name}: {kept} kept, file {:.1} MB, pages in use {:.1} MB, \
             {:.0} bytes per chat recorded, {:.0} per chat kept ({:.0} chats/s); guard rows dropped: \
             pages in use {:.1} MB, {:.0} bytes per chat kept",
            file as f64 / 1e6,
            used as f64 / 1e6,
            file as f64 / chats as f64,
            used as f64 / kept.max(1) as f64,
            chats as f64 / seconds,
            settled as f64 / 1e6,
            settled as f64 / kept.max(1) as f64,
        );
    }
}
