//! The HTTP API's happy paths over a real socket: health, prompts (order, length, per-prompt
//! errors), live batch size and delay, config without secrets, stats, Prometheus metrics, auth
//! and CORS. Each test starts its own engine and server on a free port with its own temp dir.

mod common;

use std::time::Duration;

use common::{ADMIN_KEY, INFERENCE_KEY, TestServer, answers, client, http_config, json_of, parse_prometheus};
use ferry::config::{Config, ProviderKind, UpstreamConfig};
use ferry::engine::FaultTarget;
use ferry::http::Keys;
use serde_json::{Value, json};

/// A config whose mock upstream fails every call once, with no retry.
fn failing_config(dir: &tempfile::TempDir, error_rate: f64) -> Config {
    let mut config = http_config(dir);
    config.upstreams[0].max_retries = 0;
    config.upstreams[0].cooldown_failures = 1_000_000;
    config.upstreams[0].mock.error_rate = error_rate;
    config
}

async fn post(server: &TestServer, path: &str, body: Value) -> (u16, Value) {
    json_of(client().post(server.url(path)).json(&body).send().await.expect("request")).await
}

async fn get(server: &TestServer, path: &str) -> (u16, Value) {
    json_of(client().get(server.url(path)).send().await.expect("request")).await
}

#[actix_rt::test]
async fn health_reports_each_lane_and_upstream() {
    let server = TestServer::start(Keys::none());
    let (status, body) = get(&server, "/health").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["failed_actors"], json!([]), "{body}");
    for lane in ["high", "medium", "low", "bulk"] {
        assert_eq!(body["lanes"][lane]["depth"], 0, "{body}");
    }
    assert!(body["upstreams"]["mock"]["state"].is_string(), "{body}");
    server.stop().await;
}

/// An actor that kept panicking is reported: `/health` says "degraded" and names it, and new
/// prompts are refused with a 503 that says why.
#[actix_rt::test]
async fn health_is_degraded_and_prompts_refused_when_an_actor_failed() {
    let server = TestServer::start(Keys::none());
    for round in 0..=ferry::engine::MAX_RESTARTS {
        server.engine.inject_panic(FaultTarget::Lane("bulk".into())).await.expect("fault armed");
        let (status, body) =
            post(&server, "/api/v1/prompt", json!({"prompt": format!("round {round}")})).await;
        if round < ferry::engine::MAX_RESTARTS {
            assert_eq!(status, 200, "{round}: {body}");
        }
    }
    let (status, body) = get(&server, "/health").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["status"], &body["failed_actors"]),
        (&json!("degraded"), &json!(["lane:bulk"])),
        "{body}"
    );
    let (status, body) = post(&server, "/api/v1/prompt", json!({"prompt": "more"})).await;
    assert_eq!(status, 503, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("lane:bulk") && message.contains("no new work"), "{body}");
    server.stop().await;
}

