//! Combined mode over a real socket: a batch goes out as one upstream call whose answers, keyed by
//! each prompt's id, are split back by id; a reply that is not an object of answers is retried item
//! by item, and one whose ids are missing, duplicated or renamed sends only those items alone —
//! never a wrong answer attached to an item. The reply's schema goes as each upstream takes it.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{LANE, engine_config, fast_upstream, mock_args, quick_lane, start_mock};
use ferry::config::{Mode, UpstreamConfig};
use ferry::core::combine;
use ferry::engine::{Engine, Outcome, Prompt};
use ferry::mock_upstream::MockUpstreamArgs;
use ferry::providers::{CallRequest, Usage};
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
    // The garbled calls' tokens are not lost: every token the upstream reported is in exactly one
    // item's usage (each garbled call's in the first of its items sent alone).
    let (prompt, completion) = outcomes.iter().flatten().fold((0, 0), |(p, c), answer| {
        (p + u64::from(answer.usage.prompt_tokens), c + u64::from(answer.usage.completion_tokens))
    });
    let status = status_when(&engine, "mock", |s| s.ok == stats.requests).await;
    assert_eq!((prompt, completion), (status.prompt_tokens, status.completion_tokens), "{status:?}");
}

/// The upstream's status once `done` holds for it, polled until a deadline (the client reports
/// every 250 ms).
async fn status_when(
    engine: &Engine,
    upstream: &str,
    done: impl Fn(&ferry::engine::UpstreamStatus) -> bool,
) -> ferry::engine::UpstreamStatus {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let snapshot = engine.snapshot().await.expect("snapshot");
        if let Some(status) = snapshot.upstreams.get(upstream).filter(|s| done(s)) {
            return status.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{upstream}: no such status in {WAIT:?}: {snapshot:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_rt::test]
async fn shuffled_dropped_duplicated_or_renamed_ids_never_give_a_wrong_answer() {
    let mock = start_mock(MockUpstreamArgs { misalign_rate: 1.0, ..mock_args() });
    let config = engine_config(quick_lane(Mode::Combined, 5), vec![fast_upstream("mock", &mock.base_url())]);
    let engine = Engine::start(&config).expect("engine starts");
    let prompts: Vec<String> = (0..60).map(|i| format!("question {i}")).collect();

    let outcomes = run(&engine, &prompts).await;

    let mut alone = 0;
    for (i, outcome) in outcomes.iter().enumerate() {
        let answer = outcome.as_ref().unwrap_or_else(|e| panic!("item {i}: {e}"));
        assert!(answers(&answer.text, &prompts[i]), "item {i} ({}) got {:?}", prompts[i], answer.text);
        if answer.attempts == 2 {
            alone += 1;
        }
    }
    let stats = mock.stats();
    assert_eq!(stats.outcomes.misaligned, 12, "every combined reply was misaligned: {stats:?}");
    // Shuffled entries are read by id; a dropped, duplicated or renamed id costs that item alone.
    assert!(alone > 0 && alone < 12, "{alone} items were sent alone");
    assert_eq!(stats.requests, 12 + alone as u64, "{stats:?}");
    let status = status_when(&engine, "mock", |s| s.combined_calls == 12 && s.in_flight == 0).await;
    assert_eq!((status.split_failures, status.resent_alone), (alone as u64, alone as u64), "{status:?}");
}

#[actix_rt::test]
async fn the_reply_schema_goes_as_each_upstream_takes_it() {
    use ferry::config::StructuredOutput;
    for (style, with_schema) in [
        (StructuredOutput::JsonSchema, 2),
        (StructuredOutput::JsonObjectSchema, 2),
        (StructuredOutput::None, 0),
    ] {
        let mock = start_mock(mock_args());
        let upstream = UpstreamConfig { structured_output: style, ..fast_upstream("mock", &mock.base_url()) };
        let engine =
            Engine::start(&engine_config(quick_lane(Mode::Combined, 5), vec![upstream])).expect("engine");
        let prompts: Vec<String> = (0..10).map(|i| format!("question {i}")).collect();
        let outcomes = run(&engine, &prompts).await;
        assert!(outcomes.iter().all(|o| o.as_ref().is_ok_and(|a| a.attempts == 1)), "{style}: {outcomes:?}");
        let stats = mock.stats();
        assert_eq!((stats.requests, stats.combined_with_schema), (2, with_schema), "{style}: {stats:?}");
        engine.shutdown(Duration::from_secs(1)).await;
        mock.stop().await;
    }
}

#[actix_rt::test]
async fn a_combined_calls_usage_is_shared_so_the_shares_add_up() {
    let mock = start_mock(mock_args());
    let config = engine_config(quick_lane(Mode::Combined, 3), vec![fast_upstream("mock", &mock.base_url())]);
    let engine = Engine::start(&config).expect("engine starts");
    let prompts: Vec<String> = ["a", "bb", "a somewhat longer question"].map(String::from).to_vec();

    let outcomes = run(&engine, &prompts).await;

    // What the mock reports for this one call.
    let request = CallRequest { messages: combine::build(&prompts), ..CallRequest::default() };
    let usage = ferry::providers::mock::answer(&request, 8).usage.expect("the mock reports usage");
    let shares: Vec<_> = outcomes.iter().map(|o| o.as_ref().expect("answered").usage).collect();
    let sum = |f: fn(&Usage) -> u32| shares.iter().map(f).sum::<u32>();
    assert_eq!(sum(|u| u.prompt_tokens), usage.prompt_tokens, "{shares:?} of {usage:?}");
    assert_eq!(sum(|u| u.completion_tokens), usage.completion_tokens, "{shares:?} of {usage:?}");
    let spread = |f: fn(&Usage) -> u32| {
        shares.iter().map(f).max().unwrap_or(0) - shares.iter().map(f).min().unwrap_or(0)
    };
    assert!(spread(|u| u.prompt_tokens) <= 1 && spread(|u| u.completion_tokens) <= 1, "{shares:?}");
}
