//! Shared setup for integration tests: a mock upstream on its own port, and upstream configs
//! pointing at it.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

pub mod files;
pub mod skip;

use std::net::SocketAddr;

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

/// A loopback port nothing listens on, for as long as this lives: it stays bound without
/// listening, so a connection to it is refused and no other test can bind it meanwhile (a port
/// bound, released and named later could be taken by another test's server in between).
pub struct ClosedPort {
    _socket: tokio::net::TcpSocket,
    addr: SocketAddr,
}

impl ClosedPort {
    /// Binds a free loopback port and holds it.
    pub fn bind() -> ClosedPort {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind a free port");
        let addr = socket.local_addr().expect("bound address");
        ClosedPort { _socket: socket, addr }
    }

    /// Its OpenAI-style base URL, `http://127.0.0.1:PORT/v1`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
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
        ..LaneConfig::default()
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
            ..LaneConfig::default()
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

// ─── HTTP helpers (http_api, http_errors and serve tests) ──────────────────────────────────
// Kept in one block at the end of the file so parallel additions above merge cleanly.

// Not every test binary uses these.
#[allow(unused_imports)]
pub use http_helpers::*;

mod http_helpers {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    use actix_web::dev::ServerHandle;
    use ferry::config::{BatchingConfig, Config, LoggingConfig, ServerConfig, StorageConfig};
    use ferry::engine::Engine;
    use ferry::http::{AppState, Keys};
    use ferry::store::Store;
    use serde_json::Value;
    use tempfile::TempDir;

    /// An inference key the HTTP tests configure.
    pub const INFERENCE_KEY: &str = "test-inference-key-7f3a";
    /// An admin key the HTTP tests configure.
    pub const ADMIN_KEY: &str = "test-admin-key-91c2";

    /// The default lanes and in-process mock, no delay between batches, bound to a free loopback
    /// port, with logs and data in `dir`.
    pub fn http_config(dir: &TempDir) -> Config {
        Config {
            server: ServerConfig { bind: "127.0.0.1:0".into(), ..ServerConfig::default() },
            storage: StorageConfig { path: dir.path().join("data/ferry.db"), ..StorageConfig::default() },
            logging: LoggingConfig { dir: dir.path().join("logs"), ..LoggingConfig::default() },
            batching: BatchingConfig { batch_delay_ms: 0, ..BatchingConfig::default() },
            ..Config::default()
        }
    }

    /// The engine and the API on a free port, in-process (call inside `#[actix_rt::test]`).
    pub struct TestServer {
        /// `http://127.0.0.1:PORT`.
        pub base: String,
        /// The engine behind it.
        pub engine: Engine,
        handle: ServerHandle,
        dir: TempDir,
    }

    impl TestServer {
        /// Starts the default test config with `keys`.
        pub fn start(keys: Keys) -> TestServer {
            let dir = tempfile::tempdir().expect("temp dir");
            let config = http_config(&dir);
            TestServer::start_with(config, keys, dir)
        }

        /// Starts `config` (its `bind` should be port 0) with `keys`; `dir` lives as long as it.
        pub fn start_with(config: Config, keys: Keys, dir: TempDir) -> TestServer {
            let engine = Engine::start(&config).expect("engine starts");
            let store = Store::open(&config.storage.path).expect("store opens");
            let jobs = ferry::jobs::Jobs::for_config(engine.clone(), &config).expect("jobs start");
            let state = AppState { engine: engine.clone(), config: Arc::new(config.clone()), store, jobs };
            let (server, addr) = ferry::http::build(state, &config.server, keys).expect("server binds");
            let handle = server.handle();
            actix_rt::spawn(server);
            TestServer { base: format!("http://{addr}"), engine, handle, dir }
        }

        /// The folder holding its data and logs.
        pub fn dir(&self) -> &std::path::Path {
            self.dir.path()
        }

        /// The URL of `path`.
        pub fn url(&self, path: &str) -> String {
            format!("{}{path}", self.base)
        }

        /// Stops the server and the engine.
        pub async fn stop(self) {
            self.handle.stop(false).await;
            self.engine.shutdown(Duration::from_millis(100)).await;
        }

