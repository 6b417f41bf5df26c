//! What the engine promises when things go wrong: an actor that panics loses no item, an item
//! that keeps crashing its holders ends in an error instead of hanging, a full lane refuses a
//! submission whole before anything reaches the upstream, and shutdown answers every accepted
//! item. The upstream is the mock over a real loopback socket.

mod common;

use std::time::Duration;

use common::{
    assert_answered_in_order, config_with, lane, mock_args, prompts, start_mock, upstream_for, within,
};
use ferry::config::{LaneConfig, Mode, ProviderKind, UpstreamConfig};
use ferry::engine::{Engine, FaultTarget, ItemError, MAX_RESTARTS, Prompt, SubmitError};
use ferry::mock_upstream::{MockUpstreamArgs, MockUpstreamHandle};

/// A mock upstream (`args`) and an engine calling it as the OpenAI upstream `openai`, with
/// `lanes` and at most `max_requeues` put-backs per item.
fn engine_on<'a>(
    args: MockUpstreamArgs,
    lanes: impl IntoIterator<Item = (&'a str, LaneConfig)>,
    upstream: impl FnOnce(UpstreamConfig) -> UpstreamConfig,
    max_requeues: u32,
) -> (Engine, MockUpstreamHandle) {
    let mock = start_mock(args);
    let mut config = config_with(lanes, vec![upstream(upstream_for(ProviderKind::Openai, &mock))]);
    config.batching.max_requeues = max_requeues;
    (Engine::start(&config).expect("engine starts"), mock)
}

/// Injects a panic into `target`, then checks 200 items all get exactly one answer and the
/// engine serves a second submission afterwards.
async fn no_item_lost_when(target: FaultTarget) {
    let bulk = LaneConfig { max_batch: Some(50), ..lane(0, Mode::Fanout) };
    let (engine, mock) = engine_on(mock_args(), [("bulk", bulk)], |u| u, 3);
    engine.inject_panic(target.clone()).await.expect("fault armed");

    let items = engine.submit("bulk", prompts("first", 200)).await.expect("accepted");
    let outcomes = within(Duration::from_secs(15), "200 items after a panic", items.collect()).await;
    assert_eq!(outcomes.len(), 200);
    assert_answered_in_order(&outcomes, "first");
    let snapshot = engine.snapshot().await.expect("snapshot");
    assert!(snapshot.restarts >= 1, "{target:?}: no restart recorded, so the fault never fired");
    assert_eq!(engine.open_items(), 0, "every item answered once");

    let again = engine.submit("bulk", prompts("second", 20)).await.expect("accepted after restart");
    let outcomes = within(Duration::from_secs(10), "a second submission", again.collect()).await;
    assert_answered_in_order(&outcomes, "second");
    assert!(mock.stats().prompts_answered >= 220, "every item reached the upstream");
}

#[actix_rt::test]
async fn lane_panic_loses_no_item() {
    no_item_lost_when(FaultTarget::Lane("bulk".into())).await;
}

#[actix_rt::test]
async fn pool_panic_loses_no_item() {
    no_item_lost_when(FaultTarget::Pool).await;
}

#[actix_rt::test]
async fn client_panic_loses_no_item() {
    no_item_lost_when(FaultTarget::Client("openai".into())).await;
}

#[actix_rt::test]
async fn item_crashing_every_holder_ends_in_an_error_not_a_hang() {
    // The item lands in three panicking holders in turn: lane, pool, client.
    let arm_all = |engine: Engine| async move {
        for target in
            [FaultTarget::Lane("bulk".into()), FaultTarget::Pool, FaultTarget::Client("openai".into())]
        {
            engine.inject_panic(target).await.expect("fault armed");
        }
    };
    let (engine, _mock) = engine_on(mock_args(), [("bulk", lane(0, Mode::Fanout))], |u| u, 2);
    arm_all(engine.clone()).await;
    let outcome =
        within(Duration::from_secs(10), "a poisoned item", engine.submit_one("bulk", Prompt::text("p")))
            .await
            .expect("accepted");
    assert_eq!(outcome, Err(ItemError::Crashed { times: 3 }));
    assert_eq!(engine.snapshot().await.expect("snapshot").restarts, 3);

    // One more put-back allowed: the same three crashes are survived.
    let (engine, _mock) = engine_on(mock_args(), [("bulk", lane(0, Mode::Fanout))], |u| u, 3);
    arm_all(engine.clone()).await;
    let outcome =
        within(Duration::from_secs(10), "a surviving item", engine.submit_one("bulk", Prompt::text("p")))
            .await
            .expect("accepted");
    let answer = outcome.expect("answered after three crashes");
    assert!(common::answers(&answer.text, "p"), "{}", answer.text);
}

