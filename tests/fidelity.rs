//! Fidelity sampling over a real socket: a lane's `verify_share` of combined items is also sent
//! alone; agreement is counted per lane and model; a lane whose combined answers disagree too often
//! warns and, with `on_low_fidelity = "fanout"`, switches itself to fanout.

mod common;

use std::time::Duration;

use common::{LANE, engine_config, fast_upstream, mock_args, quick_lane, start_mock};
use ferry::config::{LaneConfig, LowFidelity, Mode};
use ferry::engine::{Engine, LanePatch, Outcome, Prompt, UpstreamStatus};
use ferry::mock_upstream::MockUpstreamArgs;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);

fn sampled_lane(on_low_fidelity: LowFidelity) -> LaneConfig {
    LaneConfig { verify_share: 1.0, min_fidelity: 0.8, on_low_fidelity, ..quick_lane(Mode::Combined, 4) }
}

/// A mock whose single answers are not padded (one word of output at most), so a right combined
/// answer and the answer alone are the same text.
fn mock(wrong_answer_rate: f64) -> ferry::mock_upstream::MockUpstreamHandle {
    start_mock(MockUpstreamArgs { output_tokens: 1, wrong_answer_rate, ..mock_args() })
}

/// An engine with one lane, `lane`, and one upstream, `mock`.
fn engine(lane: LaneConfig, mock: &ferry::mock_upstream::MockUpstreamHandle) -> Engine {
    let config = engine_config(lane, vec![fast_upstream("mock", &mock.base_url())]);
    Engine::start(&config).expect("engine starts")
}

async fn run(engine: &Engine, from: usize, n: usize) -> Vec<Outcome> {
    let prompts = (from..from + n).map(|i| Prompt::text(format!("question {i}"))).collect();
    let submission = engine.submit(LANE, prompts).await.expect("submission accepted");
    timeout(WAIT, submission.collect()).await.expect("every item ends in time")
}

fn assert_right(outcomes: &[Outcome], from: usize) {
    for (i, outcome) in outcomes.iter().enumerate() {
        let answer = outcome.as_ref().unwrap_or_else(|e| panic!("item {i}: {e}"));
        assert_eq!(answer.text, format!("mock answer to: question {}", from + i));
    }
}

