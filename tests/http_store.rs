//! The store behind the HTTP API, over real sockets: every door records its chats, `/v1/chat`
//! lists and pages them, `/v1/settings` shows, changes and applies settings live, `/v1/analytics`
//! counts batches; settings and chats survive a restart through `ferry serve`'s start-up path;
//! a key never sees another key's chats; bad input is refused naming the field.

mod common;

use std::collections::BTreeSet;

use common::{
    ADMIN_KEY, INFERENCE_KEY, RunningDaemon, TestServer, answers, call, client, error_names, fast_upstream,
    http_config, json_of, mock_args, start_mock,
};
use ferry::http::Keys;
use ferry::mock_upstream::MockUpstreamArgs;
use serde_json::{Value, json};

/// A `/v1/query` body at HIGH priority (the 200 ms lane).
fn query(username: &str, prompt: &str) -> Value {
    json!({
        "username": username,
        "request_id": format!("req-{prompt}"),
        "prompt": prompt,
        "created_at": "2026-02-01T12:00:00Z",
        "priority": "HIGH"
    })
}

fn chats(body: &Value) -> &Vec<Value> {
    body["chats"].as_array().unwrap_or_else(|| panic!("no chats array in {body}"))
}

fn prompts_of(body: &Value) -> Vec<String> {
    chats(body).iter().map(|c| c["request"]["prompt"].as_str().unwrap_or("").to_string()).collect()
}

#[actix_rt::test]
async fn every_door_records_its_chats_newest_first_with_filters_and_paging() {
    let server = TestServer::start(Keys::none());
    let base = server.base.clone();
    for (user, prompt) in [("ada", "q1"), ("bob", "q2"), ("ada", "q3")] {
        let (status, body) = call(&base, "POST", "/v1/query", None, Some(query(user, prompt))).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = call(&base, "POST", "/api/v1/prompt", None, Some(json!({"prompt": "p1"}))).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("success")), "{body}");
    let (status, body) =
        call(&base, "POST", "/api/v1/prompts", None, Some(json!({"prompts": ["m1", {"prompt": "m2"}]})))
            .await;
    assert_eq!(status, 200, "{body}");
    let completion = json!({"model": "mock", "messages": [{"role": "user", "content": "c1"}]});
    let request = client().post(server.url("/v1/chat/completions")).header("x-ferry-priority", "high");
    let (status, body) = json_of(request.json(&completion).send().await.expect("completion")).await;
    assert_eq!(status, 200, "{body}");

    let (status, all) = call(&base, "GET", "/v1/chat", None, None).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["count"], 7, "{all}");
    let ids: Vec<i64> = chats(&all).iter().map(|c| c["id"].as_i64().expect("id")).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    assert_eq!(prompts_of(&all)[1..], ["m2", "m1", "p1", "q3", "q2", "q1"].map(String::from));
    let newest = &chats(&all)[0];
    assert_eq!(newest["request"]["model"], "mock", "{newest}");
    assert_eq!(newest["request"]["messages"][0]["content"], "c1", "{newest}");
    let q1 = &chats(&all)[6];
    assert_eq!((q1["username"].as_str(), q1["priority"].as_str()), (Some("ada"), Some("HIGH")), "{q1}");
    assert_eq!((q1["lane"].as_str(), q1["request_id"].as_str()), (Some("high"), Some("req-q1")), "{q1}");
    assert!(answers(q1["response"]["text"].as_str().unwrap_or(""), "q1"), "{q1}");
    assert!(q1["response"]["tokens_used"].as_u64().is_some_and(|t| t > 0), "{q1}");
    for chat in chats(&all) {
        assert!(
            chat["batch_id"].is_string() && chat["timestamp"].is_string() && chat["ok"] == true,
            "{chat}"
        );
    }
    assert_eq!(chats(&all)[3]["lane"], "bulk");

    let (_, ada) = call(&base, "GET", "/v1/chat?username=ada", None, None).await;
    assert_eq!(prompts_of(&ada), ["q3", "q1"]);
    let (_, page1) = call(&base, "GET", "/v1/chat?limit=3", None, None).await;
    assert_eq!(
        (page1["count"].as_u64(), prompts_of(&page1)[1..].to_vec()),
        (Some(3), vec!["m2".into(), "m1".into()])
    );
    let last = chats(&page1)[2]["id"].as_i64().expect("id");
    let (_, page2) = call(&base, "GET", &format!("/v1/chat?limit=3&before={last}"), None, None).await;
    assert_eq!(prompts_of(&page2), ["p1", "q3", "q2"]);

    let (status, analytics) = call(&base, "GET", "/v1/analytics", None, None).await;
    assert_eq!(status, 200, "{analytics}");
    let batches: BTreeSet<&str> = chats(&all).iter().filter_map(|c| c["batch_id"].as_str()).collect();
    assert_eq!(analytics["total_requests"].as_u64(), Some(batches.len() as u64), "{analytics}");
    assert_eq!(analytics["high_priority"].as_u64(), Some(4), "3 queries and 1 completion, one batch each");
    assert_eq!(analytics["priority_distribution"][0], json!({"name": "High", "value": 4}));
    assert_eq!(analytics["request_count_over_time"][0]["count"], analytics["total_requests"]);
    server.stop().await;
}

