//! Upstream failures over a real socket: what is retried, how often, what is reported, and how
//! calls move to another upstream when one keeps failing.

mod common;

use std::time::Duration;

use common::{ClosedPort, LANE, engine_config, fast_upstream, mock_args, quick_lane, start_mock};
use ferry::config::{Mode, UpstreamConfig};
use ferry::engine::{Engine, ItemError, MetricsEvent, Outcome, Prompt, UpstreamState};
use ferry::mock_upstream::MockUpstreamArgs;
use ferry::providers::ProviderError;
use tokio::time::{Instant, sleep, timeout};

/// Longest any test here may wait for its outcomes.
const WAIT: Duration = Duration::from_secs(20);

fn prompts(n: usize) -> Vec<Prompt> {
    (0..n).map(|i| Prompt::text(format!("prompt {i}"))).collect()
}

async fn run(engine: &Engine, prompts: Vec<Prompt>) -> Vec<Outcome> {
    let submission = engine.submit(LANE, prompts).await.expect("submission accepted");
    timeout(WAIT, submission.collect()).await.expect("every item ends in time")
}

/// Sends `items` prompts to one upstream behind a mock with `args` and returns the outcomes and
/// the mock's request count.
async fn through_one_upstream(
    args: MockUpstreamArgs,
    upstream: impl FnOnce(UpstreamConfig) -> UpstreamConfig,
    items: usize,
) -> (Vec<Outcome>, u64) {
    let mock = start_mock(args);
    let config = engine_config(
        quick_lane(Mode::Fanout, 100),
        vec![upstream(fast_upstream("flaky", &mock.base_url()))],
    );
    let engine = Engine::start(&config).expect("engine starts");
    let outcomes = run(&engine, prompts(items)).await;
    (outcomes, mock.stats().requests)
}

/// Each outcome is an `Upstream` error from "flaky" of `kind` after `attempts` calls.
fn assert_failed_after(outcomes: &[Outcome], kind: &str, attempts: u32) {
    for (i, outcome) in outcomes.iter().enumerate() {
        match outcome {
            Err(ItemError::Upstream { upstream, error, attempts: made }) => {
                assert_eq!(
                    (&**upstream, error.kind(), *made),
                    ("flaky", kind, attempts),
                    "item {i}: {error}"
                );
            }
            other => panic!("item {i}: expected an upstream {kind} error, got {other:?}"),
        }
    }
}

#[actix_rt::test]
async fn server_errors_are_retried_then_reported() {
    let args = MockUpstreamArgs { error_rate: 1.0, ..mock_args() };
    let (outcomes, requests) =
        through_one_upstream(args, |u| UpstreamConfig { max_retries: 2, ..u }, 10).await;
    assert_failed_after(&outcomes, "server", 3);
    assert_eq!(requests, 10 * 3, "max_retries + 1 calls per item");
}

#[actix_rt::test]
async fn timeouts_are_retried_then_reported() {
    let args = MockUpstreamArgs { timeout_rate: 1.0, ..mock_args() };
    let short = |u| UpstreamConfig { max_retries: 2, timeout_ms: 100, ..u };
    let (outcomes, requests) = through_one_upstream(args, short, 5).await;
    assert_failed_after(&outcomes, "timeout", 3);
    assert_eq!(requests, 5 * 3, "max_retries + 1 calls per item");
}

#[actix_rt::test]
async fn dropped_connections_are_retried_then_reported() {
    let args = MockUpstreamArgs { drop_rate: 1.0, ..mock_args() };
    let (outcomes, requests) =
        through_one_upstream(args, |u| UpstreamConfig { max_retries: 2, ..u }, 5).await;
    assert_failed_after(&outcomes, "dropped", 3);
    assert_eq!(requests, 5 * 3, "max_retries + 1 calls per item");
}

#[actix_rt::test]
async fn malformed_replies_are_retried_then_reported() {
    let args = MockUpstreamArgs { malformed_rate: 1.0, ..mock_args() };
    let (outcomes, requests) =
        through_one_upstream(args, |u| UpstreamConfig { max_retries: 1, ..u }, 5).await;
    assert_failed_after(&outcomes, "malformed", 2);
    assert_eq!(requests, 5 * 2, "max_retries + 1 calls per item");
}

