//! `ferry support-bundle` on a real database, written by a running server through every door
//! that stores caller data: the real binary makes the bundle while the server still runs, and
//! no byte of the bundle holds the marker the callers sent, nor an owner id; the counts, states,
//! settings and analytics are all there.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::files::{Part, upload};
use common::{ADMIN_KEY, TestServer, call, client, json_of};
use ferry::http::Keys;
use rusqlite::Connection;
use serde_json::{Value, json};

const KEY_A: &str = "support-bundle-key-a-1";
const KEY_B: &str = "support-bundle-key-b-2";

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn support_bundle(dir: &Path, config: &Path, out: &Path) -> Output {
    common::ferry_command(dir)
        .arg("support-bundle")
        .arg("--config")
        .arg(config)
        .arg(out)
        .output()
        .expect("run ferry support-bundle")
}

/// Rows of `sql` as strings (NULL as "NULL"), sorted.
fn rows(conn: &Connection, sql: &str) -> Vec<String> {
    let mut statement = conn.prepare(sql).expect(sql);
    let columns = statement.column_count();
    let mut out: Vec<String> = statement
        .query_map([], |row| {
            let values: Vec<String> = (0..columns)
                .map(|i| match row.get_ref(i) {
                    Ok(rusqlite::types::ValueRef::Null) => "NULL".to_string(),
                    Ok(rusqlite::types::ValueRef::Integer(n)) => n.to_string(),
                    Ok(rusqlite::types::ValueRef::Real(x)) => x.to_string(),
                    Ok(rusqlite::types::ValueRef::Text(t)) => String::from_utf8_lossy(t).into_owned(),
                    Ok(rusqlite::types::ValueRef::Blob(b)) => format!("{b:?}"),
                    Err(e) => format!("error {e}"),
                })
                .collect();
            Ok(values.join("|"))
        })
        .expect(sql)
        .collect::<Result<_, _>>()
        .expect(sql);
    out.sort();
    out
}

