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
