//! What ferry's HTTP door costs: `POST /v1/chat/completions` through ferry to the mock upstream
//! against the same load sent straight to the mock.
//!
//! `cargo bench --bench http` starts, in this one process, the mock upstream (zero latency, its
//! own actix worker) and ferry (engine on the main arbiter, API on its HTTP workers) with one
//! lane, `bench`: fanout, window 0, delay 0, chosen by `x-ferry-priority: bench`, and one
//! OpenAI upstream at the mock with no limits. A keep-alive reqwest client on its own thread then:
//! - closed loop: `FERRY_BENCH_CONCURRENCY` (64) requests in flight for `FERRY_BENCH_SECS` (5) s,
//!   direct and through ferry → requests/s each and the ratio;
//! - open loop: `FERRY_BENCH_RATE` (1,000) requests/s on a 1 ms ticker, each in its own task,
//!   for `FERRY_BENCH_SECS` s → p50/p99 each way and what ferry adds. Latency runs from the
//!   request's scheduled time, so a stalled generator is not hidden.
//!
//! Everything (generator included) shares the machine's cores; the figures say how many.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferry::config::{Config, LaneConfig, Mode, ProviderKind, ServerConfig, UpstreamConfig};
use ferry::engine::Engine;
use ferry::http::{AppState, Keys};
use ferry::mock_upstream::{self, MockUpstreamArgs};
use ferry::store::Store;
use tokio::sync::oneshot;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The lane the benchmark's requests name in `x-ferry-priority`.
const LANE: &str = "bench";

/// The request body, the same both ways.
const BODY: &str =
    r#"{"model":"mock","messages":[{"role":"user","content":"What is the capital of France?"}]}"#;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One fanout lane with no window or delay and one unlimited OpenAI upstream at `base_url`.
fn ferry_config(base_url: &str) -> Config {
    let mut config = Config {
        server: ServerConfig { bind: "127.0.0.1:0".into(), ..ServerConfig::default() },
        ..Config::default()
    };
    config.batching.queue_capacity = 1_000_000;
    config.lanes.clear();
    config.lanes.insert(
        LANE.into(),
        LaneConfig {
            rank: 1,
            window_ms: 0,
            max_batch: Some(4096),
            delay_ms: Some(0),
            max_tokens: None,
            latency_ms: 1_000,
            mode: Mode::Fanout,
            queue_capacity: None,
            model: None,
            ..LaneConfig::default()
        },
    );
    config.upstreams = vec![UpstreamConfig {
        name: "mock-http".into(),
        provider: ProviderKind::Openai,
        base_url: Some(base_url.to_string()),
        models: Vec::new(),
        concurrency: ferry::config::Concurrency::Fixed(100_000),
        max_retries: 0,
        cooldown_failures: 1_000_000,
        ..UpstreamConfig::mock("mock-http")
    }];
    config
}

/// Where a load goes: the URL and the headers it carries.
#[derive(Clone)]
struct Target {
    url: String,
    priority: Option<&'static str>,
}

impl Target {
    async fn call(&self, client: &reqwest::Client) -> bool {
        let mut request = client.post(&self.url).header("content-type", "application/json").body(BODY);
        if let Some(lane) = self.priority {
            request = request.header("x-ferry-priority", lane);
        }
        match request.send().await {
            Ok(response) => {
                let ok = response.status().is_success();
                ok && response.bytes().await.is_ok()
            }
            Err(_) => false,
        }
    }
}

/// What a closed-loop run measured.
struct Throughput {
    per_second: f64,
    failed: u64,
    /// CPU time of the whole process (generator, ferry and mock) per request, in µs.
    cpu_us_per_request: f64,
    /// Cores kept busy on average during the run.
    cores_busy: f64,
}

/// CPU time this process has used so far (user + system), from /proc/self/stat; 0 elsewhere.
fn process_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name (0-based
    // 11 and 12); the kernel counts them in clock ticks of 1/100 s on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// `concurrency` requests always in flight for `period`.
async fn closed_loop(
    client: &reqwest::Client,
    target: &Target,
    concurrency: u64,
    period: Duration,
) -> Throughput {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let cpu_before = process_cpu_seconds();
    let started = Instant::now();
    let deadline = started + period;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, target, done, failed) = (client.clone(), target.clone(), done.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let counter = if target.call(&client).await { &done } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.expect("load task");
    }
    let elapsed = started.elapsed();
    let cpu = process_cpu_seconds() - cpu_before;
    let requests = done.load(Ordering::Relaxed);
    Throughput {
        per_second: requests as f64 / elapsed.as_secs_f64(),
        failed: failed.load(Ordering::Relaxed),
        cpu_us_per_request: cpu * 1e6 / requests.max(1) as f64,
        cores_busy: cpu / elapsed.as_secs_f64(),
    }
}

/// What an open-loop run measured.
struct Latency {
    p50: Duration,
    p99: Duration,
    p999: Duration,
    sent: usize,
    failed: usize,
}

