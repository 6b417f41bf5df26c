//! The single-prompt doors over a real socket: `/v1/query` (seed 002) at each priority, the
//! OpenAI-compatible `/v1/chat/completions` and `/v1/models`, the lane chosen by
//! `x-ferry-priority`, a table of bad input naming the field, and an upstream failure as a 502.
//! Each test starts its own engine and server on a free port with its own temp dir.

mod common;

use std::time::Duration;

use common::{TestServer, client, error_names, error_parts, http_config, json_of};
use ferry::config::Config;
use ferry::http::Keys;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The default lanes with no window, so a lone item goes at once at every priority.
fn quick_config(dir: &tempfile::TempDir) -> Config {
    let mut config = http_config(dir);
    for lane in config.lanes.values_mut() {
        lane.window_ms = 0;
    }
    config
}

/// Longest a poll of `/api/v1/stats` waits for the metrics hub to record a finished batch (it
/// does so just after the reply; a loaded machine may take a while).
const WAIT: Duration = Duration::from_secs(10);

fn start() -> TestServer {
    let dir = tempfile::tempdir().expect("temp dir");
    TestServer::start_with(quick_config(&dir), Keys::none(), dir)
}

/// A server whose upstream fails every call, with no retry.
fn start_failing() -> TestServer {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = quick_config(&dir);
    config.upstreams[0].max_retries = 0;
    config.upstreams[0].cooldown_failures = 1_000_000;
    config.upstreams[0].mock.error_rate = 1.0;
    TestServer::start_with(config, Keys::none(), dir)
}

fn query(priority: &str, prompt: &str) -> Value {
    json!({
        "username": "ada",
        "request_id": format!("req-{priority}"),
        "prompt": prompt,
        "created_at": "2026-02-01T12:00:00Z",
        "priority": priority,
    })
}

fn completion(prompt: &str) -> Value {
    json!({"model": "mock", "messages": [{"role": "user", "content": prompt}]})
}

async fn post(server: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    json_of(client().post(server.url(path)).json(body).send().await.expect("request")).await
}

async fn get(server: &TestServer, path: &str) -> (u16, Value) {
    json_of(client().get(server.url(path)).send().await.expect("request")).await
}

/// The lane of batch `id` in `/api/v1/stats`, waiting for the batch to be recorded.
async fn lane_of_batch(server: &TestServer, id: &str) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        let (status, body) = get(server, "/api/v1/stats").await;
        assert_eq!(status, 200, "{body}");
        let batches = body["recent_batches"].as_array().cloned().unwrap_or_default();
        if let Some(batch) = batches.iter().find(|b| b["id"] == id) {
            return batch["lane"].as_str().unwrap_or_default().to_string();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("batch {id} never appeared in /api/v1/stats");
}

/// `/api/v1/stats`'s count of items answered in `lane`.
async fn items_ok_in(server: &TestServer, lane: &str) -> u64 {
    let (status, body) = get(server, "/api/v1/stats").await;
    assert_eq!(status, 200, "{body}");
    body["lanes"][lane]["items_ok"].as_u64().unwrap_or(0)
}