async fn status_when(engine: &Engine, done: impl Fn(&UpstreamStatus) -> bool) -> UpstreamStatus {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let snapshot = engine.snapshot().await.expect("snapshot");
        if let Some(status) = snapshot.upstreams.get("mock").filter(|s| done(s)) {
            return status.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no such status in {WAIT:?}: {snapshot:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_rt::test]
async fn right_combined_answers_agree_and_the_lane_stays_combined() {
    let mock = mock(0.0);
    let engine = engine(sampled_lane(LowFidelity::Fanout), &mock);

    assert_right(&run(&engine, 0, 40).await, 0);

    let status = status_when(&engine, |s| s.fidelity.first().is_some_and(|f| f.samples == 40)).await;
    assert_eq!(status.fidelity[0].agreed, 40, "{status:?}");
    assert_eq!((&*status.fidelity[0].lane, &*status.fidelity[0].model), (LANE, "default"));
    assert_eq!(engine.config().await.expect("config").lanes[LANE].mode, Mode::Combined);
    // 10 combined calls, and each item once more alone.
    assert_eq!(mock.stats().requests, 10 + 40);
}

#[actix_rt::test]
async fn a_sampled_item_pays_for_both_calls_and_the_shares_add_up() {
    let mock = mock(0.0);
    // Every item of a combined call sampled, or (after 20) a few.
    let lane = LaneConfig { verify_share: 0.3, ..sampled_lane(LowFidelity::Warn) };
    let engine = engine(lane, &mock);

    let outcomes = run(&engine, 0, 60).await;
    assert_right(&outcomes, 0);
    let (prompt, completion) = outcomes.iter().flatten().fold((0, 0), |(p, c), answer| {
        (p + u64::from(answer.usage.prompt_tokens), c + u64::from(answer.usage.completion_tokens))
    });
    let status = status_when(&engine, |s| s.ok == mock.stats().requests).await;
    assert!(status.fidelity[0].samples >= 20, "{status:?}");
    // Every token the upstream reported is in exactly one item's usage.
    assert_eq!((prompt, completion), (status.prompt_tokens, status.completion_tokens));
}

#[actix_rt::test]
async fn wrong_combined_answers_are_measured_and_the_lane_switches_to_fanout() {
    let mock = mock(1.0);
    let engine = engine(sampled_lane(LowFidelity::Fanout), &mock);

    // Every combined answer is wrong, but every sampled item is answered alone: all right.
    assert_right(&run(&engine, 0, 40).await, 0);
    let status = status_when(&engine, |s| s.fidelity.first().is_some_and(|f| f.samples == 40)).await;
    assert_eq!(status.fidelity[0].agreed, 0, "{status:?}");
    assert_eq!(mock.stats().outcomes.wrong, 10);

    // Once the first 20 samples could no longer agree 80% of the time the lane asked for fanout:
    // new items go one call each.
    let lanes = engine.config().await.expect("config").lanes;
    assert_eq!(lanes[LANE].mode, Mode::Fanout, "{lanes:?}");
    let before = mock.stats().requests;
    assert_right(&run(&engine, 100, 8).await, 100);
    let stats = mock.stats();
    assert_eq!((stats.requests - before, stats.outcomes.wrong), (8, 10), "{stats:?}");
}

#[actix_rt::test]
async fn with_warn_the_lane_stays_combined() {
    let mock = mock(1.0);
    let engine = engine(sampled_lane(LowFidelity::Warn), &mock);
    assert_right(&run(&engine, 0, 40).await, 0);
    status_when(&engine, |s| s.fidelity.first().is_some_and(|f| f.samples == 40)).await;
    assert_eq!(engine.config().await.expect("config").lanes[LANE].mode, Mode::Combined);
}

#[actix_rt::test]
async fn the_first_twenty_combined_items_are_all_checked_then_only_the_share() {
    let mock = mock(0.0);
    // A share so small that chance alone would check almost none of 60 items.
    let lane = LaneConfig { verify_share: 0.000_001, ..sampled_lane(LowFidelity::Warn) };
    let engine = engine(lane, &mock);

    assert_right(&run(&engine, 0, 20).await, 0);
    let status = status_when(&engine, |s| s.fidelity.first().is_some_and(|f| f.samples == 20)).await;
    assert_eq!(status.fidelity[0].agreed, 20, "{status:?}");
    assert_right(&run(&engine, 20, 40).await, 20);
    // 15 combined calls of 4, and only the first 20 items once more alone.
    assert_eq!(mock.stats().requests, 15 + 20);
}

#[actix_rt::test]
async fn no_item_keeps_a_combined_answer_before_the_verdict_nor_after_a_switch() {
    let mock = mock(1.0);
    let lane = LaneConfig { verify_share: 0.000_001, ..sampled_lane(LowFidelity::Fanout) };
    let engine = engine(lane, &mock);

    // Every combined answer is wrong. Items whose combined answers came back before the first 20
    // comparisons, or after the lane was found low, are all sent alone: every answer is right.
    assert_right(&run(&engine, 0, 200).await, 0);
    assert_eq!(engine.config().await.expect("config").lanes[LANE].mode, Mode::Fanout);

    // Set back to combined by hand, the lane's new items are checked at the share again, not all
    // of them: 8 items are 2 combined calls (with wrong answers) and no call alone.
    let patch = LanePatch { mode: Some(Mode::Combined), ..LanePatch::default() };
    engine.update_lane(LANE, patch).await.expect("valid patch");
    let before = mock.stats().requests;
    let outcomes = run(&engine, 300, 8).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(mock.stats().requests - before, 2);
}

#[actix_rt::test]
async fn a_lane_set_back_to_combined_and_still_low_is_switched_again() {
    let mock = mock(1.0);
    let engine = engine(sampled_lane(LowFidelity::Fanout), &mock);
    assert_right(&run(&engine, 0, 40).await, 0);
    assert_eq!(engine.config().await.expect("config").lanes[LANE].mode, Mode::Fanout);

    // Set back by hand, its combined answers are still all wrong: judged again on the new
    // items (the old ones' late samples do not count), it goes back to fanout.
    let patch = LanePatch { mode: Some(Mode::Combined), ..LanePatch::default() };
    engine.update_lane(LANE, patch).await.expect("valid patch");
    assert_right(&run(&engine, 100, 40).await, 100);
    assert_eq!(engine.config().await.expect("config").lanes[LANE].mode, Mode::Fanout);
}

/// An upstream in front of `mock` that passes combined calls (they carry a `response_format`)
/// and answers every single call 500: the fidelity samples' calls alone fail.
fn failing_alone(mock: &ferry::mock_upstream::MockUpstreamHandle) -> (actix_web::dev::ServerHandle, String) {
    use actix_web::{App, HttpResponse, HttpServer, web};
    let target = format!("{}/chat/completions", mock.base_url());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let url = format!("http://{}/v1", listener.local_addr().expect("its address"));
    let server = HttpServer::new(move || {
        let target = target.clone();
        App::new().route(
            "/v1/chat/completions",
            web::post().to(move |body: web::Json<serde_json::Value>| {
                let target = target.clone();
                async move {
                    if body.get("response_format").is_none() {
                        return HttpResponse::InternalServerError().body("single calls fail here");
                    }
                    let reply = reqwest::Client::new().post(&target).json(&*body).send().await;
                    match reply {
                        Ok(reply) => HttpResponse::Ok()
                            .content_type("application/json")
                            .body(reply.bytes().await.unwrap_or_default()),
                        Err(_) => HttpResponse::BadGateway().finish(),
                    }
                }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .expect("listens")
    .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    (handle, url)
}

#[actix_rt::test]
async fn a_sample_whose_call_alone_fails_keeps_its_combined_answer() {
    let mock = mock(0.0);
    let (proxy, url) = failing_alone(&mock);
    let upstream = ferry::config::UpstreamConfig { max_retries: 0, ..fast_upstream("mock", &url) };
    let config = engine_config(sampled_lane(LowFidelity::Warn), vec![upstream]);
    let engine = Engine::start(&config).expect("engine starts");

    // Every item is sampled and every call alone fails: each keeps its right combined answer.
    assert_right(&run(&engine, 0, 8).await, 0);
    let status = status_when(&engine, |s| s.failed >= 8).await;
    assert!(status.fidelity.first().is_none_or(|f| f.samples == 0), "{status:?}");
    assert_eq!(mock.stats().requests, 2, "only the two combined calls reached the mock");
    proxy.stop(true).await;
}