#[actix_rt::test]
async fn settings_show_defaults_and_a_partial_put_changes_only_its_fields_live() {
    let server = TestServer::start(Keys::none());
    let base = server.base.clone();
    let (status, body) = call(&base, "GET", "/v1/settings", None, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({
            "api_key": null,
            "high_priority": {"tokens": 1000, "latency_ms": 500},
            "medium_priority": {"tokens": 5000, "latency_ms": 2000},
            "low_priority": {"tokens": 10000, "latency_ms": 5000}
        })
    );
    let put = json!({"high_priority": {"tokens": 64}, "low_priority": {"tokens": 9, "latency_ms": 70}});
    let (status, body) = call(&base, "PUT", "/v1/settings", None, Some(put)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["high_priority"], json!({"tokens": 64, "latency_ms": 500}));
    assert_eq!(body["medium_priority"], json!({"tokens": 5000, "latency_ms": 2000}));
    assert_eq!(body["low_priority"], json!({"tokens": 9, "latency_ms": 70}));
    let live = server.engine.config().await.expect("engine config");
    assert_eq!((live.lanes["high"].max_tokens, live.lanes["high"].latency_ms), (Some(64), 500));
    assert_eq!((live.lanes["low"].max_tokens, live.lanes["low"].latency_ms), (Some(9), 70));

    let (status, body) =
        call(&base, "PUT", "/v1/settings", None, Some(json!({"api_key": "sk-test-abcd9876"}))).await;
    assert_eq!((status, body["api_key"].as_str()), (200, Some("***9876")), "{body}");
    assert_eq!(body["high_priority"], json!({"tokens": 64, "latency_ms": 500}), "earlier changes are kept");
    let (_, again) = call(&base, "GET", "/v1/settings", None, None).await;
    assert_eq!(again, body);
    assert!(!again.to_string().contains("sk-test"), "{again}");
    server.stop().await;
}

#[actix_rt::test]
async fn an_upstream_key_put_in_settings_makes_calls_succeed() {
    let mock = start_mock(MockUpstreamArgs { api_key: Some("sk-settings-key-5150".into()), ..mock_args() });
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = http_config(&dir);
    config.upstreams =
        vec![ferry::config::UpstreamConfig { max_retries: 0, ..fast_upstream("keyed", &mock.base_url()) }];
    let server = TestServer::start_with(config, Keys::none(), dir);
    let base = server.base.clone();
    let (status, body) = call(&base, "POST", "/api/v1/prompt", None, Some(json!({"prompt": "before"}))).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("error")), "no key yet: {body}");

    let key = json!({"api_key": "sk-settings-key-5150"});
    let (status, body) = call(&base, "PUT", "/v1/settings", None, Some(key)).await;
    assert_eq!((status, body["api_key"].as_str()), (200, Some("***5150")), "{body}");
    let (status, body) = call(&base, "POST", "/api/v1/prompt", None, Some(json!({"prompt": "after"}))).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("success")), "{body}");

    let (_, listed) = call(&base, "GET", "/v1/chat", None, None).await;
    let oks: Vec<bool> = chats(&listed).iter().map(|c| c["ok"] == true).collect();
    assert_eq!(oks, [true, false], "{listed}");
    assert!(chats(&listed)[1]["response"]["error"].is_string(), "a failure is recorded as {{error}}");
    server.stop().await;
}

