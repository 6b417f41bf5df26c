//! `ferry run FILE`: the real binary against `ferry mock-upstream` over HTTP, each test in its
//! own temp dir with its own ports: every input line gets one output line in order; CSV with a
//! template; bad files are refused naming the line; a run killed with SIGKILL mid-job resumes
//! and sends only what had no outcome.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{KillOnDrop, spawn_mock_upstream};
use serde_json::Value;

fn ferry() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
}

/// Calls the mock has received (its `GET /stats`), over a plain socket.
fn requests_seen(base_url: &str) -> u64 {
    use std::io::{Read, Write};
    let addr = base_url.trim_start_matches("http://").trim_end_matches("/v1");
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else { return 0 };
    let request = format!("GET /stats HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut reply = String::new();
    if stream.write_all(request.as_bytes()).is_err() || stream.read_to_string(&mut reply).is_err() {
        return 0;
    }
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str::<Value>(body).ok().and_then(|v| v["requests"].as_u64()).unwrap_or(0)
}

/// A config with a fanout `bulk` lane for jobs and one OpenAI upstream at `base_url`.
fn write_config(dir: &Path, base_url: &str, max_in_flight: usize) -> PathBuf {
    let path = dir.join("ferry.toml");
    let text = format!(
        r#"
[storage]
path = "{data}/ferry.db"
[logging]
dir = "{logs}"
[jobs]
lane = "bulk"
max_in_flight = {max_in_flight}
[lanes.bulk]
rank = 0
window_ms = 0
max_batch = 50
delay_ms = 0
mode = "fanout"
[[upstreams]]
name = "mock-http"
provider = "openai"
base_url = "{base_url}"
concurrency = 32
max_retries = 3
"#,
        data = dir.join("data").display(),
        logs = dir.join("logs").display(),
    );
    std::fs::write(&path, text).expect("write config");
    path
}

fn write_prompts(path: &Path, n: usize) {
    let lines: Vec<String> =
        (1..=n).map(|i| serde_json::json!({"prompt": format!("question {i}")}).to_string()).collect();
    std::fs::write(path, lines.join("\n") + "\n").expect("write input");
}

fn run(config: &Path, input: &Path, output: &Path, extra: &[&str]) -> Output {
    ferry()
        .args(["run", input.to_str().expect("utf-8 path"), "-o", output.to_str().expect("utf-8 path")])
        .args(["--config", config.to_str().expect("utf-8 path")])
        .args(extra)
        .output()
        .expect("ferry run runs")
}

fn output_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("output exists");
    text.lines().map(|l| serde_json::from_str(l).expect("output line is JSON")).collect()
}

#[test]
fn every_line_gets_one_answer_in_input_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_mock, url) = spawn_mock_upstream(&[]);
    let config = write_config(dir.path(), &url, 100);
    let (input, output) = (dir.path().join("prompts.jsonl"), dir.path().join("out.jsonl"));
    write_prompts(&input, 300);
    let result = run(&config, &input, &output, &[]);
    assert!(result.status.success(), "ferry run failed: {}", String::from_utf8_lossy(&result.stderr));
    let lines = output_lines(&output);
    assert_eq!(lines.len(), 300);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["custom_id"], format!("line-{}", i + 1));
        assert_eq!(line["response"]["status_code"], 200, "{line}");
        assert_eq!(line["error"], Value::Null);
        let text = line["response"]["body"]["choices"][0]["message"]["content"].as_str().unwrap_or("");
        assert!(text.contains(&format!("question {}", i + 1)), "line {} answered {text}", i + 1);
        assert!(line["id"].as_str().is_some_and(|id| id.starts_with("batch_req_")));
    }
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(stdout.contains("300 lines, 300 answered, 0 failed"), "{stdout}");
}