#[actix_rt::test]
async fn query_is_answered_at_each_priority_in_its_lane() {
    let server = start();
    for (priority, lane) in [("HIGH", "high"), ("MEDIUM", "medium"), ("LOW", "low")] {
        let before = items_ok_in(&server, lane).await;
        let prompt = format!("what is {lane} priority?");
        let (status, body) = post(&server, "/v1/query", &query(priority, &prompt)).await;
        assert_eq!(status, 200, "{priority}: {body}");
        assert_eq!(body["request_id"], format!("req-{priority}"), "{body}");
        assert_eq!(body["username"], "ada", "{body}");
        assert!(body["text"].as_str().is_some_and(|t| t.contains(&prompt)), "{body}");
        assert!(body["tokens_used"].as_u64().is_some_and(|n| n > 0), "{body}");
        assert!(body["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{body}");
        assert_eq!(body["created_at"], "2026-02-01T12:00:00Z", "{body}");
        let completed = body["completed_at"].as_str().unwrap_or_default();
        assert!(OffsetDateTime::parse(completed, &Rfc3339).is_ok(), "completed_at: {body}");
        let mut after = before;
        let deadline = std::time::Instant::now() + WAIT;
        while std::time::Instant::now() < deadline {
            after = items_ok_in(&server, lane).await;
            if after > before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(after, before + 1, "{priority} is answered in lane {lane}");
    }
    server.stop().await;
}

#[actix_rt::test]
async fn chat_completion_has_openai_shape_and_batch_id() {
    let server = start();
    let response = client()
        .post(server.url("/v1/chat/completions"))
        .json(&completion("name a river"))
        .send()
        .await
        .expect("request");
    let batch_id = response.headers().get("x-ferry-batch-id").and_then(|v| v.to_str().ok()).map(String::from);
    let (status, body) = json_of(response).await;
    assert_eq!(status, 200, "{body}");
    assert!(batch_id.is_some_and(|id| !id.is_empty()), "x-ferry-batch-id header");
    assert!(body["id"].as_str().is_some_and(|id| id.starts_with("chatcmpl-")), "{body}");
    assert_eq!(body["object"], "chat.completion", "{body}");
    assert!(body["created"].as_u64().is_some_and(|t| t > 1_700_000_000), "{body}");
    assert_eq!(body["model"], "mock", "{body}");
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0, "{body}");
    assert_eq!(choice["message"]["role"], "assistant", "{body}");
    assert!(choice["message"]["content"].as_str().is_some_and(|t| t.contains("name a river")), "{body}");
    assert_eq!(choice["finish_reason"], "stop", "{body}");
    let usage = &body["usage"];
    let (prompt, reply, total) = (
        usage["prompt_tokens"].as_u64().unwrap_or(0),
        usage["completion_tokens"].as_u64().unwrap_or(0),
        usage["total_tokens"].as_u64().unwrap_or(0),
    );
    assert!(prompt > 0 && reply > 0 && total == prompt + reply, "usage: {body}");
    server.stop().await;
}

#[actix_rt::test]
async fn priority_header_picks_the_lane_in_any_case() {
    let server = start();
    for (header, lane) in
        [("high", "high"), ("HIGH", "high"), ("Low", "low"), ("bulk", "bulk"), ("", "medium")]
    {
        let mut request = client().post(server.url("/v1/chat/completions")).json(&completion("which lane?"));
        if !header.is_empty() {
            request = request.header("x-ferry-priority", header);
        }
        let response = request.send().await.expect("request");
        let batch_id =
            response.headers().get("x-ferry-batch-id").and_then(|v| v.to_str().ok()).map(String::from);
        let (status, body) = json_of(response).await;
        assert_eq!(status, 200, "{header}: {body}");
        let batch_id = batch_id.expect("x-ferry-batch-id header");
        assert_eq!(lane_of_batch(&server, &batch_id).await, lane, "x-ferry-priority: {header:?}");
    }
    server.stop().await;
}

#[actix_rt::test]
async fn models_lists_the_configured_models() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = quick_config(&dir);
    config.upstreams[0].models = vec!["mock".into(), "mock-large".into()];
    let mut second = config.upstreams[0].clone();
    second.name = "mock-b".into();
    second.models = vec!["mock-large".into(), "mock-small".into()];
    config.upstreams.push(second);
    let server = TestServer::start_with(config, Keys::none(), dir);
    let (status, body) = get(&server, "/v1/models").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "list", "{body}");
    let data = body["data"].as_array().expect("data array");
    let ids: Vec<&str> = data.iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(ids, ["mock", "mock-large", "mock-small"], "each model once: {body}");
    assert!(data.iter().all(|m| m["object"] == "model"), "{body}");
    assert_eq!(data[2]["owned_by"], "mock-b", "{body}");
    server.stop().await;
}

#[actix_rt::test]
async fn an_upstream_failure_is_a_502_with_a_json_error() {
    let server = start_failing();
    for (path, body) in
        [("/v1/chat/completions", completion("doomed")), ("/v1/query", query("HIGH", "doomed"))]
    {
        let (status, reply) = post(&server, path, &body).await;
        assert_eq!(status, 502, "{path}: {reply}");
        let (message, _) = error_parts(&reply);
        assert!(!message.is_empty(), "{path}: {reply}");
        assert_eq!(reply["error"]["type"], "upstream_error", "{path}: {reply}");
    }
    server.stop().await;
}

// ---- Bad input ----

/// One bad request: where it goes, what it carries, and what the answer must say.
struct Case {
    name: &'static str,
    path: &'static str,
    /// `(name, value)` of an extra header.
    header: Option<(&'static str, &'static str)>,
    /// `None` sends `body` as text/plain instead of JSON.
    content_type: Option<&'static str>,
    body: String,
    status: u16,
    /// The `param` the error must carry, or (with a leading `~`) a fragment of its message.
    names: &'static str,
}

fn q(name: &'static str, body: Value, names: &'static str) -> Case {
    Case {
        name,
        path: "/v1/query",
        header: None,
        content_type: Some("application/json"),
        body: body.to_string(),
        status: 400,
        names,
    }
}

