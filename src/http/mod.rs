//! The HTTP door: actix-web handlers over the [`Engine`].
//!
//! Handlers only validate, turn requests into engine calls and shape replies; errors are mapped
//! to statuses in one place ([`error`]). One file per resource.

pub mod error;
pub mod openai;
pub mod priority;
pub mod query;

use std::sync::Arc;

use crate::config::Config;
use crate::engine::Engine;

pub use error::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The engine, the only way to the upstreams.
    pub engine: Engine,
    /// The configuration ferry started with.
    pub config: Arc<Config>,
}