/// After a finished run its answers live in the output file only: the store keeps the job's
/// counts but drops the items, and the converted input goes too. The same command again sends
/// nothing; with the output removed it says so (exit 1); `--fresh` asks every prompt again.
#[test]
fn a_finished_run_keeps_its_answers_in_the_output_only_and_fresh_asks_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_mock, url) = spawn_mock_upstream(&[]);
    let config = write_config(dir.path(), &url, 100);
    let (input, output) = (dir.path().join("prompts.jsonl"), dir.path().join("out.jsonl"));
    write_prompts(&input, 20);
    let first = run(&config, &input, &output, &[]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let written = std::fs::read_to_string(&output).expect("output");
    let sent = requests_seen(&url);
    assert!(sent >= 20, "{sent} requests for 20 prompts");
    let db = dir.path().join("data/ferry.db");
    assert_eq!(done_in_store(&db), 20, "the job's counts stay");
    let conn = rusqlite::Connection::open(&db).expect("store");
    let items: i64 = conn.query_row("SELECT count(*) FROM batch_items", [], |r| r.get(0)).expect("count");
    assert_eq!(items, 0, "no copy of the answers left in the store");
    let converted = std::fs::read_dir(dir.path().join("data/runs")).expect("data/runs");
    let converted = converted.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl"));
    assert_eq!(converted.count(), 0, "converted input left behind");

    let again = run(&config, &input, &output, &[]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(std::fs::read_to_string(&output).expect("output kept"), written);
    std::fs::remove_file(&output).expect("remove output");
    let gone = run(&config, &input, &output, &[]);
    assert_eq!(gone.status.code(), Some(1), "{gone:?}");
    let stderr = String::from_utf8_lossy(&gone.stderr);
    assert!(stderr.contains("which is gone") && stderr.contains("--fresh"), "{stderr}");
    assert_eq!(requests_seen(&url), sent, "nothing asked again");

    let fresh = run(&config, &input, &output, &["--fresh"]);
    assert!(fresh.status.success(), "{}", String::from_utf8_lossy(&fresh.stderr));
    assert!(requests_seen(&url) >= sent + 20, "--fresh asks every prompt again");
    assert_eq!(output_lines(&output).len(), 20);
}

#[test]
fn csv_rows_go_through_the_template() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_mock, url) = spawn_mock_upstream(&[]);
    let config = write_config(dir.path(), &url, 100);
    let (input, output) = (dir.path().join("cities.csv"), dir.path().join("out.jsonl"));
    std::fs::write(&input, "city,country\nOslo,Norway\n\"Rio de Janeiro\",Brazil\n").expect("write csv");
    let result = run(&config, &input, &output, &["--template", "Is {city} in {country}?"]);
    assert!(result.status.success(), "ferry run failed: {}", String::from_utf8_lossy(&result.stderr));
    let lines = output_lines(&output);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["custom_id"], "row-2");
    let text = lines[1]["response"]["body"]["choices"][0]["message"]["content"].as_str().unwrap_or("");
    assert!(text.contains("Is Rio de Janeiro in Brazil?"), "{text}");
}

#[test]
fn a_bad_file_is_refused_naming_its_lines_and_nothing_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_mock, url) = spawn_mock_upstream(&[]);
    let config = write_config(dir.path(), &url, 100);
    let (input, output) = (dir.path().join("batch.jsonl"), dir.path().join("out.jsonl"));
    let line = |id: &str, url: &str| {
        serde_json::json!({"custom_id": id, "method": "POST", "url": url,
            "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}})
        .to_string()
    };
    let text =
        [line("a", "/v1/chat/completions"), line("a", "/v1/chat/completions"), line("b", "/v1/embeddings")];
    std::fs::write(&input, text.join("\n")).expect("write input");
    let result = run(&config, &input, &output, &[]);
    assert_eq!(result.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("line 2") && stderr.contains("duplicate_custom_id"), "{stderr}");
    assert!(stderr.contains("line 3") && stderr.contains("invalid_url"), "{stderr}");
    assert!(!output.exists(), "no output for a refused file");
    assert_eq!(requests_seen(&url), 0, "nothing was sent upstream");

    let bad_lane = run(&config, &input, &output, &["--lane", "nope"]);
    assert_eq!(bad_lane.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad_lane.stderr).contains("--lane"));
}

