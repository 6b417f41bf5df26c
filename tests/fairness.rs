//! Inside a lane, owners take turns, and within an owner its jobs do: a small job is not stuck
//! behind a big one. The upstream is the in-process mock on a paused clock, one call at a time,
//! so the order answers arrive in is the order the calls were made.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use common::{config_with, lane, prompts, within};
use ferry::config::{Concurrency, Config, Mode, UpstreamConfig};
use ferry::engine::{Engine, Origin, Submission};

/// One fanout lane, window 0, one call at a time of 10 ms.
fn one_at_a_time() -> Config {
    let mut upstream = UpstreamConfig { concurrency: Concurrency::Fixed(1), ..UpstreamConfig::mock("mock") };
    upstream.mock.latency_ms = 10;
    config_with([("bulk", lane(1, Mode::Fanout))], vec![upstream])
}

type Order = Rc<RefCell<Vec<&'static str>>>;

async fn record(who: &'static str, mut submission: Submission, order: Order) {
    while let Some((index, outcome)) = submission.next().await {
        assert!(outcome.is_ok(), "{who}-{index} failed: {outcome:?}");
        order.borrow_mut().push(who);
    }
}

/// Submits 5,000 items of `big`, lets 50 be answered, then 20 of `small`; returns the answers
/// in order from the moment `small` was submitted, once all of `small` is answered.
async fn small_after_big(big: Arc<Origin>, small: Arc<Origin>) -> Vec<&'static str> {
    tokio::time::pause();
    let engine = Engine::start(&one_at_a_time()).expect("engine starts");
    let order: Order = Rc::default();
    let a = engine.submit_from("bulk", &big, prompts("a", 5_000)).await.expect("big accepted");
    let big_task = actix_rt::spawn(record("big", a, Rc::clone(&order)));
    within(Duration::from_secs(60), "50 answers", async {
        while order.borrow().len() < 50 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let start = order.borrow().len();
    let b = engine.submit_from("bulk", &small, prompts("b", 20)).await.expect("small accepted");
    within(Duration::from_secs(60), "the small job", record("small", b, Rc::clone(&order))).await;
    let seen = order.borrow()[start..].to_vec();
    engine.shutdown(Duration::ZERO).await;
    let _ = big_task.await;
    seen
}

#[actix_rt::test]
async fn another_owners_small_job_is_served_in_turn_not_after_a_5000_item_backlog() {
    let seen = small_after_big(Origin::new("tenant-a", "batch_a"), Origin::new("tenant-b", "batch_b")).await;
    // Turns alternate: 20 small answers within about 40 (plus the call under way).
    assert!(seen.len() <= 42, "the small job's 20 items took {} answers: {seen:?}", seen.len());
}

#[actix_rt::test]
async fn a_small_job_of_the_same_owner_is_served_in_turn_with_its_big_job() {
    let seen = small_after_big(Origin::new("tenant-a", "batch_1"), Origin::new("tenant-a", "batch_2")).await;
    assert!(seen.len() <= 42, "the small job's 20 items took {} answers: {seen:?}", seen.len());
}
