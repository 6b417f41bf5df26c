//! The typed configuration: `config.toml`, validated when it is loaded.
//!
//! Every struct denies unknown keys, so a typo fails at start with the key's name and line.
//! Defaults live in one place (the `Default` impls and `default_*` functions below).
//! [`Config::validate`] reports every problem at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[server]`: the HTTP door.
    pub server: ServerConfig,
    /// `[storage]`: where the SQLite store lives.
    pub storage: StorageConfig,
    /// `[logging]`: log files and their format.
    pub logging: LoggingConfig,
    /// `[batching]`: defaults every lane follows unless it sets its own.
    pub batching: BatchingConfig,
    /// `[lanes.NAME]`: priority classes.
    pub lanes: BTreeMap<String, LaneConfig>,
    /// `[[upstreams]]`: where calls go.
    pub upstreams: Vec<UpstreamConfig>,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP API listens on.
    pub bind: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self { bind: "127.0.0.1:8000".into() }
    }
}

/// `[storage]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// SQLite database file.
    pub path: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { path: PathBuf::from("data/ferry.db") }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `key=value` text, one event per line.
    Text,
    /// One JSON object per line.
    Json,
}

/// When the log file is rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rotation {
    /// One file, never rotated by ferry (use logrotate with `copytruncate`).
    Never,
    /// A new file every hour; the old one is renamed with its hour.
    Hourly,
    /// A new file every day; the old one is renamed with its date.
    Daily,
}

/// `[logging]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// Directory of the log file.
    pub dir: PathBuf,
    /// File name inside `dir`; always the file being written, so `tail -F` follows it.
    pub file: String,
    /// `tracing` filter: `info`, `debug`, `ferry=debug,actix_web=warn`, …
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
    /// `never`, `hourly` or `daily`.
    pub rotation: Rotation,
    /// Log prompt and response text (off by default: prompts may be private).
    pub log_payloads: bool,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("logs"),
            file: "ferry.log".into(),
            level: "info".into(),
            format: LogFormat::Text,
            rotation: Rotation::Daily,
            log_payloads: false,
        }
    }
}

/// `[batching]`: the global defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchingConfig {
    /// Items per batch for lanes without their own `max_batch` (seed 000: 10).
    pub batch_size: usize,
    /// Minimum pause between two batches of a lane without its own `delay_ms` (seed 000: 100).
    pub batch_delay_ms: u64,
    /// Items a lane may hold before submissions are refused with "queue full".
    pub queue_capacity: usize,
    /// Every `aging_ms` an item waits adds one rank to its lane, so low lanes are never starved.
    pub aging_ms: u64,
    /// Times an item is put back after the actor holding it failed, before it gets an error.
    pub max_requeues: u32,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        Self {
            batch_size: 10,
            batch_delay_ms: 100,
            queue_capacity: 100_000,
            aging_ms: 5_000,
            max_requeues: 3,
        }
    }
}

/// How a lane's batch is sent upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Each item is its own upstream call; the calls run concurrently.
    Fanout,
    /// The batch is one upstream call whose answer is a JSON array split back by index.
    Combined,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Fanout => "fanout",
            Mode::Combined => "combined",
        })
    }
}

/// `[lanes.NAME]`: one priority class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaneConfig {
    /// Higher rank is served first when capacity is short.
    pub rank: u32,
    /// A batch is ready when its oldest item has waited this long…
    #[serde(default)]
    pub window_ms: u64,
    /// …or the lane holds this many items. Absent: `[batching] batch_size`.
    #[serde(default)]
    pub max_batch: Option<usize>,
    /// Minimum pause between two batches of this lane. Absent: `[batching] batch_delay_ms`.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Cap on generated tokens per item (`max_tokens` upstream), unless the item sets one.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Latency target; the HTTP door derives its timeout from it.
    #[serde(default = "default_latency_ms")]
    pub latency_ms: u64,
    /// `fanout` or `combined`.
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// Items this lane may hold. Absent: `[batching] queue_capacity`.
    #[serde(default)]
    pub queue_capacity: Option<usize>,
    /// Model for items that do not name one. Absent: the upstream's first model.
    #[serde(default)]
    pub model: Option<String>,
}

fn default_latency_ms() -> u64 {
    2_000
}

fn default_mode() -> Mode {
    Mode::Fanout
}

/// Which API an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI chat completions (also llama.cpp server, vLLM, Ollama, LM Studio).
    Openai,
    /// Google Gemini `generateContent`.
    Gemini,
    /// The built-in simulated upstream.
    Mock,
}

/// `[[upstreams]]`: one upstream server and its limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Unique name, used in logs and metrics.
    pub name: String,
    /// `openai`, `gemini` or `mock`.
    pub provider: ProviderKind,
    /// API root, e.g. `https://api.openai.com/v1` or `http://127.0.0.1:8080/v1`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Name of the environment variable holding the API key (never the key itself).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Models this upstream serves; the first is the default. Empty: serves any model asked for.
    #[serde(default)]
    pub models: Vec<String>,
    /// Requests per minute (absent: unlimited).
    #[serde(default)]
    pub rpm: Option<u64>,
    /// Tokens per minute, prompt plus completion (absent: unlimited).
    #[serde(default)]
    pub tpm: Option<u64>,
    /// Requests per day (absent: unlimited).
    #[serde(default)]
    pub rpd: Option<u64>,
    /// Calls in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Per-call timeout.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Retries after a retryable failure, before the item gets an error.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Retry calls that may already have run upstream (timeouts, dropped connections, 5xx).
    /// Off: such a call ends in an error instead of risking a duplicate.
    #[serde(default = "default_true")]
    pub retry_after_send: bool,
    /// First backoff delay; doubles each retry, with jitter.
    #[serde(default = "default_backoff_base_ms")]
    pub backoff_base_ms: u64,
    /// Longest backoff delay.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Longest pause a `Retry-After` header can ask for.
    #[serde(default = "default_retry_after_max_ms")]
    pub retry_after_max_ms: u64,
    /// Consecutive failed calls that put the upstream in cooldown.
    #[serde(default = "default_cooldown_failures")]
    pub cooldown_failures: u32,
    /// How long a cooldown lasts.
    #[serde(default = "default_cooldown_ms")]
    pub cooldown_ms: u64,
    /// `[upstreams.mock]`: knobs of the simulated upstream (provider = "mock" only).
    #[serde(default)]
    pub mock: MockConfig,
}

