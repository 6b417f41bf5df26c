//! Cancel, expiry and a caller that goes away reach every item the engine still holds: items
//! waiting in a lane or a client mailbox are never sent; only calls already under way finish.
//! The upstream is `ferry mock-upstream` over a real socket, 100 ms a call, 8 at a time, and its
//! own request count is the witness.

mod common;

use std::time::{Duration, Instant};

use common::files::{batch_file, upload_batch};
use common::{TestServer, client, http_config, json_of, mock_args, start_mock, upstream_for};
use ferry::config::{Config, ProviderKind};
use ferry::http::Keys;
use ferry::mock_upstream::{MockStats, MockUpstreamArgs, MockUpstreamHandle};
use serde_json::{Value, json};

const CONCURRENCY: usize = 8;

/// A server whose jobs and prompts go to a slow mock upstream over a socket.
fn server_on_slow_mock() -> (TestServer, MockUpstreamHandle) {
    let mock = start_mock(MockUpstreamArgs { latency_ms: 100, ..mock_args() });
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config: Config = http_config(&dir);
    let mut upstream = upstream_for(ProviderKind::Openai, &mock);
    upstream.models = vec!["mock".into()];
    upstream.concurrency = ferry::config::Concurrency::Fixed(CONCURRENCY);
    config.upstreams = vec![upstream];
    config.jobs.lane = Some("bulk".into());
    (TestServer::start_with(config, Keys::none(), dir), mock)
}

async fn get(base: &str, path: &str) -> Value {
    let (status, body) = json_of(client().get(format!("{base}{path}")).send().await.expect("get")).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn wait_for(base: &str, id: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let batch = get(base, &format!("/v1/batches/{id}")).await;
        if done(&batch) {
            return batch;
        }
        assert!(Instant::now() < deadline, "batch never got there: {batch}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The mock's count once every request it received has been answered.
async fn settled(mock: &MockUpstreamHandle) -> MockStats {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = mock.stats();
        if stats.outcomes.ok >= stats.requests {
            return stats;
        }
        assert!(Instant::now() < deadline, "the mock never settled: {stats:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn counts(batch: &Value) -> (u64, u64, u64) {
    let c = &batch["request_counts"];
    (
        c["total"].as_u64().unwrap_or(0),
        c["completed"].as_u64().unwrap_or(0),
        c["failed"].as_u64().unwrap_or(0),
    )
}

#[actix_rt::test]
async fn cancel_sends_nothing_more_than_the_calls_under_way() {
    let (server, mock) = server_on_slow_mock();
    let base = &server.base;
    let file = upload_batch(base, None, &batch_file(2_000)).await;
    let body = json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    let (status, batch) =
        json_of(client().post(format!("{base}/v1/batches")).json(&body).send().await.expect("create")).await;
    assert_eq!(status, 200, "{batch}");
    let id = batch["id"].as_str().expect("id").to_string();
    wait_for(base, &id, Duration::from_secs(30), |b| counts(b).1 >= 200).await;

    let (status, _) =
        json_of(client().post(format!("{base}/v1/batches/{id}/cancel")).send().await.expect("cancel")).await;
    assert_eq!(status, 200);
    let at_cancel = mock.stats().requests;
    let done = wait_for(base, &id, Duration::from_secs(10), |b| b["status"] == "cancelled").await;
    let after = settled(&mock).await.requests;
    assert!(
        after - at_cancel <= CONCURRENCY as u64,
        "{} calls reached the upstream after the cancel (at most the {CONCURRENCY} under way may)",
        after - at_cancel
    );
    let (total, completed, failed) = counts(&done);
    assert_eq!(
        (total, completed + failed),
        (2_000, 2_000),
        "every request ends in a result or an error: {done}"
    );
    assert!(completed <= after, "{completed} answers from {after} calls");
    assert!(failed >= 1_500, "the cancel withdrew the rest: {done}");
    let snapshot = server.engine.snapshot().await.expect("snapshot");
    assert!(snapshot.withdrawn.get("cancelled").is_some_and(|n| *n > 0), "{:?}", snapshot.withdrawn);
    server.stop().await;
}

#[actix_rt::test]
async fn expiry_sends_nothing_more_than_the_calls_under_way() {
    let (server, mock) = server_on_slow_mock();
    let base = &server.base;
    let file = upload_batch(base, None, &batch_file(2_000)).await;
    let body = json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "2s"});
    let (status, batch) =
        json_of(client().post(format!("{base}/v1/batches")).json(&body).send().await.expect("create")).await;
    assert_eq!(status, 200, "{batch}");
    let id = batch["id"].as_str().expect("id").to_string();
    let done = wait_for(base, &id, Duration::from_secs(20), |b| b["status"] == "expired").await;
    let at_expiry = mock.stats().requests;
    let after = settled(&mock).await.requests;
    assert!(after - at_expiry <= CONCURRENCY as u64, "{} calls after expiry", after - at_expiry);
    let (total, completed, failed) = counts(&done);
    assert_eq!((total, completed + failed), (2_000, 2_000), "{done}");
    assert!(completed > 0 && failed > 0, "{done}");
    server.stop().await;
}

#[actix_rt::test]
async fn a_caller_that_goes_away_leaves_nothing_to_send() {
    let (server, mock) = server_on_slow_mock();
    let base = &server.base;
    let prompts: Vec<String> = (0..200).map(|i| format!("question {i}")).collect();
    let request = client().post(format!("{base}/api/v1/prompts")).json(&json!({ "prompts": prompts })).send();
    // The caller gives up once the first calls are under way.
    let started = Instant::now();
    tokio::select! {
        _ = request => panic!("200 prompts of 100 ms at 8 at a time answered at once"),
        () = async {
            while mock.stats().requests < 8 {
                assert!(started.elapsed() < Duration::from_secs(10), "no call reached the mock");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        } => {}
    }
    let at_gone = mock.stats().requests;
    // Wait for the server to notice (the engine counts the items it withdrew), then for the
    // calls under way to finish.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let snapshot = server.engine.snapshot().await.expect("snapshot");
        if snapshot.withdrawn.get("caller_gone").is_some_and(|n| *n > 0) {
            break;
        }
        assert!(Instant::now() < deadline, "the server never withdrew the abandoned prompts");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = settled(&mock).await.requests;
    assert!(
        after - at_gone <= 2 * CONCURRENCY as u64,
        "{} of 200 prompts reached the upstream after the caller left",
        after - at_gone
    );
    assert!(after < 50, "{after} calls for a caller that left after the first 8");
    server.stop().await;
}