#[actix_rt::test]
async fn sent_failures_are_not_retried_when_retry_after_send_is_off() {
    let args = MockUpstreamArgs { error_rate: 1.0, ..mock_args() };
    let no_resend = |u| UpstreamConfig { max_retries: 3, retry_after_send: false, ..u };
    let (outcomes, requests) = through_one_upstream(args, no_resend, 5).await;
    assert_failed_after(&outcomes, "server", 1);
    assert_eq!(requests, 5, "a call that may have run upstream is not sent again");
}

#[actix_rt::test]
async fn a_failed_combined_call_is_not_sent_again_item_by_item_when_retry_after_send_is_off() {
    let mock = start_mock(MockUpstreamArgs { error_rate: 1.0, ..mock_args() });
    let upstream = UpstreamConfig {
        max_retries: 3,
        retry_after_send: false,
        ..fast_upstream("flaky", &mock.base_url())
    };
    let config = engine_config(quick_lane(Mode::Combined, 4), vec![upstream]);
    let engine = Engine::start(&config).expect("engine starts");
    let outcomes = run(&engine, prompts(8)).await;
    assert_failed_after(&outcomes, "server", 1);
    assert_eq!(mock.stats().requests, 2, "two combined calls of 4, neither sent again alone");
}

#[actix_rt::test]
async fn a_sent_failure_does_not_move_to_another_upstream_when_retry_after_send_is_off() {
    let failing = start_mock(MockUpstreamArgs { error_rate: 1.0, ..mock_args() });
    let healthy = start_mock(mock_args());
    let no_resend = |u| UpstreamConfig { retry_after_send: false, ..u };
    let upstreams = vec![
        no_resend(fast_upstream("flaky", &failing.base_url())),
        no_resend(fast_upstream("healthy", &healthy.base_url())),
    ];
    let config = engine_config(quick_lane(Mode::Fanout, 100), upstreams);
    let engine = Engine::start(&config).expect("engine starts");
    let outcomes = run(&engine, prompts(40)).await;
    let failed = outcomes.iter().filter(|o| o.is_err()).count() as u64;
    // Every call the failing upstream took ends there; none is sent again to the healthy one.
    assert_eq!(failed, failing.stats().requests, "{outcomes:?}");
    assert_eq!(healthy.stats().requests, 40 - failed);
    assert!(failed > 0, "the failing upstream took some calls");
}

#[actix_rt::test]
async fn occasional_server_errors_are_retried_until_every_item_succeeds() {
    // P(one item fails 9 calls in a row) = 0.3^9 ≈ 2e-5: the draws are seeded, so this is stable.
    let args = MockUpstreamArgs { error_rate: 0.3, ..mock_args() };
    let (outcomes, requests) =
        through_one_upstream(args, |u| UpstreamConfig { max_retries: 8, ..u }, 100).await;
    for (i, outcome) in outcomes.iter().enumerate() {
        let answer = outcome.as_ref().unwrap_or_else(|e| panic!("item {i}: {e}"));
        assert!(answer.text.starts_with(&format!("mock answer to: prompt {i} ")), "{}", answer.text);
    }
    let retried: u32 = outcomes.iter().flatten().map(|a| a.attempts - 1).sum();
    assert!(retried > 0, "some calls must have failed at a 30% error rate");
    assert_eq!(requests, 100 + u64::from(retried), "every attempt reached the mock");
}

#[actix_rt::test]
async fn client_error_is_rejected_without_retry() {
    let mock = start_mock(mock_args());
    let config = engine_config(quick_lane(Mode::Fanout, 10), vec![fast_upstream("strict", &mock.base_url())]);
    let engine = Engine::start(&config).expect("engine starts");
    // No messages at all: the mock answers 400, as a real API does.
    let empty = Prompt { messages: Vec::new(), ..Prompt::default() };

    let outcomes = run(&engine, vec![empty; 4]).await;

    for outcome in &outcomes {
        match outcome {
            Err(ItemError::Upstream {
                error: ProviderError::Rejected { status: 400, .. },
                attempts: 1,
                ..
            }) => {}
            other => panic!("expected a 400 rejection after one attempt, got {other:?}"),
        }
    }
    let stats = mock.stats();
    assert_eq!((stats.requests, stats.outcomes.bad_request), (4, 4), "one request per item: {stats:?}");
}