#[actix_rt::test]
async fn full_lane_refuses_a_submission_whole_before_the_upstream() {
    let small = LaneConfig { queue_capacity: Some(10), max_batch: Some(4), ..lane(1, Mode::Fanout) };
    let (engine, mock) = engine_on(mock_args(), [("small", small)], |u| u, 3);

    let error = engine.submit("small", prompts("eleven", 11)).await.err().expect("11 of 10 refused");
    assert_eq!(error, SubmitError::QueueFull { lane: "small".into(), held: 0, capacity: 10, asked: 11 });
    assert!(error.to_string().contains("`small`"), "{error}");
    assert_eq!(engine.open_items(), 0, "a refused submission leaves nothing open");

    // Paused, so the lane keeps what it holds: 10 fit exactly, one more does not.
    engine.pause().await.expect("pause");
    let ten = engine.submit("small", prompts("ten", 10)).await.expect("10 of 10 fit");
    let error = engine.submit_one("small", Prompt::text("one too many")).await.expect_err("full");
    assert_eq!(error, SubmitError::QueueFull { lane: "small".into(), held: 10, capacity: 10, asked: 1 });
    assert_eq!(engine.open_items(), 10);

    let error = engine.submit("nowhere", prompts("x", 1)).await.err().expect("unknown lane");
    assert_eq!(error, SubmitError::UnknownLane { lane: "nowhere".into(), known: "small".into() });
    assert_eq!(mock.stats().requests, 0, "refusals never reach the upstream");

    engine.resume().await.expect("resume");
    let outcomes = within(Duration::from_secs(5), "the accepted ten", ten.collect()).await;
    assert_answered_in_order(&outcomes, "ten");
    let stats = mock.stats();
    assert_eq!((stats.requests, stats.prompts_answered), (10, 10), "only the accepted items went upstream");
}