fn default_concurrency() -> usize {
    16
}
fn default_timeout_ms() -> u64 {
    60_000
}
fn default_max_retries() -> u32 {
    3
}
fn default_true() -> bool {
    true
}
fn default_backoff_base_ms() -> u64 {
    250
}
fn default_backoff_max_ms() -> u64 {
    30_000
}
fn default_retry_after_max_ms() -> u64 {
    120_000
}
fn default_cooldown_failures() -> u32 {
    5
}
fn default_cooldown_ms() -> u64 {
    30_000
}

impl UpstreamConfig {
    /// An in-process mock upstream with default knobs.
    pub fn mock(name: &str) -> Self {
        Self {
            name: name.into(),
            provider: ProviderKind::Mock,
            base_url: None,
            api_key_env: None,
            models: vec!["mock".into()],
            rpm: None,
            tpm: None,
            rpd: None,
            concurrency: default_concurrency(),
            timeout_ms: default_timeout_ms(),
            max_retries: default_max_retries(),
            retry_after_send: true,
            backoff_base_ms: default_backoff_base_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            retry_after_max_ms: default_retry_after_max_ms(),
            cooldown_failures: default_cooldown_failures(),
            cooldown_ms: default_cooldown_ms(),
            mock: MockConfig::default(),
        }
    }

    /// Whether this upstream serves `model` (an upstream with no `models` serves any).
    pub fn serves(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|m| m == model)
    }
}

/// `[upstreams.mock]`: the simulated upstream. Rates are probabilities in `0.0..=1.0`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MockConfig {
    /// Base latency of a call.
    pub latency_ms: u64,
    /// Extra latency drawn uniformly from `0..=latency_jitter_ms`.
    pub latency_jitter_ms: u64,
    /// Tokens the answer is padded to (the answer always mentions the prompt).
    pub output_tokens: u32,
    /// Share of calls answered with HTTP 500.
    pub error_rate: f64,
    /// Share of calls answered with HTTP 429.
    pub rate_limit_rate: f64,
    /// Share of calls answered with HTTP 503 (backpressure).
    pub overload_rate: f64,
    /// Share of calls answered with a reply that is not the API's shape.
    pub malformed_rate: f64,
    /// Share of calls whose connection drops after the request was sent.
    pub drop_rate: f64,
    /// Share of calls that time out (after the latency, not the upstream's `timeout_ms`).
    pub timeout_rate: f64,
    /// Share of successful combined calls answered with text that is not a valid answer array
    /// (prose, or an array of the wrong length), to exercise the item-by-item fallback. Drawn
    /// apart from the fault rates: it does not count toward their sum.
    pub garble_rate: f64,
    /// `Retry-After` sent with an injected 429.
    pub retry_after_ms: u64,
    /// Seed for the fault draws (same seed, same faults).
    pub seed: u64,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            latency_jitter_ms: 0,
            output_tokens: 8,
            error_rate: 0.0,
            rate_limit_rate: 0.0,
            overload_rate: 0.0,
            malformed_rate: 0.0,
            drop_rate: 0.0,
            timeout_rate: 0.0,
            garble_rate: 0.0,
            retry_after_ms: 1_000,
            seed: 1,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            storage: StorageConfig::default(),
            logging: LoggingConfig::default(),
            batching: BatchingConfig::default(),
            lanes: default_lanes(),
            upstreams: vec![UpstreamConfig::mock("mock")],
        }
    }
}

/// The four lanes of DESIGN.md: seed 002's high/medium/low and a fanout `bulk` lane.
pub fn default_lanes() -> BTreeMap<String, LaneConfig> {
    let lane = |rank, window_ms, max_batch, max_tokens, latency_ms, mode| LaneConfig {
        rank,
        window_ms,
        max_batch,
        delay_ms: None,
        max_tokens,
        latency_ms,
        mode,
        queue_capacity: None,
        model: None,
    };
    BTreeMap::from([
        ("high".to_string(), lane(3, 200, Some(6), Some(1_000), 500, Mode::Combined)),
        ("medium".to_string(), lane(2, 1_000, Some(4), Some(5_000), 2_000, Mode::Combined)),
        ("low".to_string(), lane(1, 4_000, Some(4), Some(10_000), 5_000, Mode::Combined)),
        ("bulk".to_string(), lane(0, 0, None, None, 5_000, Mode::Fanout)),
    ])
}