#[actix_rt::test]
async fn not_found_is_rejected_without_retry() {
    let mock = start_mock(mock_args());
    let wrong_path = format!("http://{}/no-such-api/v1", mock.addr());
    let config = engine_config(quick_lane(Mode::Fanout, 10), vec![fast_upstream("strict", &wrong_path)]);
    let engine = Engine::start(&config).expect("engine starts");

    let outcomes = run(&engine, prompts(3)).await;

    for outcome in &outcomes {
        match outcome {
            Err(ItemError::Upstream {
                error: ProviderError::Rejected { status: 404, .. },
                attempts: 1,
                ..
            }) => {}
            other => panic!("expected a 404 rejection after one attempt, got {other:?}"),
        }
    }
}

#[actix_rt::test]
async fn failing_upstream_hands_its_items_to_the_next() {
    let broken = start_mock(MockUpstreamArgs { error_rate: 1.0, ..mock_args() });
    let healthy = start_mock(mock_args());
    let upstreams = vec![
        UpstreamConfig { max_retries: 1, ..fast_upstream("broken", &broken.base_url()) },
        fast_upstream("healthy", &healthy.base_url()),
    ];
    let engine =
        Engine::start(&engine_config(quick_lane(Mode::Fanout, 100), upstreams)).expect("engine starts");

    let outcomes = run(&engine, prompts(40)).await;

    let mut via_broken = 0;
    for (i, outcome) in outcomes.iter().enumerate() {
        let answer = outcome.as_ref().unwrap_or_else(|e| panic!("item {i}: {e}"));
        assert_eq!(&*answer.upstream, "healthy", "item {i}");
        // Two calls to "broken" (max_retries 1), then one to "healthy".
        assert!(matches!(answer.attempts, 1 | 3), "item {i}: {} attempts", answer.attempts);
        via_broken += usize::from(answer.attempts == 3);
    }
    assert!(via_broken > 0, "the least-loaded routing must have tried the first upstream");
    assert_eq!(broken.stats().requests, 2 * via_broken as u64);
    assert_eq!(healthy.stats().requests, 40);
}

#[actix_rt::test]
async fn rejected_request_is_not_sent_to_another_upstream() {
    let mock = start_mock(mock_args());
    let healthy = start_mock(mock_args());
    let wrong_path = format!("http://{}/no-such-api/v1", mock.addr());
    let upstreams = vec![fast_upstream("strict", &wrong_path), fast_upstream("healthy", &healthy.base_url())];
    let engine =
        Engine::start(&engine_config(quick_lane(Mode::Fanout, 100), upstreams)).expect("engine starts");

    let outcomes = run(&engine, prompts(20)).await;

    let mut rejected = 0;
    for (i, outcome) in outcomes.iter().enumerate() {
        match outcome {
            Ok(answer) => assert_eq!((&*answer.upstream, answer.attempts), ("healthy", 1), "item {i}"),
            Err(ItemError::Upstream {
                error: ProviderError::Rejected { status: 404, .. },
                attempts: 1,
                ..
            }) => rejected += 1,
            Err(other) => panic!("item {i}: {other}"),
        }
    }
    assert!(rejected > 0, "least-loaded routing must have sent some items to `strict`");
    assert_eq!(healthy.stats().requests, 20 - rejected, "a rejected item must not be retried elsewhere");
}

