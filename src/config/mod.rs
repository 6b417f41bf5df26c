//! The typed configuration: `config.toml`, validated when it is loaded.
//!
//! Every struct denies unknown keys, so a typo fails at start with the key's name and line.
//! Defaults live in one place (the `Default` impls and `default_*` functions below).
//! [`Config::validate`] reports every problem at once.
//!
//! The submodules hold what is done with a loaded configuration: `validate` (the checks serde
//! cannot make), `lanes` (each lane with `[batching]` defaults applied), `render` (`ferry check`'s
//! output), `shipped` (the built-in `config.toml` and the per-user data directory), `api_key`
//! (reading keys from the environment) and `parse_error` (parsing with the bad key's path, as
//! `KEY: reason (line N, column M)`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::core::combine::StructuredOutput;

mod api_key;
mod lanes;
mod parse_error;
mod render;
mod shipped;
mod tenants;
mod validate;

pub use api_key::mask_secret;
pub use lanes::LaneSettings;
pub use shipped::{SHIPPED, SHIPPED_NAME, user_data_dir};
pub use tenants::{MAX_TENANT_NAME, TenantConfig};

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[server]`: the HTTP door.
    pub server: ServerConfig,
    /// `[storage]`: where the SQLite store lives.
    pub storage: StorageConfig,
    /// `[files]`: limits on uploaded files.
    pub files: FilesConfig,
    /// `[logging]`: log files and their format.
    pub logging: LoggingConfig,
    /// `[batching]`: defaults every lane follows unless it sets its own.
    pub batching: BatchingConfig,
    /// `[lanes.NAME]`: priority classes.
    pub lanes: BTreeMap<String, LaneConfig>,
    /// `[[upstreams]]`: where calls go.
    pub upstreams: Vec<UpstreamConfig>,
    /// `[jobs]`: batch jobs (`/v1/batches`, `ferry run`).
    pub jobs: JobsConfig,
    /// `[[tenants]]`: named groups of keys with limits of their own (none: every key is its own
    /// owner, unlimited).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<TenantConfig>,
}

/// `[jobs]`: how batch jobs (`/v1/batches` and `ferry run`) go through the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// The lane batch items go through (so interactive traffic keeps priority); absent: `low`
    /// when there is such a lane, else the lowest-ranked one. See [`Config::jobs_lane`].
    pub lane: Option<String>,
    /// Items of one job in the engine at once; the rest wait in the database, not in memory.
    pub max_in_flight: usize,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self { lane: None, max_in_flight: 1_000 }
    }
}

/// `[server]`: the HTTP door. API keys are read from the environment variables named here,
/// never from the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP API listens on.
    pub bind: String,
    /// Environment variable holding comma-separated inference keys (Bearer tokens).
    pub api_keys_env: String,
    /// Environment variable holding comma-separated admin keys (config and settings endpoints;
    /// they may call inference endpoints too).
    pub admin_keys_env: String,
    /// Largest request body accepted; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Origins allowed to call the API from a browser; empty sends no CORS headers.
    pub cors_origins: Vec<String>,
    /// How long `ferry serve` may take to shut down after SIGINT/SIGTERM: queued and in-flight
    /// work finishes until shortly before, what is left is answered "shutting down".
    pub shutdown_grace_ms: u64,
    /// HTTP worker threads; 0 means one per CPU core (actix-web's default).
    pub workers: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8000".into(),
            api_keys_env: "FERRY_API_KEYS".into(),
            admin_keys_env: "FERRY_ADMIN_KEYS".into(),
            max_body_bytes: 10 * 1024 * 1024,
            cors_origins: Vec::new(),
            shutdown_grace_ms: 30_000,
            workers: 0,
        }
    }
}

/// `[storage]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// SQLite database file.
    pub path: PathBuf,
    /// Chats older than this many days are deleted, in the background; 0 keeps them.
    pub chat_retention_days: u64,
    /// Only this many of the newest chats are kept; 0: no cap.
    pub max_chats: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { path: PathBuf::from("data/ferry.db"), chat_retention_days: 0, max_chats: 0 }
    }
}

