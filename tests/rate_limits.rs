//! Rate limits: 429 pauses with `Retry-After`, the RPM and TPM windows (checked against a paused
//! clock, so minutes of limits take milliseconds), and a refused connection not counting as sent.

mod common;

use std::time::Duration;

use common::{ClosedPort, LANE, engine_config, fast_upstream, mock_args, quick_lane, start_mock};
use ferry::config::{Mode, UpstreamConfig};
use ferry::engine::{Answer, Engine, ItemError, MetricsEvent, Outcome, Prompt, UpstreamState};
use ferry::mock_upstream::MockUpstreamArgs;
use ferry::providers::mock::Draws;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, sleep, timeout};

const MINUTE: Duration = Duration::from_secs(60);

fn prompts(n: usize) -> Vec<Prompt> {
    (0..n).map(|i| Prompt::text(format!("p{i}"))).collect()
}

async fn run(engine: &Engine, prompts: Vec<Prompt>, wait: Duration) -> Vec<Outcome> {
    let submission = engine.submit(LANE, prompts).await.expect("submission accepted");
    timeout(wait, submission.collect()).await.expect("every item ends in time")
}

/// A seed whose first mock call draws a 429 at `rate` and whose next `then_ok` calls draw none.
fn seed_limited_first(rate: f64, then_ok: usize) -> u64 {
    (1..10_000)
        .find(|&seed| {
            let draws = Draws::new(seed);
            draws.next().0 < rate && (0..then_ok).all(|_| draws.next().0 >= rate)
        })
        .expect("some seed draws a 429 first")
}

/// Polls `done` every 10 ms until it holds or `wait` passes.
async fn eventually(wait: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + wait;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        sleep(Duration::from_millis(10)).await;
    }
    true
}

#[actix_rt::test]
async fn retry_after_pauses_the_whole_upstream() {
    let seed = seed_limited_first(0.5, 2);
    let mock =
        start_mock(MockUpstreamArgs { rate_limit_rate: 0.5, retry_after_ms: 1_000, seed, ..mock_args() });
    let config =
        engine_config(quick_lane(Mode::Fanout, 10), vec![fast_upstream("limited", &mock.base_url())]);
    let engine = Engine::start(&config).expect("engine starts");
    let mut events = engine.subscribe();
    let started = Instant::now();

    let first = engine.submit(LANE, prompts(1)).await.expect("accepted");
    // The mock counts its 429 before the reply reaches the engine: wait for the engine to report
    // the pause, or the second item could go out before the 429 has been read.
    let backing_off = async {
        loop {
            match events.recv().await {
                Ok(MetricsEvent::Upstream(status))
                    if &*status.name == "limited"
                        && matches!(status.state, UpstreamState::BackingOff { .. }) =>
                {
                    return;
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => panic!("the engine stopped"),
            }
        }
    };
    timeout(Duration::from_secs(5), backing_off).await.expect("the engine reports the 429's pause");
    let limited_at = Instant::now();
    assert_eq!(mock.stats().outcomes.rate_limited, 1);
    // A second item after the 429 must wait out the same pause, not just the call that got it.
    let second = engine.submit(LANE, prompts(1)).await.expect("accepted");
    while limited_at.elapsed() < Duration::from_millis(900) {
        assert_eq!(mock.stats().requests, 1, "a call went out {:?} after the 429", limited_at.elapsed());
        sleep(Duration::from_millis(20)).await;
    }

    for (submission, attempts) in [(first, 2), (second, 1)] {
        let outcome = timeout(Duration::from_secs(5), submission.collect()).await.expect("ends in time");
        let answer = outcome[0].as_ref().expect("answered after the pause");
        assert_eq!(answer.attempts, attempts);
    }
    assert!(started.elapsed() >= Duration::from_secs(1), "answered before Retry-After passed");
    assert_eq!(mock.stats().requests, 3);
}

#[actix_rt::test]
async fn retry_after_past_the_maximum_is_clamped() {
    let seed = seed_limited_first(0.5, 1);
    let mock =
        start_mock(MockUpstreamArgs { rate_limit_rate: 0.5, retry_after_ms: 30_000, seed, ..mock_args() });
    let upstream = UpstreamConfig { retry_after_max_ms: 300, ..fast_upstream("limited", &mock.base_url()) };
    let engine =
        Engine::start(&engine_config(quick_lane(Mode::Fanout, 10), vec![upstream])).expect("engine starts");
    let started = Instant::now();

    let outcome = run(&engine, prompts(1), Duration::from_secs(5)).await;

    let answer = outcome[0].as_ref().expect("answered after the clamped pause");
    assert_eq!(answer.attempts, 2);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300), "came back after {waited:?}, before retry_after_max_ms");
    assert!(waited < Duration::from_secs(3), "waited {waited:?}: the 30 s Retry-After was not clamped");
}