/// A configuration problem, with where it is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key is unknown or of the wrong type.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, which names the key and line.
        message: String,
    },
    /// Values that parse but make no sense; every problem is listed.
    #[error("{path}: invalid configuration:\n{}", problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// One line per problem, each naming its key.
        problems: Vec<String>,
    },
    /// An upstream names an API key variable that is not set, and needs a key.
    #[error(
        "upstream {upstream:?}: environment variable {var} is not set (or is empty); \
         export it before starting ferry, or point base_url at a local server that needs no key"
    )]
    MissingApiKey {
        /// The upstream's name.
        upstream: String,
        /// The environment variable named by `api_key_env`.
        var: String,
    },
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: parse_message(text, &e) })?;
        config.validate().map_err(|problems| ConfigError::Invalid { path: path.to_path_buf(), problems })?;
        Ok(config)
    }

    /// Checks values that serde cannot: returns every problem found, each naming its key and
    /// saying what would be valid.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        check_server(&self.server, &mut problems);
        if self.storage.path.as_os_str().is_empty() {
            problems.push("storage.path: must not be empty (e.g. \"data/ferry.db\")".into());
        }
        check_logging(&self.logging, &mut problems);
        check_batching(&self.batching, &mut problems);
        if self.lanes.is_empty() {
            problems.push("lanes: at least one lane is required, e.g. [lanes.default] rank = 0".into());
        }
        for (name, lane) in &self.lanes {
            check_lane(name, lane, self, &mut problems);
        }
        if self.upstreams.is_empty() {
            problems.push(
                "upstreams: at least one upstream is required, e.g. [[upstreams]] name = \"mock\" \
                 provider = \"mock\""
                    .into(),
            );
        }
        for (index, upstream) in self.upstreams.iter().enumerate() {
            check_upstream(index, upstream, &mut problems);
        }
        check_unique_upstream_names(&self.upstreams, &mut problems);
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }

    /// Every lane's settings after defaults are applied, by lane name.
    pub fn resolved_lanes(&self) -> BTreeMap<String, LaneSettings> {
        self.lanes.iter().map(|(name, lane)| (name.clone(), lane.effective(&self.batching))).collect()
    }

    /// The configuration as `ferry check` prints it: TOML with every default filled in and each
    /// lane's effective values. API keys appear only as their variable's name and whether it is
    /// set, never their value.
    pub fn render(&self) -> String {
        self.render_with(|name| std::env::var(name).ok())
    }

    /// [`Config::render`] with the environment lookup injected, so output is testable.
    pub fn render_with(&self, lookup: impl Fn(&str) -> Option<String>) -> String {
        let mut out = Render::default();
        out.comment("ferry configuration as resolved: defaults filled in, lanes as they run.");
        render_sections(self, &mut out);
        render_lanes(self, &mut out);
        for upstream in &self.upstreams {
            render_upstream(upstream, &lookup, &mut out);
        }
        out.text
    }
}

/// A parse error as `KEY: reason (line N, column M)`. toml's own display shows the offending
/// line as a snippet, which would echo a secret pasted under a wrong key, and names the key only
/// inside that snippet.
fn parse_message(text: &str, error: &toml::de::Error) -> String {
    let reason = error.message().trim().replace('\n', "; ");
    let Some(span) = error.span() else { return reason };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
    match key_path(text, line) {
        Some(key) => format!("{key}: {reason} (line {line}, column {column})"),
        None => format!("{reason} (line {line}, column {column})"),
    }
}

/// The dotted path of the key on `line` (1-based), e.g. `upstreams[1].mock.error_rate`, read
/// from the table headers above it. Best effort: `None` when the line holds no key.
fn key_path(text: &str, line: usize) -> Option<String> {
    let mut table = String::new();
    let mut arrays: BTreeMap<String, usize> = BTreeMap::new();
    for (index, raw) in text.lines().take(line).enumerate() {
        let content = raw.trim();
        let is_error_line = index + 1 == line;
        if let Some(header) = content.strip_prefix("[[") {
            let name = unquote(header.split("]]").next().unwrap_or_default());
            let count = arrays.entry(name.clone()).and_modify(|n| *n += 1).or_insert(0);
            table = format!("{name}[{count}]");
        } else if let Some(header) = content.strip_prefix('[') {
            let name = unquote(header.split(']').next().unwrap_or_default());
            table = match arrays.iter().rev().find(|(array, _)| name.starts_with(&format!("{array}."))) {
                Some((array, count)) => format!("{array}[{count}]{}", &name[array.len()..]),
                None => name,
            };
        } else if is_error_line && let Some((key, _)) = content.split_once('=') {
            let key = unquote(key);
            return Some(if table.is_empty() { key } else { format!("{table}.{key}") });
        }
    }
    (!table.is_empty()).then_some(table)
}

/// A dotted key without quotes or the spaces around its dots.
fn unquote(key: &str) -> String {
    key.split('.').map(|part| part.trim().trim_matches(['"', '\''])).collect::<Vec<_>>().join(".")
}

/// What a lane resolves to once `[batching]` defaults are applied; the engine runs on this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LaneSettings {
    /// Higher rank is served first.
    pub rank: u32,
    /// Longest wait of the oldest item before its batch is ready.
    pub window_ms: u64,
    /// Items that make a batch ready at once.
    pub max_batch: usize,
    /// Minimum pause between two batches of the lane.
    pub delay_ms: u64,
    /// Cap on generated tokens per item, unless the item sets one.
    pub max_tokens: Option<u32>,
    /// Latency target.
    pub latency_ms: u64,
    /// `fanout` or `combined`.
    pub mode: Mode,
    /// Items the lane may hold before refusing submissions.
    pub queue_capacity: usize,
    /// Model for items that name none (absent: the upstream's first model).
    pub model: Option<String>,
    /// The lane sets no `max_batch`, so a live change of the global batch size applies to it.
    pub max_batch_follows_global: bool,
    /// The lane sets no `delay_ms`, so a live change of the global batch delay applies to it.
    pub delay_follows_global: bool,
}