/// `[files]`: limits on uploaded files (`POST /v1/files`) and batch input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    /// Largest file accepted, in bytes; a larger upload gets 413 (OpenAI's batch limit: 200 MB).
    pub max_bytes: u64,
    /// Most lines a batch input file may hold (OpenAI's batch limit: 50,000).
    pub max_lines: u64,
    /// Most bytes of files one key may hold at once (its uploads and its batches' output
    /// files); an upload past it gets 413. 0: no quota.
    pub max_bytes_per_owner: u64,
    /// Seconds a batch's output and error files are kept before they expire (deleted); 0: for
    /// ever.
    pub output_lifetime_secs: u64,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            max_bytes: 200 * 1024 * 1024,
            max_lines: 50_000,
            max_bytes_per_owner: 10 * 1024 * 1024 * 1024,
            output_lifetime_secs: 30 * 86_400,
        }
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
    /// Rotated log files kept, the newest; older ones are removed at each rotation. 0 keeps all.
    pub keep_files: usize,
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
            keep_files: 30,
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
    /// The share of dispatches that goes to a waiting lower lane while higher lanes have work
    /// (0.1: one in ten; 0: strict priority). Bounds both the lower lanes' wait and the delay
    /// a fresh higher item can meet.
    pub lower_share: f64,
    /// Replaced by `lower_share`; present only to name the replacement when an old file sets it.
    #[serde(skip_serializing)]
    pub aging_ms: Option<u64>,
    /// Times an item is put back after the actor holding it failed, before it gets an error.
    pub max_requeues: u32,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        Self {
            batch_size: 10,
            batch_delay_ms: 100,
            queue_capacity: 100_000,
            lower_share: 0.1,
            aging_ms: None,
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
    /// A combined call may carry several owners' prompts (single-tenant set-ups only: one
    /// owner's prompt could ask the model to repeat the others'). Off by default.
    #[serde(default)]
    pub mix_owners: bool,
    /// Sampling temperature for items that set none. Absent: the upstream's default.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Nucleus sampling for items that set none.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Sampling seed for items that set none.
    #[serde(default)]
    pub seed: Option<i64>,
    /// Share of combined items (0.0–1.0) also sent alone, to measure how often the combined
    /// answer agrees with the answer alone (fidelity). 0: none.
    #[serde(default)]
    pub verify_share: f64,
    /// Fidelity under which, after enough samples, the lane acts as `on_low_fidelity` says.
    #[serde(default = "default_min_fidelity")]
    pub min_fidelity: f64,
    /// What a lane whose fidelity falls under `min_fidelity` does: `warn` (log it) or `fanout`
    /// (log it and switch itself to fanout).
    #[serde(default)]
    pub on_low_fidelity: LowFidelity,
}

/// What a combined lane does when its measured fidelity is too low.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LowFidelity {
    /// Log a warning.
    #[default]
    Warn,
    /// Log a warning and switch the lane to fanout.
    Fanout,
}

impl LowFidelity {
    /// The name used in config files.
    pub fn name(self) -> &'static str {
        match self {
            LowFidelity::Warn => "warn",
            LowFidelity::Fanout => "fanout",
        }
    }
}

/// Fidelity samples a lane needs before `min_fidelity` is acted on.
pub const FIDELITY_MIN_SAMPLES: u64 = 20;

fn default_min_fidelity() -> f64 {
    0.8
}

