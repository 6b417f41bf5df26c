//! Shared setup for integration tests: a mock upstream on its own port, and upstream configs
//! pointing at it.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};

use ferry::config::{ProviderKind, UpstreamConfig};
use ferry::mock_upstream::{self, MockUpstreamArgs, MockUpstreamHandle};

/// Knobs for a mock upstream on a free loopback port, everything else at its defaults.
pub fn mock_args() -> MockUpstreamArgs {
    MockUpstreamArgs { bind: SocketAddr::from(([127, 0, 0, 1], 0)), ..MockUpstreamArgs::default() }
}

/// Starts a mock upstream in-process on a free loopback port (whatever `args.bind` says). Call it
/// inside `#[actix_rt::test]`; `handle.base_url()` is `http://127.0.0.1:PORT/v1`.
pub fn start_mock(args: MockUpstreamArgs) -> MockUpstreamHandle {
    let args = MockUpstreamArgs { bind: SocketAddr::from(([127, 0, 0, 1], 0)), ..args };
    mock_upstream::start(args).expect("mock upstream starts on a free port")
}

/// Starts a mock upstream with default knobs and returns it with its OpenAI base URL.
pub fn start_default_mock() -> (MockUpstreamHandle, String) {
    let mock = start_mock(mock_args());
    let url = mock.base_url();
    (mock, url)
}

/// An upstream named after `provider` that talks to `mock` (its OpenAI or Gemini route).
pub fn upstream_for(provider: ProviderKind, mock: &MockUpstreamHandle) -> UpstreamConfig {
    let base_url = match provider {
        ProviderKind::Gemini => mock.gemini_base_url(),
        _ => mock.base_url(),
    };
    upstream_at(provider, &base_url)
}

/// An upstream of kind `provider` at `base_url`, with default limits.
pub fn upstream_at(provider: ProviderKind, base_url: &str) -> UpstreamConfig {
    let name = match provider {
        ProviderKind::Openai => "openai",
        ProviderKind::Gemini => "gemini",
        ProviderKind::Mock => "mock",
    };
    UpstreamConfig {
        provider,
        base_url: Some(base_url.to_string()),
        models: Vec::new(),
        ..UpstreamConfig::mock(name)
    }
}

/// The base URL of a loopback port nothing listens on (bound, then released).
pub fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let addr = listener.local_addr().expect("bound address");
    drop(listener);
    format!("http://{addr}/v1")
}

// ---- Engine setups for the upstream tests (upstream_faults, rate_limits, combined, soak) ----

use std::collections::BTreeMap;

use ferry::config::{Config, LaneConfig, Mode};

/// The lane name [`engine_config`] configures.
pub const LANE: &str = "test";

/// A lane that releases at once (window 0, no delay between batches), `max_batch` items at most.
pub fn quick_lane(mode: Mode, max_batch: usize) -> LaneConfig {
    LaneConfig {
        rank: 1,
        window_ms: 0,
        max_batch: Some(max_batch),
        delay_ms: Some(0),
        max_tokens: None,
        latency_ms: 2_000,
        mode,
        queue_capacity: None,
        model: None,
    }
}

/// The default config with one lane, [`LANE`], and `upstreams` instead of the built-in mock.
pub fn engine_config(lane: LaneConfig, upstreams: Vec<UpstreamConfig>) -> Config {
    Config { lanes: BTreeMap::from([(LANE.to_string(), lane)]), upstreams, ..Config::default() }
}

/// An OpenAI-speaking upstream named `name` at `base_url`, serving any model, with millisecond
/// backoff and a cooldown that never triggers, so a test sees only the behaviour it sets up.
pub fn fast_upstream(name: &str, base_url: &str) -> UpstreamConfig {
    UpstreamConfig {
        name: name.into(),
        backoff_base_ms: 5,
        backoff_max_ms: 50,
        cooldown_failures: 1_000_000,
        ..upstream_at(ProviderKind::Openai, base_url)
    }
}

// ─── Engine helpers (batching, priority and resilience tests) ───────────────────────────────
// Kept in one block at the end of the file so parallel additions above merge cleanly.

// Not every test binary uses these.
#[allow(unused_imports)]
pub use engine_helpers::*;

mod engine_helpers {
    use std::collections::BTreeMap;
    use std::future::Future;
    use std::time::Duration;

    use ferry::config::{BatchingConfig, Config, LaneConfig, Mode, UpstreamConfig};
    use ferry::engine::{Engine, MetricsEvent, Outcome, Prompt};
    use tokio::sync::{broadcast, mpsc};
    use tokio::time::Instant;

