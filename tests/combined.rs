//! Combined mode over a real socket: a batch goes out as one upstream call whose answer array is
//! split back by index, and a reply that is not a valid answer array is retried item by item.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{LANE, engine_config, fast_upstream, mock_args, quick_lane, start_mock};
use ferry::config::Mode;
use ferry::engine::{Engine, Outcome, Prompt};
use ferry::mock_upstream::MockUpstreamArgs;
use tokio::time::timeout;

/// Longest any test here may wait for its outcomes.
const WAIT: Duration = Duration::from_secs(20);

/// Whether `text` is the mock's answer to exactly `prompt` (padding allowed, a longer prompt not).
fn answers(text: &str, prompt: &str) -> bool {
    let own = format!("mock answer to: {prompt}");
    text == own || text.starts_with(&format!("{own} "))
}

async fn run(engine: &Engine, prompts: &[String]) -> Vec<Outcome> {
    let prompts = prompts.iter().map(Prompt::text).collect();
    let submission = engine.submit(LANE, prompts).await.expect("submission accepted");
    timeout(WAIT, submission.collect()).await.expect("every item ends in time")
}

#[actix_rt::test]
async fn combined_batch_is_one_upstream_call_answered_in_order() {
    let mock = start_mock(mock_args());
    let config = engine_config(quick_lane(Mode::Combined, 5), vec![fast_upstream("mock", &mock.base_url())]);
    let engine = Engine::start(&config).expect("engine starts");
    let prompts: Vec<String> = (0..20).map(|i| format!("question {i}")).collect();

    let outcomes = run(&engine, &prompts).await;

    let mut batches = HashSet::new();
    for (i, outcome) in outcomes.iter().enumerate() {
        let answer = outcome.as_ref().unwrap_or_else(|e| panic!("item {i}: {e}"));
        // The combined reply is split exactly: the bare answer, not a padded single-call answer.
        assert_eq!(answer.text, format!("mock answer to: question {i}"));
        assert_eq!(answer.attempts, 1, "item {i}");
        batches.insert(answer.batch_id);
    }
    let stats = mock.stats();
    assert_eq!(batches.len(), 4, "20 items in batches of 5");
    assert_eq!(stats.requests, 4, "one upstream call per batch, not per item: {stats:?}");
    assert_eq!(stats.prompts_answered, 20, "{stats:?}");
}

#[actix_rt::test]
async fn garbled_combined_reply_is_retried_item_by_item() {
    let mock = start_mock(MockUpstreamArgs { garble_rate: 1.0, ..mock_args() });
    let config = engine_config(quick_lane(Mode::Combined, 5), vec![fast_upstream("mock", &mock.base_url())]);
    let engine = Engine::start(&config).expect("engine starts");
    let prompts: Vec<String> = (0..20).map(|i| format!("question {i}")).collect();

    let outcomes = run(&engine, &prompts).await;

    for (i, outcome) in outcomes.iter().enumerate() {
        let answer = outcome.as_ref().unwrap_or_else(|e| panic!("item {i}: {e}"));
        assert!(answers(&answer.text, &prompts[i]), "item {i} got {:?}", answer.text);
        assert_eq!(answer.attempts, 2, "item {i}: the combined call, then its own");
    }
    let stats = mock.stats();
    assert_eq!(stats.outcomes.garbled, 4, "each of the 4 batches got a bad reply: {stats:?}");
    assert_eq!(stats.requests, 4 + 20, "4 combined calls, then one call per item: {stats:?}");
    assert_eq!(stats.prompts_answered, 20, "{stats:?}");
}
