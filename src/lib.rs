//! ferry: an actor-based LLM batch engine.
//!
//! Prompts come in through doors (HTTP API, batch jobs, `ferry run`), wait in priority lanes,
//! are formed into batches and dispatched to a pool of rate-limited upstream clients. Read in
//! this order:
//!
//! - [`config`]: the typed `config.toml`.
//! - [`core`]: pure rules (batching, rate windows, retry timing, combined prompts).
//! - [`providers`]: the upstream APIs behind one trait (OpenAI, Gemini, mock).
//! - [`engine`]: the actix actors and the [`Engine`] handle every door goes through.
//! - [`app`]: the application layer: [`app::App::start`] starts everything from a config (the
//!   one composition root), and the use-cases the doors share (batches, runs, settings).
//! - [`mock_upstream`]: the mock served over HTTP as an OpenAI-compatible server.
//! - [`http`]: the HTTP API over the engine.
//! - [`daemon`]: `ferry serve`, the engine and the API as a headless daemon.
//! - [`run`]: `ferry run FILE`, a file of prompts as a resumable job.
//! - [`logging`]: `tracing` to files made for `tail -F`.
//! - [`console`]: the operator console (ratatui), in process or attached to a daemon.
//! - [`private_fs`]: owner-only files and folders, for everything that may hold prompts or keys.

pub mod app;
pub mod chat_format;
pub mod config;
pub mod console;
pub mod core;
pub mod daemon;
pub mod engine;
pub mod http;
pub mod jobs;
pub mod logging;
pub mod mock_upstream;
pub mod private_fs;
pub mod providers;
pub mod request_json;
pub mod run;
pub mod store;
pub mod tenants;

pub use engine::Engine;
