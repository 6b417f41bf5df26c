//! How lanes form batches, seen from outside the engine: the window and max_batch rule per lane,
//! the delay between batches, order kept through combined and fanout lanes, live changes of
//! batch size, delay and lane settings, and pause/resume. Upstream calls go to the mock upstream
//! over a real loopback socket, except where a paused clock stands in for seconds of waiting.

mod common;

use std::time::Duration;

use common::{
    DispatchWatch, Dispatched, answers, assert_answered_in_order, config_with, lane, mock_args, prompts,
    start_mock, upstream_for, within,
};
use ferry::config::{LaneConfig, Mode, ProviderKind, UpstreamConfig};
use ferry::engine::{
    ControlError, Engine, EngineError, LanePatch, MAX_BATCH_DELAY_MS, MAX_BATCH_SIZE, MAX_LATENCY_MS, Prompt,
};
use ferry::mock_upstream::{MockUpstreamArgs, MockUpstreamHandle};
use tokio::time::Instant;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A mock upstream on its own port and an engine with `lanes` that calls it as an OpenAI API.
fn engine_on_mock<'a>(
    lanes: impl IntoIterator<Item = (&'a str, LaneConfig)>,
) -> (Engine, MockUpstreamHandle) {
    let mock = start_mock(mock_args());
    let config = config_with(lanes, vec![upstream_for(ProviderKind::Openai, &mock)]);
    (Engine::start(&config).expect("engine starts"), mock)
}

#[actix_rt::test]
async fn partial_batches_wait_for_their_own_lanes_window() {
    let high = LaneConfig { window_ms: 200, max_batch: Some(6), ..lane(3, Mode::Combined) };
    let medium = LaneConfig { window_ms: 1_000, max_batch: Some(4), ..lane(2, Mode::Combined) };
    let (engine, _mock) = engine_on_mock([("high", high), ("medium", medium)]);
    let mut watch = DispatchWatch::start(&engine);

    let t0 = Instant::now();
    let high_items = engine.submit("high", prompts("high", 3)).await.expect("high accepted");
    let medium_items = engine.submit("medium", prompts("medium", 3)).await.expect("medium accepted");
    let seen = watch.take(2, Duration::from_secs(5)).await;

    let first = &seen[0];
    assert_eq!((first.lane.as_str(), first.size), ("high", 3), "{seen:?}");
    let waited = first.at - t0;
    assert!(waited >= ms(190), "high went after {waited:?}, before its 200 ms window");
    assert!(waited < ms(900), "high waited {waited:?}: not its own 200 ms window");
    let second = &seen[1];
    assert_eq!((second.lane.as_str(), second.size), ("medium", 3), "{seen:?}");
    let waited = second.at - t0;
    assert!(waited >= ms(990), "medium went after {waited:?}, before its 1000 ms window");
    assert!(waited < ms(2_500), "medium waited {waited:?} for a 1000 ms window");

    let limit = Duration::from_secs(5);
    assert_answered_in_order(&within(limit, "high answers", high_items.collect()).await, "high");
    assert_answered_in_order(&within(limit, "medium answers", medium_items.collect()).await, "medium");
    watch.assert_none_for(ms(100), "each lane's items fit in one batch").await;
    let snapshot = engine.snapshot().await.expect("snapshot");
    let mut batches: Vec<(&str, usize, usize)> =
        snapshot.recent_batches.iter().map(|b| (b.lane.as_ref(), b.size, b.ok)).collect();
    batches.sort();
    assert_eq!(batches, [("high", 3, 3), ("medium", 3, 3)]);
    assert_eq!(snapshot.batches_in_flight, 0, "both batches completed");
}

#[actix_rt::test]
async fn full_lane_releases_without_waiting_for_the_window() {
    let slow = LaneConfig { window_ms: 10_000, max_batch: Some(4), ..lane(1, Mode::Combined) };
    let (engine, mock) = engine_on_mock([("slow", slow)]);
    let mut watch = DispatchWatch::start(&engine);

    let t0 = Instant::now();
    let items = engine.submit("slow", prompts("full", 4)).await.expect("accepted");
    let outcomes = within(Duration::from_secs(5), "a full batch", items.collect()).await;
    let took = t0.elapsed();
    assert_answered_in_order(&outcomes, "full");
    assert!(took < Duration::from_secs(3), "a full batch took {took:?}: it waited for the 10 s window");
    let seen = watch.take(1, ms(100)).await;
    assert_eq!((seen[0].lane.as_str(), seen[0].size), ("slow", 4));
    assert_eq!(mock.stats().requests, 1, "four items of a combined lane make one upstream call");
}