impl Default for LaneConfig {
    /// A lane of rank 0 with every key at its default (`rank` is required in a file).
    fn default() -> Self {
        Self {
            rank: 0,
            window_ms: 0,
            max_batch: None,
            delay_ms: None,
            max_tokens: None,
            latency_ms: default_latency_ms(),
            mode: default_mode(),
            queue_capacity: None,
            model: None,
            mix_owners: false,
            temperature: None,
            top_p: None,
            seed: None,
            verify_share: 0.0,
            min_fidelity: default_min_fidelity(),
            on_low_fidelity: LowFidelity::Warn,
        }
    }
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

fn provider_name(provider: ProviderKind) -> &'static str {
    match provider {
        ProviderKind::Openai => "openai",
        ProviderKind::Gemini => "gemini",
        ProviderKind::Mock => "mock",
    }
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
    /// Calls in flight at once: a fixed number, or `"auto"` to search for the server's.
    #[serde(default = "default_concurrency")]
    pub concurrency: Concurrency,
    /// How the upstream takes a JSON schema for a combined call's reply.
    #[serde(default)]
    pub structured_output: StructuredOutput,
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

fn default_concurrency() -> Concurrency {
    Concurrency::Fixed(16)
}

/// An upstream's `concurrency`: a fixed number of calls in flight, or `"auto"`.
///
/// A fixed setting stays fixed, apart from 503 backpressure (lowered by one per 503, raised
/// again after a run of successes, never above the setting). `auto` lets the client's adaptive
/// limit ([`crate::core::limits::adaptive`]) search for the calls in flight that give the most
/// answers per second without calls queueing in the server, between 1 and [`Concurrency::AUTO_MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    /// This many calls in flight at most.
    Fixed(usize),
    /// Searched for while running.
    Auto,
}

impl Concurrency {
    /// Where `auto` starts.
    pub const AUTO_START: usize = 2;
    /// The most calls in flight `auto` will try.
    pub const AUTO_MAX: usize = 256;

    /// The calls in flight to start with, at least `floor`: the fixed value, or `auto`'s start.
    /// (Named `max` so `concurrency.max(1)` reads as it did when the setting was a number.)
    pub fn max(self, floor: usize) -> usize {
        match self {
            Concurrency::Fixed(n) => n.max(floor),
            Concurrency::Auto => Self::AUTO_START.max(floor),
        }
    }

    /// The most calls in flight this setting ever allows.
    pub fn ceiling(self) -> usize {
        match self {
            Concurrency::Fixed(n) => n.max(1),
            Concurrency::Auto => Self::AUTO_MAX,
        }
    }

    /// Whether this is `auto`.
    pub fn is_auto(self) -> bool {
        self == Concurrency::Auto
    }
}

impl std::fmt::Display for Concurrency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Concurrency::Fixed(n) => write!(f, "{n}"),
            Concurrency::Auto => f.write_str("\"auto\""),
        }
    }
}

impl Serialize for Concurrency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Concurrency::Fixed(n) => serializer.serialize_u64(*n as u64),
            Concurrency::Auto => serializer.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for Concurrency {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Setting;
        impl serde::de::Visitor<'_> for Setting {
            type Value = Concurrency;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of calls in flight (e.g. 4) or \"auto\"")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Concurrency, E> {
                usize::try_from(n).map(Concurrency::Fixed).map_err(|_| E::custom("too large"))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Concurrency, E> {
                u64::try_from(n)
                    .map_err(|_| E::custom(format!("must be at least 1 or \"auto\" (got {n})")))
                    .and_then(|n| self.visit_u64(n))
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Concurrency, E> {
                match text {
                    "auto" => Ok(Concurrency::Auto),
                    other => Err(E::custom(format!("expected a number or \"auto\", got \"{other}\""))),
                }
            }
        }
        deserializer.deserialize_any(Setting)
    }
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
            structured_output: StructuredOutput::default(),
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
    /// Share of successful combined calls whose reply misplaces ids: entries shuffled, an id
    /// dropped, an id answered twice, or an id renamed (the draw picks which). Drawn apart from
    /// the fault rates.
    pub misalign_rate: f64,
    /// Share of successful combined calls whose answers are moved to the next id: well formed,
    /// every id present, every answer wrong — only fidelity sampling can tell.
    pub wrong_answer_rate: f64,
    /// Calls the mock serves at once at its base latency; further calls queue for a free slot.
    /// 0: no limit.
    pub capacity: u32,
    /// With `capacity`: calls that may wait for a slot; one more is answered 503 at once, as a
    /// server with a full queue answers. 0: no limit.
    pub queue_limit: u32,
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
            misalign_rate: 0.0,
            wrong_answer_rate: 0.0,
            capacity: 0,
            queue_limit: 0,
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
            files: FilesConfig::default(),
            logging: LoggingConfig::default(),
            batching: BatchingConfig::default(),
            lanes: default_lanes(),
            upstreams: vec![UpstreamConfig::mock("mock")],
            jobs: JobsConfig::default(),
            tenants: Vec::new(),
        }
    }
}