#[actix_rt::test]
async fn retries_during_a_cooldown_go_to_another_upstream() {
    let broken = start_mock(MockUpstreamArgs { error_rate: 1.0, ..mock_args() });
    let healthy = start_mock(mock_args());
    let upstreams = vec![
        // One failure starts a cooldown longer than the test's wait: a retry left waiting in the
        // cooling upstream's mailbox would time the test out.
        UpstreamConfig {
            max_retries: 3,
            cooldown_failures: 1,
            cooldown_ms: 600_000,
            ..fast_upstream("broken", &broken.base_url())
        },
        fast_upstream("healthy", &healthy.base_url()),
    ];
    let engine =
        Engine::start(&engine_config(quick_lane(Mode::Fanout, 100), upstreams)).expect("engine starts");

    let outcomes = run(&engine, prompts(20)).await;

    for (i, outcome) in outcomes.iter().enumerate() {
        let answer = outcome.as_ref().unwrap_or_else(|e| panic!("item {i}: {e}"));
        assert_eq!(&*answer.upstream, "healthy", "item {i}");
    }
    assert!(broken.stats().requests >= 1);
}

#[actix_rt::test]
async fn unreachable_upstream_hands_its_items_to_the_next() {
    let healthy = start_mock(mock_args());
    let closed = ClosedPort::bind();
    let upstreams = vec![
        UpstreamConfig { max_retries: 1, ..fast_upstream("down", &closed.url()) },
        fast_upstream("healthy", &healthy.base_url()),
    ];
    let engine =
        Engine::start(&engine_config(quick_lane(Mode::Fanout, 100), upstreams)).expect("engine starts");

    let outcomes = run(&engine, prompts(20)).await;

    for (i, outcome) in outcomes.iter().enumerate() {
        let answer = outcome.as_ref().unwrap_or_else(|e| panic!("item {i}: {e}"));
        assert_eq!(&*answer.upstream, "healthy", "item {i}");
    }
    assert!(outcomes.iter().flatten().any(|a| a.attempts == 3), "some item tried the closed port first");
    assert_eq!(healthy.stats().requests, 20);
}

#[actix_rt::test]
async fn repeated_failures_put_an_upstream_in_cooldown() {
    const COOLDOWN: Duration = Duration::from_millis(1_500);
    let broken = start_mock(MockUpstreamArgs { error_rate: 1.0, ..mock_args() });
    let healthy = start_mock(mock_args());
    let upstreams = vec![
        UpstreamConfig {
            // One call at a time, so the count at cooldown is exact.
            concurrency: ferry::config::Concurrency::Fixed(1),
            max_retries: 0,
            cooldown_failures: 3,
            cooldown_ms: COOLDOWN.as_millis() as u64,
            ..fast_upstream("broken", &broken.base_url())
        },
        UpstreamConfig {
            concurrency: ferry::config::Concurrency::Fixed(4),
            ..fast_upstream("healthy", &healthy.base_url())
        },
    ];
    let engine =
        Engine::start(&engine_config(quick_lane(Mode::Fanout, 100), upstreams)).expect("engine starts");
    let mut events = engine.subscribe();
    let started = Instant::now();

    let outcomes = run(&engine, prompts(30)).await;
    assert!(outcomes.iter().all(|o| o.as_ref().is_ok_and(|a| &*a.upstream == "healthy")), "{outcomes:?}");
    let cooling = std::iter::from_fn(|| events.try_recv().ok()).any(|event| {
        matches!(event, MetricsEvent::Upstream(s)
            if &*s.name == "broken" && matches!(s.state, UpstreamState::CoolingDown { .. }))
    });
    assert!(cooling, "`broken` never reported a cooldown");
    assert_eq!(broken.stats().requests, 3, "exactly cooldown_failures calls, then none");

    // More work while it cools down: all of it goes to the healthy upstream.
    let outcomes = run(&engine, prompts(30)).await;
    assert!(outcomes.iter().all(|o| o.as_ref().is_ok_and(|a| &*a.upstream == "healthy")), "{outcomes:?}");
    assert!(started.elapsed() < COOLDOWN, "the test itself was too slow to observe the cooldown");
    assert_eq!(broken.stats().requests, 3, "no call during the cooldown");

    // Once it is over, the upstream is tried again.
    sleep(COOLDOWN.saturating_sub(started.elapsed()) + Duration::from_millis(100)).await;
    let outcomes = run(&engine, prompts(30)).await;
    assert!(outcomes.iter().all(|o| o.is_ok()), "{outcomes:?}");
    assert!(broken.stats().requests > 3, "the cooldown ends after cooldown_ms");
}