#[actix_rt::test]
async fn refused_connection_gives_its_rate_window_back() {
    // rpm 2 and 6 attempts: were a refused connection counted, the third attempt would wait a
    // minute and the item would not end within the timeout.
    let closed = ClosedPort::bind();
    let upstream = UpstreamConfig { rpm: Some(2), max_retries: 5, ..fast_upstream("down", &closed.url()) };
    let engine =
        Engine::start(&engine_config(quick_lane(Mode::Fanout, 10), vec![upstream])).expect("engine starts");

    let outcome = run(&engine, prompts(1), Duration::from_secs(5)).await;

    match &outcome[0] {
        Err(ItemError::Upstream { error, attempts: 6, .. }) if error.kind() == "connect" => {}
        other => panic!("expected a connect error after 6 attempts, got {other:?}"),
    }
    // The hub learns the counters from the client's status reports (every 250 ms): wait for
    // one that has all six calls.
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        let snapshot = engine.snapshot().await.expect("snapshot");
        let status = snapshot.upstreams.get("down").cloned();
        if status.as_ref().is_some_and(|s| s.calls == 6 && s.in_flight == 0) || Instant::now() > deadline {
            break status.expect("`down` reported its status");
        }
        sleep(Duration::from_millis(20)).await;
    };
    assert_eq!((status.calls, status.limits.rpm_used), (6, 0), "{status:?}");
}

#[actix_rt::test]
async fn rpm_limit_holds_calls_back_over_a_real_socket() {
    // The mock enforces the same limit and would answer 429 to a call past it.
    let mock = start_mock(MockUpstreamArgs { rpm: Some(20), ..mock_args() });
    let upstream = UpstreamConfig {
        rpm: Some(20),
        concurrency: ferry::config::Concurrency::Fixed(8),
        ..fast_upstream("metered", &mock.base_url())
    };
    let engine =
        Engine::start(&engine_config(quick_lane(Mode::Fanout, 50), vec![upstream])).expect("engine starts");

    let submission = engine.submit(LANE, prompts(30)).await.expect("accepted");
    assert!(eventually(Duration::from_secs(3), || mock.stats().requests >= 20).await, "{:?}", mock.stats());
    // The 21st call may not go before the first leaves the 60 s window; watch a while.
    sleep(Duration::from_secs(1)).await;
    let stats = mock.stats();
    assert_eq!((stats.requests, stats.outcomes.rpm_limited), (20, 0), "{stats:?}");
    assert_eq!(engine.open_items(), 10);

    engine.shutdown(Duration::from_millis(100)).await;
    let outcomes = timeout(Duration::from_secs(5), submission.collect()).await.expect("ends in time");
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 20);
    assert!(outcomes.iter().filter(|o| o.is_err()).all(|o| matches!(o, Err(ItemError::ShuttingDown))));
}

/// Start instants (from the submission, on the paused clock) and tokens of calls answered by an
/// in-process mock with `latency`: on a paused clock an answer comes exactly `latency` after its
/// call started, and every item here is one call.
fn call_starts(outcomes: &[Outcome], latency: Duration) -> Vec<(Duration, u64)> {
    let mut calls: Vec<(Duration, u64)> = outcomes
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let answer: &Answer = o.as_ref().unwrap_or_else(|e| panic!("item {i}: {e}"));
            assert_eq!(answer.attempts, 1);
            (answer.latency - latency, u64::from(answer.usage.total()))
        })
        .collect();
    calls.sort();
    calls
}

