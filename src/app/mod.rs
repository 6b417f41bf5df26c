//! The application layer: one place that starts everything from a [`Config`], and the
//! use-cases the doors share.
//!
//! Every door (the HTTP API, the console, `ferry serve`, `ferry run`) is a thin adapter over
//! this: it parses and authorises, calls the app, and shapes the answer. Nothing here knows
//! HTTP or a terminal.
//!
//! - [`config`]: which config file a command runs on, loaded and checked against the engine's
//!   bounds.
//! - [`start`]: [`App::start`], the one composition root: the store, the engine, the stored
//!   settings applied over the config, the batch-job machinery; and [`App::drain`].
//! - [`batches`]: creating an OpenAI batch job from an uploaded file, and resuming them.
//! - [`run`]: a file of prompts as a resumable job of its own (`ferry run`).
//! - [`settings`]: the settings stored over `config.toml` (`PUT /v1/settings`): merged, saved,
//!   applied to the engine, and applied again at start.
//! - [`error`]: [`AppError`], the layer's one error type.
//!
//! The engine owns the bounds of its live settings; the doors take them from here
//! ([`MAX_BATCH_SIZE`], [`MAX_BATCH_DELAY_MS`], [`MAX_LATENCY_MS`]).

pub mod batches;
pub mod config;
pub mod error;
pub mod run;
pub mod settings;
pub mod start;

use std::sync::Arc;

pub use error::AppError;
pub use start::Purpose;

pub use crate::engine::{MAX_BATCH_DELAY_MS, MAX_BATCH_SIZE, MAX_LATENCY_MS};
use crate::{config::Config, engine::Engine, jobs::Jobs, store::Store};

/// Everything a door needs, started together by [`App::start`]. Cheap to clone.
#[derive(Clone)]
pub struct App {
    /// The engine, the only way to the upstreams.
    pub engine: Engine,
    /// The configuration ferry started with.
    pub config: Arc<Config>,
    /// Chats, settings and files.
    pub store: Store,
    /// Batch jobs.
    pub jobs: Jobs,
}