impl LaneConfig {
    /// This lane's settings, taking what it leaves unset from `batching`.
    pub fn effective(&self, batching: &BatchingConfig) -> LaneSettings {
        LaneSettings {
            rank: self.rank,
            window_ms: self.window_ms,
            max_batch: self.max_batch.unwrap_or(batching.batch_size),
            delay_ms: self.delay_ms.unwrap_or(batching.batch_delay_ms),
            max_tokens: self.max_tokens,
            latency_ms: self.latency_ms,
            mode: self.mode,
            queue_capacity: self.queue_capacity.unwrap_or(batching.queue_capacity),
            model: self.model.clone(),
            max_batch_follows_global: self.max_batch.is_none(),
            delay_follows_global: self.delay_ms.is_none(),
        }
    }
}

impl UpstreamConfig {
    /// The API key from the environment variable named by `api_key_env`.
    ///
    /// `Ok(None)` when no variable is named, or when it is unset but the upstream is a mock or a
    /// loopback server (llama.cpp, vLLM) that needs no key. A remote `openai`/`gemini` upstream
    /// whose variable is unset or empty is an error naming the variable.
    pub fn api_key(&self) -> Result<Option<String>, ConfigError> {
        self.api_key_with(|name| std::env::var(name).ok())
    }

    /// [`UpstreamConfig::api_key`] with the environment lookup injected.
    pub fn api_key_with(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<String>, ConfigError> {
        let Some(var) = &self.api_key_env else { return Ok(None) };
        // A key pasted with a trailing newline would otherwise be sent as is and fail upstream.
        let key = lookup(var).map(|k| k.trim().to_string()).filter(|k| !k.is_empty());
        match key {
            Some(key) => Ok(Some(key)),
            None if self.needs_key() => {
                Err(ConfigError::MissingApiKey { upstream: self.name.clone(), var: var.clone() })
            }
            None => Ok(None),
        }
    }

    /// Whether calls can only succeed with a key: a remote server of a real API.
    fn needs_key(&self) -> bool {
        match self.provider {
            ProviderKind::Mock => false,
            ProviderKind::Openai | ProviderKind::Gemini => {
                !self.base_url.as_deref().and_then(url_host).is_some_and(is_loopback_host)
            }
        }
    }
}

/// `***` plus the last four characters of a secret (just `***` for four or fewer), so an operator
/// can tell keys apart without the key being shown.
pub fn mask_secret(s: &str) -> String {
    let count = s.chars().count();
    if count <= 4 {
        return "***".into();
    }
    let last4: String = s.chars().skip(count - 4).collect();
    format!("***{last4}")
}

/// The host of an `http(s)://` URL (`[::1]` keeps its brackets), or `None` if it has none.
fn url_host(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host_port.starts_with('[') {
        host_port.split_inclusive(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    (!host.is_empty()).then_some(host)
}

fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn check_server(server: &ServerConfig, problems: &mut Vec<String>) {
    let valid = server
        .bind
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !valid {
        problems
            .push(format!("server.bind: must be HOST:PORT like \"127.0.0.1:8000\" (got {:?})", server.bind));
    }
}

fn check_logging(logging: &LoggingConfig, problems: &mut Vec<String>) {
    if logging.dir.as_os_str().is_empty() {
        problems.push("logging.dir: must not be empty (e.g. \"logs\")".into());
    }
    let file = logging.file.as_str();
    if file.is_empty() || file == "." || file == ".." || file.contains(['/', '\\']) {
        problems.push(format!(
            "logging.file: must be a plain file name like \"ferry.log\" (got {file:?}); \
             put the directory in logging.dir"
        ));
    }
    if let Err(reason) = check_level(&logging.level) {
        problems.push(format!("logging.level: {reason}"));
    }
}

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Checks a `tracing` filter. A bare word that is not a level is refused although EnvFilter would
/// read it as a target name: `inof` is far more often a typo than a target filter.
fn check_level(level: &str) -> Result<(), String> {
    let hint = "use trace, debug, info, warn, error or off, or directives like \"info,ferry=debug\"";
    if level.trim().is_empty() {
        return Err(format!("must not be empty; {hint}"));
    }
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(level) {
        return Err(format!("{level:?} is not a valid filter ({e}); {hint}"));
    }
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare_word = !directive.contains(['=', '[', ':']);
        if bare_word && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(directive)) {
            return Err(format!("{directive:?} is not a level; {hint}"));
        }
    }
    Ok(())
}

fn check_batching(batching: &BatchingConfig, problems: &mut Vec<String>) {
    at_least_one(problems, "batching.batch_size", batching.batch_size as u64);
    at_least_one(problems, "batching.queue_capacity", batching.queue_capacity as u64);
    if batching.aging_ms == 0 {
        problems.push(
            "batching.aging_ms: must be at least 1 (got 0); use a large value to make aging rare".into(),
        );
    }
}

fn check_lane(name: &str, lane: &LaneConfig, config: &Config, problems: &mut Vec<String>) {
    let key = |field: &str| format!("lanes.{name}.{field}");
    let name_ok = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !name_ok {
        problems.push(format!("lanes.{name}: lane names must use only a-z, 0-9, '_' and '-' (got {name:?})"));
    }
    if let Some(n) = lane.max_batch {
        at_least_one(problems, &key("max_batch"), n as u64);
    }
    if let Some(n) = lane.queue_capacity {
        at_least_one(problems, &key("queue_capacity"), n as u64);
    }
    if let Some(n) = lane.max_tokens {
        at_least_one(problems, &key("max_tokens"), u64::from(n));
    }
    at_least_one(problems, &key("latency_ms"), lane.latency_ms);
    let settings = lane.effective(&config.batching);
    if settings.max_batch > settings.queue_capacity && settings.queue_capacity > 0 {
        problems.push(format!(
            "{}: {} is more than the lane's queue_capacity ({}), so a full batch could never form",
            key("max_batch"),
            settings.max_batch,
            settings.queue_capacity
        ));
    }
    if let Some(model) = &lane.model {
        check_lane_model(&key("model"), model, &config.upstreams, problems);
    }
}

fn check_lane_model(key: &str, model: &str, upstreams: &[UpstreamConfig], problems: &mut Vec<String>) {
    if model.trim().is_empty() {
        problems.push(format!("{key}: must not be empty; remove it to use the upstream's first model"));
    } else if !upstreams.is_empty() && !upstreams.iter().any(|u| u.serves(model)) {
        let served: Vec<&str> = upstreams.iter().flat_map(|u| u.models.iter().map(String::as_str)).collect();
        problems.push(format!(
            "{key}: {model:?} is not served by any upstream; add it to an upstream's models \
             (served: {})",
            served.join(", ")
        ));
    }
}

fn check_upstream(index: usize, upstream: &UpstreamConfig, problems: &mut Vec<String>) {
    let key = |field: &str| format!("upstreams[{index}].{field}");
    if upstream.name.trim().is_empty() {
        problems.push(format!("{}: must not be empty; it names the upstream in logs", key("name")));
    }
    check_endpoint(index, upstream, problems);
    check_key_named(index, upstream, problems);
    check_models(index, &upstream.models, problems);
    for (field, value) in [("rpm", upstream.rpm), ("tpm", upstream.tpm), ("rpd", upstream.rpd)] {
        if value == Some(0) {
            problems
                .push(format!("{}: must be at least 1 when set (got 0); remove it for no limit", key(field)));
        }
    }
    at_least_one(problems, &key("concurrency"), upstream.concurrency as u64);
    at_least_one(problems, &key("timeout_ms"), upstream.timeout_ms);
    // A zero base would keep every backoff at zero: retries would hammer a failing upstream.
    at_least_one(problems, &key("backoff_base_ms"), upstream.backoff_base_ms);
    if upstream.backoff_base_ms > upstream.backoff_max_ms {
        problems.push(format!(
            "{}: must be at least backoff_base_ms ({}) (got {})",
            key("backoff_max_ms"),
            upstream.backoff_base_ms,
            upstream.backoff_max_ms
        ));
    }
    at_least_one(problems, &key("retry_after_max_ms"), upstream.retry_after_max_ms);
    at_least_one(problems, &key("cooldown_failures"), u64::from(upstream.cooldown_failures));
    if upstream.provider == ProviderKind::Mock {
        check_mock(index, &upstream.mock, problems);
    } else if upstream.mock != MockConfig::default() {
        problems.push(format!(
            "{}: only valid with provider = \"mock\" (this upstream is {:?})",
            key("mock"),
            provider_name(upstream.provider)
        ));
    }
}

/// `base_url` and `api_key_env`: what each provider needs to reach its server.
fn check_endpoint(index: usize, upstream: &UpstreamConfig, problems: &mut Vec<String>) {
    let key = |field: &str| format!("upstreams[{index}].{field}");
    let provider = provider_name(upstream.provider);
    match (&upstream.base_url, upstream.provider) {
        (None, ProviderKind::Openai) => problems.push(format!(
            "{}: required for provider \"openai\", e.g. \"https://api.openai.com/v1\" or \
             \"http://127.0.0.1:8080/v1\"",
            key("base_url")
        )),
        (Some(_), ProviderKind::Mock) => problems.push(format!(
            "{}: not used by provider \"mock\", which runs in-process; to call `ferry mock-upstream` \
             over HTTP use provider = \"openai\"",
            key("base_url")
        )),
        (Some(url), _) if url_host(url).is_none() => problems.push(format!(
            "{}: must start with http:// or https:// and name a host (got {url:?})",
            key("base_url")
        )),
        _ => {}
    }
    let Some(var) = &upstream.api_key_env else { return };
    let mut chars = var.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        problems.push(format!(
            "{}: {var:?} must be an environment variable name like OPENAI_API_KEY \
             (letters, digits and '_'); the key itself never goes in the file",
            key("api_key_env")
        ));
    } else if upstream.provider == ProviderKind::Mock {
        problems.push(format!("{}: not used by provider {provider:?}; remove it", key("api_key_env")));
    }
}

