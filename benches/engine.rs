//! Engine throughput and added latency with the in-process mock at zero latency and no limits.
//!
//! `cargo bench --bench engine` prints prompts/second through the whole engine (fanout lane,
//! window 0, delay 0) and the engine's added latency per item at low load (one prompt at a time:
//! with a zero-latency upstream, all of the time is the engine's).
//! Environment: `FERRY_BENCH_ITEMS` (default 1,000,000), `FERRY_BENCH_SAMPLES` (default 20,000),
//! `FERRY_BENCH_OWNERS` (default 1).
//!
//! Owners: with `FERRY_BENCH_OWNERS=1` (the default) one owner submits, as `Engine::submit`
//! does: the local owner, a request of its own per chunk of 10,000 prompts. With
//! `FERRY_BENCH_OWNERS=N` (N > 1), N owners `owner-0` .. `owner-{N-1}`, each with a job of its
//! own, submit at once on the same thread (chunks of 1,000, their turns interleaved by the
//! awaits), so the lane's fair queue takes turns between N owners: that is what fairness costs.
//! The throughput line names the owner count when it is not 1.
//! `benches/engine_before_after.sh` runs this bench at an older commit and at the working tree,
//! interleaved, and prints medians and ranges.

use std::time::{Duration, Instant};

use ferry::config::{Config, LaneConfig, Mode, UpstreamConfig};
use ferry::engine::{Engine, Origin, Prompt, Submission};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench_config(max_batch: usize) -> Config {
    let mut config = Config::default();
    config.batching.queue_capacity = 10_000_000;
    config.lanes.clear();
    config.lanes.insert(
        "bulk".into(),
        LaneConfig {
            rank: 0,
            window_ms: 0,
            max_batch: Some(max_batch),
            delay_ms: Some(0),
            max_tokens: Some(16),
            latency_ms: 1_000,
            mode: Mode::Fanout,
            queue_capacity: None,
            model: None,
            ..LaneConfig::default()
        },
    );
    let mut mock = UpstreamConfig::mock("mock");
    mock.concurrency = ferry::config::Concurrency::Fixed(1_000_000);
    config.upstreams = vec![mock];
    config
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn throughput(items: usize, owners: usize) -> f64 {
    let engine = Engine::start(&bench_config(4096)).expect("engine starts");
    let started = Instant::now();
    let ok =
        if owners <= 1 { one_owner(&engine, items).await } else { many_owners(&engine, items, owners).await };
    let elapsed = started.elapsed();
    assert_eq!(ok, items, "every prompt answered");
    items as f64 / elapsed.as_secs_f64()
}

fn prompts(from: usize, n: usize) -> Vec<Prompt> {
    (from..from + n).map(|i| Prompt::text(format!("prompt {i}"))).collect()
}

async fn answered(submissions: Vec<Submission>) -> usize {
    let mut ok = 0;
    for submission in submissions {
        ok += submission.collect().await.iter().filter(|o| o.is_ok()).count();
    }
    ok
}

/// The local owner, a request of its own per chunk: prompts answered.
async fn one_owner(engine: &Engine, items: usize) -> usize {
    const CHUNK: usize = 10_000;
    let mut submissions = Vec::new();
    let mut sent = 0;
    while sent < items {
        let n = CHUNK.min(items - sent);
        submissions.push(engine.submit("bulk", prompts(sent, n)).await.expect("accepted"));
        sent += n;
    }
    answered(submissions).await
}

/// `owners` owners, a job each, submitting at once: prompts answered.
async fn many_owners(engine: &Engine, items: usize, owners: usize) -> usize {
    const CHUNK: usize = 1_000;
    let owner = |k: usize| async move {
        let origin = Origin::new(format!("owner-{k}"), format!("job-{k}"));
        // Owner k's share: prompts k, k + owners, k + 2 * owners, ...
        let share = items / owners + usize::from(k < items % owners);
        let mut submissions = Vec::new();
        let mut sent = 0;
        while sent < share {
            let n = CHUNK.min(share - sent);
            let batch =
                (sent..sent + n).map(|i| Prompt::text(format!("prompt {}", i * owners + k))).collect();
            submissions.push(engine.submit_from("bulk", &origin, batch).await.expect("accepted"));
            sent += n;
        }
        answered(submissions).await
    };
    futures_util::future::join_all((0..owners).map(owner)).await.into_iter().sum()
}

async fn added_latency(samples: usize) -> (Duration, Duration, Duration) {
    let engine = Engine::start(&bench_config(64)).expect("engine starts");
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        let started = Instant::now();
        let outcome = engine.submit_one("bulk", Prompt::text(format!("prompt {i}"))).await.expect("accepted");
        latencies.push(started.elapsed());
        assert!(outcome.is_ok());
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    (at(0.50), at(0.99), at(0.999))
}

fn main() {
    let items = env_usize("FERRY_BENCH_ITEMS", 1_000_000);
    let samples = env_usize("FERRY_BENCH_SAMPLES", 20_000);
    let owners = env_usize("FERRY_BENCH_OWNERS", 1).max(1);
    let who = if owners == 1 { String::new() } else { format!(", {owners} owners") };
    let system = actix::System::new();
    system.block_on(async {
        // Warm up allocator and code paths.
        throughput(50_000, owners).await;
        let rate = throughput(items, owners).await;
        println!(
            "engine throughput (fanout, in-process mock, zero latency{who}): {rate:.0} prompts/s over {items} prompts"
        );
        let (p50, p99, p999) = added_latency(samples).await;
        println!(
            "engine added latency at low load (one at a time, {samples} samples): p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs",
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
            p999.as_secs_f64() * 1e6
        );
    });
}
