//! The store against a real SQLite file in a temp dir: chats, settings, analytics, reopening,
//! schema versions, file modes and concurrent writers.

use std::path::{Path, PathBuf};

use ferry::store::{
    Analytics, ChatId, ChatQuery, DateCount, LaneBudget, NameValue, NewChat, SCHEMA_VERSION, Store,
    StoreError, StoredSettings, legacy_key_id as key_id,
};
use serde_json::json;
use tempfile::TempDir;

/// 2025-01-27T00:00:00Z in unix ms.
const JAN_27: i64 = 1_737_936_000_000;
const DAY_MS: i64 = 86_400_000;

/// A temp dir for one test (its failure reported through the test's error type).
fn temp_dir() -> Result<TempDir, StoreError> {
    TempDir::new().map_err(|source| StoreError::Secret { path: std::env::temp_dir(), source })
}

fn db_in(dir: &TempDir) -> PathBuf {
    dir.path().join("data").join("ferry.db")
}

fn chat(n: u32) -> NewChat {
    NewChat {
        owner: None,
        username: Some("ada".into()),
        request_id: Some(format!("req-{n}")),
        lane: "medium".into(),
        priority: Some("MEDIUM".into()),
        batch_id: Some(format!("batch-{n}")),
        request: json!({"prompt": format!("question {n}")}),
        response: json!({"text": format!("answer {n}")}),
        ok: true,
        created_at: JAN_27 + i64::from(n) * 1000 - 50,
        completed_at: JAN_27 + i64::from(n) * 1000,
        tokens_used: n,
        latency_ms: 50.0,
    }
}

fn in_batch(batch: Option<&str>, priority: Option<&str>, lane: &str, completed_at: i64) -> NewChat {
    NewChat {
        batch_id: batch.map(str::to_owned),
        priority: priority.map(str::to_owned),
        lane: lane.to_owned(),
        completed_at,
        ..chat(0)
    }
}

fn ids(chats: &[ferry::store::ChatRecord]) -> Vec<i64> {
    chats.iter().map(|c| c.id.0).collect()
}

#[actix_rt::test]
async fn chats_list_newest_first_with_limit_and_before_paging() -> Result<(), StoreError> {
    let dir = temp_dir()?;
    let store = Store::open(&db_in(&dir))?;
    let mut recorded = Vec::new();
    for n in 1..=5 {
        recorded.push(store.record_chat(chat(n)).await?.0);
    }
    let page = store.chats(ChatQuery { limit: 2, ..ChatQuery::default() }).await?;
    assert_eq!(ids(&page), [recorded[4], recorded[3]]);
    assert_eq!(page[0].request, json!({"prompt": "question 5"}));
    assert_eq!(page[0].response, json!({"text": "answer 5"}));
    assert_eq!(page[0].batch_id.as_deref(), Some("batch-5"));
    assert_eq!(page[0].request_id.as_deref(), Some("req-5"));
    assert_eq!(page[0].timestamp, "2025-01-27T00:00:05.000Z");
    assert_eq!(page[0].tokens_used, 5);

    let next = store.chats(ChatQuery { limit: 2, before: Some(page[1].id), ..ChatQuery::default() }).await?;
    assert_eq!(ids(&next), [recorded[2], recorded[1]]);
    let last = store.chats(ChatQuery { limit: 2, before: Some(next[1].id), ..ChatQuery::default() }).await?;
    assert_eq!(ids(&last), [recorded[0]]);
    let none = store.chats(ChatQuery { limit: 2, before: Some(last[0].id), ..ChatQuery::default() }).await?;
    assert!(none.is_empty());
    assert!(store.chats(ChatQuery::default()).await?.is_empty(), "limit 0 lists nothing");
    Ok(())
}

#[actix_rt::test]
async fn username_filter_keeps_only_that_users_chats() -> Result<(), StoreError> {
    let dir = temp_dir()?;
    let store = Store::open(&db_in(&dir))?;
    for n in 1..=6 {
        let username = if n % 2 == 0 { "grace" } else { "ada" };
        store.record_chat(NewChat { username: Some(username.into()), ..chat(n) }).await?;
    }
    let grace =
        store.chats(ChatQuery { username: Some("grace".into()), limit: 10, ..ChatQuery::default() }).await?;
    assert_eq!(grace.len(), 3);
    assert!(grace.iter().all(|c| c.username.as_deref() == Some("grace")));
    let paged = store
        .chats(ChatQuery {
            username: Some("grace".into()),
            limit: 10,
            before: Some(grace[0].id),
            owner: None,
        })
        .await?;
    assert_eq!(ids(&paged), ids(&grace[1..]));
    Ok(())
}

