//! The Batch API over real sockets, each test on its own port and temp dir: the whole life of a
//! job (upload → create → in_progress → completed → output file and `/results`); cancel; expiry;
//! bad input files failing validation with the line and code named; bad create requests naming
//! the field; idempotency keys; owners; and a `ferry serve` killed with SIGKILL mid-job that
//! resumes on restart and writes each custom_id exactly once.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::files::{Part, batch_file, batch_line, download, upload, upload_batch};
use common::{
    INFERENCE_KEY, KillOnDrop, TestServer, client, error_names, http_config, json_of, spawn_mock_upstream,
    wait_for_bind,
};
use ferry::config::Config;
use ferry::http::Keys;
use serde_json::{Value, json};

/// A test server whose config `edit` changed.
fn server(keys: Keys, edit: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = http_config(&dir);
    edit(&mut config);
    TestServer::start_with(config, keys, dir)
}

/// Jobs through the fanout lane, and an in-process mock answering in `latency_ms`, one call at
/// a time when `slow`.
fn slow_jobs(config: &mut Config, latency_ms: u64, max_in_flight: usize) {
    config.jobs.lane = Some("bulk".into());
    config.jobs.max_in_flight = max_in_flight;
    config.upstreams[0].mock.latency_ms = latency_ms;
    config.upstreams[0].concurrency = ferry::config::Concurrency::Fixed(1);
}

