//! Which lane goes first when the upstream cannot take everything: a higher lane overtakes a
//! lower backlog however old it is, and a waiting lower lane still gets its share of the
//! dispatches (`[batching] lower_share`, one in ten here) while higher traffic never stops.
//!
//! The upstream is the in-process mock on a paused clock, one call at a time and 200 ms each, so
//! the order answers arrive in is the order the calls were made, and 30 s of backlog take no
//! real time.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use common::{config_with, lane, prompts, within};
use ferry::config::{Concurrency, Config, Mode, UpstreamConfig};
use ferry::engine::{Engine, Prompt, Submission};

/// Fanout lanes `high` (rank 3) and `low` (rank 1), window 0; one call at a time, 200 ms each.
fn contended() -> Config {
    let mut upstream = UpstreamConfig { concurrency: Concurrency::Fixed(1), ..UpstreamConfig::mock("mock") };
    upstream.mock.latency_ms = 200;
    let mut config =
        config_with([("high", lane(3, Mode::Fanout)), ("low", lane(1, Mode::Fanout))], vec![upstream]);
    config.batching.lower_share = 0.1;
    config
}

type Order = Rc<RefCell<Vec<&'static str>>>;

/// Drains `submission`, appending `lane` to `order` as each answer arrives.
async fn record(lane: &'static str, mut submission: Submission, order: Order) {
    while let Some((index, outcome)) = submission.next().await {
        assert!(outcome.is_ok(), "{lane}-{index} failed: {outcome:?}");
        order.borrow_mut().push(lane);
    }
}

#[actix_rt::test]
async fn a_fresh_high_item_waits_for_at_most_one_call_of_an_old_low_backlog() {
    tokio::time::pause();
    let engine = Engine::start(&contended()).expect("engine starts");
    let order: Order = Rc::default();
    let low = engine.submit("low", prompts("low", 500)).await.expect("low accepted");
    let low_task = actix_rt::spawn(record("low", low, Rc::clone(&order)));

    // The backlog has waited 30 s (on the paused clock): about 150 low calls are done.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let before = order.borrow().len();
    assert!((100..400).contains(&before), "{before} low calls in 30 s of 200 ms calls");

    let high = engine.submit("high", prompts("high", 1)).await.expect("high accepted");
    within(Duration::from_secs(5), "the high item", record("high", high, Rc::clone(&order))).await;
    let after: Vec<&str> = order.borrow()[before..].to_vec();
    // The low call under way when the high item came finishes first; nothing else of the
    // backlog may (an age bonus would send all of it first).
    assert!(after.len() <= 2 && after.last() == Some(&"high"), "answers after the high item came: {after:?}");

    engine.shutdown(Duration::ZERO).await;
    let _ = low_task.await;
}

#[actix_rt::test]
async fn a_low_backlog_gets_one_call_in_ten_while_high_traffic_never_stops() {
    tokio::time::pause();
    let engine = Engine::start(&contended()).expect("engine starts");
    let order: Order = Rc::default();
    let stop = Rc::new(RefCell::new(false));

    // Four closed-loop high senders: each submits its next prompt as soon as the last is
    // answered, so the high lane always holds work.
    let mut senders = Vec::new();
    for sender in 0..4 {
        let (engine, order, stop) = (engine.clone(), Rc::clone(&order), Rc::clone(&stop));
        senders.push(actix_rt::spawn(async move {
            let mut n = 0;
            while !*stop.borrow() {
                let outcome = engine
                    .submit_one("high", Prompt::text(format!("high-{sender}-{n}")))
                    .await
                    .expect("high accepted");
                assert!(outcome.is_ok(), "high failed: {outcome:?}");
                order.borrow_mut().push("high");
                n += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let start = order.borrow().len();
    let low = engine.submit("low", prompts("low", 50)).await.expect("low accepted");
    let low_task = actix_rt::spawn(record("low", low, Rc::clone(&order)));

    // 200 calls of 200 ms: 40 s on the paused clock.
    tokio::time::sleep(Duration::from_secs(40)).await;
    *stop.borrow_mut() = true;
    let seen: Vec<&str> = order.borrow()[start..].to_vec();
    assert!(seen.len() >= 150, "only {} answers in 40 s", seen.len());
    let window = &seen[..150];
    let lows = window.iter().filter(|l| **l == "low").count();
    assert!((13..=17).contains(&lows), "{lows} low answers in 150 (one in ten expected): {window:?}");
    // Never two low calls in a row while high work waits.
    assert!(!window.windows(2).any(|w| w == ["low", "low"]), "{window:?}");

    engine.shutdown(Duration::ZERO).await;
    for sender in senders {
        let _ = sender.await;
    }
    let _ = low_task.await;
}
