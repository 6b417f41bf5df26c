//! The OpenAI and Gemini providers against the mock upstream over a real socket: each error
//! status and transport failure lands in the variant the client actor acts on.

mod common;

use std::time::Duration;

use common::{ClosedPort, mock_args, start_mock, upstream_at, upstream_for};
use ferry::config::ProviderKind;
use ferry::core::combine;
use ferry::mock_upstream::{MockStats, MockUpstreamArgs, MockUpstreamHandle};
use ferry::providers::{self, CallReply, CallRequest, ChatMessage, Provider, ProviderError};

const BOTH: [ProviderKind; 2] = [ProviderKind::Openai, ProviderKind::Gemini];

fn ask(prompt: &str) -> CallRequest {
    CallRequest {
        model: "test-model".into(),
        messages: vec![ChatMessage::user(prompt)],
        ..CallRequest::default()
    }
}

fn provider(kind: ProviderKind, mock: &MockUpstreamHandle) -> std::sync::Arc<dyn Provider> {
    providers::build(&upstream_for(kind, mock), Some("sk-test-key".into())).expect("provider builds")
}

/// Calls `kind` against a fresh mock with `args` and returns the outcome and the mock's stats.
async fn call_once(
    kind: ProviderKind,
    args: MockUpstreamArgs,
) -> (Result<CallReply, ProviderError>, MockStats) {
    let mock = start_mock(args);
    let outcome = provider(kind, &mock).call(ask("hello")).await;
    let stats = mock.stats();
    mock.stop().await;
    (outcome, stats)
}

#[actix_rt::test]
async fn success_carries_text_mentioning_the_prompt_and_usage() {
    for kind in BOTH {
        let mock = start_mock(MockUpstreamArgs { output_tokens: 12, ..mock_args() });
        let reply = provider(kind, &mock).call(ask("what is the capital of France?")).await.expect("answer");
        assert!(
            reply.text.starts_with("mock answer to: what is the capital of France?"),
            "{kind:?}: {}",
            reply.text
        );
        let usage = reply.usage.expect("usage reported");
        assert_eq!(usage.completion_tokens, 12, "{kind:?}");
        assert!(usage.prompt_tokens >= 1, "{kind:?}");
        assert_eq!(mock.stats().outcomes.ok, 1);
        mock.stop().await;
    }
}

#[actix_rt::test]
async fn combined_reply_splits_into_answers_in_order() {
    for kind in BOTH {
        let mock = start_mock(mock_args());
        let prompts = ["first prompt", "second \"quoted\" prompt", "third"];
        let request = CallRequest { messages: combine::build(&prompts), ..ask("") };
        let reply = provider(kind, &mock).call(request).await.expect("answer");
        let split = combine::split(&reply.text, prompts.len()).expect("reply splits");
        for (answer, prompt) in split.answers.iter().zip(prompts) {
            assert_eq!(answer.as_deref(), Some(format!("mock answer to: {prompt}").as_str()), "{kind:?}");
        }
        assert_eq!(mock.stats().prompts_answered, 3);
        mock.stop().await;
    }
}

#[actix_rt::test]
async fn injected_429_gives_the_retry_delay() {
    for kind in BOTH {
        let args = MockUpstreamArgs { rate_limit_rate: 1.0, retry_after_ms: 1500, ..mock_args() };
        let (outcome, stats) = call_once(kind, args).await;
        match outcome {
            // OpenAI reads `retry-after-ms`; Gemini reads `RetryInfo` from the body.
            Err(ProviderError::RateLimited { retry_after, .. }) => {
                assert_eq!(retry_after, Some(Duration::from_millis(1500)), "{kind:?}")
            }
            other => panic!("{kind:?}: expected RateLimited, got {other:?}"),
        }
        assert_eq!(stats.outcomes.rate_limited, 1);
    }
}

#[actix_rt::test]
async fn status_500_is_a_server_error() {
    for kind in BOTH {
        let (outcome, _) = call_once(kind, MockUpstreamArgs { error_rate: 1.0, ..mock_args() }).await;
        match outcome {
            Err(ProviderError::Server { status: 500, message }) => {
                assert!(message.contains("injected"), "{message}")
            }
            other => panic!("{kind:?}: expected Server, got {other:?}"),
        }
    }
}