#[actix_rt::test]
async fn settings_and_chats_survive_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = || {
        let mut config = http_config(&dir);
        config.server.api_keys_env = "FERRY_HTTP_STORE_TEST_UNSET_KEYS".into();
        config.server.admin_keys_env = "FERRY_HTTP_STORE_TEST_UNSET_ADMIN_KEYS".into();
        config.server.shutdown_grace_ms = 1_000;
        config
    };
    let first = RunningDaemon::start(config()).await;
    for prompt in ["before-1", "before-2"] {
        let (status, body) = call(&first.base, "POST", "/v1/query", None, Some(query("ada", prompt))).await;
        assert_eq!(status, 200, "{body}");
    }
    let put = json!({"api_key": "sk-restart-1234", "high_priority": {"tokens": 77, "latency_ms": 650}});
    let (status, body) = call(&first.base, "PUT", "/v1/settings", None, Some(put)).await;
    assert_eq!(status, 200, "{body}");
    first.stop().await;

    let second = RunningDaemon::start(config()).await;
    let (_, listed) = call(&second.base, "GET", "/v1/chat", None, None).await;
    assert_eq!(prompts_of(&listed), ["before-2", "before-1"]);
    let (_, settings) = call(&second.base, "GET", "/v1/settings", None, None).await;
    assert_eq!(settings["api_key"], "***1234", "{settings}");
    assert_eq!(settings["high_priority"], json!({"tokens": 77, "latency_ms": 650}));
    let (_, live) = call(&second.base, "GET", "/api/v1/config", None, None).await;
    let high = &live["lanes"]["high"];
    assert_eq!((high["max_tokens"].as_u64(), high["latency_ms"].as_u64()), (Some(77), Some(650)), "{live}");
    let (status, body) = call(&second.base, "POST", "/v1/query", None, Some(query("ada", "after"))).await;
    assert_eq!(status, 200, "the restarted daemon serves: {body}");
    second.stop().await;
}

#[actix_rt::test]
async fn a_key_never_sees_another_keys_chats() {
    const KEY_A: &str = "test-owner-a-key-1";
    const KEY_B: &str = "test-owner-b-key-2";
    let server = TestServer::start(Keys::new(&[KEY_A, KEY_B], &[ADMIN_KEY]));
    let base = server.base.clone();
    let (status, body) = call(&base, "POST", "/v1/query", Some(KEY_A), Some(query("ada", "private-a"))).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        call(&base, "POST", "/api/v1/prompt", Some(KEY_A), Some(json!({"prompt": "private-a2"}))).await;
    assert_eq!(status, 200, "{body}");

    let (_, mine) = call(&base, "GET", "/v1/chat", Some(KEY_A), None).await;
    assert_eq!(prompts_of(&mine), ["private-a2", "private-a"]);
    for path in ["/v1/chat", "/v1/chat?username=ada", "/v1/chat?limit=1000"] {
        let (status, theirs) = call(&base, "GET", path, Some(KEY_B), None).await;
        assert_eq!((status, theirs["count"].as_u64()), (200, Some(0)), "{path}: {theirs}");
    }
    for key in [KEY_B, ADMIN_KEY] {
        let (_, analytics) = call(&base, "GET", "/v1/analytics", Some(key), None).await;
        assert_eq!(analytics["total_requests"], 0, "{analytics}");
        assert!(!analytics.to_string().contains("private"), "{analytics}");
    }
    let (_, analytics) = call(&base, "GET", "/v1/analytics", Some(KEY_A), None).await;
    assert_eq!(
        (analytics["total_requests"].as_u64(), analytics["high_priority"].as_u64()),
        (Some(2), Some(1))
    );
    server.stop().await;
}

/// `(name, method, path, key, body, status, names)`: `names` is the `param` expected, or with a
/// leading `~` a fragment of the message.
type Case =
    (&'static str, &'static str, &'static str, Option<&'static str>, Option<&'static str>, u16, &'static str);