/// Items with an outcome in the run's job, read from its store.
fn done_in_store(db: &Path) -> u64 {
    let Ok(conn) = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return 0;
    };
    conn.query_row("SELECT coalesce(sum(completed + failed), 0) FROM batches", [], |row| row.get(0))
        .unwrap_or(0)
}

#[test]
fn a_run_killed_mid_job_resumes_and_each_line_is_answered_once() {
    const LINES: usize = 5_000;
    const IN_FLIGHT: usize = 200;
    let dir = tempfile::tempdir().expect("temp dir");
    // 20 ms a call and 32 calls at once: about 1,600 lines/s, so a kill lands mid-job.
    let (_mock, url) = spawn_mock_upstream(&["--latency-ms", "20"]);
    let config = write_config(dir.path(), &url, IN_FLIGHT);
    let (input, output) = (dir.path().join("prompts.jsonl"), dir.path().join("out.jsonl"));
    write_prompts(&input, LINES);
    let child = ferry()
        .args(["run", input.to_str().expect("utf-8"), "-o", output.to_str().expect("utf-8")])
        .args(["--config", config.to_str().expect("utf-8")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ferry run starts");
    let mut child = KillOnDrop(child);
    let db = dir.path().join("data/ferry.db");
    let deadline = Instant::now() + Duration::from_secs(60);
    while done_in_store(&db) == 0 {
        assert!(Instant::now() < deadline, "the run made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The same command beside it is refused: it would send everything again (and --fresh
    // would forget what the first one stored).
    for extra in [&[][..], &["--fresh"][..]] {
        let second = run(&config, &input, &output, extra);
        assert_eq!(second.status.code(), Some(1), "{extra:?}: {second:?}");
        let stderr = String::from_utf8_lossy(&second.stderr);
        assert!(stderr.contains("another `ferry run` of this same command"), "{stderr}");
    }
    while done_in_store(&db) < 1_000 {
        assert!(Instant::now() < deadline, "the run made no progress");
        assert!(child.try_wait().ok().flatten().is_none(), "the run ended before it was killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let done_before = done_in_store(&db);
    assert!(done_before < LINES as u64, "killed after the end ({done_before} done)");
    assert!(!output.exists(), "no output before every line has its outcome");
    let sent_before = requests_seen(&url);

    let result = run(&config, &input, &output, &[]);
    assert!(result.status.success(), "resume failed: {}", String::from_utf8_lossy(&result.stderr));
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(stdout.contains("done by an earlier run"), "{stdout}");
    let lines = output_lines(&output);
    assert_eq!(lines.len(), LINES);
    let ids: HashSet<&str> = lines.iter().filter_map(|l| l["custom_id"].as_str()).collect();
    assert_eq!(ids.len(), LINES, "each custom_id exactly once");
    assert!(lines.iter().all(|l| l["response"]["status_code"] == 200));
    // The second run sent only what had no stored outcome: the rest, plus at most what was in
    // flight (or answered but not yet stored) at the kill.
    let sent_after = requests_seen(&url) - sent_before;
    let missing = LINES as u64 - done_before;
    assert!(sent_after >= missing, "sent {sent_after} for {missing} missing lines");
    assert!(sent_after <= missing + 2 * IN_FLIGHT as u64, "sent {sent_after} for {missing} missing lines");
}

/// An output whose folder does not exist is refused before any prompt is sent.
#[test]
fn an_output_with_no_folder_is_refused_before_anything_is_sent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_mock, url) = spawn_mock_upstream(&[]);
    let config = write_config(dir.path(), &url, 100);
    let input = dir.path().join("prompts.jsonl");
    write_prompts(&input, 5);
    let output = dir.path().join("no-such-folder").join("out.jsonl");
    let result = run(&config, &input, &output, &[]);
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("no-such-folder") && stderr.contains("does not exist"), "{stderr}");
    assert_eq!(requests_seen(&url), 0, "nothing was sent");
}
