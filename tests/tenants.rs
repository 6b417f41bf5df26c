//! `[[tenants]]`: keys grouped under a name with limits of their own. Over a real socket, with
//! `ferry mock-upstream` as the upstream: a tenant over its prompts per minute gets 429 with
//! `Retry-After` while another tenant is served; a lane not its own is 403; more than
//! `max_queued` prompts at once is 429; all its keys share its chats and limits; a tenant's
//! batch job is paced to its budget instead of refused; `/metrics` shows each tenant.

mod common;

use std::time::{Duration, Instant};

use common::files::{batch_file, upload_batch};
use common::{ADMIN_KEY, TestServer, client, error_parts, http_config, json_of, mock_args, parse_prometheus};
use common::{start_mock, upstream_for};
use ferry::config::{Config, ProviderKind, TenantConfig};
use ferry::http::Keys;
use ferry::mock_upstream::MockUpstreamArgs;
use serde_json::{Value, json};

const ACME_1: &str = "acme-key-one-0123456789";
const ACME_2: &str = "acme-key-two-0123456789";
const BETA: &str = "beta-key-only-0123456789";

fn tenant(name: &str, rpm: Option<u64>, max_queued: Option<usize>, lanes: Option<&[&str]>) -> TenantConfig {
    TenantConfig {
        rpm,
        max_queued,
        lanes: lanes.map(|l| l.iter().map(|s| s.to_string()).collect()),
        ..TenantConfig::new(name, &format!("FERRY_TEST_TENANT_{}_KEYS", name.to_uppercase()))
    }
}

/// A server with tenants `acme` (two keys) and `beta` (one), answering through a mock upstream
/// that takes `latency_ms` a call.
fn server(tenants: Vec<TenantConfig>, latency_ms: u64) -> TestServer {
    let mock = start_mock(MockUpstreamArgs { latency_ms, ..mock_args() });
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config: Config = http_config(&dir);
    let mut upstream = upstream_for(ProviderKind::Openai, &mock);
    upstream.models = vec!["mock".into()];
    config.upstreams = vec![upstream];
    config.jobs.lane = Some("bulk".into());
    config.tenants = tenants;
    let keys = Keys::new(&[] as &[&str], &[ADMIN_KEY])
        .with_tenant("acme", &[ACME_1, ACME_2])
        .with_tenant("beta", &[BETA]);
    // The mock lives as long as the test's runtime (it runs on the test's actix system).
    std::mem::forget(mock);
    TestServer::start_with(config, keys, dir)
}

async fn prompt(server: &TestServer, key: &str, text: &str) -> (u16, Option<String>, Value) {
    let response = client()
        .post(server.url("/api/v1/prompt"))
        .bearer_auth(key)
        .json(&json!({ "prompt": text }))
        .send()
        .await
        .expect("prompt");
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    let (status, body) = json_of(response).await;
    (status, retry_after, body)
}

/// Creates a batch of `n` chat lines as acme (`ACME_1`) with `completion_window`; returns its id.
async fn create_batch(server: &TestServer, n: usize, completion_window: &str) -> String {
    let file = upload_batch(&server.base, Some(ACME_1), &batch_file(n)).await;
    let body = json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": completion_window});
    let response = client().post(server.url("/v1/batches")).bearer_auth(ACME_1).json(&body);
    let (status, batch) = json_of(response.send().await.expect("create")).await;
    assert_eq!(status, 200, "{batch}");
    batch["id"].as_str().expect("id").to_string()
}

async fn metrics(server: &TestServer) -> std::collections::BTreeMap<String, f64> {
    let response = client().get(server.url("/metrics")).bearer_auth(ADMIN_KEY).send().await.expect("metrics");
    assert_eq!(response.status().as_u16(), 200);
    parse_prometheus(&response.text().await.expect("metrics text"))
}