#[actix_rt::test]
async fn another_owner_sees_none_of_my_chats() -> Result<(), StoreError> {
    let dir = temp_dir()?;
    let store = Store::open(&db_in(&dir))?;
    let (mine, theirs) = (key_id("sk-mine"), key_id("sk-theirs"));
    for n in 1..=3 {
        store.record_chat(NewChat { owner: Some(mine.clone()), ..chat(n) }).await?;
    }
    let query = |owner: &str, username: Option<&str>| ChatQuery {
        owner: Some(owner.to_owned()),
        username: username.map(str::to_owned),
        limit: 100,
        before: None,
    };
    assert_eq!(store.chats(query(&mine, None)).await?.len(), 3);
    assert_eq!(store.chats(query(&mine, Some("ada"))).await?.len(), 3);
    assert!(store.chats(query(&theirs, None)).await?.is_empty());
    assert!(store.chats(query(&theirs, Some("ada"))).await?.is_empty());
    assert_eq!(store.analytics(Some(theirs)).await?.total_requests, 0);
    assert_eq!(store.analytics(Some(mine)).await?.total_requests, 3);
    Ok(())
}

fn full_settings() -> StoredSettings {
    StoredSettings {
        api_key: Some("sk-upstream-canary-4242".into()),
        high: Some(LaneBudget { tokens: 1000, latency_ms: 500 }),
        medium: Some(LaneBudget { tokens: 5000, latency_ms: 2000 }),
        low: None,
    }
}

#[actix_rt::test]
async fn settings_round_trip_and_an_empty_save_clears_them() -> Result<(), StoreError> {
    let dir = temp_dir()?;
    let store = Store::open(&db_in(&dir))?;
    assert_eq!(store.settings().await?, StoredSettings::default());
    store.save_settings(full_settings()).await?;
    assert_eq!(store.settings().await?, full_settings());
    store.save_settings(StoredSettings::default()).await?;
    assert_eq!(store.settings().await?, StoredSettings::default());
    assert!(!db_in(&dir).with_file_name("ferry.db.upstream-key").exists(), "no key, no key file");
    Ok(())
}