        /// Stops the server and the engine and hands back its folder, to start again on it.
        pub async fn stop_keeping_dir(self) -> TempDir {
            self.handle.stop(false).await;
            self.engine.shutdown(Duration::from_millis(100)).await;
            self.dir
        }
    }

    /// A client that opens a fresh connection per request, so a connection the server closed
    /// after an error cannot fail the next request.
    pub fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client")
    }

    /// The status and JSON body of a response.
    pub async fn json_of(response: reqwest::Response) -> (u16, Value) {
        let status = response.status().as_u16();
        let text = response.text().await.expect("response body");
        let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        (status, body)
    }

    /// Asserts `body` is `{"error": {"message", "type", "param"?}}` and returns (message, param).
    pub fn error_parts(body: &Value) -> (String, Option<String>) {
        let error = body.get("error").unwrap_or_else(|| panic!("no `error` in {body}"));
        let message = error["message"].as_str().unwrap_or_else(|| panic!("no message in {body}"));
        assert!(error["type"].is_string(), "no type in {body}");
        (message.to_string(), error.get("param").and_then(Value::as_str).map(str::to_string))
    }

    /// Whether an error body names `names`: its `param` equals it, or, for `~fragment`, its
    /// message contains the fragment. (The rule every bad-input table uses.)
    pub fn error_names(body: &Value, names: &str) -> bool {
        let (message, param) = error_parts(body);
        match names.strip_prefix('~') {
            Some(fragment) => message.contains(fragment),
            None => param.as_deref() == Some(names),
        }
    }

    /// Parses Prometheus text format 0.0.4, failing the test on any malformed line or a sample
    /// whose family has no `# TYPE`; returns each series (`name{labels}`) with its value.
    pub fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
        let mut typed: BTreeMap<String, String> = BTreeMap::new();
        let mut series = BTreeMap::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                let (kind, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                assert!(valid_name(name), "bad metric name in {line:?}");
                if kind == "TYPE" {
                    let t = parts.next().unwrap_or("");
                    assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&t), "{line:?}");
                    typed.insert(name.to_string(), t.to_string());
                } else {
                    assert_eq!(kind, "HELP", "unknown comment {line:?}");
                }
                continue;
            }
            let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value in {line:?}"));
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            let name = key.split('{').next().unwrap_or("");
            assert!(valid_name(name), "bad metric name in {line:?}");
            let labels = &key[name.len()..];
            if !labels.is_empty() {
                let inner = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}'));
                let inner = inner.unwrap_or_else(|| panic!("bad labels in {line:?}"));
                for pair in inner.split(',') {
                    let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("bad label in {line:?}"));
                    assert!(valid_name(k) && v.starts_with('"') && v.ends_with('"'), "bad label in {line:?}");
                }
            }
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s).filter(|f| typed.get(*f).is_some_and(|t| t == "histogram"))
                })
                .unwrap_or(name);
            assert!(typed.contains_key(family), "sample before its # TYPE: {line:?}");
            series.insert(key.to_string(), value);
        }
        series
    }

    fn valid_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
}

// ─── Store helpers (http_store and canary tests) ────────────────────────────────────────────
// Kept in one block at the end of the file so parallel additions above merge cleanly.

// Not every test binary uses these.
#[allow(unused_imports)]
pub use store_helpers::*;

mod store_helpers {
    use std::time::Duration;

    use ferry::app::AppError;
    use ferry::config::Config;
    use ferry::daemon;
    use ferry::engine::ShutdownReport;
    use serde_json::Value;
    use tokio::sync::oneshot;

    use super::http_helpers::{client, json_of};

    /// Sends `method path` to `base` with an optional Bearer `key` and JSON `body`; returns the
    /// status and JSON body.
    pub async fn call(
        base: &str,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = client().request(method, format!("{base}{path}"));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        json_of(request.send().await.expect("request")).await
    }

    /// `ferry serve`'s start-up and shutdown, in-process: [`daemon::run_with`] on `config`,
    /// stopped through [`RunningDaemon::stop`].
    pub struct RunningDaemon {
        /// `http://127.0.0.1:PORT`.
        pub base: String,
        stop: oneshot::Sender<()>,
        done: actix_rt::task::JoinHandle<Result<(ShutdownReport, ()), AppError>>,
    }

