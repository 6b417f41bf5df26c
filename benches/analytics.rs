//! What `GET /v1/analytics` costs as the chats table grows: the store's analytics for one owner
//! over 10,000 chats and over 2,000,000 (`FERRY_BENCH_CHATS`), spread over 3 owners, 4 lanes and
//! 60 days, in batches of 4. Since schema 5 it reads counts kept as chats are recorded, so the
//! two should be within 2× of each other. Also prints the database's size.
//!
//! `cargo bench --bench analytics`.

use std::path::Path;
use std::time::{Duration, Instant};

use ferry::store::Store;

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

fn measure(chats: u64, runs: usize) -> (Duration, u64) {
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
    let size = ["", "-wal"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", db.display())).ok())
        .map(|m| m.len())
        .sum();
    println!("  ({chats} chats written in {:.1} s)", filled.as_secs_f64());
    (took, size)
}

fn main() {
    let large = std::env::var("FERRY_BENCH_CHATS").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000_000);
    let runs = 21;
    let (small_time, small_size) = measure(10_000, runs);
    let (large_time, large_size) = measure(large, runs);
    let ratio = large_time.as_secs_f64() / small_time.as_secs_f64();
    println!(
        "analytics: 10000 chats {:.3} ms ({:.1} MB db) | {large} chats {:.3} ms ({:.1} MB db) | ratio {ratio:.2} ({})",
        small_time.as_secs_f64() * 1000.0,
        small_size as f64 / 1e6,
        large_time.as_secs_f64() * 1000.0,
        large_size as f64 / 1e6,
        if ratio <= 2.0 { "within 2×" } else { "NOT within 2×" },
    );
}