/// Every byte of the database and its WAL, to search for secrets.
fn database_bytes(db: &Path) -> Vec<u8> {
    ["", "-wal", "-shm"]
        .iter()
        .flat_map(|suffix| {
            let mut name = db.as_os_str().to_os_string();
            name.push(suffix);
            std::fs::read(PathBuf::from(name)).unwrap_or_default()
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[actix_rt::test]
async fn no_key_reaches_the_database_file() -> Result<(), StoreError> {
    let dir = temp_dir()?;
    let db = db_in(&dir);
    let store = Store::open(&db)?;
    let bearer = "sk-client-canary-9d1f";
    store.record_chat(NewChat { owner: Some(key_id(bearer)), ..chat(1) }).await?;
    store.save_settings(full_settings()).await?;
    assert_eq!(store.settings().await?.api_key.as_deref(), Some("sk-upstream-canary-4242"));
    let bytes = database_bytes(&db);
    assert!(contains(&bytes, &key_id(bearer)), "the owner id is stored");
    assert!(!contains(&bytes, bearer), "the caller's key is in the database");
    assert!(!contains(&bytes, "sk-upstream-canary-4242"), "the upstream key is in the database");
    Ok(())
}

#[actix_rt::test]
async fn analytics_count_distinct_batches_per_priority_and_day() -> Result<(), StoreError> {
    let dir = temp_dir()?;
    let store = Store::open(&db_in(&dir))?;
    let day2 = JAN_27 + DAY_MS;
    store
        .record_chats(vec![
            // One HIGH batch of three items on the 27th, one on the 28th.
            in_batch(Some("h1"), Some("HIGH"), "high", JAN_27 + 1),
            in_batch(Some("h1"), Some("HIGH"), "high", JAN_27 + 2),
            in_batch(Some("h1"), Some("HIGH"), "high", JAN_27 + 3),
            in_batch(Some("h2"), Some("HIGH"), "high", day2),
            // A MEDIUM batch of two.
            in_batch(Some("m1"), Some("MEDIUM"), "medium", JAN_27 + 4),
            in_batch(Some("m1"), Some("MEDIUM"), "medium", JAN_27 + 5),
            // Two chats without a batch id: two batches. One is priority-less on the low lane.
            in_batch(None, Some("LOW"), "low", day2),
            in_batch(None, None, "low", day2),
            // A bulk batch: in the total only.
            in_batch(Some("b1"), None, "bulk", day2),
        ])
        .await?;
    let analytics = store.analytics(None).await?;
    let slice = |name: &str, value| NameValue { name: name.into(), value };
    let day = |date: &str, count| DateCount { date: date.into(), count };
    assert_eq!(
        analytics,
        Analytics {
            total_requests: 6,
            high_priority: 2,
            medium_priority: 1,
            low_priority: 2,
            request_count_over_time: vec![day("2025-01-27", 2), day("2025-01-28", 4)],
            priority_distribution: vec![slice("High", 2), slice("Medium", 1), slice("Low", 2)],
        }
    );
    Ok(())
}

#[actix_rt::test]
async fn analytics_for_an_owner_count_only_their_batches() -> Result<(), StoreError> {
    let dir = temp_dir()?;
    let store = Store::open(&db_in(&dir))?;
    let (mine, theirs) = (key_id("a"), key_id("b"));
    let owned = |owner: &String, batch: &str| NewChat {
        owner: Some(owner.clone()),
        ..in_batch(Some(batch), Some("HIGH"), "high", JAN_27)
    };
    store.record_chats(vec![owned(&mine, "x"), owned(&mine, "y"), owned(&theirs, "z")]).await?;
    assert_eq!(store.analytics(Some(mine)).await?.high_priority, 2);
    assert_eq!(store.analytics(Some(theirs)).await?.high_priority, 1);
    assert_eq!(store.analytics(None).await?.high_priority, 3);
    Ok(())
}

#[test]
fn chats_and_settings_survive_reopening_in_a_new_system() -> Result<(), StoreError> {
    let dir = temp_dir()?;
    let db = db_in(&dir);
    let first: Result<ChatId, StoreError> = actix::System::new().block_on(async {
        let store = Store::open(&db)?;
        store.save_settings(full_settings()).await?;
        store.record_chats((1..=10).map(chat).collect()).await?;
        store.record_chat(chat(11)).await
    });
    let last = first?;
    actix::System::new().block_on(async {
        let store = Store::open(&db)?;
        let chats = store.chats(ChatQuery { limit: 100, ..ChatQuery::default() }).await?;
        assert_eq!(chats.len(), 11);
        assert_eq!(chats[0].id, last);
        assert_eq!(store.settings().await?, full_settings());
        // Ids keep growing after a reopen, so old cursors stay valid.
        assert!(store.record_chat(chat(12)).await? > last);
        Ok(())
    })
}

#[actix_rt::test]
async fn a_database_from_a_newer_ferry_is_refused() -> Result<(), StoreError> {
    let dir = temp_dir()?;
    let db = db_in(&dir);
    drop(Store::open(&db)?);
    let newer = SCHEMA_VERSION + 1;
    rusqlite::Connection::open(&db)?.execute_batch(&format!("PRAGMA user_version = {newer}"))?;
    match Store::open(&db) {
        Err(error @ StoreError::NewerSchema { .. }) => {
            let message = error.to_string();
            assert!(message.contains(&format!("schema version is {newer}")), "{message}");
            assert!(message.contains(&format!("supports up to {SCHEMA_VERSION}")), "{message}");
            Ok(())
        }
        Err(other) => panic!("expected NewerSchema, got {other}"),
        Ok(_) => panic!("a newer schema was opened"),
    }
}

#[cfg(unix)]
#[actix_rt::test]
async fn the_database_and_key_files_are_owner_only() -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir()?;
    let db = db_in(&dir);
    let store = Store::open(&db)?;
    store.record_chat(chat(1)).await?;
    store.save_settings(full_settings()).await?;
    let mode = |suffix: &str| {
        let mut name = db.as_os_str().to_os_string();
        name.push(suffix);
        std::fs::metadata(PathBuf::from(name)).map(|m| m.permissions().mode() & 0o777)
    };
    let mode = |suffix: &str| mode(suffix).map_err(|source| StoreError::Secret { path: db.clone(), source });
    assert_eq!(mode("")?, 0o600, "database");
    assert_eq!(mode("-wal")?, 0o600, "write-ahead log");
    assert_eq!(mode(".upstream-key")?, 0o600, "upstream key");
    Ok(())
}

#[actix_rt::test]
async fn concurrent_writers_lose_nothing() -> Result<(), StoreError> {
    let dir = temp_dir()?;
    let store = Store::open(&db_in(&dir))?;
    // 40 tasks on this System record one by one; 4 threads with their own Systems (as actix-web
    // workers have) record batches of 50 at the same time.
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                actix::System::new().block_on(async move {
                    for b in 0..5 {
                        let batch = (0..50).map(|n| chat(t * 1000 + b * 50 + n)).collect();
                        store.record_chats(batch).await?;
                    }
                    Ok::<_, StoreError>(())
                })
            })
        })
        .collect();
    let tasks: Vec<_> = (0..40)
        .map(|t| {
            let store = store.clone();
            actix_rt::spawn(async move {
                for n in 0..25 {
                    store.record_chat(chat(100_000 + t * 100 + n)).await?;
                }
                Ok::<_, StoreError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.map_err(|_| StoreError::Stopped)??;
    }
    for thread in threads {
        thread.join().map_err(|_| StoreError::Stopped)??;
    }
    let all = store.chats(ChatQuery { limit: 10_000, ..ChatQuery::default() }).await?;
    assert_eq!(all.len(), 40 * 25 + 4 * 5 * 50);
    let mut distinct = ids(&all);
    distinct.dedup();
    assert_eq!(distinct.len(), all.len());
    Ok(())
}
