//! `ferry serve` as a process: it refuses to expose an unprotected API, and on SIGTERM with 500
//! prompts in flight it answers every accepted request (a result or a clear per-prompt error)
//! and exits 0 within the grace period.

mod common;

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{KillOnDrop, wait_for_bind};
use serde_json::{Value, json};

const REQUESTS: usize = 50;
const PER_REQUEST: usize = 10;
const GRACE_MS: u64 = 2_000;

/// A config: bulk batches of 5, no delay, a mock upstream answering in ~200 ms with 8 calls at
/// once, so 500 prompts take several seconds and are still queued when SIGTERM comes.
fn write_config(dir: &Path, bind: &str, extra_server: &str) -> std::path::PathBuf {
    let text = format!(
        r#"
[server]
bind = "{bind}"
api_keys_env = "FERRY_SERVE_TEST_KEYS"
admin_keys_env = "FERRY_SERVE_TEST_ADMIN_KEYS"
shutdown_grace_ms = {GRACE_MS}
{extra_server}

[storage]
path = "{dir}/data/ferry.db"

[logging]
dir = "{dir}/logs"
# The lane's debug lines show each submission reaching the engine (event=enqueue).
level = "info,ferry::engine::lane=debug"

[batching]
batch_size = 5
batch_delay_ms = 0

[lanes.bulk]
rank = 0
mode = "fanout"

[[upstreams]]
name = "mock"
provider = "mock"
concurrency = 8

[upstreams.mock]
latency_ms = 200
"#,
        dir = dir.display()
    );
    let path = dir.join("ferry.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn ferry_serve(config: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
    command
        .args(["serve", "--config"])
        .arg(config)
        .env_remove("FERRY_SERVE_TEST_KEYS")
        .env_remove("FERRY_SERVE_TEST_ADMIN_KEYS")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn wait_for_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn sigterm(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("run kill");
    assert!(status.success(), "kill -TERM failed");
}

#[tokio::test]
async fn sigterm_answers_every_accepted_request_and_exits_zero() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), "127.0.0.1:0", "");
    let mut child = KillOnDrop(ferry_serve(&config).spawn().expect("start ferry serve"));
    let log = dir.path().join("logs/ferry.log");
    let addr = wait_for_bind(&log, &mut child);
    let url = format!("http://{addr}/api/v1/prompts");

    let client = reqwest::Client::new();
    let requests: Vec<_> = (0..REQUESTS)
        .map(|r| {
            let prompts: Vec<String> = (0..PER_REQUEST).map(|i| format!("r{r}-p{i}")).collect();
            let request = client.post(&url).json(&json!({ "prompts": prompts })).send();
            tokio::spawn(async move {
                let response = request.await.map_err(|e| e.to_string())?;
                let status = response.status().as_u16();
                let body: Value = response.json().await.map_err(|e| e.to_string())?;
                Ok::<_, String>((status, body))
            })
        })
        .collect();
    // Wait until every request has reached the engine (its lane logs each submission); about
    // 40 prompts/s get done, so most are still queued.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let submitted = text.lines().filter(|l| l.contains("event=enqueue lane=bulk")).count();
        if submitted == REQUESTS {
            break;
        }
        assert!(Instant::now() < deadline, "{submitted} of {REQUESTS} requests reached the engine");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sigterm(&child);
    let signalled = Instant::now();

    let (mut answered, mut cut_off) = (0, 0);
    for (r, request) in requests.into_iter().enumerate() {
        let (status, body) = request.await.expect("task").unwrap_or_else(|e| panic!("request {r}: {e}"));
        assert_eq!(status, 200, "request {r}: {body}");
        let responses = body["responses"].as_array().unwrap_or_else(|| panic!("request {r}: {body}"));
        assert_eq!(responses.len(), PER_REQUEST, "request {r}");
        for (i, reply) in responses.iter().enumerate() {
            match reply["status"].as_str() {
                Some("success") => {
                    let text = reply["response"].as_str().unwrap_or("");
                    assert!(text.starts_with(&format!("mock answer to: r{r}-p{i}")), "{reply}");
                    answered += 1;
                }
                Some("error") => {
                    let error = reply["error"].as_str().unwrap_or("");
                    assert!(error.contains("shutting down"), "r{r}-p{i}: unclear error {reply}");
                    cut_off += 1;
                }
                _ => panic!("r{r}-p{i}: {reply}"),
            }
        }
    }
    drop(client);
    let status = wait_for_exit(&mut child, Duration::from_millis(GRACE_MS) + Duration::from_secs(8));
    let elapsed = signalled.elapsed();
    let Some(status) = status else {
        let _ = child.kill();
        panic!("ferry serve still running {elapsed:?} after SIGTERM");
    };
    eprintln!("after SIGTERM: {answered} answered, {cut_off} cut off, exit after {elapsed:?}");
    assert!(status.success(), "exit status {status}");
    assert!(elapsed < Duration::from_millis(GRACE_MS + 500), "took {elapsed:?} to exit");
    assert_eq!(answered + cut_off, REQUESTS * PER_REQUEST);
    assert!(answered > 0, "some prompts finish during the drain");
    assert!(cut_off > 0, "the grace is too short for all 500; the rest must be cut off, not lost");

    let log = std::fs::read_to_string(&log).expect("log");
    assert!(log.contains("event=shutdown phase=done"), "{log}");
}

#[test]
fn binding_beyond_loopback_without_keys_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), "0.0.0.0:0", "");
    let output = ferry_serve(&config).output().expect("run ferry serve");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    for part in ["0.0.0.0:0", "without API keys", "FERRY_SERVE_TEST_KEYS", "FERRY_SERVE_TEST_ADMIN_KEYS"] {
        assert!(stderr.contains(part), "stderr lacks {part:?}:\n{stderr}");
    }
}

#[test]
fn binding_beyond_loopback_with_a_key_serves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), "0.0.0.0:0", "");
    let mut child = KillOnDrop(
        ferry_serve(&config).env("FERRY_SERVE_TEST_KEYS", "serve-test-key-5d1e").spawn().expect("start"),
    );
    let log_path = dir.path().join("logs/ferry.log");
    wait_for_bind(&log_path, &mut child);
    sigterm(&child);
    let status = wait_for_exit(&mut child, Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    let log = std::fs::read_to_string(log_path).expect("log");
    assert!(log.contains("auth=bearer") && !log.contains("serve-test-key-5d1e"), "{log}");
}