/// A hosted API refuses every call without a key, so a missing `api_key_env` is caught at load
/// rather than at the first request. Self-hosted servers may run without one.
fn check_key_named(index: usize, upstream: &UpstreamConfig, problems: &mut Vec<String>) {
    if upstream.api_key_env.is_some() {
        return;
    }
    let host = upstream.base_url.as_deref().and_then(url_host);
    let (hosted, example) = match upstream.provider {
        ProviderKind::Gemini => (!host.is_some_and(is_loopback_host), "GEMINI_API_KEY"),
        ProviderKind::Openai => (host.is_some_and(|h| h.ends_with("openai.com")), "OPENAI_API_KEY"),
        ProviderKind::Mock => (false, ""),
    };
    if hosted {
        problems.push(format!(
            "upstreams[{index}].api_key_env: required for provider {:?} at this base_url, \
             e.g. api_key_env = {example:?}",
            provider_name(upstream.provider)
        ));
    }
}

fn check_models(index: usize, models: &[String], problems: &mut Vec<String>) {
    for (i, model) in models.iter().enumerate() {
        if model.trim().is_empty() {
            problems.push(format!("upstreams[{index}].models[{i}]: must not be empty"));
        } else if models[..i].contains(model) {
            problems.push(format!("upstreams[{index}].models[{i}]: {model:?} is listed twice"));
        }
    }
}