async fn post(base: &str, path: &str, key: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = client().post(format!("{base}{path}")).json(&body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    json_of(request.send().await.expect("post")).await
}

async fn get(base: &str, path: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = client().get(format!("{base}{path}"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    json_of(request.send().await.expect("get")).await
}

async fn create(base: &str, key: Option<&str>, file_id: &str, window: &str) -> Value {
    let body = json!({"input_file_id": file_id, "endpoint": "/v1/chat/completions",
        "completion_window": window, "metadata": {"project": "tests"}});
    let (status, batch) = post(base, "/v1/batches", key, body).await;
    assert_eq!(status, 200, "{batch}");
    batch
}

/// Polls the batch until `done(batch)` or `limit` passes.
async fn wait_for(
    base: &str,
    key: Option<&str>,
    id: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let (status, batch) = get(base, &format!("/v1/batches/{id}"), key).await;
        assert_eq!(status, 200, "{batch}");
        if done(&batch) {
            return batch;
        }
        assert!(Instant::now() < deadline, "batch never got there: {batch}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn status_is(status: &'static str) -> impl Fn(&Value) -> bool {
    move |batch| batch["status"] == status
}

/// The JSONL lines of file `id`.
async fn lines_of(base: &str, key: Option<&str>, id: &Value) -> Vec<Value> {
    let id = id.as_str().expect("a file id");
    let (status, _, bytes) = download(base, key, id).await;
    assert_eq!(status, 200);
    String::from_utf8(bytes)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

fn ids(lines: &[Value]) -> Vec<String> {
    lines.iter().map(|l| l["custom_id"].as_str().expect("custom_id").to_string()).collect()
}

#[actix_rt::test]
async fn a_batch_runs_to_completed_with_its_output_file_results_and_counts() {
    // The shipped lanes: batch items go through `low`, in combined calls of 4.
    let server = server(Keys::none(), |_| {});
    let base = &server.base;
    let file = upload_batch(base, None, &batch_file(40)).await;
    let batch = create(base, None, &file, "24h").await;
    assert_eq!(batch["object"], "batch");
    assert_eq!(batch["status"], "validating");
    assert_eq!(batch["endpoint"], "/v1/chat/completions");
    assert_eq!(batch["input_file_id"], file.as_str());
    assert_eq!(batch["metadata"]["project"], "tests");
    let expires = batch["expires_at"].as_i64().expect("expires_at");
    assert_eq!(expires - batch["created_at"].as_i64().expect("created_at"), 24 * 3600);
    let id = batch["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("batch_"));

    let done = wait_for(base, None, &id, Duration::from_secs(30), status_is("completed")).await;
    assert_eq!(done["request_counts"], json!({"total": 40, "completed": 40, "failed": 0}));
    for stamp in ["in_progress_at", "finalizing_at", "completed_at"] {
        assert!(done[stamp].as_i64().is_some(), "{stamp} missing: {done}");
    }
    assert_eq!(done["error_file_id"], Value::Null);
    assert_eq!(done["errors"], Value::Null);
    let output = lines_of(base, None, &done["output_file_id"]).await;
    let expected: Vec<String> = (1..=40).map(|i| format!("req-{i}")).collect();
    assert_eq!(ids(&output), expected, "one line per request, in input order");
    for (i, line) in output.iter().enumerate() {
        assert_eq!(line["response"]["status_code"], 200);
        assert_eq!(line["response"]["body"]["object"], "chat.completion");
        let text = line["response"]["body"]["choices"][0]["message"]["content"].as_str().unwrap_or("");
        assert!(text.contains(&format!("question {}", i + 1)), "{text}");
        assert_eq!(line["error"], Value::Null);
    }
    // The output file is listed in the Files API as batch_output.
    let (_, file_object) =
        get(base, &format!("/v1/files/{}", done["output_file_id"].as_str().unwrap_or("")), None).await;
    assert_eq!(file_object["purpose"], "batch_output");

    let response =
        client().get(server.url(&format!("/v1/batches/{id}/results"))).send().await.expect("results");
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.expect("results body");
    let results: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(ids(&results), expected);

    let (status, list) = get(base, "/v1/batches?limit=5", None).await;
    assert_eq!(status, 200);
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"][0]["id"], id.as_str());
    assert_eq!(list["has_more"], false);
    assert_eq!(list["first_id"], id.as_str());

    // An ended batch keeps its answers once, in its files: the store holds where, not a copy.
    let db = rusqlite::Connection::open(server.dir().join("data/ferry.db")).expect("store");
    let copies: i64 = db
        .query_row("SELECT count(*) FROM batch_items WHERE result IS NOT NULL", [], |r| r.get(0))
        .expect("count");
    assert_eq!(copies, 0, "no second copy of the answers in the store");
    // Deleting the output file takes the results with it, and /results says so.
    let output_id = done["output_file_id"].as_str().unwrap_or_default().to_string();
    let response =
        client().delete(server.url(&format!("/v1/files/{output_id}"))).send().await.expect("delete");
    assert_eq!(response.status().as_u16(), 200);
    let (status, body) = get(base, &format!("/v1/batches/{id}/results"), None).await;
    assert_eq!(status, 404, "{body}");
    assert!(error_names(&body, &format!("~{output_id} was deleted")), "{body}");
    server.stop().await;
}

#[actix_rt::test]
async fn cancel_stops_sending_and_keeps_what_finished() {
    let server = server(Keys::none(), |c| slow_jobs(c, 20, 4));
    let base = &server.base;
    let file = upload_batch(base, None, &batch_file(200)).await;
    let id = create(base, None, &file, "24h").await["id"].as_str().expect("id").to_string();
    wait_for(base, None, &id, Duration::from_secs(20), |b| {
        b["request_counts"]["completed"].as_u64() >= Some(5)
    })
    .await;
    let (status, cancelling) = post(base, &format!("/v1/batches/{id}/cancel"), None, json!({})).await;
    assert_eq!(status, 200, "{cancelling}");
    assert!(cancelling["status"] == "cancelling" || cancelling["status"] == "cancelled", "{cancelling}");
    let done = wait_for(base, None, &id, Duration::from_secs(20), status_is("cancelled")).await;
    let counts = &done["request_counts"];
    let (completed, failed) =
        (counts["completed"].as_u64().unwrap_or(0), counts["failed"].as_u64().unwrap_or(0));
    assert!(completed < 200, "cancel came too late to show anything: {done}");
    assert_eq!(completed + failed, 200, "every request ends in a result or an error: {done}");
    assert!(done["cancelled_at"].as_i64().is_some() && done["cancelling_at"].as_i64().is_some());
    let output = lines_of(base, None, &done["output_file_id"]).await;
    let errors = lines_of(base, None, &done["error_file_id"]).await;
    assert_eq!(output.len() as u64, completed);
    assert!(errors.iter().all(|l| l["error"]["code"] == "batch_cancelled" && l["response"] == Value::Null));
    let all: HashSet<String> = ids(&output).into_iter().chain(ids(&errors)).collect();
    assert_eq!(all.len(), 200, "each request exactly once across the two files");
    // /results reads both files back in input order.
    let response =
        client().get(server.url(&format!("/v1/batches/{id}/results"))).send().await.expect("results");
    let text = response.text().await.expect("results body");
    let results: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    let expected: Vec<String> = (1..=200).map(|i| format!("req-{i}")).collect();
    assert_eq!(ids(&results), expected, "every request, in input order");
    server.stop().await;
}

/// A jobs lane that holds fewer items than one read chunk still drains: the job offers it
/// smaller submissions instead of retrying the refused one forever.
#[actix_rt::test]
async fn a_lane_smaller_than_a_chunk_still_runs_the_whole_job() {
    let server = server(Keys::none(), |c| {
        slow_jobs(c, 0, 1_000);
        c.upstreams[0].concurrency = ferry::config::Concurrency::Fixed(16);
        if let Some(bulk) = c.lanes.get_mut("bulk") {
            bulk.queue_capacity = Some(50);
        }
    });
    let base = &server.base;
    let file = upload_batch(base, None, &batch_file(600)).await;
    let id = create(base, None, &file, "24h").await["id"].as_str().expect("id").to_string();
    let done = wait_for(base, None, &id, Duration::from_secs(30), status_is("completed")).await;
    assert_eq!(done["request_counts"], json!({"total": 600, "completed": 600, "failed": 0}));
    server.stop().await;
}

#[actix_rt::test]
async fn expiry_moves_the_rest_to_the_error_file_as_batch_expired() {
    let server = server(Keys::none(), |c| slow_jobs(c, 30, 2));
    let base = &server.base;
    let file = upload_batch(base, None, &batch_file(300)).await;
    let id = create(base, None, &file, "2s").await["id"].as_str().expect("id").to_string();
    let done = wait_for(base, None, &id, Duration::from_secs(20), status_is("expired")).await;
    let counts = &done["request_counts"];
    let (completed, failed) =
        (counts["completed"].as_u64().unwrap_or(0), counts["failed"].as_u64().unwrap_or(0));
    assert!(completed > 0 && completed < 300, "{done}");
    assert_eq!(completed + failed, 300);
    assert!(done["expired_at"].as_i64().is_some());
    let output = lines_of(base, None, &done["output_file_id"]).await;
    assert_eq!(output.len() as u64, completed, "what finished is kept");
    let errors = lines_of(base, None, &done["error_file_id"]).await;
    assert_eq!(errors.len() as u64, failed);
    assert!(errors.iter().all(|l| l["error"]["code"] == "batch_expired"), "{:?}", errors.first());
    server.stop().await;
}

#[actix_rt::test]
async fn bad_input_files_fail_validation_naming_the_line_and_code() {
    let server = server(Keys::none(), |c| c.files.max_lines = 3);
    let base = &server.base;
    let good = batch_line("a", "hi");
    let cases: Vec<(&str, String, &str, Option<u64>)> = vec![
        ("not JSONL", "hello there\n".to_string(), "invalid_json_line", Some(1)),
        (
            "wrong endpoint in a line",
            format!("{good}\n{}\n", batch_line("b", "x").replace("/v1/chat/completions", "/v1/embeddings")),
            "invalid_url",
            Some(2),
        ),
        (
            "missing body",
            format!(
                "{good}\n{}\n",
                json!({"custom_id": "b", "method": "POST", "url": "/v1/chat/completions"})
            ),
            "missing_body",
            Some(2),
        ),
        (
            "duplicate custom_id",
            format!("{good}\n{}\n{good}\n", batch_line("b", "x")),
            "duplicate_custom_id",
            Some(3),
        ),
        (
            "more lines than [files] max_lines",
            (1..=4).map(|i| batch_line(&format!("r{i}"), "x")).collect::<Vec<_>>().join("\n"),
            "too_many_lines",
            Some(4),
        ),
        (
            "a model no upstream serves",
            batch_line("a", "x").replace("\"mock\"", "\"gpt-9\""),
            "model_not_found",
            Some(1),
        ),
    ];
    for (name, content, code, line) in cases {
        let file = upload_batch(base, None, content.as_bytes()).await;
        let id = create(base, None, &file, "24h").await["id"].as_str().expect("id").to_string();
        let failed =
            wait_for(base, None, &id, Duration::from_secs(10), |b| b["status"] != "validating").await;
        assert_eq!(failed["status"], "failed", "{name}: {failed}");
        let first = &failed["errors"]["data"][0];
        assert_eq!(first["code"], code, "{name}: {failed}");
        assert_eq!(first["line"].as_u64(), line, "{name}: {failed}");
        assert!(failed["failed_at"].as_i64().is_some());
        assert_eq!(failed["output_file_id"], Value::Null);
    }
    server.stop().await;
}

#[actix_rt::test]
async fn an_input_over_the_size_limit_is_refused_at_upload() {
    let server = server(Keys::none(), |c| c.files.max_bytes = 1_000);
    let (status, body) = upload(
        &server.base,
        None,
        &[Part::Text("purpose", "batch"), Part::File("file", "big.jsonl", &batch_file(50))],
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert!(error_names(&body, "file"), "{body}");
    server.stop().await;
}

#[actix_rt::test]
async fn bad_create_requests_are_refused_naming_the_field() {
    let server = server(Keys::none(), |_| {});
    let base = &server.base;
    let file = upload_batch(base, None, &batch_file(2)).await;
    let done = {
        let id = create(base, None, &file, "24h").await["id"].as_str().expect("id").to_string();
        wait_for(base, None, &id, Duration::from_secs(30), status_is("completed")).await
    };
    let output_file = done["output_file_id"].as_str().expect("output file").to_string();
    let ok = json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    let with = |key: &str, value: Value| {
        let mut body = ok.clone();
        body[key] = value;
        body
    };
    let without = |key: &str| {
        let mut body = ok.clone();
        body.as_object_mut().expect("object").remove(key);
        body
    };
    let cases = [
        (with("endpoint", json!("/v1/embeddings")), "endpoint"),
        (with("completion_window", json!("1d")), "completion_window"),
        (with("completion_window", json!("0h")), "completion_window"),
        (with("input_file_id", json!("file-nope")), "input_file_id"),
        (with("input_file_id", json!(output_file)), "input_file_id"),
        (with("input_file_id", json!(42)), "input_file_id"),
        (without("input_file_id"), "input_file_id"),
        (without("endpoint"), "endpoint"),
        (with("metadata", json!({"n": 1})), "metadata.n"),
    ];
    for (body, field) in cases {
        let (status, error) = post(base, "/v1/batches", None, body.clone()).await;
        assert_eq!(status, 400, "{body} → {error}");
        assert!(error_names(&error, field), "{body} → {error}");
    }
    let (status, error) = get(base, "/v1/batches/batch_nope", None).await;
    assert_eq!(status, 404, "{error}");
    let (status, error) = get(base, "/v1/batches?limit=0", None).await;
    assert_eq!(status, 400);
    assert!(error_names(&error, "limit"));
    server.stop().await;
}

#[actix_rt::test]
async fn an_idempotency_key_returns_the_same_batch_and_refuses_another_body() {
    let server = server(Keys::none(), |_| {});
    let base = &server.base;
    let file = upload_batch(base, None, &batch_file(3)).await;
    let body = json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    let send = |body: Value| {
        client().post(server.url("/v1/batches")).header("Idempotency-Key", "retry-me-1").json(&body).send()
    };
    let (first_status, first) = json_of(send(body.clone()).await.expect("create")).await;
    let (second_status, second) = json_of(send(body.clone()).await.expect("repeat")).await;
    assert_eq!((first_status, second_status), (200, 200));
    assert_eq!(first["id"], second["id"], "a repeat answers the same batch");
    let mut other = body.clone();
    other["completion_window"] = json!("12h");
    let (status, error) = json_of(send(other).await.expect("conflict")).await;
    assert_eq!(status, 409, "{error}");
    let (_, list) = get(base, "/v1/batches", None).await;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1), "one batch made: {list}");
    server.stop().await;
}

#[actix_rt::test]
async fn a_key_never_sees_another_keys_batches() {
    const OTHER: &str = "test-other-key-5b9d";
    let server = server(Keys::new(&[INFERENCE_KEY, OTHER], &[] as &[&str]), |_| {});
    let base = &server.base;
    let file = upload_batch(base, Some(INFERENCE_KEY), &batch_file(2)).await;
    let id = create(base, Some(INFERENCE_KEY), &file, "24h").await["id"].as_str().expect("id").to_string();
    for path in [format!("/v1/batches/{id}"), format!("/v1/batches/{id}/results")] {
        let (status, body) = get(base, &path, Some(OTHER)).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    let (status, _) = post(base, &format!("/v1/batches/{id}/cancel"), Some(OTHER), json!({})).await;
    assert_eq!(status, 404);
    let (_, list) = get(base, "/v1/batches", Some(OTHER)).await;
    assert_eq!(list["data"], json!([]));
    // Nor may another key start a batch on the first key's file.
    let body = json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    let (status, error) = post(base, "/v1/batches", Some(OTHER), body).await;
    assert_eq!(status, 400, "{error}");
    assert!(error_names(&error, "input_file_id"));
    let (status, _) = get(base, &format!("/v1/batches/{id}"), Some(INFERENCE_KEY)).await;
    assert_eq!(status, 200);
    server.stop().await;
}

// ─── A real daemon killed mid-job ───────────────────────────────────────────────────────────

fn serve_config(dir: &Path, upstream: &str) -> std::path::PathBuf {
    let text = format!(
        r#"
[server]
bind = "127.0.0.1:0"
api_keys_env = "FERRY_BATCH_TEST_KEYS"
admin_keys_env = "FERRY_BATCH_TEST_ADMIN_KEYS"
[storage]
path = "{dir}/data/ferry.db"
[logging]
dir = "{dir}/logs"
level = "info"
[jobs]
lane = "bulk"
max_in_flight = 200
[lanes.bulk]
rank = 0
window_ms = 0
max_batch = 50
delay_ms = 0
mode = "fanout"
[[upstreams]]
name = "mock-http"
provider = "openai"
base_url = "{upstream}"
models = ["mock"]
concurrency = 32
"#,
        dir = dir.display()
    );
    let path = dir.join("ferry.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn start_serve(config: &Path, log: &Path) -> (KillOnDrop, String) {
    let _ = std::fs::remove_file(log);
    let child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--config"])
        .arg(config)
        .env_remove("FERRY_BATCH_TEST_KEYS")
        .env_remove("FERRY_BATCH_TEST_ADMIN_KEYS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ferry serve starts");
    let mut child = KillOnDrop(child);
    let bind = wait_for_bind(log, &mut child);
    (child, format!("http://{bind}"))
}

#[tokio::test]
async fn a_daemon_killed_mid_job_with_its_upload_deleted_resumes_each_custom_id_once() {
    const LINES: usize = 5_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let (_mock, upstream) = spawn_mock_upstream(&["--latency-ms", "20"]);
    let config = serve_config(dir.path(), &upstream);
    let log = dir.path().join("logs/ferry.log");
    let (mut first, base) = start_serve(&config, &log);
    let file = upload_batch(&base, None, &batch_file(LINES)).await;
    let id = create(&base, None, &file, "24h").await["id"].as_str().expect("id").to_string();
    let at_kill = wait_for(&base, None, &id, Duration::from_secs(60), |b| {
        b["request_counts"]["completed"].as_u64() >= Some(1_000)
    })
    .await;
    // A tidy client deletes its upload once the batch exists; the job keeps its own link to it.
    let response = client().delete(format!("{base}/v1/files/{file}")).send().await.expect("delete");
    assert_eq!(response.status().as_u16(), 200);
    first.kill().expect("SIGKILL");
    let _ = first.wait();
    assert_eq!(at_kill["status"], "in_progress", "killed mid-job: {at_kill}");

    let (_second, base) = start_serve(&config, &log);
    let done = wait_for(&base, None, &id, Duration::from_secs(90), status_is("completed")).await;
    assert_eq!(done["request_counts"], json!({"total": LINES, "completed": LINES, "failed": 0}), "{done}");
    let output = lines_of(&base, None, &done["output_file_id"]).await;
    assert_eq!(output.len(), LINES);
    let unique: HashSet<String> = ids(&output).into_iter().collect();
    assert_eq!(unique.len(), LINES, "each custom_id exactly once");
    assert_eq!(done["error_file_id"], Value::Null, "nothing failed for want of the deleted upload");
    let kept = std::fs::read_dir(dir.path().join("data/files/batch-inputs")).expect("kept inputs");
    assert_eq!(kept.count(), 0, "the job's own input went when it ended");
}