fn c(name: &'static str, body: Value, names: &'static str) -> Case {
    Case { path: "/v1/chat/completions", ..q(name, body, names) }
}

/// A valid query with `field` set to `value`, or removed when `value` is `None`.
fn query_with(field: &str, value: Option<Value>) -> Value {
    let mut body = query("HIGH", "hello");
    match value {
        Some(value) => body[field] = value,
        None => {
            body.as_object_mut().expect("object").remove(field);
        }
    }
    body
}

fn completion_with(field: &str, value: Value) -> Value {
    let mut body = completion("hello");
    body[field] = value;
    body
}

fn cases() -> Vec<Case> {
    let user = |content: Value| json!([{"role": "user", "content": content}]);
    vec![
        q("query: missing prompt", query_with("prompt", None), "prompt"),
        q("query: missing priority", query_with("priority", None), "priority"),
        q("query: empty username", query_with("username", Some(json!(""))), "username"),
        q("query: blank prompt", query_with("prompt", Some(json!("   "))), "prompt"),
        q("query: empty request_id", query_with("request_id", Some(json!(""))), "request_id"),
        q("query: bad created_at", query_with("created_at", Some(json!("yesterday"))), "created_at"),
        q("query: priority URGENT", query_with("priority", Some(json!("URGENT"))), "priority"),
        q("query: unknown field", query_with("lane", Some(json!("high"))), "lane"),
        q("query: prompt a number", query_with("prompt", Some(json!(42))), "prompt"),
        q("query: username null", query_with("username", Some(Value::Null)), "username"),
        c("completions: stream true", completion_with("stream", json!(true)), "stream"),
        c("completions: n 2", completion_with("n", json!(2)), "n"),
        c("completions: empty messages", completion_with("messages", json!([])), "messages"),
        c("completions: missing messages", json!({"model": "mock"}), "messages"),
        c("completions: missing model", json!({"messages": user(json!("x"))}), "model"),
        c(
            "completions: role tool",
            completion_with("messages", json!([{"role": "tool", "content": "x"}])),
            "messages[0].role",
        ),
        c(
            "completions: image content part",
            completion_with(
                "messages",
                user(json!([{"type": "image_url", "image_url": {"url": "http://x/y.png"}}])),
            ),
            "messages[0].content",
        ),
        c(
            "completions: content a number",
            completion_with("messages", user(json!(7))),
            "messages[0].content",
        ),
        c("completions: messages a string", completion_with("messages", json!("hi")), "messages"),
        c("completions: unknown model", completion_with("model", json!("gpt-9")), "model"),
        c("completions: max_tokens negative", completion_with("max_tokens", json!(-1)), "max_tokens"),
        Case {
            header: Some(("x-ferry-priority", "urgent")),
            ..c("completions: bad x-ferry-priority", completion("hello"), "x-ferry-priority")
        },
        Case {
            content_type: None,
            status: 415,
            ..c("completions: text/plain body", completion("x"), "~Content-Type")
        },
        Case {
            body: "{\"model\": \"mock\",".into(),
            ..c("completions: malformed JSON", json!({}), "~invalid JSON")
        },
        Case {
            content_type: None,
            status: 415,
            ..q("query: text/plain body", query("HIGH", "x"), "~Content-Type")
        },
        Case { body: "not json".into(), ..q("query: malformed JSON", json!({}), "~invalid JSON") },
    ]
}

#[actix_rt::test]
async fn bad_single_prompt_requests_name_the_field() {
    let server = start();
    let cases = cases();
    assert!(cases.len() >= 15, "the table should hold at least 15 cases");
    let mut failures = Vec::new();
    for case in &cases {
        let mut request = client().post(server.url(case.path)).body(case.body.clone());
        request = match case.content_type {
            Some(kind) => request.header("content-type", kind),
            None => request.header("content-type", "text/plain"),
        };
        if let Some((name, value)) = case.header {
            request = request.header(name, value);
        }
        let (status, body) = json_of(request.send().await.expect("request")).await;
        if status != case.status {
            failures.push(format!("{}: status {status}, expected {}: {body}", case.name, case.status));
            continue;
        }
        let named = error_names(&body, case.names);
        if status >= 500 || !named {
            failures.push(format!("{}: error does not name {:?}: {body}", case.name, case.names));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    let (status, body) = get(&server, "/health").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")), "the server still answers");
    let (status, body) = post(&server, "/v1/chat/completions", &completion("still here?")).await;
    assert_eq!(status, 200, "and still completes: {body}");
    server.stop().await;
}