#[actix_rt::test]
async fn shutdown_answers_every_accepted_item_and_refuses_new_ones() {
    // Two calls at a time of 200 ms each: ten items need a second at least; the deadline is
    // 600 ms from when the first two calls reached the upstream, so those two finish inside it
    // with time to spare on a loaded machine, and at least four items are cut off.
    let slow = MockUpstreamArgs { latency_ms: 200, ..mock_args() };
    let (engine, mock) = engine_on(
        slow,
        [("bulk", lane(0, Mode::Fanout))],
        |u| UpstreamConfig { concurrency: ferry::config::Concurrency::Fixed(2), ..u },
        3,
    );
    let items = engine.submit("bulk", prompts("late", 10)).await.expect("accepted");
    within(Duration::from_secs(5), "the first two calls under way", async {
        while mock.stats().requests < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    let report =
        within(Duration::from_secs(5), "shutdown", engine.shutdown(Duration::from_millis(600))).await;
    let outcomes = within(Duration::from_secs(5), "outcomes after shutdown", items.collect()).await;
    let mut answered = 0;
    for (i, outcome) in outcomes.iter().enumerate() {
        match outcome {
            Ok(answer) => {
                assert!(common::answers(&answer.text, &format!("late-{i}")), "{}", answer.text);
                answered += 1;
            }
            Err(ItemError::ShuttingDown) => {}
            Err(other) => panic!("item {i} ended in {other}"),
        }
    }
    assert!(answered >= 1, "calls that finish before the deadline keep their answers: {outcomes:?}");
    assert!(answered < 10, "ten 200 ms calls two at a time cannot all finish in 600 ms");
    assert_eq!((report.drained, report.cut_off), (answered, 10 - answered), "{report:?}");
    assert_eq!(engine.open_items(), 0);

    assert_eq!(engine.submit("bulk", prompts("new", 1)).await.err(), Some(SubmitError::ShuttingDown));
    assert_eq!(engine.submit_one("bulk", Prompt::text("new")).await.err(), Some(SubmitError::ShuttingDown));
}

#[actix_rt::test]
async fn shutdown_with_time_enough_drains_everything_and_returns_early() {
    let slow = MockUpstreamArgs { latency_ms: 200, ..mock_args() };
    let (engine, _mock) = engine_on(slow, [("bulk", lane(0, Mode::Fanout))], |u| u, 3);
    let items = engine.submit("bulk", prompts("drained", 4)).await.expect("accepted");

    let started = std::time::Instant::now();
    let report = within(Duration::from_secs(15), "shutdown", engine.shutdown(Duration::from_secs(10))).await;
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown waited out its deadline with nothing left");
    assert_eq!((report.drained, report.cut_off), (4, 0));
    let outcomes = within(Duration::from_secs(5), "outcomes", items.collect()).await;
    assert_answered_in_order(&outcomes, "drained");
}

/// The operator's second `q`: a drain with a long deadline ends as soon as it is cut off, and
/// what was still open is answered "shutting down", not dropped.
#[actix_rt::test]
async fn a_cut_off_ends_a_long_drain_at_once_and_answers_the_rest() {
    // One call at a time of 2 s each: twenty items need 40 s; the drain's deadline is 60 s.
    let slow = MockUpstreamArgs { latency_ms: 2_000, ..mock_args() };
    let (engine, mock) = engine_on(
        slow,
        [("bulk", lane(0, Mode::Fanout))],
        |u| UpstreamConfig { concurrency: ferry::config::Concurrency::Fixed(1), ..u },
        3,
    );
    let items = engine.submit("bulk", prompts("cut", 20)).await.expect("accepted");
    // The first call is under way at the mock.
    let first_call = async {
        while mock.stats().requests == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    within(Duration::from_secs(5), "the first call", first_call).await;

    let drain = engine.clone();
    let shutdown = actix_rt::spawn(async move { drain.shutdown(Duration::from_secs(60)).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!shutdown.is_finished(), "the drain is still waiting on the slow calls");
    engine.cut_off();
    let report = within(Duration::from_secs(10), "a cut-off drain", shutdown).await.expect("shutdown task");
    assert_eq!((report.drained, report.cut_off, report.left), (0, 20, 0), "{report:?}");
    let outcomes = within(Duration::from_secs(5), "outcomes after the cut-off", items.collect()).await;
    assert!(outcomes.iter().all(|o| matches!(o, Err(ItemError::ShuttingDown))), "{outcomes:?}");
}

/// Restart intensity: an actor may restart `MAX_RESTARTS` times within `RESTART_WINDOW`; the
/// next panic declares it failed and stops it, instead of restarting it in a loop. The engine
/// then refuses new work with a clear error, and says which actor failed.
#[actix_rt::test]
async fn an_actor_panicking_past_the_restart_intensity_is_failed_and_intake_stops() {
    let (engine, _mock) = engine_on(mock_args(), [("bulk", lane(0, Mode::Fanout))], |u| u, 2);
    for round in 0..MAX_RESTARTS {
        engine.inject_panic(FaultTarget::Lane("bulk".into())).await.expect("fault armed");
        let prompt = format!("round {round}");
        let outcome = within(Duration::from_secs(5), "an item through a restarted lane", async {
            engine.submit_one("bulk", Prompt::text(prompt.clone())).await.expect("accepted")
        })
        .await;
        let answer = outcome.expect("answered after the lane's restart");
        assert!(common::answers(&answer.text, &prompt), "{}", answer.text);
        assert!(engine.failed_actors().is_empty(), "{round} restarts are within the intensity");
    }
    // One panic more: the lane is stopped; the item it held cannot go back to it and ends in an
    // error after its put-backs (never a hang).
    engine.inject_panic(FaultTarget::Lane("bulk".into())).await.expect("fault armed");
    let outcome = within(Duration::from_secs(5), "the item held by the failed lane", async {
        engine.submit_one("bulk", Prompt::text("last")).await.expect("accepted")
    })
    .await;
    assert!(matches!(outcome, Err(ItemError::Crashed { .. })), "{outcome:?}");
    assert_eq!(engine.failed_actors(), ["lane:bulk"]);
    let error = engine.submit_one("bulk", Prompt::text("new work")).await.expect_err("no new work");
    assert_eq!(error, SubmitError::Failed { actors: "lane:bulk".into() });
    assert!(error.to_string().contains("lane:bulk") && error.to_string().contains("no new work"), "{error}");
    let snapshot = within(Duration::from_secs(5), "the failure in the metrics", async {
        loop {
            let snapshot = engine.snapshot().await.expect("snapshot");
            if !snapshot.failed_actors.is_empty() {
                return snapshot;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(
        (snapshot.failed_actors, snapshot.restarts),
        (vec!["lane:bulk".to_string()], MAX_RESTARTS as u64)
    );
}
