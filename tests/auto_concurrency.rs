//! `concurrency = "auto"` against the in-process mock's capacity model, on tokio's paused clock:
//! the client's limit settles near the mock's parallel slots without being told them.

mod common;

use std::time::Duration;

use common::{engine_config, quick_lane};
use ferry::config::{Concurrency, MockConfig, Mode, UpstreamConfig};
use ferry::engine::{Engine, Prompt, UpstreamStatus};

/// An engine on an in-process mock with `capacity` slots of 200 ms, `concurrency = "auto"`, and
/// a fanout lane holding a backlog larger than the mock can answer in the test's time.
fn engine_on(capacity: u32, mock: MockConfig) -> Engine {
    let upstream = UpstreamConfig {
        concurrency: Concurrency::Auto,
        mock: MockConfig { latency_ms: 200, capacity, ..mock },
        ..UpstreamConfig::mock("mock")
    };
    Engine::start(&engine_config(quick_lane(Mode::Fanout, 1_000), vec![upstream])).expect("engine starts")
}

/// The client's status after `at` simulated seconds from now, and the limits it reported on
/// the way.
async fn status_after(engine: &Engine, at: Duration) -> (UpstreamStatus, Vec<usize>) {
    let mut events = engine.subscribe();
    let until = tokio::time::Instant::now() + at;
    let mut seen = Vec::new();
    let mut last = None;
    while let Ok(event) = tokio::time::timeout_at(until, events.recv()).await {
        match event {
            Ok(ferry::engine::MetricsEvent::Upstream(status)) => {
                seen.push(status.concurrency);
                last = Some(status);
            }
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        }
    }
    (last.expect("the client reports its status every 250 ms"), seen)
}

async fn backlog(engine: &Engine, n: usize) -> ferry::engine::Submission {
    let prompts = (0..n).map(|i| Prompt::text(format!("q{i}"))).collect();
    engine.submit(common::LANE, prompts).await.expect("accepted")
}

async fn assert_all_answered(answers: ferry::engine::Submission) {
    let outcomes = answers.collect().await;
    assert!(outcomes.iter().all(Result::is_ok), "{:?}", outcomes.iter().find(|o| o.is_err()));
}

#[actix_rt::test]
async fn auto_settles_near_eight_slots_within_thirty_seconds() {
    tokio::time::pause();
    let engine = engine_on(8, MockConfig::default());
    let _answers = backlog(&engine, 5_000).await;

    let (status, _) = status_after(&engine, Duration::from_secs(30)).await;
    assert!(status.concurrency_auto);
    assert!((6..=10).contains(&status.concurrency), "settled at {}", status.concurrency);
    // And holds there over the next ten seconds, answering near the mock's 40 a second.
    let ok_before = status.ok;
    let (status, seen) = status_after(&engine, Duration::from_secs(10)).await;
    assert!(seen.iter().all(|c| (6..=10).contains(c)), "{seen:?}");
    assert!(status.ok - ok_before >= 340, "{} answers in 10 s", status.ok - ok_before);
}

#[actix_rt::test]
async fn auto_keeps_one_or_two_calls_on_a_one_slot_server() {
    tokio::time::pause();
    let engine = engine_on(1, MockConfig::default());
    let _answers = backlog(&engine, 1_000).await;

    let (status, _) = status_after(&engine, Duration::from_secs(30)).await;
    assert!((1..=2).contains(&status.concurrency), "settled at {}", status.concurrency);
    let (_, seen) = status_after(&engine, Duration::from_secs(10)).await;
    assert!(seen.iter().all(|c| (1..=2).contains(c)), "{seen:?}");
}

#[actix_rt::test]
async fn auto_backs_off_under_steady_503s_and_every_item_is_answered() {
    tokio::time::pause();
    // One call in five is a 503, whatever the load: the limit is cut again and again, and never
    // runs away. (Recovery once the 503s stop is shown on the simulated server in
    // `core::limits::adaptive`.)
    let engine = engine_on(8, MockConfig { overload_rate: 0.2, ..MockConfig::default() });
    let answers = backlog(&engine, 400).await;

    let (status, seen) = status_after(&engine, Duration::from_secs(10)).await;
    assert!(status.backpressure > 0, "{status:?}");
    assert!(seen.iter().all(|c| *c <= 3), "{seen:?}");
    assert!(seen.contains(&1), "{seen:?}");
    assert_all_answered(answers).await;
}

#[actix_rt::test]
async fn auto_backs_off_when_the_server_queue_overflows_and_climbs_back() {
    tokio::time::pause();
    // Eight slots and room for one call waiting: a tenth call in flight is answered 503 at once.
    let engine = engine_on(8, MockConfig { queue_limit: 1, ..MockConfig::default() });
    let answers = backlog(&engine, 2_000).await;

    let (status, seen) = status_after(&engine, Duration::from_secs(40)).await;
    assert!(status.backpressure > 0, "no 503 in 40 s: {seen:?}");
    // Cut below the slots at a 503, then back to them.
    let cut = seen.windows(2).position(|w| w[1] < w[0] && w[1] < 8).expect("a cut below 8");
    assert!(seen[cut..].iter().any(|c| *c >= 8), "never climbed back: {seen:?}");
    assert!(seen.iter().all(|c| *c <= 10), "{seen:?}");
    assert_all_answered(answers).await;
}