#[actix_rt::test]
async fn a_tenant_over_its_prompts_per_minute_waits_while_another_is_served() {
    let server = server(vec![tenant("acme", Some(3), None, None), tenant("beta", None, None, None)], 0);
    // Three prompts a minute between acme's two keys.
    for (key, text) in [(ACME_1, "a1"), (ACME_2, "a2"), (ACME_1, "a3")] {
        let (status, _, body) = prompt(&server, key, text).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, retry_after, body) = prompt(&server, ACME_2, "a4").await;
    assert_eq!(status, 429, "{body}");
    let (message, _) = error_parts(&body);
    assert!(message.contains("`acme`") && message.contains("rpm"), "{message}");
    let wait: u64 = retry_after.as_deref().and_then(|s| s.parse().ok()).expect("Retry-After in seconds");
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    // The other tenant is not held back by acme's limit.
    for n in 0..5 {
        let (status, _, body) = prompt(&server, BETA, &format!("b{n}")).await;
        assert_eq!(status, 200, "{body}");
    }
    // One request of more prompts than a minute allows can never fit: 400, not 429.
    let five: Vec<String> = (0..5).map(|n| format!("p{n}")).collect();
    let response = client()
        .post(server.url("/api/v1/prompts"))
        .bearer_auth(BETA)
        .json(&json!({ "prompts": five }))
        .send()
        .await
        .expect("prompts");
    assert_eq!(response.status().as_u16(), 200, "beta has no limit");
    let response =
        client().post(server.url("/api/v1/prompts")).bearer_auth(ACME_1).json(&json!({ "prompts": five }));
    let (status, body) = json_of(response.send().await.expect("prompts")).await;
    assert_eq!(status, 400, "{body}");
    assert!(error_parts(&body).0.contains("send fewer prompts per request"), "{body}");

    // Both acme keys see the tenant's chats (its own, not beta's).
    let response =
        client().get(server.url("/v1/chat?limit=50")).bearer_auth(ACME_2).send().await.expect("chat");
    let (status, chats) = json_of(response).await;
    assert_eq!(status, 200, "{chats}");
    let listed = chats.to_string();
    for text in ["a1", "a2", "a3"] {
        assert!(listed.contains(&format!("\"{text}\"")), "{text} missing from acme's chats: {listed}");
    }
    assert!(!listed.contains("\"b0\""), "beta's chat listed for acme: {listed}");

    let figures = metrics(&server).await;
    assert_eq!(figures.get("ferry_tenant_refused_total{tenant=\"acme\",reason=\"rpm\"}"), Some(&1.0));
    assert_eq!(figures.get("ferry_tenant_refused_total{tenant=\"acme\",reason=\"too_big\"}"), Some(&1.0));
    assert_eq!(figures.get("ferry_tenant_accepted_total{tenant=\"acme\"}"), Some(&3.0));
    assert_eq!(figures.get("ferry_tenant_accepted_total{tenant=\"beta\"}"), Some(&10.0));
    assert_eq!(figures.get("ferry_tenant_window_used{tenant=\"acme\",window=\"rpm\"}"), Some(&3.0));
    assert_eq!(figures.get("ferry_tenant_limit{tenant=\"acme\",limit=\"rpm\"}"), Some(&3.0));
    server.stop().await;
}