fn check_mock(index: usize, mock: &MockConfig, problems: &mut Vec<String>) {
    let key = |field: &str| format!("upstreams[{index}].mock.{field}");
    let faults = [
        ("error_rate", mock.error_rate),
        ("rate_limit_rate", mock.rate_limit_rate),
        ("overload_rate", mock.overload_rate),
        ("malformed_rate", mock.malformed_rate),
        ("drop_rate", mock.drop_rate),
        ("timeout_rate", mock.timeout_rate),
    ];
    let mut rates_ok = true;
    for (field, rate) in faults.iter().copied().chain([("garble_rate", mock.garble_rate)]) {
        if !(0.0..=1.0).contains(&rate) {
            rates_ok = false;
            problems.push(format!("{}: must be between 0.0 and 1.0 (got {rate})", key(field)));
        }
    }
    // One draw picks at most one fault, so the fault rates share the unit interval (garble_rate
    // is drawn apart). The tolerance keeps shares such as 0.7 + 0.3 from failing on float rounding.
    let total: f64 = faults.iter().map(|(_, rate)| rate).sum();
    if rates_ok && total > 1.0 + 1e-9 {
        problems.push(format!(
            "{}: the fault rates error_rate + rate_limit_rate + overload_rate + malformed_rate + \
             drop_rate + timeout_rate must be at most 1.0 (got {total})",
            key("rate_limit_rate"),
        ));
    }
}

fn check_unique_upstream_names(upstreams: &[UpstreamConfig], problems: &mut Vec<String>) {
    for (i, upstream) in upstreams.iter().enumerate() {
        if let Some(first) = upstreams[..i].iter().position(|u| u.name == upstream.name) {
            problems.push(format!(
                "upstreams[{i}].name: {:?} is used by upstreams[{first}] too; names must be unique",
                upstream.name
            ));
        }
    }
}

fn at_least_one(problems: &mut Vec<String>, key: &str, value: u64) {
    if value == 0 {
        problems.push(format!("{key}: must be at least 1 (got 0)"));
    }
}

fn provider_name(provider: ProviderKind) -> &'static str {
    match provider {
        ProviderKind::Openai => "openai",
        ProviderKind::Gemini => "gemini",
        ProviderKind::Mock => "mock",
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Fanout => "fanout",
        Mode::Combined => "combined",
    }
}

/// A TOML document built line by line, so values can carry explanatory comments.
#[derive(Default)]
struct Render {
    text: String,
}

impl Render {
    fn comment(&mut self, comment: &str) {
        self.text.push_str(&format!("# {comment}\n"));
    }

    fn table(&mut self, header: &str) {
        self.text.push_str(&format!("\n{header}\n"));
    }

    fn value(&mut self, key: &str, value: impl std::fmt::Display) {
        self.text.push_str(&format!("{key} = {value}\n"));
    }

    fn noted(&mut self, key: &str, value: impl std::fmt::Display, note: &str) {
        self.text.push_str(&format!("{key} = {value}  # {note}\n"));
    }

    fn string(&mut self, key: &str, value: &str) {
        self.value(key, quote(value));
    }
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn render_sections(config: &Config, out: &mut Render) {
    out.table("[server]");
    out.string("bind", &config.server.bind);
    out.table("[storage]");
    out.string("path", &config.storage.path.display().to_string());
    let logging = &config.logging;
    out.table("[logging]");
    out.string("dir", &logging.dir.display().to_string());
    out.string("file", &logging.file);
    out.string("level", &logging.level);
    out.string(
        "format",
        match logging.format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        },
    );
    out.string(
        "rotation",
        match logging.rotation {
            Rotation::Never => "never",
            Rotation::Hourly => "hourly",
            Rotation::Daily => "daily",
        },
    );
    out.value("log_payloads", logging.log_payloads);
    let batching = &config.batching;
    out.table("[batching]");
    out.value("batch_size", batching.batch_size);
    out.value("batch_delay_ms", batching.batch_delay_ms);
    out.value("queue_capacity", batching.queue_capacity);
    out.value("aging_ms", batching.aging_ms);
    out.value("max_requeues", batching.max_requeues);
}

/// Lanes in the order they are served (highest rank first), each with its effective values.
fn render_lanes(config: &Config, out: &mut Render) {
    let mut lanes: Vec<(String, LaneSettings)> = config.resolved_lanes().into_iter().collect();
    lanes.sort_by(|a, b| b.1.rank.cmp(&a.1.rank).then_with(|| a.0.cmp(&b.0)));
    for (name, lane) in lanes {
        out.table(&format!("[lanes.{}]", table_key(&name)));
        out.value("rank", lane.rank);
        out.value("window_ms", lane.window_ms);
        // Followed values stay comments so the rendered file, loaded again, still follows.
        if lane.max_batch_follows_global {
            out.comment(&format!("max_batch = {}: follows [batching] batch_size", lane.max_batch));
        } else {
            out.value("max_batch", lane.max_batch);
        }
        if lane.delay_follows_global {
            out.comment(&format!("delay_ms = {}: follows [batching] batch_delay_ms", lane.delay_ms));
        } else {
            out.value("delay_ms", lane.delay_ms);
        }
        match lane.max_tokens {
            Some(tokens) => out.value("max_tokens", tokens),
            None => out.comment("max_tokens: not set (the item's own, else the upstream's default)"),
        }
        out.value("latency_ms", lane.latency_ms);
        out.string("mode", mode_name(lane.mode));
        match config.lanes.get(&name).and_then(|l| l.queue_capacity) {
            Some(capacity) => out.value("queue_capacity", capacity),
            None => out.comment(&format!(
                "queue_capacity = {}: from [batching] queue_capacity",
                lane.queue_capacity
            )),
        }
        match &lane.model {
            Some(model) => out.string("model", model),
            None => out.comment("model: not set (the serving upstream's first model)"),
        }
    }
}