fn bad_cases() -> Vec<Case> {
    let admin = Some(ADMIN_KEY);
    let put = |name, body, names| (name, "PUT", "/v1/settings", admin, Some(body), 400, names);
    let get = |name, path, names| (name, "GET", path, admin, None, 400, names);
    vec![
        get("chat: limit 0", "/v1/chat?limit=0", "limit"),
        get("chat: limit abc", "/v1/chat?limit=abc", "limit"),
        get("chat: limit 1001", "/v1/chat?limit=1001", "limit"),
        get("chat: limit negative", "/v1/chat?limit=-3", "limit"),
        get("chat: before not a number", "/v1/chat?before=x", "before"),
        get("chat: before 0", "/v1/chat?before=0", "before"),
        get("chat: empty username", "/v1/chat?username=", "username"),
        get("chat: unknown parameter", "/v1/chat?page=2", "page"),
        put("settings: tokens 0", r#"{"high_priority": {"tokens": 0}}"#, "high_priority.tokens"),
        put("settings: tokens string", r#"{"medium_priority": {"tokens": "10"}}"#, "medium_priority.tokens"),
        put("settings: tokens float", r#"{"low_priority": {"tokens": 2.5}}"#, "low_priority.tokens"),
        put(
            "settings: latency negative",
            r#"{"high_priority": {"latency_ms": -1}}"#,
            "high_priority.latency_ms",
        ),
        put("settings: latency 0", r#"{"low_priority": {"latency_ms": 0}}"#, "low_priority.latency_ms"),
        put("settings: unknown field", r#"{"top_priority": {"tokens": 1}}"#, "top_priority"),
        put("settings: unknown nested field", r#"{"high_priority": {"max": 1}}"#, "high_priority.max"),
        put("settings: priority not an object", r#"{"high_priority": 5}"#, "high_priority"),
        put("settings: api_key empty", r#"{"api_key": ""}"#, "api_key"),
        put("settings: api_key with a space", r#"{"api_key": "sk a"}"#, "api_key"),
        put("settings: api_key with a newline", r#"{"api_key": "sk\na"}"#, "api_key"),
        put("settings: api_key number", r#"{"api_key": 5}"#, "api_key"),
        put("settings: api_key null", r#"{"api_key": null}"#, "api_key"),
        put("settings: array body", r#"[1]"#, "~JSON object"),
        put("settings: malformed JSON", r#"{"api_key": "#, "~invalid JSON"),
        ("settings: inference key GET", "GET", "/v1/settings", Some(INFERENCE_KEY), None, 403, "~admin key"),
        (
            "settings: inference key PUT",
            "PUT",
            "/v1/settings",
            Some(INFERENCE_KEY),
            Some("{}"),
            403,
            "~admin key",
        ),
        ("chat: no key", "GET", "/v1/chat", None, None, 401, "~Authorization: Bearer"),
        ("analytics: unknown key", "GET", "/v1/analytics", Some("nope"), None, 401, "~unknown API key"),
        ("chat: POST", "POST", "/v1/chat", admin, Some("{}"), 405, "~method not allowed"),
        ("settings: POST", "POST", "/v1/settings", admin, Some("{}"), 405, "~method not allowed"),
    ]
}

#[actix_rt::test]
async fn bad_input_to_chat_and_settings_names_the_field() {
    let server = TestServer::start(Keys::new(&[INFERENCE_KEY], &[ADMIN_KEY]));
    let mut failures = Vec::new();
    for (name, method, path, key, body, status, names) in bad_cases() {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = client().request(method, server.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body);
        }
        let (got, reply) = json_of(request.send().await.expect("response")).await;
        if got != status {
            failures.push(format!("{name}: status {got}, expected {status}: {reply}"));
            continue;
        }
        let named = error_names(&reply, names);
        if !named {
            failures.push(format!("{name}: error does not name {names:?}: {reply}"));
        }
    }
    assert!(failures.is_empty(), "{} cases failed:\n{}", failures.len(), failures.join("\n"));
    let (status, settings) = call(&server.base, "GET", "/v1/settings", Some(ADMIN_KEY), None).await;
    assert_eq!((status, settings["high_priority"]["tokens"].as_u64()), (200, Some(1000)), "nothing changed");
    server.stop().await;
}

#[actix_rt::test]
async fn a_store_that_cannot_open_stops_the_daemon_with_its_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "a file where the data directory should be").expect("write");
    let mut config = http_config(&dir);
    config.server.api_keys_env = "FERRY_HTTP_STORE_TEST_UNSET_KEYS".into();
    config.server.admin_keys_env = "FERRY_HTTP_STORE_TEST_UNSET_ADMIN_KEYS".into();
    config.storage.path = blocker.join("ferry.db");
    match ferry::daemon::run(config, std::future::pending()).await {
        Err(error @ ferry::app::AppError::Store { .. }) => {
            let message = error.to_string();
            assert!(message.contains("[storage] path") && message.contains("not-a-dir"), "{message}");
        }
        other => panic!("expected a store error, got {:?}", other.map(|_| ())),
    }
}
