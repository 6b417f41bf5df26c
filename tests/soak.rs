//! Fault soak: 10,000 items through the engine to a mock upstream over a real socket that fails
//! one call in five, in every way it can. Every item must end exactly once.
//!
//! Run with `--nocapture` to see the counts.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{LANE, engine_config, fast_upstream, mock_args, quick_lane, start_mock};
use ferry::config::{Mode, UpstreamConfig};
use ferry::engine::{Engine, ItemError, Prompt};
use ferry::mock_upstream::MockUpstreamArgs;
use tokio::time::timeout;

const ITEMS: usize = 10_000;
/// The whole soak must end well inside this (it takes ~10-20 s on two cores).
const DEADLINE: Duration = Duration::from_secs(60);

#[actix_rt::test]
async fn every_item_ends_exactly_once_under_mixed_faults() {
    // 20% of calls fail: 4% each of 429 (Retry-After 50 ms), 500, hang, dropped, malformed.
    let mock = start_mock(MockUpstreamArgs {
        rate_limit_rate: 0.04,
        retry_after_ms: 50,
        error_rate: 0.04,
        timeout_rate: 0.04,
        drop_rate: 0.04,
        malformed_rate: 0.04,
        seed: 7,
        ..mock_args()
    });
    let upstream = UpstreamConfig {
        concurrency: ferry::config::Concurrency::Fixed(64),
        max_retries: 6,
        timeout_ms: 200,
        backoff_base_ms: 10,
        backoff_max_ms: 200,
        ..fast_upstream("soak", &mock.base_url())
    };
    let engine = Engine::start(&engine_config(quick_lane(Mode::Fanout, 1_000), vec![upstream]))
        .expect("engine starts");
    let started = Instant::now();
    let prompts = (0..ITEMS).map(|i| Prompt::text(format!("soak {i}"))).collect();
    let mut submission = engine.submit(LANE, prompts).await.expect("accepted");

    let mut seen = vec![0u32; ITEMS];
    let mut ends: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while let Some((index, outcome)) =
        timeout(deadline.saturating_duration_since(tokio::time::Instant::now()), submission.next())
            .await
            .unwrap_or_else(|_| panic!("stuck: {} items still open", engine.open_items()))
    {
        seen[index] += 1;
        let end = match outcome {
            Ok(answer) => {
                assert!(
                    answer.text.starts_with(&format!("mock answer to: soak {index} ")),
                    "{}",
                    answer.text
                );
                "ok".to_string()
            }
            Err(ItemError::Upstream { error, .. }) => format!("error: {}", error.kind()),
            Err(other) => format!("error: {other}"),
        };
        *ends.entry(end).or_default() += 1;
    }
    let elapsed = started.elapsed();

    let stats = mock.stats();
    println!("soak: {ITEMS} items in {elapsed:?}");
    println!("soak: item outcomes {ends:?}");
    println!("soak: upstream requests {}, by outcome {:?}", stats.requests, stats.outcomes);
    let twice: Vec<usize> = (0..ITEMS).filter(|&i| seen[i] > 1).collect();
    let missing: Vec<usize> = (0..ITEMS).filter(|&i| seen[i] == 0).collect();
    assert!(twice.is_empty(), "items answered more than once: {twice:?}");
    assert!(missing.is_empty(), "items never answered: {} (first {:?})", missing.len(), missing.first());
    assert_eq!(engine.open_items(), 0);
    assert!(ends["ok"] >= ITEMS * 99 / 100, "{ends:?}");
    assert!(elapsed < DEADLINE);
}