/// A lane name as a TOML table key: bare when it can be, quoted otherwise.
fn table_key(name: &str) -> String {
    let bare = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare { name.to_string() } else { quote(name) }
}

fn render_upstream(upstream: &UpstreamConfig, lookup: &impl Fn(&str) -> Option<String>, out: &mut Render) {
    out.table("[[upstreams]]");
    out.string("name", &upstream.name);
    out.string("provider", provider_name(upstream.provider));
    match &upstream.base_url {
        Some(url) => out.string("base_url", url),
        None if upstream.provider == ProviderKind::Gemini => {
            out.comment("base_url: not set (Google's Gemini API)")
        }
        None => {}
    }
    if let Some(var) = &upstream.api_key_env {
        let set = lookup(var).is_some_and(|value| !value.trim().is_empty());
        out.noted("api_key_env", quote(var), if set { "set" } else { "NOT set" });
    }
    let models: Vec<String> = upstream.models.iter().map(|m| quote(m)).collect();
    if models.is_empty() {
        out.noted("models", "[]", "serves any model asked for");
    } else {
        out.value("models", format!("[{}]", models.join(", ")));
    }
    for (key, limit) in [("rpm", upstream.rpm), ("tpm", upstream.tpm), ("rpd", upstream.rpd)] {
        match limit {
            Some(limit) => out.value(key, limit),
            None => out.comment(&format!("{key}: not set (unlimited)")),
        }
    }
    out.value("concurrency", upstream.concurrency);
    out.value("timeout_ms", upstream.timeout_ms);
    out.value("max_retries", upstream.max_retries);
    out.value("retry_after_send", upstream.retry_after_send);
    out.value("backoff_base_ms", upstream.backoff_base_ms);
    out.value("backoff_max_ms", upstream.backoff_max_ms);
    out.value("retry_after_max_ms", upstream.retry_after_max_ms);
    out.value("cooldown_failures", upstream.cooldown_failures);
    out.value("cooldown_ms", upstream.cooldown_ms);
    if upstream.provider == ProviderKind::Mock {
        let mock = &upstream.mock;
        out.table("[upstreams.mock]");
        out.value("latency_ms", mock.latency_ms);
        out.value("latency_jitter_ms", mock.latency_jitter_ms);
        out.value("output_tokens", mock.output_tokens);
        out.value("error_rate", toml::Value::Float(mock.error_rate));
        out.value("rate_limit_rate", toml::Value::Float(mock.rate_limit_rate));
        out.value("overload_rate", toml::Value::Float(mock.overload_rate));
        out.value("malformed_rate", toml::Value::Float(mock.malformed_rate));
        out.value("drop_rate", toml::Value::Float(mock.drop_rate));
        out.value("timeout_rate", toml::Value::Float(mock.timeout_rate));
        out.value("garble_rate", toml::Value::Float(mock.garble_rate));
        out.value("retry_after_ms", mock.retry_after_ms);
        out.value("seed", mock.seed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(max_batch: Option<usize>, delay_ms: Option<u64>) -> LaneConfig {
        LaneConfig {
            rank: 1,
            window_ms: 50,
            max_batch,
            delay_ms,
            max_tokens: None,
            latency_ms: default_latency_ms(),
            mode: default_mode(),
            queue_capacity: None,
            model: None,
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn default_config_is_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
    }

    #[test]
    fn mock_fault_rates_are_checked_each_and_together() {
        let mut config = Config::default();
        config.upstreams[0].mock =
            MockConfig { drop_rate: 0.6, timeout_rate: 0.5, garble_rate: 1.0, ..MockConfig::default() };
        let problems = config.validate().expect_err("0.6 + 0.5 is over 1.0");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("must be at most 1.0 (got 1.1"), "{problems:?}");
        config.upstreams[0].mock = MockConfig { overload_rate: 1.5, ..MockConfig::default() };
        let problems = config.validate().expect_err("1.5 is not a rate");
        assert_eq!(problems, ["upstreams[0].mock.overload_rate: must be between 0.0 and 1.0 (got 1.5)"]);
    }

    #[test]
    fn shipped_config_toml_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config, Config::default());
    }

    #[test]
    fn lane_without_own_values_follows_batching() {
        let batching =
            BatchingConfig { batch_size: 7, batch_delay_ms: 30, queue_capacity: 9, ..Default::default() };
        let settings = lane(None, None).effective(&batching);
        assert_eq!((settings.max_batch, settings.delay_ms, settings.queue_capacity), (7, 30, 9));
        assert!(settings.max_batch_follows_global && settings.delay_follows_global);
    }

    #[test]
    fn lane_own_values_win_over_batching() {
        let settings = lane(Some(3), Some(0)).effective(&BatchingConfig::default());
        assert_eq!((settings.max_batch, settings.delay_ms), (3, 0));
        assert!(!settings.max_batch_follows_global && !settings.delay_follows_global);
    }

    #[test]
    fn default_lanes_resolve_as_designed() {
        let lanes = Config::default().resolved_lanes();
        let high = &lanes["high"];
        assert_eq!((high.rank, high.window_ms, high.max_batch, high.latency_ms), (3, 200, 6, 500));
        assert_eq!((high.max_tokens, high.mode, high.delay_ms), (Some(1_000), Mode::Combined, 100));
        let bulk = &lanes["bulk"];
        assert_eq!((bulk.rank, bulk.window_ms, bulk.max_batch, bulk.mode), (0, 0, 10, Mode::Fanout));
        assert!(bulk.max_batch_follows_global && bulk.delay_follows_global);
        assert_eq!(bulk.queue_capacity, 100_000);
    }

    #[test]
    fn render_is_toml_that_loads_back_with_the_same_lanes() {
        let config = Config::default();
        let text = config.render_with(no_env);
        let back = Config::parse(&text, Path::new("rendered.toml")).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back.resolved_lanes(), config.resolved_lanes());
        assert_eq!(back.upstreams, config.upstreams);
        assert!(text.contains("# max_batch = 10: follows [batching] batch_size"), "{text}");
    }

    #[test]
    fn render_shows_whether_the_key_variable_is_set_but_never_the_key() {
        let mut config = Config::default();
        let mut openai = UpstreamConfig::mock("openai");
        openai.provider = ProviderKind::Openai;
        openai.base_url = Some("https://api.openai.com/v1".into());
        openai.api_key_env = Some("OPENAI_API_KEY".into());
        config.upstreams.push(openai);
        let set = config.render_with(|_| Some("sk-secret-value".into()));
        assert!(set.contains("api_key_env = \"OPENAI_API_KEY\"  # set"), "{set}");
        assert!(!set.contains("sk-secret"));
        let unset = config.render_with(no_env);
        assert!(unset.contains("api_key_env = \"OPENAI_API_KEY\"  # NOT set"), "{unset}");
    }

    fn remote(provider: ProviderKind, base_url: Option<&str>) -> UpstreamConfig {
        UpstreamConfig {
            provider,
            base_url: base_url.map(str::to_string),
            api_key_env: Some("FERRY_TEST_KEY".into()),
            ..UpstreamConfig::mock("remote")
        }
    }

    #[test]
    fn api_key_is_read_and_trimmed() {
        let upstream = remote(ProviderKind::Openai, Some("https://api.openai.com/v1"));
        let key = upstream.api_key_with(|name| (name == "FERRY_TEST_KEY").then(|| "sk-abc\n".into()));
        assert_eq!(key.ok().flatten().as_deref(), Some("sk-abc"));
    }

    #[test]
    fn missing_key_for_remote_upstream_names_the_variable() {
        for upstream in [
            remote(ProviderKind::Openai, Some("https://api.openai.com/v1")),
            remote(ProviderKind::Gemini, None),
        ] {
            let err = upstream.api_key_with(no_env).map(|_| ()).unwrap_err().to_string();
            assert!(err.contains("FERRY_TEST_KEY") && err.contains("\"remote\""), "{err}");
            assert!(upstream.api_key_with(|_| Some("  ".into())).is_err());
        }
    }

    #[test]
    fn missing_key_for_loopback_server_is_fine() {
        for url in ["http://127.0.0.1:8080/v1", "http://localhost:8000/v1", "http://[::1]:8080/v1"] {
            let upstream = remote(ProviderKind::Openai, Some(url));
            assert_eq!(upstream.api_key_with(no_env).ok(), Some(None), "{url}");
        }
        let none_named =
            UpstreamConfig { api_key_env: None, ..remote(ProviderKind::Openai, Some("https://x.io")) };
        assert_eq!(none_named.api_key_with(no_env).ok(), Some(None));
    }

    #[test]
    fn api_key_reads_the_process_environment() {
        let upstream = remote(ProviderKind::Openai, Some("http://127.0.0.1:1/v1"));
        let upstream =
            UpstreamConfig { api_key_env: Some("FERRY_SURELY_UNSET_VARIABLE_4F2A9C".into()), ..upstream };
        assert_eq!(upstream.api_key().ok(), Some(None));
    }

    #[test]
    fn url_host_handles_ports_paths_and_brackets() {
        assert_eq!(url_host("https://api.openai.com/v1"), Some("api.openai.com"));
        assert_eq!(url_host("http://user@127.0.0.1:8080"), Some("127.0.0.1"));
        assert_eq!(url_host("http://[::1]:8080/v1"), Some("[::1]"));
        assert_eq!(url_host("ftp://host"), None);
        assert_eq!(url_host("http:///v1"), None);
        assert!(is_loopback_host("127.0.0.2") && is_loopback_host("LOCALHOST"));
        assert!(!is_loopback_host("10.0.0.1"));
    }

    #[test]
    fn mask_secret_keeps_only_the_last_four() {
        assert_eq!(mask_secret("sk-1234567890"), "***7890");
        assert_eq!(mask_secret("abcd"), "***");
        assert_eq!(mask_secret(""), "***");
        assert_eq!(mask_secret("ключ-ключ"), "***ключ");
    }

    #[test]
    fn level_accepts_filters_and_refuses_typos() {
        for ok in ["info", "WARN", "info,ferry=debug", "ferry::engine=trace", "off"] {
            assert_eq!(check_level(ok), Ok(()), "{ok}");
        }
        for bad in ["inof", "", "ferry=loud"] {
            assert!(check_level(bad).is_err(), "{bad}");
        }
    }
}