/// `rate` requests/s, each sent from its own task at its scheduled time, for `period`.
async fn open_loop(client: &reqwest::Client, target: &Target, rate: u64, period: Duration) -> Latency {
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let total = (rate as f64 * period.as_secs_f64()) as usize;
    let mut tasks = Vec::with_capacity(total);
    for _ in 0..total {
        let scheduled = ticker.tick().await.into_std();
        let (client, target) = (client.clone(), target.clone());
        tasks.push(tokio::spawn(async move {
            let ok = target.call(&client).await;
            (ok, scheduled.elapsed())
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    let mut failed = 0;
    for task in tasks {
        let (ok, latency) = task.await.expect("load task");
        if ok {
            latencies.push(latency);
        } else {
            failed += 1;
        }
    }
    latencies.sort();
    let at = |q: f64| {
        latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1))).copied()
    };
    let zero = Duration::ZERO;
    Latency {
        p50: at(0.50).unwrap_or(zero),
        p99: at(0.99).unwrap_or(zero),
        p999: at(0.999).unwrap_or(zero),
        sent: total,
        failed,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The figures both ways, printed as they come.
struct Report {
    direct_rps: f64,
    ferry_rps: f64,
    direct: Latency,
    ferry: Latency,
}

/// Runs every load against `direct` and `through` from a client on this (its own) thread.
fn generate(direct: Target, through: Target) -> Report {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let secs = env_u64("FERRY_BENCH_SECS", 5);
        let period = Duration::from_secs(secs);
        let concurrency = env_u64("FERRY_BENCH_CONCURRENCY", 64);
        let rate = env_u64("FERRY_BENCH_RATE", 1_000);
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");

        // Warm both paths: connections, allocator, code.
        let warm = Duration::from_millis(500);
        closed_loop(&client, &direct, concurrency, warm).await;
        closed_loop(&client, &through, concurrency, warm).await;

        println!("-- max throughput: closed loop, {concurrency} in flight, {secs} s each");
        let d = closed_loop(&client, &direct, concurrency, period).await;
        let show = |what: &str, t: &Throughput| {
            println!(
                "{what:<16} {:>8.0} requests/s ({} failed); {:.0} µs CPU per request, {:.2} cores busy",
                t.per_second, t.failed, t.cpu_us_per_request, t.cores_busy
            );
        };
        show("direct to mock:", &d);
        let f = closed_loop(&client, &through, concurrency, period).await;
        show("through ferry:", &f);
        println!("ratio:           {:>8.1} % of direct (target ≥ 50 %)", 100.0 * f.per_second / d.per_second);

        println!("-- latency: open loop, {rate} requests/s, {secs} s each (from scheduled send time)");
        let direct_latency = open_loop(&client, &direct, rate, period).await;
        print_latency("direct to mock:", &direct_latency);
        let ferry_latency = open_loop(&client, &through, rate, period).await;
        print_latency("through ferry:", &ferry_latency);
        Report {
            direct_rps: d.per_second,
            ferry_rps: f.per_second,
            direct: direct_latency,
            ferry: ferry_latency,
        }
    })
}

fn print_latency(what: &str, l: &Latency) {
    println!(
        "{what:<16} p50 {:>7.3} ms  p99 {:>7.3} ms  p99.9 {:>7.3} ms  ({} sent, {} failed)",
        ms(l.p50),
        ms(l.p99),
        ms(l.p999),
        l.sent,
        l.failed
    );
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = cores;
    let system = actix::System::new();
    let (targets_tx, targets_rx) = oneshot::channel::<(Target, Target)>();
    let (done_tx, done_rx) = oneshot::channel::<Report>();
    let generator = std::thread::spawn(move || {
        let (direct, through) = targets_rx.blocking_recv().expect("targets");
        let _ = done_tx.send(generate(direct, through));
    });
    system.block_on(async move {
        let mock = mock_upstream::start(MockUpstreamArgs {
            bind: "127.0.0.1:0".parse().expect("address"),
            ..MockUpstreamArgs::default()
        })
        .expect("mock upstream starts");
        let config = ferry_config(&mock.base_url());
        let engine = Engine::start(&config).expect("engine starts");
        let store_dir = tempfile::tempdir().expect("temp dir");
        let mut config = config.clone();
        config.storage.path = store_dir.path().join("bench.db");
        let store = Store::open(&config.storage.path).expect("store opens");
        let jobs = ferry::jobs::Jobs::for_config(engine.clone(), &config).expect("jobs start");
        let state = AppState { engine: engine.clone(), config: Arc::new(config.clone()), store, jobs };
        let (server, addr) = ferry::http::build(state, &config.server, Keys::none()).expect("ferry binds");
        let handle = server.handle();
        actix_rt::spawn(server);

        println!("ferry HTTP benchmark: POST /v1/chat/completions, mock upstream at zero latency");
        println!(
            "machine: {cores} cores shared by the load generator (1 thread), ferry (engine arbiter + \
             {workers} HTTP workers) and the mock (1 worker)"
        );
        let direct = Target { url: format!("{}/chat/completions", mock.base_url()), priority: None };
        let through = Target { url: format!("http://{addr}/v1/chat/completions"), priority: Some(LANE) };
        let _ = targets_tx.send((direct, through));
        let report = done_rx.await.expect("load generator reports");
        let (added50, added99) = (
            ms(report.ferry.p50) - ms(report.direct.p50),
            ms(report.ferry.p99) - ms(report.direct.p99),
        );
        println!("-- summary");
        println!(
            "throughput: ferry {:.0} vs direct {:.0} requests/s = {:.1} % (target ≥ 50 %: {})",
            report.ferry_rps,
            report.direct_rps,
            100.0 * report.ferry_rps / report.direct_rps,
            if report.ferry_rps * 2.0 >= report.direct_rps { "met" } else { "missed" }
        );
        println!(
            "added latency at the fixed rate: p50 {added50:+.3} ms, p99 {added99:+.3} ms (target p99 < 1 ms: {})",
            if added99 < 1.0 { "met" } else { "missed" }
        );
        handle.stop(false).await;
        engine.shutdown(Duration::from_millis(200)).await;
        mock.stop().await;
    });
    generator.join().expect("load generator");
}
