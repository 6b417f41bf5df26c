//! Owner ids: keyed with a server secret made at the first start, full length; a database
//! written with the legacy ids keeps working (its rows are re-owned at the first start that
//! sees the key); keys shorter than 16 characters are refused at start.

mod common;

use std::process::{Command, Stdio};

use common::{TestServer, call, http_config};
use ferry::http::Keys;
use ferry::store::{NewChat, Store, legacy_key_id, owner};
use serde_json::json;

const KEY: &str = "test-legacy-owner-key-01";
const OTHER: &str = "test-other-owner-key-02";

fn chat(owner: Option<String>, text: &str) -> NewChat {
    NewChat {
        owner,
        username: Some("ada".into()),
        request_id: Some("r1".into()),
        lane: "medium".into(),
        priority: Some("MEDIUM".into()),
        batch_id: Some("b1".into()),
        request: json!({"prompt": text}),
        response: json!({"text": "answer"}),
        ok: true,
        created_at: 1_769_500_000_000,
        completed_at: 1_769_500_000_100,
        tokens_used: 3,
        latency_ms: 100.0,
    }
}

#[actix_rt::test]
async fn a_database_with_legacy_owner_ids_keeps_working() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = http_config(&dir);
    let db = config.storage.path.clone();
    // The database as an older ferry left it: chats owned by the 16-digit legacy id, no secret.
    {
        let store = Store::open(&db).expect("store opens");
        store.record_chat(chat(Some(legacy_key_id(KEY)), "legacy question")).await.expect("record");
        store.record_chat(chat(Some(legacy_key_id(OTHER)), "other question")).await.expect("record");
    }
    std::fs::remove_file(owner::secret_path(&db)).expect("no secret, as before keyed ids");

    let server = TestServer::start_with(config, Keys::new(&[KEY, OTHER], &[] as &[&str]), dir);
    let (status, mine) = call(&server.base, "GET", "/v1/chat", Some(KEY), None).await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(mine["count"], 1, "{mine}");
    assert_eq!(mine["chats"][0]["request"]["prompt"], "legacy question");
    let (_, theirs) = call(&server.base, "GET", "/v1/chat", Some(OTHER), None).await;
    assert_eq!(theirs["chats"][0]["request"]["prompt"], "other question");
    // The analytics kept for the legacy id follow it too.
    let (_, analytics) = call(&server.base, "GET", "/v1/analytics", Some(KEY), None).await;
    assert_eq!(analytics["total_requests"], 1, "{analytics}");

    // The rows now carry full-length keyed ids, and the secret was made private.
    let conn = rusqlite::Connection::open(&db).expect("open db");
    let owners: Vec<String> = conn
        .prepare("SELECT owner FROM chats ORDER BY id")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("owners");
    assert_eq!(owners.len(), 2);
    for id in &owners {
        assert_eq!(id.len(), 64, "{id}");
        assert!(!owners.contains(&legacy_key_id(KEY)) && !owners.contains(&legacy_key_id(OTHER)));
    }
    let secret = owner::secret_path(&db);
    assert_eq!(std::fs::read_to_string(&secret).map(|s| s.trim().len()).ok(), Some(64));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret).map(|m| m.permissions().mode() & 0o777).ok();
        assert_eq!(mode, Some(0o600));
    }
    // A new chat by the same key is found under the same id.
    let (status, _) =
        call(&server.base, "POST", "/api/v1/prompt", Some(KEY), Some(json!({"prompt": "new"}))).await;
    assert_eq!(status, 200);
    let (_, mine) = call(&server.base, "GET", "/v1/chat", Some(KEY), None).await;
    assert_eq!(mine["count"], 2, "{mine}");
    server.stop().await;
}

#[actix_rt::test]
async fn a_key_that_joins_a_tenant_brings_its_chats() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = http_config(&dir);
    // First the key works on its own and records a chat under its own owner id.
    let server = TestServer::start_with(config.clone(), Keys::new(&[KEY], &[] as &[&str]), dir);
    let (status, _) =
        call(&server.base, "POST", "/api/v1/prompt", Some(KEY), Some(json!({"prompt": "before"}))).await;
    assert_eq!(status, 200);
    let dir = server.stop_keeping_dir().await;

    // Then it joins tenant `acme` beside another key: both see the chat, now the tenant's.
    let mut config = config;
    config.tenants.push(ferry::config::TenantConfig::new("acme", "FERRY_OWNER_TEST_ACME_KEYS"));
    let keys = Keys::new(&[] as &[&str], &[] as &[&str]).with_tenant("acme", &[KEY, OTHER]);
    let server = TestServer::start_with(config, keys, dir);
    for key in [KEY, OTHER] {
        let (status, chats) = call(&server.base, "GET", "/v1/chat", Some(key), None).await;
        assert_eq!(status, 200, "{chats}");
        assert_eq!(chats["count"], 1, "{chats}");
        assert_eq!(chats["chats"][0]["request"]["prompt"], "before");
    }
    let conn = rusqlite::Connection::open(server.dir().join("data/ferry.db")).expect("open db");
    let owner: String = conn.query_row("SELECT owner FROM chats", [], |r| r.get(0)).expect("owner");
    assert_eq!(owner, "tenant:acme");
    server.stop().await;
}

#[test]
fn a_short_key_is_refused_at_start_naming_its_variable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("ferry.toml");
    let text = format!(
        "[server]\nbind = \"127.0.0.1:0\"\napi_keys_env = \"FERRY_OWNER_TEST_KEYS\"\n\
         admin_keys_env = \"FERRY_OWNER_TEST_ADMIN_KEYS\"\n\n[storage]\npath = \"{dir}/data/ferry.db\"\n\n\
         [logging]\ndir = \"{dir}/logs\"\n",
        dir = dir.path().display()
    );
    std::fs::write(&config, text).expect("write config");
    let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("FERRY_OWNER_TEST_KEYS", "a-long-enough-inference-key,shortkey-1")
        .env_remove("FERRY_OWNER_TEST_ADMIN_KEYS")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run ferry serve");
    assert!(!output.status.success(), "a short key must stop the start");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("FERRY_OWNER_TEST_KEYS") && stderr.contains("16"), "{stderr}");
    assert!(!stderr.contains("shortkey-1"), "the key is not echoed: {stderr}");
}