impl Config {
    /// The lane batch jobs use: `[jobs] lane`, else `low` if configured, else the lowest-ranked
    /// lane (validation makes sure there is one).
    pub fn jobs_lane(&self) -> &str {
        if let Some(lane) = &self.jobs.lane {
            return lane;
        }
        if self.lanes.contains_key("low") {
            return "low";
        }
        self.lanes.iter().min_by_key(|(_, lane)| lane.rank).map_or("low", |(name, _)| name.as_str())
    }
}

/// The four lanes of DESIGN.md: seed 002's high/medium/low and a `bulk` lane, all fanout.
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
        ..LaneConfig::default()
    };
    BTreeMap::from([
        // Fanout by default: measured on a small model, combined answers were far less accurate
        // (docs/combined.md); combined is one line to turn on where it pays.
        ("high".to_string(), lane(3, 200, Some(6), Some(1_000), 500, Mode::Fanout)),
        ("medium".to_string(), lane(2, 1_000, Some(4), Some(5_000), 2_000, Mode::Fanout)),
        ("low".to_string(), lane(1, 4_000, Some(4), Some(10_000), 5_000, Mode::Fanout)),
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
    /// Neither `$XDG_DATA_HOME` nor `$HOME` names a directory for the built-in config's files.
    #[error(
        "no ./config.toml and no per-user data directory ($XDG_DATA_HOME and $HOME are unset): \
         pass --config FILE (`ferry config init` writes one)"
    )]
    NoDataDir,
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
        let config: Config = parse_error::parse(text)
            .map_err(|message| ConfigError::Parse { path: path.to_path_buf(), message })?;
        config.validate().map_err(|problems| ConfigError::Invalid { path: path.to_path_buf(), problems })?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream_with(line: &str) -> Result<Config, ConfigError> {
        let text =
            format!("[lanes.a]\nrank = 1\n\n[[upstreams]]\nname = \"m\"\nprovider = \"mock\"\n{line}\n");
        Config::parse(&text, Path::new("t.toml"))
    }

    #[test]
    fn concurrency_is_a_number_or_auto() {
        let auto = upstream_with("concurrency = \"auto\"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(auto.upstreams[0].concurrency, Concurrency::Auto);
        let four = upstream_with("concurrency = 4").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(four.upstreams[0].concurrency, Concurrency::Fixed(4));
        for (bad, says) in [("\"many\"", "\"many\""), ("-1", "-1"), ("1.5", "a number of calls")] {
            let error = upstream_with(&format!("concurrency = {bad}")).expect_err(bad).to_string();
            assert!(error.contains("upstreams[0].concurrency") && error.contains(says), "{bad}: {error}");
            assert!(error.contains("line 7"), "{bad}: {error}");
        }
        let zero = upstream_with("concurrency = 0").expect_err("0").to_string();
        assert!(zero.contains("upstreams[0].concurrency: must be at least 1, or \"auto\""), "{zero}");
        assert_eq!(serde_json::to_value(Concurrency::Auto).ok(), Some(serde_json::json!("auto")));
        assert_eq!(serde_json::to_value(Concurrency::Fixed(3)).ok(), Some(serde_json::json!(3)));
    }

    #[test]
    fn structured_output_takes_the_three_ways() {
        for (name, style) in [
            ("json_schema", StructuredOutput::JsonSchema),
            ("json_object_schema", StructuredOutput::JsonObjectSchema),
            ("none", StructuredOutput::None),
        ] {
            let config =
                upstream_with(&format!("structured_output = \"{name}\"")).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(config.upstreams[0].structured_output, style);
        }
        let error = upstream_with("structured_output = \"xml\"").expect_err("xml").to_string();
        assert!(error.contains("structured_output") && error.contains("json_object_schema"), "{error}");
    }

    #[test]
    fn shipped_config_toml_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config, Config::default());
    }
}