/// Paused clock and the in-process mock: the window is 10 s, and the test takes milliseconds.
#[actix_rt::test]
async fn ten_items_go_as_two_full_batches_then_the_rest_after_the_window() {
    tokio::time::pause();
    let slow = LaneConfig { window_ms: 10_000, max_batch: Some(4), ..lane(1, Mode::Combined) };
    let engine = Engine::start(&config_with([("slow", slow)], vec![UpstreamConfig::mock("mock")]))
        .expect("engine starts");
    let mut watch = DispatchWatch::start(&engine);

    let t0 = Instant::now();
    let items = engine.submit("slow", prompts("ten", 10)).await.expect("accepted");
    let outcomes = within(Duration::from_secs(60), "ten items", items.collect()).await;
    assert_answered_in_order(&outcomes, "ten");
    let seen = watch.take(3, ms(1)).await;
    let sizes: Vec<usize> = seen.iter().map(|d| d.size).collect();
    assert_eq!(sizes, [4, 4, 2]);
    for full in &seen[..2] {
        assert!(full.at - t0 < Duration::from_secs(1), "a full batch waited {:?}", full.at - t0);
    }
    let rest = seen[2].at - t0;
    assert!(rest >= Duration::from_secs(10), "the last two went after {rest:?}, before the window");
    assert!(rest < Duration::from_secs(11), "the last two went after {rest:?}, long after the window");
}

#[actix_rt::test]
async fn batches_of_a_lane_keep_the_delay_between_them() {
    let paced =
        LaneConfig { window_ms: 10_000, max_batch: Some(2), delay_ms: Some(300), ..lane(1, Mode::Combined) };
    let (engine, _mock) = engine_on_mock([("paced", paced)]);
    let mut watch = DispatchWatch::start(&engine);

    let items = engine.submit("paced", prompts("paced", 8)).await.expect("accepted");
    let seen = watch.take(4, Duration::from_secs(5)).await;
    assert!(seen.iter().all(|d| d.size == 2), "{seen:?}");
    assert_gaps(&seen, ms(300));
    assert_answered_in_order(&within(Duration::from_secs(5), "answers", items.collect()).await, "paced");
}

/// Asserts consecutive dispatches are at least `delay` apart (less 10 ms for timer and stamp
/// slack) and not grossly more (which would mean the delay is applied wrongly, e.g. twice).
fn assert_gaps(seen: &[Dispatched], delay: Duration) {
    for pair in seen.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap + ms(10) >= delay, "batches {gap:?} apart, under the {delay:?} delay: {seen:?}");
        assert!(gap < delay * 3, "batches {gap:?} apart for a {delay:?} delay: {seen:?}");
    }
}

#[actix_rt::test]
async fn thousand_prompts_come_back_in_order_from_combined_and_fanout_lanes() {
    // Jittered latency and many concurrent calls make answers arrive out of order.
    let mock = start_mock(MockUpstreamArgs { latency_jitter_ms: 5, workers: 2, ..mock_args() });
    let combined = LaneConfig { max_batch: Some(50), ..lane(2, Mode::Combined) };
    let fanout = LaneConfig { max_batch: Some(100), ..lane(1, Mode::Fanout) };
    let config = config_with(
        [("combined", combined), ("fanout", fanout)],
        vec![upstream_for(ProviderKind::Openai, &mock)],
    );
    let engine = Engine::start(&config).expect("engine starts");

    for lane in ["combined", "fanout"] {
        let items = engine.submit(lane, prompts(lane, 1_000)).await.expect("accepted");
        assert_eq!(items.len(), 1_000);
        let outcomes = within(Duration::from_secs(20), lane, items.collect()).await;
        assert_eq!(outcomes.len(), 1_000);
        assert_answered_in_order(&outcomes, lane);
    }
    assert_eq!(mock.stats().prompts_answered, 2_000);
}