#[actix_rt::test]
async fn overload_lowers_concurrency_and_items_still_succeed() {
    let mock = start_mock(MockUpstreamArgs { overload_rate: 0.3, latency_ms: 10, ..mock_args() });
    let upstream = UpstreamConfig {
        concurrency: ferry::config::Concurrency::Fixed(8),
        max_retries: 10,
        ..fast_upstream("local", &mock.base_url())
    };
    let engine =
        Engine::start(&engine_config(quick_lane(Mode::Fanout, 200), vec![upstream])).expect("engine starts");
    let mut events = engine.subscribe();

    let outcomes = run(&engine, prompts(200)).await;

    for (i, outcome) in outcomes.iter().enumerate() {
        assert!(outcome.is_ok(), "item {i}: {outcome:?}");
    }
    let mut lowest = usize::MAX;
    while let Ok(event) = events.try_recv() {
        if let MetricsEvent::Upstream(status) = event {
            lowest = lowest.min(status.concurrency);
        }
    }
    assert!(lowest < 8, "503s must lower the effective concurrency (lowest seen {lowest})");
    // The hub has the counters from the client's status reports (every 250 ms): wait for one
    // made after the last call, which has all 200 answers.
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        let snapshot = engine.snapshot().await.expect("snapshot");
        let status = snapshot.upstreams.get("local").cloned();
        if status.as_ref().is_some_and(|s| s.ok == 200 && s.in_flight == 0) || Instant::now() > deadline {
            break status.expect("`local` reported its status");
        }
        sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.ok, 200, "{status:?}");
    assert!(status.backpressure > 0, "{status:?}");
    assert_eq!(mock.stats().outcomes.overloaded, status.backpressure + status.retries, "{status:?}");
}

#[actix_rt::test]
async fn overload_at_concurrency_one_is_backpressure_not_failure() {
    // llama.cpp with one slot: a 503 there must mean "wait", not use up the item's retries.
    let mock = start_mock(MockUpstreamArgs { overload_rate: 0.5, ..mock_args() });
    let upstream = UpstreamConfig {
        concurrency: ferry::config::Concurrency::Fixed(1),
        max_retries: 0,
        ..fast_upstream("one-slot", &mock.base_url())
    };
    let engine =
        Engine::start(&engine_config(quick_lane(Mode::Fanout, 50), vec![upstream])).expect("engine starts");

    let outcomes = run(&engine, prompts(30)).await;

    for (i, outcome) in outcomes.iter().enumerate() {
        assert!(outcome.is_ok(), "item {i}: {outcome:?}");
    }
    assert!(mock.stats().outcomes.overloaded > 0, "the mock must have sent some 503s");
}

#[actix_rt::test]
async fn fallback_upstream_gets_its_own_retries() {
    let broken = start_mock(MockUpstreamArgs { error_rate: 1.0, ..mock_args() });
    let flaky = start_mock(MockUpstreamArgs { error_rate: 0.1, seed: 11, ..mock_args() });
    let upstreams = vec![
        // The larger concurrency makes "broken" the least loaded, so most items start there.
        UpstreamConfig {
            max_retries: 5,
            concurrency: ferry::config::Concurrency::Fixed(200),
            ..fast_upstream("broken", &broken.base_url())
        },
        UpstreamConfig { max_retries: 5, ..fast_upstream("flaky", &flaky.base_url()) },
    ];
    let engine =
        Engine::start(&engine_config(quick_lane(Mode::Fanout, 200), upstreams)).expect("engine starts");

    let outcomes = run(&engine, prompts(100)).await;

    // Most items fail over from "broken" with its 5 retries used up. Had they kept
    // that count, flaky's first 500 (1 in 10) would end them; with their own retries, an item
    // fails only after 6 500s in a row (one in a million).
    for (i, outcome) in outcomes.iter().enumerate() {
        let answer = outcome.as_ref().unwrap_or_else(|e| panic!("item {i}: {e}"));
        assert_eq!(&*answer.upstream, "flaky", "item {i}");
    }
    let failed_over = outcomes.iter().filter(|o| o.as_ref().is_ok_and(|a| a.attempts > 6)).count();
    assert!(failed_over >= 50, "only {failed_over} items failed over");
}