#[actix_rt::test]
async fn lanes_and_max_queued_are_the_tenants_own() {
    // acme may use the low lane only, with two prompts unanswered at a time; calls take 600 ms,
    // so two prompts in flight are still unanswered when the third arrives.
    let server = server(vec![tenant("acme", None, Some(2), Some(&["low"]))], 600);
    let chat = |key: &'static str, priority: &'static str| {
        let body = json!({"model": "mock", "messages": [{"role": "user", "content": "hi"}]});
        client()
            .post(server.url("/v1/chat/completions"))
            .bearer_auth(key)
            .header("x-ferry-priority", priority)
            .json(&body)
            .send()
    };
    let (status, body) = json_of(chat(ACME_1, "high").await.expect("chat")).await;
    assert_eq!(status, 403, "{body}");
    let (message, _) = error_parts(&body);
    assert!(message.contains("lane `high`") && message.contains("its lanes: low"), "{message}");
    // /api/v1/prompt goes through the bulk lane, and batch jobs through [jobs] lane (bulk here).
    let (status, _, body) = prompt(&server, ACME_2, "bulk").await;
    assert_eq!(status, 403, "{body}");
    let line = json!({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "mock", "messages": [{"role": "user", "content": "x"}]}});
    let file = upload_batch(&server.base, Some(ACME_1), format!("{line}\n").as_bytes()).await;
    let body = json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    let response = client().post(server.url("/v1/batches")).bearer_auth(ACME_1).json(&body);
    let (status, body) = json_of(response.send().await.expect("create")).await;
    assert_eq!(status, 403, "{body}");
    assert!(error_parts(&body).0.contains("lane `bulk`"), "{body}");

    let first = actix_rt::spawn(chat(ACME_1, "low"));
    let second = actix_rt::spawn(chat(ACME_2, "low"));
    // Both are admitted before the third is sent.
    let deadline = Instant::now() + Duration::from_secs(5);
    while metrics(&server).await.get("ferry_tenant_queued{tenant=\"acme\"}") != Some(&2.0) {
        assert!(Instant::now() < deadline, "two prompts never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let response = chat(ACME_1, "low").await.expect("chat");
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    let (status, body) = json_of(response).await;
    assert_eq!(status, 429, "{body}");
    assert!(error_parts(&body).0.contains("max_queued = 2"), "{body}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    for task in [first, second] {
        let response = task.await.expect("sender ran").expect("chat");
        assert_eq!(response.status().as_u16(), 200);
    }
    assert_eq!(metrics(&server).await.get("ferry_tenant_queued{tenant=\"acme\"}"), Some(&0.0));
    let (status, body) = json_of(chat(ACME_1, "low").await.expect("chat")).await;
    assert_eq!(status, 200, "{body}");
    let figures = metrics(&server).await;
    assert_eq!(figures.get("ferry_tenant_refused_total{tenant=\"acme\",reason=\"lane\"}"), Some(&3.0));
    assert_eq!(figures.get("ferry_tenant_refused_total{tenant=\"acme\",reason=\"max_queued\"}"), Some(&1.0));
    server.stop().await;
}

#[actix_rt::test]
async fn a_tenants_batch_job_is_paced_to_its_budget_not_refused() {
    // 12 prompts a minute, a batch of 16 lines: 12 go at once, the other 4 once the minute has
    // passed. Nothing fails; the job waits.
    let server = server(vec![tenant("acme", Some(12), None, None)], 0);
    let id = create_batch(&server, 16, "24h").await;
    // The other key of the tenant sees the job.
    let get =
        |key: &'static str| client().get(server.url(&format!("/v1/batches/{id}"))).bearer_auth(key).send();
    let started = Instant::now();
    let completed = |batch: &Value| batch["request_counts"]["completed"].as_u64().unwrap_or(0);
    loop {
        let (status, batch) = json_of(get(ACME_2).await.expect("get")).await;
        assert_eq!(status, 200, "{batch}");
        if completed(&batch) >= 12 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the first minute's 12 never ran: {batch}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Well inside the minute: the rest wait for the window, and the job is still under way.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, batch) = json_of(get(ACME_1).await.expect("get")).await;
    assert_eq!(batch["status"], "in_progress", "{batch}");
    assert_eq!(completed(&batch), 12, "{batch}");
    assert!(
        metrics(&server).await.get("ferry_tenant_paced_total{tenant=\"acme\"}").is_some_and(|n| *n >= 1.0)
    );
    // A minute after the first 12, the other 4 go.
    loop {
        let (_, batch) = json_of(get(ACME_1).await.expect("get")).await;
        if batch["status"] == "completed" {
            assert_eq!(completed(&batch), 16, "{batch}");
            assert!(started.elapsed() >= Duration::from_secs(55), "the budget was not kept");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(90), "the job never finished: {batch}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    server.stop().await;
}

#[actix_rt::test]
async fn a_paced_tenant_batch_job_still_expires_on_time() {
    // 4 prompts a minute, 10 lines, a 3-second window: 4 run at once, the other 6 wait for the
    // budget (about a minute) — but the job's window ends first. The job expires at its end, not
    // when the budget has room, and each of the 6 unsent lines ends in an error.
    let server = server(vec![tenant("acme", Some(4), None, None)], 0);
    // Timed from before the upload: the window starts at create, a little later.
    let started = Instant::now();
    let id = create_batch(&server, 10, "3s").await;
    let batch = loop {
        let response = client().get(server.url(&format!("/v1/batches/{id}"))).bearer_auth(ACME_1).send();
        let (status, batch) = json_of(response.await.expect("get")).await;
        assert_eq!(status, 200, "{batch}");
        if batch["status"] == "expired" {
            break batch;
        }
        assert_ne!(batch["status"], "completed", "the budget was not kept: {batch}");
        assert!(started.elapsed() < Duration::from_secs(20), "a paced job outlived its window: {batch}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(started.elapsed() >= Duration::from_secs(2), "expired before its window ended: {batch}");
    let counts = &batch["request_counts"];
    assert_eq!(
        (counts["total"].as_u64(), counts["completed"].as_u64(), counts["failed"].as_u64()),
        (Some(10), Some(4), Some(6)),
        "{batch}"
    );
    // The unsent lines are in the error file, each naming the expiry.
    let errors = batch["error_file_id"].as_str().expect("an error file");
    let response =
        client().get(server.url(&format!("/v1/files/{errors}/content"))).bearer_auth(ACME_1).send();
    let text = response.await.expect("errors").text().await.expect("error text");
    let codes: Vec<String> = text
        .lines()
        .map(|line| {
            let line: Value = serde_json::from_str(line).expect("an error line");
            line["error"]["code"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(codes, vec!["batch_expired".to_string(); 6], "{text}");
    server.stop().await;
}

#[actix_rt::test]
async fn a_request_the_engine_refuses_costs_the_tenant_nothing() {
    // The bulk lane (behind /api/v1/prompts) holds 2 prompts: a request of 3 is refused whole by
    // the lane after the tenant admitted it. It takes nothing from the tenant's minute.
    let mock = start_mock(MockUpstreamArgs { latency_ms: 0, ..mock_args() });
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config: Config = http_config(&dir);
    let mut upstream = upstream_for(ProviderKind::Openai, &mock);
    upstream.models = vec!["mock".into()];
    config.upstreams = vec![upstream];
    if let Some(bulk) = config.lanes.get_mut("bulk") {
        bulk.queue_capacity = Some(2);
    }
    config.tenants = vec![tenant("acme", Some(10), Some(5), None)];
    let keys = Keys::new(&[] as &[&str], &[ADMIN_KEY]).with_tenant("acme", &[ACME_1]);
    std::mem::forget(mock);
    let server = TestServer::start_with(config, keys, dir);
    let prompts = |n: usize| {
        let body = json!({ "prompts": (0..n).map(|i| format!("question {i}")).collect::<Vec<_>>() });
        client().post(server.url("/api/v1/prompts")).bearer_auth(ACME_1).json(&body).send()
    };
    for _ in 0..5 {
        let (status, body) = json_of(prompts(3).await.expect("prompts")).await;
        assert_eq!(status, 429, "{body}");
        assert!(!error_parts(&body).0.contains("tenant"), "the lane refused, not the tenant: {body}");
    }
    let used = |figures: &std::collections::BTreeMap<String, f64>| {
        figures.get("ferry_tenant_window_used{tenant=\"acme\",window=\"rpm\"}").copied()
    };
    assert_eq!(used(&metrics(&server).await), Some(0.0), "15 refused prompts took nothing");
    // Two fit: they are answered and counted.
    let (status, body) = json_of(prompts(2).await.expect("prompts")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(used(&metrics(&server).await), Some(2.0));
    // More prompts in one request than max_queued (5) could never be held: 400, no Retry-After.
    let response = prompts(6).await.expect("prompts");
    assert!(response.headers().get("retry-after").is_none());
    let (status, body) = json_of(response).await;
    assert_eq!(status, 400, "{body}");
    assert!(error_parts(&body).0.contains("max_queued"), "{body}");
    server.stop().await;
}