#[actix_rt::test]
async fn batch_size_change_applies_from_the_next_batch_to_lanes_following_it() {
    let follows = LaneConfig { window_ms: 10_000, ..lane(1, Mode::Combined) };
    let own = LaneConfig { window_ms: 10_000, max_batch: Some(5), ..lane(2, Mode::Combined) };
    let (engine, _mock) = engine_on_mock([("follows", follows), ("own", own)]);
    let mut watch = DispatchWatch::start(&engine);

    // Batch size 10: two items wait for the 10 s window…
    let waiting = engine.submit("follows", prompts("waiting", 2)).await.expect("accepted");
    watch.assert_none_for(ms(200), "2 of 10 items and a 10 s window").await;
    // …until the size drops to 2 and they make a full batch.
    let config = engine.set_batch_size(2).await.expect("size 2 is valid");
    assert_eq!(config.batch_size, 2);
    assert_eq!(config.lanes["follows"].max_batch, 2);
    assert_eq!(config.lanes["own"].max_batch, 5, "a lane with its own max_batch keeps it");
    assert_eq!(engine.config().await.expect("config"), config);
    let seen = watch.take(1, Duration::from_secs(2)).await;
    assert_eq!((seen[0].lane.as_str(), seen[0].size), ("follows", 2));
    assert_answered_in_order(&within(Duration::from_secs(5), "answers", waiting.collect()).await, "waiting");

    let more = engine.submit("follows", prompts("more", 5)).await.expect("accepted");
    let sizes: Vec<usize> = watch.take(2, Duration::from_secs(2)).await.iter().map(|d| d.size).collect();
    assert_eq!(sizes, [2, 2], "the fifth item waits for the window");
    watch.assert_none_for(ms(200), "one item left of a batch of 2").await;
    drop(more);
}

#[actix_rt::test]
async fn batch_delay_change_paces_lanes_following_it() {
    let follows =
        LaneConfig { window_ms: 10_000, max_batch: Some(2), delay_ms: None, ..lane(1, Mode::Combined) };
    let own = LaneConfig { delay_ms: Some(50), ..lane(2, Mode::Combined) };
    let (engine, _mock) = engine_on_mock([("follows", follows), ("own", own)]);
    assert_eq!(engine.config().await.expect("config").lanes["follows"].delay_ms, 0);
    let mut watch = DispatchWatch::start(&engine);

    let config = engine.set_batch_delay(300).await.expect("any delay is valid");
    assert_eq!(config.batch_delay_ms, 300);
    assert_eq!(config.lanes["follows"].delay_ms, 300);
    assert_eq!(config.lanes["own"].delay_ms, 50, "a lane with its own delay keeps it");

    let items = engine.submit("follows", prompts("paced", 6)).await.expect("accepted");
    let seen = watch.take(3, Duration::from_secs(5)).await;
    assert_gaps(&seen, ms(300));
    assert_answered_in_order(&within(Duration::from_secs(5), "answers", items.collect()).await, "paced");
}

