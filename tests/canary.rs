//! The canary: a made-up API key and a made-up prompt go through every endpoint of a real
//! `ferry serve` (logging at debug to its `logs/`), good requests and bad ones. Afterwards
//! neither appears in any log file or error body, and the key appears in no SQLite file (the
//! prompt may: chats are the product). The key is the caller's inference key and, set through
//! `PUT /v1/settings`, the upstream's key too.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{KillOnDrop, call, client, json_of, mock_args, start_mock, wait_for_bind};
use ferry::mock_upstream::MockUpstreamArgs;
use serde_json::{Value, json};

const ADMIN: &str = "canary-admin-key-0d41";

fn write_config(dir: &Path, mock_url: &str) -> std::path::PathBuf {
    let text = format!(
        r#"
[server]
bind = "127.0.0.1:0"
api_keys_env = "FERRY_CANARY_KEYS"
admin_keys_env = "FERRY_CANARY_ADMIN_KEYS"
shutdown_grace_ms = 2000

[storage]
path = "{dir}/data/ferry.db"

[logging]
dir = "{dir}/logs"
level = "debug"
log_payloads = false

[batching]
batch_delay_ms = 0

[[upstreams]]
name = "keyed"
provider = "openai"
base_url = "{mock_url}"
max_retries = 0
"#,
        dir = dir.display()
    );
    let path = dir.join("ferry.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            found.push(path);
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The key must not be in the database, its WAL or its shared-memory file.
fn assert_key_not_in_db(dir: &Path, key: &str) {
    for suffix in ["", "-wal", "-shm"] {
        let path = dir.join(format!("data/ferry.db{suffix}"));
        if let Ok(bytes) = std::fs::read(&path) {
            assert!(!contains(&bytes, key), "the key is in {}", path.display());
        }
    }
}

#[actix_rt::test]
async fn canary_key_and_prompt_leak_nowhere() {
    let nonce = ulid::Ulid::new().to_string().to_lowercase();
    let key = format!("sk-canary-{nonce}");
    let prompt = format!("canary-prompt-{nonce}");
    let mock = start_mock(MockUpstreamArgs { api_key: Some(key.clone()), ..mock_args() });
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), &mock.base_url());
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("FERRY_CANARY_KEYS", &key)
            .env("FERRY_CANARY_ADMIN_KEYS", ADMIN)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ferry serve"),
    );
    let base = format!("http://{}", wait_for_bind(&dir.path().join("logs/ferry.log"), &mut child));
    let user = Some(key.as_str());
    let query = json!({
        "username": "canary-user", "request_id": "r1", "prompt": prompt,
        "created_at": "2026-02-01T12:00:00Z", "priority": "HIGH"
    });
    let completion = json!({"model": "any", "messages": [{"role": "user", "content": prompt}]});
    let mut bodies: Vec<(String, u16, Value)> = Vec::new();

    // Before the upstream has the key: the call is refused upstream, answered as an error.
    let reply = call(&base, "POST", "/api/v1/prompt", user, Some(json!({"prompt": prompt}))).await;
    assert_eq!(reply.1["status"], "error", "{}", reply.1);
    bodies.push(("prompt without upstream key".into(), reply.0, reply.1));

    let reply = call(&base, "PUT", "/v1/settings", Some(ADMIN), Some(json!({"api_key": key}))).await;
    assert_eq!(reply.0, 200, "{}", reply.1);
    let good = [
        ("POST", "/api/v1/prompt", json!({"prompt": prompt})),
        ("POST", "/api/v1/prompts", json!({"prompts": [prompt, {"prompt": prompt}]})),
        ("POST", "/v1/query", query.clone()),
    ];
    for (method, path, body) in good {
        let (status, reply) = call(&base, method, path, user, Some(body)).await;
        assert_eq!(status, 200, "{path}: {reply}");
        assert!(reply.to_string().contains(&prompt), "{path} is answered by the keyed mock: {reply}");
    }
    let request = client().post(format!("{base}/v1/chat/completions")).bearer_auth(&key);
    let (status, reply) =
        json_of(request.header("x-ferry-priority", "HIGH").json(&completion).send().await.expect("send"))
            .await;
    assert_eq!(status, 200, "{reply}");
    for path in ["/v1/chat", "/v1/analytics", "/v1/chat?username=canary-user"] {
        let (status, reply) = call(&base, "GET", path, user, None).await;
        assert_eq!(status, 200, "{path}: {reply}");
        assert!(!reply.to_string().contains(&key), "{path} shows the key");
    }
    let (_, settings) = call(&base, "GET", "/v1/settings", Some(ADMIN), None).await;
    assert!(
        !settings.to_string().contains(&key)
            && settings["api_key"].as_str().is_some_and(|k| k.starts_with("***"))
    );

    // Bad requests that carry them.
    let bearer = format!("Bearer {key}");
    let bad = [
        ("malformed prompt JSON", "/api/v1/prompt", bearer.clone(), format!("{{\"prompt\": \"{prompt}\"")),
        (
            "prompt as a number field",
            "/api/v1/prompts",
            bearer.clone(),
            format!("{{\"prompts\": [\"{prompt}\", 4]}}"),
        ),
        (
            "messages as a string",
            "/v1/chat/completions",
            bearer.clone(),
            format!("{{\"model\": \"m\", \"messages\": \"{prompt}\"}}"),
        ),
        (
            "max_tokens as the prompt",
            "/v1/chat/completions",
            bearer.clone(),
            format!("{{\"model\": \"m\", \"messages\": [], \"max_tokens\": \"{prompt}\"}}"),
        ),
        (
            "query without created_at",
            "/v1/query",
            bearer.clone(),
            format!(
                "{{\"username\": \"u\", \"request_id\": \"r\", \"prompt\": \"{prompt}\", \"priority\": \"HIGH\"}}"
            ),
        ),
        (
            "wrong Bearer",
            "/api/v1/prompt",
            format!("Bearer {key}-wrong"),
            format!("{{\"prompt\": \"{prompt}\"}}"),
        ),
        (
            "key as the prompt",
            "/api/v1/prompt",
            format!("Bearer {prompt}"),
            format!("{{\"prompt\": \"{key}\"}}"),
        ),
        ("inference key on settings", "/v1/settings", bearer.clone(), format!("{{\"api_key\": \"{key}\"}}")),
        (
            "key in a bad settings field",
            "/v1/settings",
            format!("Bearer {ADMIN}"),
            format!("{{\"high_priority\": {{\"tokens\": \"{key}\"}}}}"),
        ),
        (
            "key with a space",
            "/v1/settings",
            format!("Bearer {ADMIN}"),
            format!("{{\"api_key\": \"{key} x\"}}"),
        ),
    ];
    for (name, path, auth, body) in bad {
        let method = if path == "/v1/settings" { reqwest::Method::PUT } else { reqwest::Method::POST };
        let request = client().request(method, format!("{base}{path}")).header("authorization", auth);
        let request = request.header("content-type", "application/json").body(body);
        let (status, reply) = json_of(request.send().await.expect("send")).await;
        assert!((400..500).contains(&status), "{name}: {status} {reply}");
        bodies.push((name.into(), status, reply));
    }
    // A batch whose lines carry the prompt in wrong-typed fields: the stored errors name the
    // fields, never the values.
    let lines = [
        format!(
            r#"{{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{{"model":"m","messages":[{{"role":"user","content":"x"}}],"max_tokens":"{prompt}"}}}}"#
        ),
        format!(r#"{{"custom_id":"{prompt}","method":"POST","url":"{prompt}","body":{{}}}}"#),
        format!(
            r#"{{"custom_id":"c","method":"POST","url":"/v1/chat/completions","body":{{"model":"m","messages":"{prompt}"}}}}"#
        ),
        format!(
            r#"{{"custom_id":"d","method":"POST","url":"/v1/chat/completions","body":{{"model":"{prompt}","messages":[{{"role":"{prompt}","content":"x"}}]}}}}"#
        ),
        format!(r#"["{prompt}"]"#),
    ];
    let file = common::files::upload_batch(&base, user, lines.join("\n").as_bytes()).await;
    let create =
        json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    let (status, batch) = call(&base, "POST", "/v1/batches", user, Some(create)).await;
    assert_eq!(status, 200, "{batch}");
    let path = format!("/v1/batches/{}", batch["id"].as_str().expect("batch id"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let batch = loop {
        let (_, batch) = call(&base, "GET", &path, user, None).await;
        if batch["status"] != "validating" {
            break batch;
        }
        assert!(Instant::now() < deadline, "still validating: {batch}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(batch["status"], "failed", "{batch}");
    assert_eq!(batch["errors"]["data"].as_array().map(Vec::len), Some(lines.len()), "{batch}");
    bodies.push(("batch with bad lines".into(), 200, batch));

    for (name, _, body) in &bodies {
        let text = body.to_string();
        assert!(!text.contains(&key), "{name}: the key is in the error body: {text}");
        assert!(!text.contains(&prompt), "{name}: the prompt is in the error body: {text}");
    }
    assert_key_not_in_db(dir.path(), &key);

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Ok(Some(exit)) = child.try_wait() {
            break exit;
        }
        assert!(Instant::now() < deadline, "ferry serve did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "ferry serve exited with {exit}");
    assert_key_not_in_db(dir.path(), &key);
    let logs = files(&dir.path().join("logs"));
    assert!(!logs.is_empty(), "ferry serve wrote no log");
    let mut lines = 0;
    for log in logs {
        let bytes = std::fs::read(&log).expect("read log");
        lines += bytes.iter().filter(|b| **b == b'\n').count();
        assert!(!contains(&bytes, &key), "the key is in {}", log.display());
        assert!(!contains(&bytes, &prompt), "the prompt is in {}", log.display());
    }
    assert!(lines > 20, "debug logging was on ({lines} lines)");
    let upstream_key =
        std::fs::read_to_string(dir.path().join("data/ferry.db.upstream-key")).expect("key file");
    assert_eq!(upstream_key.trim(), key, "the upstream key lives in its own file, not the database");
}