async fn wait_for_batch(base: &str, key: &str, id: &str, done: &[&str]) -> Value {
    let path = format!("/v1/batches/{id}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, batch) = call(base, "GET", &path, Some(key), None).await;
        if done.iter().any(|status| batch["status"] == *status) {
            return batch;
        }
        assert!(Instant::now() < deadline, "batch never finished: {batch}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Fills the server's database with `marker` in every field a caller controls.
async fn fill(base: &str, marker: &str) {
    for key in [KEY_A, KEY_B] {
        let query = json!({"username": format!("{marker}-user"), "request_id": format!("{marker}-req"),
                           "prompt": format!("{marker} query"), "created_at": "2026-02-01T12:00:00Z",
                           "priority": "HIGH"});
        let (status, body) = call(base, "POST", "/v1/query", Some(key), Some(query)).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) =
        call(base, "POST", "/api/v1/prompts", Some(KEY_A), Some(json!({"prompts": [marker, marker]}))).await;
    assert_eq!(status, 200, "{body}");
    let chat = json!({"model": "mock", "messages": [{"role": "user", "content": format!("{marker} chat")}]});
    let (status, body) = call(base, "POST", "/v1/chat/completions", Some(KEY_B), Some(chat)).await;
    assert_eq!(status, 200, "{body}");
    let settings = json!({"high_priority": {"tokens": 321, "latency_ms": 4321}});
    let (status, body) = call(base, "PUT", "/v1/settings", Some(ADMIN_KEY), Some(settings)).await;
    assert_eq!(status, 200, "{body}");

    // A batch that completes: its lines, custom ids and answers carry the marker.
    let lines: Vec<String> = (0..5)
        .map(|i| {
            json!({"custom_id": format!("{marker}-{i}"), "method": "POST", "url": "/v1/chat/completions",
                   "body": {"model": "mock", "messages": [{"role": "user", "content": format!("{marker} line {i}")}]}})
            .to_string()
        })
        .collect();
    let filename = format!("{marker}.jsonl");
    let content = lines.join("\n");
    let parts = [Part::Text("purpose", "batch"), Part::File("file", &filename, content.as_bytes())];
    let (status, file) = upload(base, Some(KEY_A), &parts).await;
    assert_eq!(status, 200, "{file}");
    let create = json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                        "completion_window": "24h", "metadata": {"note": marker}});
    let request = client()
        .post(format!("{base}/v1/batches"))
        .bearer_auth(KEY_A)
        .header("idempotency-key", format!("{marker}-idem"))
        .json(&create);
    let (status, batch) = json_of(request.send().await.expect("create batch")).await;
    assert_eq!(status, 200, "{batch}");
    let batch = wait_for_batch(base, KEY_A, batch["id"].as_str().expect("id"), &["completed"]).await;
    assert_eq!(batch["request_counts"]["completed"], 5, "{batch}");

    // A batch whose lines fail validation: it fails with stored errors.
    let bad = [
        format!(r#"{{"custom_id":"{marker}","method":"POST","url":"{marker}","body":{{}}}}"#),
        format!(
            r#"{{"custom_id":"b","method":"POST","url":"/v1/chat/completions","body":{{"model":"mock","messages":"{marker}"}}}}"#
        ),
    ];
    let content = bad.join("\n");
    let parts = [Part::Text("purpose", "batch"), Part::File("file", &filename, content.as_bytes())];
    let (status, file) = upload(base, Some(KEY_B), &parts).await;
    assert_eq!(status, 200, "{file}");
    let create =
        json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    let (status, batch) = call(base, "POST", "/v1/batches", Some(KEY_B), Some(create)).await;
    assert_eq!(status, 200, "{batch}");
    let batch = wait_for_batch(base, KEY_B, batch["id"].as_str().expect("id"), &["failed"]).await;
    assert_eq!(batch["errors"]["data"].as_array().map(Vec::len), Some(2), "{batch}");
}

#[actix_rt::test]
async fn a_bundle_keeps_counts_and_analytics_and_no_byte_of_the_callers_data() {
    let server = TestServer::start(Keys::new(&[KEY_A, KEY_B], &[ADMIN_KEY]));
    let marker = format!("bundle-marker-{}", ulid::Ulid::new().to_string().to_lowercase());
    fill(&server.base, &marker).await;
    let (_, analytics_a) = call(&server.base, "GET", "/v1/analytics", Some(KEY_A), None).await;
    assert!(analytics_a["total_requests"].as_u64() > Some(1), "{analytics_a}");

    let dir = server.dir().to_path_buf();
    let db = dir.join("data/ferry.db");
    // What an unfinished batch holds: answers in its items, until it ends.
    let live = Connection::open(&db).expect("open the live database");
    live.busy_timeout(Duration::from_secs(5)).expect("busy timeout");
    let items = live
        .execute("UPDATE batch_items SET result = ?1", [json!({"answer": marker}).to_string()])
        .expect("answers in items");
    assert!(items >= 5, "{items} batch items");
    let owners = rows(&live, "SELECT DISTINCT owner FROM chats WHERE owner IS NOT NULL");
    assert_eq!(owners.len(), 2, "{owners:?}");
    assert!(
        rows(&live, "SELECT request FROM chats").iter().any(|r| r.contains(&marker)),
        "the marker is stored"
    );

    let config = dir.join("bundle.toml");
    std::fs::write(
        &config,
        format!("[storage]\npath = \"{}\"\n[logging]\ndir = \"{}/logs\"\n", db.display(), dir.display()),
    )
    .expect("write config");
    let out = dir.join("bundle.db");
    // The server is still running: the bundle reads a consistent snapshot beside it.
    let made = support_bundle(&dir, &config, &out);
    assert!(made.status.success(), "{made:?}");
    let stdout = String::from_utf8_lossy(&made.stdout);
    assert!(stdout.contains("2 owners"), "{stdout}");

    let bytes = std::fs::read(&out).expect("read the bundle");
    assert!(!contains(&bytes, &marker), "the marker is in the bundle");
    for owner in &owners {
        assert!(!contains(&bytes, owner), "an owner id is in the bundle");
    }
    assert!(!Path::new(&format!("{}-journal", out.display())).exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&out).expect("bundle metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let bundle = Connection::open(&out).expect("open the bundle");
    for (what, sql) in [
        (
            "chats",
            "SELECT id, lane, priority, batch_id, ok, created_at, completed_at, tokens_used, latency_ms FROM chats",
        ),
        ("budgets", "SELECT * FROM lane_budgets"),
        ("files", "SELECT id, purpose, bytes, created_at, status, expires_at FROM files"),
        (
            "batches",
            "SELECT id, kind, status, total, completed, failed, created_at, completed_at, failed_at, output_file_id FROM batches",
        ),
        ("items", "SELECT batch_id, line, offset, len, state, out_offset, out_len FROM batch_items"),
        ("analytics of everyone", "SELECT scope, count FROM analytics_counts WHERE owner = '*'"),
        ("migrations", "SELECT version, name FROM schema_migrations"),
        ("schema", "SELECT type, name FROM sqlite_master"),
    ] {
        let kept = rows(&bundle, sql);
        assert_eq!(kept, rows(&live, sql), "{what}");
        assert!(!kept.is_empty(), "{what}");
    }
    // Owners become labels, the same across tables; each owner's analytics stay.
    assert_eq!(rows(&bundle, "SELECT DISTINCT owner FROM chats"), ["owner-1", "owner-2"]);
    let labels = rows(&bundle, "SELECT DISTINCT owner FROM analytics_counts WHERE owner NOT IN ('*', '')");
    assert_eq!(labels, ["owner-1", "owner-2"]);
    let a_scopes = |conn: &Connection, owner: &str| {
        rows(conn, &format!("SELECT scope, count FROM analytics_counts WHERE owner = '{owner}'"))
    };
    let mine: Vec<Vec<String>> = labels.iter().map(|l| a_scopes(&bundle, l)).collect();
    let theirs: Vec<Vec<String>> = owners.iter().map(|o| a_scopes(&live, o)).collect();
    let mut sorted_mine = mine.clone();
    sorted_mine.sort();
    let mut sorted_theirs = theirs.clone();
    sorted_theirs.sort();
    assert_eq!(sorted_mine, sorted_theirs);
    assert!(
        mine.iter().any(|scopes| scopes.contains(&format!("total|{}", analytics_a["total_requests"]))),
        "{mine:?}"
    );
    // What was the callers' is gone; the errors keep their codes and lines.
    assert_eq!(
        rows(
            &bundle,
            "SELECT DISTINCT request || response || COALESCE(username, request_id, '-') FROM chats"
        ),
        ["nullnull-"]
    );
    assert_eq!(rows(&bundle, "SELECT DISTINCT filename FROM files"), [""]);
    assert_eq!(
        rows(
            &bundle,
            "SELECT COUNT(*) FROM batches WHERE metadata IS NULL AND idempotency_key IS NULL AND request_hash IS NULL AND input_path = ''"
        ),
        ["2"]
    );
    assert_eq!(
        rows(
            &bundle,
            "SELECT COUNT(*) FROM batch_items WHERE result IS NOT NULL OR custom_id NOT LIKE 'line-%'"
        ),
        ["0"]
    );
    let codes = |conn: &Connection| -> Vec<(String, Value)> {
        let errors = rows(conn, "SELECT errors FROM batches WHERE status = 'failed'");
        let errors: Value = serde_json::from_str(&errors[0]).expect("errors are JSON");
        let errors = errors.as_array().cloned().unwrap_or_default();
        errors
            .iter()
            .map(|e| (e["code"].as_str().unwrap_or_default().to_string(), e["line"].clone()))
            .collect()
    };
    let kept = codes(&bundle);
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(kept, codes(&live));
    drop(bundle);

    // A second bundle to the same file is refused, and the first is left as it was.
    let again = support_bundle(&dir, &config, &out);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"), "{again:?}");
    assert_eq!(std::fs::read(&out).expect("read the bundle again"), bytes);
    drop(live);
    server.stop().await;
}