    /// A lane of `rank` sent in `mode`: no window, no delay, batch size from `[batching]`.
    /// Tests set what they exercise with struct update syntax.
    pub fn lane(rank: u32, mode: Mode) -> LaneConfig {
        LaneConfig {
            rank,
            window_ms: 0,
            max_batch: None,
            delay_ms: Some(0),
            max_tokens: None,
            latency_ms: 2_000,
            mode,
            queue_capacity: None,
            model: None,
        }
    }

    /// A config with exactly these lanes and upstreams; `[batching]` at its defaults except no
    /// delay between batches.
    pub fn config_with<'a>(
        lanes: impl IntoIterator<Item = (&'a str, LaneConfig)>,
        upstreams: Vec<UpstreamConfig>,
    ) -> Config {
        Config {
            batching: BatchingConfig { batch_delay_ms: 0, ..BatchingConfig::default() },
            lanes: lanes.into_iter().map(|(name, lane)| (name.to_string(), lane)).collect::<BTreeMap<_, _>>(),
            upstreams,
            ..Config::default()
        }
    }

    /// `n` prompts `"{prefix}-0"`, `"{prefix}-1"`, ….
    pub fn prompts(prefix: &str, n: usize) -> Vec<Prompt> {
        (0..n).map(|i| Prompt::text(format!("{prefix}-{i}"))).collect()
    }

    /// Whether `text` is the mock's answer to exactly `prompt` (fanout answers are padded with
    /// filler words, so `prompt-1` must not match an answer to `prompt-10`).
    pub fn answers(text: &str, prompt: &str) -> bool {
        let expected = format!("mock answer to: {prompt}");
        text == expected || text.strip_prefix(&expected).is_some_and(|rest| rest.starts_with(' '))
    }

    /// Asserts that `outcomes[i]` is a successful answer to `"{prefix}-{i}"`, for every i.
    pub fn assert_answered_in_order(outcomes: &[Outcome], prefix: &str) {
        for (i, outcome) in outcomes.iter().enumerate() {
            let prompt = format!("{prefix}-{i}");
            match outcome {
                Ok(answer) => assert!(
                    answers(&answer.text, &prompt),
                    "item {i}: `{}` does not answer `{prompt}`",
                    answer.text
                ),
                Err(error) => panic!("item {i} (`{prompt}`) failed: {error}"),
            }
        }
    }

    /// Awaits `fut`, failing the test if it takes longer than `limit`, so a hang fails instead
    /// of blocking CI.
    pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
        match tokio::time::timeout(limit, fut).await {
            Ok(value) => value,
            Err(_) => panic!("{what}: not done within {limit:?}"),
        }
    }

    /// A `BatchDispatched` event as the test saw it, stamped on receipt.
    #[derive(Debug, Clone)]
    pub struct Dispatched {
        pub lane: String,
        pub size: usize,
        pub at: Instant,
    }

    /// Records every `BatchDispatched` event from a background task that stamps it the moment
    /// it arrives, so the stamps stay right while the test awaits something else.
    pub struct DispatchWatch {
        rx: mpsc::UnboundedReceiver<Dispatched>,
    }

    impl DispatchWatch {
        /// Starts watching `engine` (call before submitting what should be seen).
        pub fn start(engine: &Engine) -> Self {
            let mut events = engine.subscribe();
            let (tx, rx) = mpsc::unbounded_channel();
            actix_rt::spawn(async move {
                loop {
                    match events.recv().await {
                        Ok(MetricsEvent::BatchDispatched { lane, size, .. }) => {
                            let seen = Dispatched { lane: lane.to_string(), size, at: Instant::now() };
                            if tx.send(seen).is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        // Stop recording: the test's `take` then fails, with this line in
                        // its output, rather than pass on a partial record.
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            eprintln!("dispatch watch lagged by {n} events; stopped recording");
                            return;
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            });
            Self { rx }
        }

        /// The next dispatch, or None if none comes within `limit`.
        pub async fn next(&mut self, limit: Duration) -> Option<Dispatched> {
            tokio::time::timeout(limit, self.rx.recv()).await.ok().flatten()
        }

        /// The next `n` dispatches; fails the test if they do not all come within `limit`.
        pub async fn take(&mut self, n: usize, limit: Duration) -> Vec<Dispatched> {
            let deadline = Instant::now() + limit;
            let mut seen = Vec::with_capacity(n);
            while seen.len() < n {
                match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                    Ok(Some(d)) => seen.push(d),
                    _ => panic!("expected {n} batch dispatches within {limit:?}, saw {seen:?}"),
                }
            }
            seen
        }

        /// Fails the test if any batch is dispatched within `period`.
        pub async fn assert_none_for(&mut self, period: Duration, why: &str) {
            if let Some(d) = self.next(period).await {
                panic!("{why}: a batch went anyway: {d:?}");
            }
        }
    }
}