#[actix_rt::test]
async fn a_single_prompt_is_answered() {
    let server = TestServer::start(Keys::none());
    let (status, body) = post(&server, "/api/v1/prompt", json!({"prompt": "capital of France?"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success");
    assert!(answers(body["response"].as_str().unwrap_or(""), "capital of France?"), "{body}");
    assert!(body.get("error").is_none(), "{body}");
    server.stop().await;
}

#[actix_rt::test]
async fn prompts_come_back_in_order_and_length() {
    let server = TestServer::start(Keys::none());
    let prompts: Vec<Value> = (0..25)
        .map(|i| if i % 2 == 0 { json!(format!("p-{i}")) } else { json!({"prompt": format!("p-{i}")}) })
        .collect();
    let (status, body) = post(&server, "/api/v1/prompts", json!({ "prompts": prompts })).await;
    assert_eq!(status, 200, "{body}");
    let responses = body["responses"].as_array().expect("responses array");
    assert_eq!(responses.len(), 25);
    for (i, reply) in responses.iter().enumerate() {
        assert_eq!(reply["status"], "success", "{reply}");
        assert!(answers(reply["response"].as_str().unwrap_or(""), &format!("p-{i}")), "{i}: {reply}");
    }
    server.stop().await;
}

#[actix_rt::test]
async fn one_failing_prompt_never_fails_the_others() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start_with(failing_config(&dir, 0.5), Keys::none(), dir);
    let prompts: Vec<String> = (0..40).map(|i| format!("q-{i}")).collect();
    let (status, body) = post(&server, "/api/v1/prompts", json!({ "prompts": prompts })).await;
    assert_eq!(status, 200, "{body}");
    let responses = body["responses"].as_array().expect("responses array");
    assert_eq!(responses.len(), 40);
    let (mut ok, mut failed) = (0, 0);
    for (i, reply) in responses.iter().enumerate() {
        if reply["status"] == "success" {
            ok += 1;
            assert!(answers(reply["response"].as_str().unwrap_or(""), &format!("q-{i}")), "{reply}");
            assert!(reply.get("error").is_none());
        } else {
            failed += 1;
            assert_eq!(reply["status"], "error", "{reply}");
            assert_eq!(reply["response"], "", "{reply}");
            assert!(reply["error"].as_str().is_some_and(|e| !e.is_empty()), "{reply}");
        }
    }
    assert!(ok > 0 && failed > 0, "expected both outcomes at a 50% error rate: {ok} ok, {failed} failed");
    server.stop().await;
}

#[actix_rt::test]
async fn a_failed_single_prompt_is_a_200_with_status_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start_with(failing_config(&dir, 1.0), Keys::none(), dir);
    let (status, body) = post(&server, "/api/v1/prompt", json!({"prompt": "doomed"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["response"], "", "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("upstream")), "{body}");
    server.stop().await;
}

#[actix_rt::test]
async fn batch_size_and_delay_change_live() {
    let server = TestServer::start(Keys::none());
    let (status, body) = post(&server, "/api/v1/config/batch-size", json!({"size": 3})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["batch_size"], 3);
    assert!(body["message"].as_str().is_some_and(|m| m.contains('3')), "{body}");
    let (status, body) = post(&server, "/api/v1/config/batch-delay", json!({"delay_ms": 250})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["batch_delay_ms"], 250);
    assert!(body["message"].is_string());

    let (status, config) = get(&server, "/api/v1/config").await;
    assert_eq!(status, 200, "{config}");
    assert_eq!((config["batch_size"].clone(), config["batch_delay_ms"].clone()), (json!(3), json!(250)));
    assert_eq!(config["lanes"]["bulk"]["max_batch"], 3, "bulk follows [batching]: {config}");
    assert_eq!(config["lanes"]["high"]["max_batch"], 6, "high sets its own: {config}");

    // The new size shapes the next batches: 7 prompts in batches of at most 3.
    post(&server, "/api/v1/config/batch-delay", json!({"delay_ms": 0})).await;
    let (_, body) =
        post(&server, "/api/v1/prompts", json!({"prompts": ["a", "b", "c", "d", "e", "f", "g"]})).await;
    assert_eq!(body["responses"].as_array().map(Vec::len), Some(7));
    let snapshot = server.engine.snapshot().await.expect("snapshot");
    assert!(snapshot.recent_batches.iter().all(|b| b.size <= 3), "{:?}", snapshot.recent_batches);
    server.stop().await;
}

#[actix_rt::test]
async fn config_shows_lanes_and_upstreams_without_secrets() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = http_config(&dir);
    config.upstreams.push(UpstreamConfig {
        name: "local".into(),
        provider: ProviderKind::Openai,
        base_url: Some("http://admin:hunter2secret@127.0.0.1:9/v1".into()),
        models: vec!["local".into()],
        ..UpstreamConfig::mock("local")
    });
    let server = TestServer::start_with(config, Keys::none(), dir);
    let response = client().get(server.url("/api/v1/config")).send().await.expect("request");
    let text = response.text().await.expect("body");
    assert!(!text.contains("hunter2secret"), "{text}");
    let body: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(body["upstreams"][1]["base_url"], "http://***@127.0.0.1:9/v1");
    assert_eq!(body["lanes"].as_object().map(|l| l.len()), Some(4));
    server.stop().await;
}

#[actix_rt::test]
async fn stats_show_recent_batches_throughput_and_lanes() {
    let server = TestServer::start(Keys::none());
    let prompts: Vec<String> = (0..30).map(|i| format!("s-{i}")).collect();
    post(&server, "/api/v1/prompts", json!({ "prompts": prompts })).await;
    let body = eventually(&server, "/api/v1/stats", |b| b["items_ok"] == 30).await;
    assert_eq!(body["lanes"]["bulk"]["items_ok"], 30, "{body}");
    assert!(body["lanes"]["bulk"]["batches"].as_u64().is_some_and(|n| n >= 3), "{body}");
    assert_eq!(body["throughput"]["items"], 30, "{body}");
    assert!(body["throughput"]["items_per_second"].as_f64().is_some_and(|r| r > 0.0), "{body}");
    let recent = body["recent_batches"].as_array().expect("recent batches");
    assert!(!recent.is_empty());
    for batch in recent {
        assert_eq!(batch["lane"], "bulk");
        assert!(batch["duration_ms"].is_number() && batch["id"].is_string(), "{batch}");
    }
    assert!(body["time_per_batch_ms"]["p95"].is_number(), "{body}");
    assert_eq!(body["failures"]["items_failed"], 0, "{body}");
    server.stop().await;
}

#[actix_rt::test]
async fn metrics_parse_as_prometheus_text_and_count_items() {
    let server = TestServer::start(Keys::none());
    let prompts: Vec<String> = (0..30).map(|i| format!("m-{i}")).collect();
    post(&server, "/api/v1/prompts", json!({ "prompts": prompts })).await;
    let mut series = Default::default();
    // The counters reach the metrics hub just after the replies: poll for them.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let response = client().get(server.url("/metrics")).send().await.expect("request");
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap_or("").to_string();
        assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
        series = parse_prometheus(&response.text().await.expect("body"));
        if series.get("ferry_items_total{lane=\"bulk\",outcome=\"ok\"}") == Some(&30.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let at = |key: &str| series.get(key).copied().unwrap_or_else(|| panic!("no {key} in {series:?}"));
    assert_eq!(at("ferry_items_total{lane=\"bulk\",outcome=\"ok\"}"), 30.0);
    assert_eq!(at("ferry_items_total{lane=\"bulk\",outcome=\"failed\"}"), 0.0);
    let batches = at("ferry_batches_total{lane=\"bulk\"}");
    assert!(batches >= 3.0);
    assert_eq!(at("ferry_batch_duration_seconds_count{lane=\"bulk\"}"), batches);
    assert_eq!(at("ferry_batch_duration_seconds_bucket{lane=\"bulk\",le=\"+Inf\"}"), batches);
    assert_eq!(at("ferry_queue_depth{lane=\"high\"}"), 0.0);
    for family in ["calls", "retries", "rate_limited", "backpressure", "limit_waits"] {
        at(&format!("ferry_upstream_{family}_total{{upstream=\"mock\"}}"));
    }
    at("ferry_upstream_in_flight{upstream=\"mock\"}");
    at("ferry_actor_restarts_total");
    server.stop().await;
}

#[actix_rt::test]
async fn keys_open_inference_to_both_kinds_and_config_and_observability_to_admins_only() {
    let server = TestServer::start(Keys::new(&[INFERENCE_KEY], &[ADMIN_KEY]));
    let send = |path: &str, key: Option<&str>| {
        let mut request = client().get(server.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };
    assert_eq!(send("/health", None).await.expect("request").status(), 200, "health needs no key");
    for path in ["/api/v1/stats", "/metrics", "/api/v1/events"] {
        // Engine-wide figures count every key's work: admin keys only.
        assert_eq!(send(path, Some(INFERENCE_KEY)).await.expect("request").status(), 403, "{path}");
    }
    assert_eq!(send("/api/v1/stats", Some(ADMIN_KEY)).await.expect("request").status(), 200);
    assert_eq!(send("/metrics", Some(ADMIN_KEY)).await.expect("request").status(), 200);
    for key in [INFERENCE_KEY, ADMIN_KEY] {
        let prompt =
            client().post(server.url("/api/v1/prompt")).bearer_auth(key).json(&json!({"prompt": "hi"}));
        assert_eq!(prompt.send().await.expect("request").status(), 200);
    }
    assert_eq!(send("/api/v1/config", Some(ADMIN_KEY)).await.expect("request").status(), 200);
    assert_eq!(send("/api/v1/config", Some(INFERENCE_KEY)).await.expect("request").status(), 403);
    assert_eq!(send("/api/v1/stats", None).await.expect("request").status(), 401);
    let (status, body) = json_of(send("/api/v1/stats", Some("not-a-key")).await.expect("request")).await;
    assert_eq!(status, 401);
    assert!(!body.to_string().contains("not-a-key"), "the presented key is not echoed: {body}");
    server.stop().await;
}

#[actix_rt::test]
async fn cors_headers_only_for_configured_origins() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = http_config(&dir);
    config.server.cors_origins = vec!["http://localhost:3000".into()];
    let server = TestServer::start_with(config, Keys::none(), dir);
    let preflight = |origin: &'static str| {
        client()
            .request(reqwest::Method::OPTIONS, server.url("/api/v1/prompts"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "content-type, authorization")
            .send()
    };
    let allowed = preflight("http://localhost:3000").await.expect("request");
    assert_eq!(
        allowed.headers().get("access-control-allow-origin").map(|v| v.as_bytes()),
        Some(&b"http://localhost:3000"[..])
    );
    let refused = preflight("http://evil.example").await.expect("request");
    assert!(refused.headers().get("access-control-allow-origin").is_none());
    server.stop().await;

    let plain = TestServer::start(Keys::none());
    let response = client().get(plain.url("/health")).header("Origin", "http://localhost:3000").send().await;
    let response = response.expect("request");
    assert_eq!(response.status(), 200);
    assert!(response.headers().keys().all(|k| !k.as_str().starts_with("access-control-")), "no CORS headers");
    plain.stop().await;
}

/// GETs `path` until `done` holds for its body (metrics arrive just after the replies).
async fn eventually(server: &TestServer, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut body = Value::Null;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let (status, b) = get(server, path).await;
        assert_eq!(status, 200, "{b}");
        body = b;
        if done(&body) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} never reached the expected state: {body}");
}