#[actix_rt::test]
async fn status_503_is_overloaded() {
    for kind in BOTH {
        let (outcome, _) = call_once(kind, MockUpstreamArgs { overload_rate: 1.0, ..mock_args() }).await;
        assert!(matches!(outcome, Err(ProviderError::Overloaded { .. })), "{kind:?}: {outcome:?}");
    }
}

#[actix_rt::test]
async fn body_that_is_not_json_is_malformed() {
    for kind in BOTH {
        let (outcome, _) = call_once(kind, MockUpstreamArgs { malformed_rate: 1.0, ..mock_args() }).await;
        assert!(matches!(outcome, Err(ProviderError::Malformed { .. })), "{kind:?}: {outcome:?}");
    }
}

#[actix_rt::test]
async fn dropped_connection_is_dropped_and_counts_as_sent() {
    for kind in BOTH {
        let (outcome, stats) = call_once(kind, MockUpstreamArgs { drop_rate: 1.0, ..mock_args() }).await;
        match outcome {
            Err(error @ ProviderError::Dropped { .. }) => assert!(error.sent()),
            other => panic!("{kind:?}: expected Dropped, got {other:?}"),
        }
        assert_eq!(stats.outcomes.dropped, 1);
    }
}

#[actix_rt::test]
async fn held_reply_times_out_on_the_client() {
    for kind in BOTH {
        let mock = start_mock(MockUpstreamArgs { timeout_rate: 1.0, ..mock_args() });
        let upstream = ferry::config::UpstreamConfig { timeout_ms: 300, ..upstream_for(kind, &mock) };
        let started = std::time::Instant::now();
        let outcome = providers::build(&upstream, None).expect("builds").call(ask("hello")).await;
        assert_eq!(outcome, Err(ProviderError::Timeout), "{kind:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        mock.stop().await;
    }
}

#[actix_rt::test]
async fn closed_port_is_a_connect_error_never_sent() {
    for kind in BOTH {
        let closed = ClosedPort::bind();
        let upstream = upstream_at(kind, &closed.url());
        let outcome =
            providers::build(&upstream, Some("sk-secret-key".into())).expect("builds").call(ask("x")).await;
        match outcome {
            Err(error @ ProviderError::Connect { .. }) => {
                assert!(!error.sent());
                assert!(!error.to_string().contains("sk-secret-key"));
            }
            other => panic!("{kind:?}: expected Connect, got {other:?}"),
        }
    }
}

#[actix_rt::test]
async fn bad_request_is_rejected_with_the_upstream_message() {
    for kind in BOTH {
        let mock = start_mock(mock_args());
        let empty = CallRequest { messages: Vec::new(), ..ask("") };
        match provider(kind, &mock).call(empty).await {
            Err(ProviderError::Rejected { status: 400, message }) => {
                assert!(message.contains("must not be empty"), "{kind:?}: {message}")
            }
            other => panic!("{kind:?}: expected Rejected, got {other:?}"),
        }
        assert_eq!(mock.stats().outcomes.bad_request, 1);
        mock.stop().await;
    }
}

#[actix_rt::test]
async fn mock_enforces_its_rpm_and_says_when_to_return() {
    let mock = start_mock(MockUpstreamArgs { rpm: Some(3), ..mock_args() });
    let openai = provider(ProviderKind::Openai, &mock);
    for remaining in [2, 1, 0] {
        let reply = openai.call(ask("within the limit")).await.expect("admitted");
        assert_eq!(reply.hints.limit_requests, Some(3));
        assert_eq!(reply.hints.remaining_requests, Some(remaining));
        assert!(reply.hints.reset_requests.is_some_and(|d| d <= Duration::from_secs(60)));
    }
    match openai.call(ask("one too many")).await {
        Err(ProviderError::RateLimited { retry_after: Some(wait), hints }) => {
            assert!(wait > Duration::from_secs(55) && wait <= Duration::from_secs(60), "{wait:?}");
            assert_eq!(hints.remaining_requests, Some(0));
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    let stats = mock.stats();
    assert_eq!((stats.requests, stats.outcomes.ok, stats.outcomes.rpm_limited), (4, 3, 1));
    assert_eq!(stats.max_requests_in_60s, 4);
    mock.stop().await;
}

#[actix_rt::test]
async fn stats_health_and_models_are_served() {
    let mock = start_mock(mock_args());
    let base = mock.base_url();
    provider(ProviderKind::Openai, &mock).call(ask("count me")).await.expect("answer");
    let http = reqwest::Client::new();
    let stats: MockStats =
        http.get(format!("http://{}/stats", mock.addr())).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats, mock.stats());
    assert_eq!(stats.requests, 1);
    let health = http.get(format!("http://{}/health", mock.addr())).send().await.unwrap();
    assert!(health.status().is_success());
    let models: serde_json::Value =
        http.get(format!("{base}/models")).send().await.unwrap().json().await.unwrap();
    assert_eq!(models["data"][0]["id"], "mock");
    mock.stop().await;
}

#[actix_rt::test]
async fn unreadable_body_gets_an_openai_style_400() {
    let mock = start_mock(mock_args());
    let response = reqwest::Client::new()
        .post(format!("{}/chat/completions", mock.base_url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("invalid chat completions body"));
    mock.stop().await;
}

#[actix_rt::test]
async fn base_url_with_trailing_slash_works() {
    let mock = start_mock(mock_args());
    let upstream = upstream_at(ProviderKind::Openai, &format!("{}/", mock.base_url()));
    let reply = providers::build(&upstream, None).unwrap().call(ask("slash")).await.expect("answer");
    assert!(reply.text.contains("slash"));
    mock.stop().await;
}

#[actix_rt::test]
async fn injected_429_rounds_retry_after_up_to_whole_seconds() {
    let mock = start_mock(MockUpstreamArgs { rate_limit_rate: 1.0, retry_after_ms: 1500, ..mock_args() });
    let response = reqwest::Client::new()
        .post(format!("{}/chat/completions", mock.base_url()))
        .json(&serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(response.headers()["retry-after"], "2");
    assert_eq!(response.headers()["retry-after-ms"], "1500");
    mock.stop().await;
}

#[actix_rt::test]
async fn mock_upstream_capacity_serves_that_many_at_once_and_queues_the_rest() {
    let mock = start_mock(MockUpstreamArgs { capacity: 2, latency_ms: 1_000, ..mock_args() });
    let provider = provider(ProviderKind::Openai, &mock);
    let calls: Vec<_> = (0..6).map(|i| provider.call(ask(&format!("q{i}")))).collect();
    for reply in futures_util::future::join_all(calls).await {
        reply.expect("an answer");
    }
    let stats = mock.stats();
    assert_eq!(stats.most_running, 2, "{stats:?}");
    assert!(stats.most_waiting >= 1, "six calls at once, two slots: some waited: {stats:?}");
    mock.stop().await;
}

#[actix_rt::test]
async fn mock_upstream_queue_limit_answers_503_past_it() {
    let mock = start_mock(MockUpstreamArgs { capacity: 2, queue_limit: 1, latency_ms: 1_000, ..mock_args() });
    let provider = provider(ProviderKind::Openai, &mock);
    let calls: Vec<_> = (0..6).map(|i| provider.call(ask(&format!("q{i}")))).collect();
    let replies = futures_util::future::join_all(calls).await;
    let answered = replies.iter().filter(|r| r.is_ok()).count();
    let overloaded = replies.iter().filter(|r| matches!(r, Err(ProviderError::Overloaded { .. }))).count();
    // Two run, one waits, three find the queue full.
    assert_eq!((answered, overloaded), (3, 3), "{replies:?}");
    let stats = mock.stats();
    assert_eq!((stats.most_running, stats.most_waiting, stats.outcomes.overloaded), (2, 1, 3), "{stats:?}");
    mock.stop().await;
}