#[actix_rt::test]
async fn lane_update_changes_only_that_lane_and_a_shorter_window_releases_waiting_items() {
    let a = LaneConfig { window_ms: 10_000, ..lane(1, Mode::Combined) };
    let b = LaneConfig { window_ms: 10_000, ..lane(2, Mode::Combined) };
    let (engine, _mock) = engine_on_mock([("a", a), ("b", b)]);
    let mut watch = DispatchWatch::start(&engine);

    let config = engine
        .update_lane("a", LanePatch { max_batch: Some(2), ..LanePatch::default() })
        .await
        .expect("valid patch");
    assert_eq!((config.lanes["a"].max_batch, config.lanes["a"].max_batch_follows_global), (2, false));
    assert_eq!((config.lanes["b"].max_batch, config.lanes["b"].window_ms), (10, 10_000), "b untouched");
    let pair = engine.submit("a", prompts("a", 2)).await.expect("accepted");
    let seen = watch.take(1, Duration::from_secs(2)).await;
    assert_eq!((seen[0].lane.as_str(), seen[0].size), ("a", 2));

    // One item waits in b under a 10 s window; shortening the window lets it go now.
    let single = engine.submit("b", prompts("b", 1)).await.expect("accepted");
    watch.assert_none_for(ms(300), "one item under a 10 s window").await;
    let t_patch = Instant::now();
    let config = engine
        .update_lane("b", LanePatch { window_ms: Some(100), ..LanePatch::default() })
        .await
        .expect("valid patch");
    assert_eq!(config.lanes["b"].window_ms, 100);
    let seen = watch.take(1, Duration::from_secs(2)).await;
    assert_eq!((seen[0].lane.as_str(), seen[0].size), ("b", 1));
    assert!(seen[0].at - t_patch < Duration::from_secs(1), "the old 10 s window still held the item");

    // A lane given its own max_batch no longer follows the global size.
    let config = engine.set_batch_size(5).await.expect("valid size");
    assert_eq!((config.lanes["a"].max_batch, config.lanes["b"].max_batch), (2, 5));

    let limit = Duration::from_secs(5);
    assert_answered_in_order(&within(limit, "a", pair.collect()).await, "a");
    assert_answered_in_order(&within(limit, "b", single.collect()).await, "b");
}

#[actix_rt::test]
async fn invalid_live_changes_are_refused_naming_the_field_or_lane() {
    let (engine, _mock) = engine_on_mock([("only", lane(1, Mode::Fanout))]);
    let before = engine.config().await.expect("config");

    let error = engine.set_batch_size(0).await.expect_err("size 0 is refused");
    assert!(matches!(error, ControlError::Invalid { field: "size", .. }), "{error:?}");
    let error = engine
        .update_lane("only", LanePatch { max_batch: Some(0), ..LanePatch::default() })
        .await
        .expect_err("max_batch 0 is refused");
    assert!(matches!(error, ControlError::Invalid { field: "max_batch", .. }), "{error:?}");
    // The engine's own bounds, whichever door the value came through.
    let too_big = MAX_BATCH_SIZE as usize + 1;
    let error = engine.set_batch_size(too_big).await.expect_err("past MAX_BATCH_SIZE is refused");
    assert_eq!(
        error.to_string(),
        format!("size: must be an integer from 1 to {MAX_BATCH_SIZE} (got {too_big})")
    );
    let error = engine.set_batch_delay(MAX_BATCH_DELAY_MS + 1).await.expect_err("past MAX_BATCH_DELAY_MS");
    assert!(matches!(error, ControlError::Invalid { field: "delay_ms", .. }), "{error:?}");
    for (patch, field) in [
        (LanePatch { max_batch: Some(too_big), ..LanePatch::default() }, "max_batch"),
        (LanePatch { window_ms: Some(MAX_BATCH_DELAY_MS + 1), ..LanePatch::default() }, "window_ms"),
        (LanePatch { delay_ms: Some(MAX_BATCH_DELAY_MS + 1), ..LanePatch::default() }, "delay_ms"),
        (LanePatch { latency_ms: Some(0), ..LanePatch::default() }, "latency_ms"),
        (LanePatch { latency_ms: Some(MAX_LATENCY_MS + 1), ..LanePatch::default() }, "latency_ms"),
    ] {
        let error = engine.update_lane("only", patch).await.expect_err("out of bounds");
        assert!(matches!(error, ControlError::Invalid { field: f, .. } if f == field), "{error:?}");
    }
    // The bounds themselves are taken.
    engine.set_batch_size(MAX_BATCH_SIZE as usize).await.expect("MAX_BATCH_SIZE is valid");
    engine.set_batch_size(before.batch_size).await.expect("back");
    let error = engine
        .update_lane("nowhere", LanePatch { window_ms: Some(5), ..LanePatch::default() })
        .await
        .expect_err("unknown lane is refused");
    match &error {
        ControlError::UnknownLane { lane, known } => {
            assert_eq!((lane.as_str(), known.as_str()), ("nowhere", "only"))
        }
        other => panic!("expected UnknownLane, got {other:?}"),
    }
    assert!(error.to_string().contains("nowhere"), "{error}");
    assert_eq!(engine.config().await.expect("config"), before, "a refused change changes nothing");
}