/// The largest total `weight` of calls starting within any 60 s window `[t, t + 60 s)`, and the
/// smallest count of calls in such a window that ends before the last call (full windows only).
fn window_extremes(calls: &[(Duration, u64)], weight: impl Fn(u64) -> u64) -> (u64, usize) {
    let (mut most, mut fewest) = (0, usize::MAX);
    let last = calls.last().map_or(Duration::ZERO, |c| c.0);
    for (i, &(start, _)) in calls.iter().enumerate() {
        let inside: Vec<_> = calls[i..].iter().take_while(|c| c.0 < start + MINUTE).collect();
        most = most.max(inside.iter().map(|c| weight(c.1)).sum());
        if start + MINUTE <= last {
            fewest = fewest.min(inside.len());
        }
    }
    (most, fewest)
}

#[actix_rt::test]
async fn rpm_limit_holds_over_every_sixty_second_window() {
    tokio::time::pause();
    const LATENCY: Duration = Duration::from_millis(50);
    let upstream = UpstreamConfig {
        rpm: Some(600),
        concurrency: ferry::config::Concurrency::Fixed(16),
        mock: ferry::config::MockConfig { latency_ms: 50, ..Default::default() },
        ..UpstreamConfig::mock("mock")
    };
    let engine = Engine::start(&engine_config(quick_lane(Mode::Fanout, 1_000), vec![upstream]))
        .expect("engine starts");

    let outcomes = run(&engine, prompts(1_500), Duration::from_secs(600)).await;

    let calls = call_starts(&outcomes, LATENCY);
    let (most, fewest) = window_extremes(&calls, |_| 1);
    assert!(most <= 600, "{most} calls started within one 60 s window");
    // 1,500 calls at 600/min: 600 at once, 600 a minute later, the rest at two minutes. Over the
    // first two minutes the limit must be used to at least 95%.
    let two_minutes = calls.iter().take_while(|c| c.0 < 2 * MINUTE).count();
    assert!(two_minutes >= 1_140, "{two_minutes} calls in the first two minutes, below 95% of the limit");
    // And no full window may starve, as it would if freed slots were used late. The window log
    // merges takes closer than 60 ms, so a slot can free up to 60 ms late: allow 10%.
    assert!(fewest >= 540, "a full window held only {fewest} calls");
}

#[actix_rt::test]
async fn tpm_limit_counts_reported_usage_not_the_estimate() {
    tokio::time::pause();
    const TPM: u64 = 2_000;
    let upstream = UpstreamConfig {
        tpm: Some(TPM),
        concurrency: ferry::config::Concurrency::Fixed(16),
        ..UpstreamConfig::mock("mock")
    };
    // A reply budget of 200 tokens makes each call's estimate ~205; the mock uses ~9.
    let lane = ferry::config::LaneConfig { max_tokens: Some(200), ..quick_lane(Mode::Fanout, 1_000) };
    let engine = Engine::start(&engine_config(lane, vec![upstream])).expect("engine starts");

    let outcomes = run(&engine, prompts(300), Duration::from_secs(600)).await;

    let calls = call_starts(&outcomes, Duration::ZERO);
    let (tokens, _) = window_extremes(&calls, |tokens| tokens);
    assert!(tokens <= TPM, "{tokens} tokens used within one 60 s window");
    let first_minute = calls.iter().take_while(|c| c.0 < MINUTE).count();
    let per_call = calls[0].1;
    assert!(first_minute < 300, "all 300 calls ({} tokens) went in one minute", 300 * per_call);
    // Holding each call's 205-token estimate would allow ~9 calls a minute; settling to the
    // reported usage frees the rest of the window.
    assert!(
        first_minute as u64 >= (TPM - 205) / per_call - 2,
        "only {first_minute} calls of {per_call} tokens in the first minute"
    );
}
