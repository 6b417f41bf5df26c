//! Routing by budget: the pool sends a call to the upstream that can send it soonest, moves
//! calls waiting on a rate-limited upstream to a free one, and fails at once, naming the limit,
//! what no upstream can send before its deadline. Upstreams are `ferry mock-upstream` servers
//! over real sockets; their own counts are the witnesses.

mod common;

use std::time::Duration;

use common::{
    TestServer, client, config_with, http_config, json_of, lane, mock_args, prompts, start_mock,
    upstream_for, within,
};
use ferry::config::{Mode, ProviderKind, UpstreamConfig};
use ferry::engine::Engine;
use ferry::http::Keys;
use ferry::mock_upstream::MockUpstreamHandle;
use serde_json::json;

fn upstream(name: &str, mock: &MockUpstreamHandle, edit: impl FnOnce(&mut UpstreamConfig)) -> UpstreamConfig {
    let mut upstream = upstream_for(ProviderKind::Openai, mock);
    upstream.name = name.into();
    upstream.models = vec!["m".into()];
    edit(&mut upstream);
    upstream
}

#[actix_rt::test]
async fn work_goes_to_the_free_upstream_while_the_limited_one_waits_for_its_window() {
    let (mock_a, mock_b) = (start_mock(mock_args()), start_mock(mock_args()));
    let a = upstream("a", &mock_a, |u| u.rpm = Some(2));
    let b = upstream("b", &mock_b, |_| {});
    let engine = Engine::start(&config_with([("bulk", lane(1, Mode::Fanout))], vec![a, b])).expect("starts");
    let outcomes = within(
        Duration::from_secs(10),
        "20 prompts beside an upstream limited to 2 a minute",
        engine.submit("bulk", prompts("p", 20)).await.expect("accepted").collect(),
    )
    .await;
    common::assert_answered_in_order(&outcomes, "p");
    let (on_a, on_b) = (mock_a.stats(), mock_b.stats());
    assert!(on_a.max_requests_in_60s <= 2, "`a` got {} calls in a minute", on_a.max_requests_in_60s);
    assert_eq!(on_a.requests + on_b.requests, 20, "a: {on_a:?}, b: {on_b:?}");
    engine.shutdown(Duration::from_secs(1)).await;
}

#[actix_rt::test]
async fn a_spent_daily_budget_shows_in_health_and_fails_new_requests_naming_the_limit() {
    let mock = start_mock(mock_args());
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = http_config(&dir);
    config.upstreams = vec![upstream("daily", &mock, |u| u.rpd = Some(2))];
    let server = TestServer::start_with(config, Keys::none(), dir);
    let chat = |n: usize| {
        client()
            .post(server.url("/v1/chat/completions"))
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": format!("q{n}")}]}))
            .send()
    };
    for n in 0..2 {
        let (status, body) = json_of(chat(n).await.expect("chat")).await;
        assert_eq!(status, 200, "{body}");
    }
    // The third has a deadline (the door's timeout) and the budget comes back in a day.
    let (status, body) = within(Duration::from_secs(5), "the third request", async {
        json_of(chat(2).await.expect("chat")).await
    })
    .await;
    assert_eq!(status, 429, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("upstream `daily` has spent its requests per day until"), "{message}");
    assert_eq!(mock.stats().requests, 2, "nothing more reached the upstream");

    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, health) = json_of(client().get(server.url("/health")).send().await.expect("health")).await;
        if health["upstreams"]["daily"]["state"] == "exhausted" {
            assert_eq!(health["status"], "degraded", "{health}");
            assert_eq!(health["upstreams"]["daily"]["limit"], "requests per day", "{health}");
            assert!(health["upstreams"]["daily"]["until"].is_string(), "{health}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "health never said exhausted: {health}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}