#[actix_rt::test]
async fn paused_engine_queues_items_and_resume_sends_them() {
    let (engine, mock) = engine_on_mock([("now", lane(1, Mode::Fanout))]);
    let mut watch = DispatchWatch::start(&engine);

    assert!(engine.pause().await.expect("pause").paused);
    let items = engine.submit("now", prompts("held", 5)).await.expect("accepted while paused");
    watch.assert_none_for(ms(400), "dispatch is paused").await;
    let snapshot = engine.snapshot().await.expect("snapshot");
    assert!(snapshot.paused);
    assert_eq!(snapshot.lane_depths.get("now"), Some(&5), "the items wait in their lane");
    assert_eq!(mock.stats().requests, 0, "nothing reached the upstream while paused");

    assert!(!engine.resume().await.expect("resume").paused);
    let outcomes = within(Duration::from_secs(5), "answers after resume", items.collect()).await;
    assert_answered_in_order(&outcomes, "held");
    assert_eq!(mock.stats().prompts_answered, 5);
    let one = within(Duration::from_secs(5), "one more", engine.submit_one("now", Prompt::text("after")))
        .await
        .expect("accepted");
    assert!(answers(&one.expect("answered").text, "after"));
}

/// A fanout lane with more items than free call slots waits for a quarter of the slots before it
/// releases, so each finished call is not followed by a batch of one (whose fixed cost — an id,
/// two log lines, metrics events — would then be paid per item). Paused clock, in-process mock
/// answering in 10 ms, 16 call slots: a floor of 4.
#[actix_rt::test]
async fn a_fanout_backlog_goes_in_batches_of_a_quarter_of_the_slots_not_of_one() {
    tokio::time::pause();
    let fanout = LaneConfig { window_ms: 0, max_batch: Some(50), delay_ms: Some(0), ..lane(1, Mode::Fanout) };
    let mut mock = UpstreamConfig::mock("mock");
    mock.concurrency = ferry::config::Concurrency::Fixed(16);
    mock.mock.latency_ms = 10;
    mock.mock.latency_jitter_ms = 10;
    let engine = Engine::start(&config_with([("fanout", fanout)], vec![mock])).expect("engine starts");
    let mut watch = DispatchWatch::start(&engine);
    let items = engine.submit("fanout", prompts("backlog", 400)).await.expect("accepted");
    let outcomes = within(Duration::from_secs(60), "400 items", items.collect()).await;
    assert_answered_in_order(&outcomes, "backlog");
    let mut sizes = Vec::new();
    while let Some(seen) = watch.next(ms(1)).await {
        sizes.push(seen.size);
    }
    assert_eq!(sizes.iter().sum::<usize>(), 400);
    assert_eq!(sizes[0], 16, "the first batch fills every free slot: {sizes:?}");
    let (tail, body) = sizes.split_last().expect("batches");
    assert!(body.iter().all(|&size| size >= 4), "a batch under the floor of 4 went early: {sizes:?}");
    assert!(*tail >= 1);
    assert!(sizes.len() <= 100, "{} batches for 400 items: {sizes:?}", sizes.len());
}

#[actix_rt::test]
async fn a_config_outside_the_engine_bounds_does_not_start_and_names_every_value() {
    let mut config = config_with([("only", lane(1, Mode::Fanout))], Vec::new());
    config.batching.batch_size = MAX_BATCH_SIZE as usize + 1;
    if let Some(only) = config.lanes.get_mut("only") {
        only.window_ms = MAX_BATCH_DELAY_MS + 1;
    }
    match Engine::start(&config) {
        Err(EngineError::OutOfBounds(problems)) => {
            let expected = [
                format!(
                    "batching.batch_size: must be an integer from 1 to {MAX_BATCH_SIZE} (got {})",
                    MAX_BATCH_SIZE + 1
                ),
                format!(
                    "lanes.only.window_ms: must be an integer from 0 to {MAX_BATCH_DELAY_MS} (got {})",
                    MAX_BATCH_DELAY_MS + 1
                ),
            ];
            assert_eq!(problems, expected);
        }
        Err(other) => panic!("expected OutOfBounds, got {other}"),
        Ok(_) => panic!("a batch size past MAX_BATCH_SIZE started"),
    }
}