    impl RunningDaemon {
        /// Runs the daemon and waits until `/health` answers (call inside `#[actix_rt::test]`).
        /// Give `config` port 0: the daemon reports the port it bound, so no other test can take
        /// it between a look-up and the bind.
        pub async fn start(config: Config) -> RunningDaemon {
            let (stop, stopped) = oneshot::channel::<()>();
            let (bound, addr) = oneshot::channel();
            let mut done = actix_rt::spawn(daemon::run_with(config, move |started| {
                let _ = bound.send(started.addr);
                async move {
                    let _ = stopped.await;
                }
            }));
            // The hook is dropped unsent when the daemon ends at start.
            let addr = match tokio::time::timeout(Duration::from_secs(20), addr).await {
                Ok(Ok(addr)) => addr,
                Ok(Err(_)) => {
                    let ended = (&mut done).await.expect("daemon task");
                    panic!("the daemon ended at start: {:?}", ended.map(|_| ()));
                }
                Err(_) => panic!("the daemon did not start within 20 s"),
            };
            let base = format!("http://{addr}");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while tokio::time::Instant::now() < deadline {
                let health = client().get(format!("{base}/health")).send().await;
                if health.is_ok_and(|r| r.status().is_success()) {
                    return RunningDaemon { base, stop, done };
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("the daemon did not answer /health at {base}");
        }

        /// Shuts the daemon down and waits for it to finish.
        pub async fn stop(self) {
            let _ = self.stop.send(());
            let ended = self.done.await.expect("daemon task");
            assert!(ended.is_ok(), "the daemon failed: {:?}", ended.map(|_| ()));
        }
    }
}

// ─── The real binary (serve and canary tests) ───────────────────────────────────────────────

/// Waits for `event=serve_started bind=ADDR` in the log and returns ADDR.
pub fn wait_for_bind(log: &std::path::Path, child: &mut std::process::Child) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(log)
            && let Some(line) = text.lines().find(|l| l.contains("event=serve_started"))
        {
            let bind = line.split_whitespace().find_map(|w| w.strip_prefix("bind=")).expect("bind= in line");
            return bind.to_string();
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("ferry serve exited early with {status}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("ferry serve did not log serve_started");
}

/// A child process that is killed when the test ends, also when it ends in a panic, so a failing
/// test leaves no `ferry serve` behind.
pub struct KillOnDrop(pub std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // Already exited in a passing test: kill fails harmlessly; wait reaps either way.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ─── The console (issue 5) ──────────────────────────────────────────────────────────────────

/// Waits up to `limit` for `event=serve_started bind=ADDR` in the log (of a process the test
/// does not hold as a child, e.g. one in tmux) and returns ADDR.
pub fn wait_for_log_bind(log: &std::path::Path, limit: std::time::Duration) -> String {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Ok(text) = std::fs::read_to_string(log)
            && let Some(line) = text.lines().find(|l| l.contains("event=serve_started"))
            && let Some(bind) = line.split_whitespace().find_map(|w| w.strip_prefix("bind="))
        {
            return bind.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no event=serve_started in {} within {limit:?}",
            log.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `ferry mock-upstream` (the real binary) as a child process on a free loopback port, with
/// `extra` flags; returns it and its OpenAI base URL once it listens. It binds port 0 and the
/// address comes from its start-up line, so no other test can take the port in between.
pub fn spawn_mock_upstream(extra: &[&str]) -> (KillOnDrop, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["mock-upstream", "--bind", "127.0.0.1:0"])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ferry mock-upstream starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let child = KillOnDrop(child);
    let (tx, rx) = std::sync::mpsc::channel();
    // Reads the log to the end, so the child never waits on a full pipe.
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("event=mock_upstream_started")
                && let Some(addr) = line.split_whitespace().find_map(|w| w.strip_prefix("addr="))
            {
                let _ = tx.send(addr.to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("ferry mock-upstream logs event=mock_upstream_started with its address");
    (child, format!("http://{addr}/v1"))
}

/// The `ferry` binary to run in `dir`, with its per-user data directory under `dir`, no
/// `RUST_LOG` and no terminal: add the arguments and run it.
pub fn ferry_command(dir: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
    command
        .current_dir(dir)
        .env("XDG_DATA_HOME", dir.join("xdg"))
        .env("HOME", dir.join("home"))
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null());
    command
}
