//! The HTTP door: actix-web handlers over the [`Engine`].
//!
//! Handlers only validate, turn requests into engine calls or the app's use-cases
//! ([`crate::app`]) and shape replies; errors are mapped to statuses in one place ([`error`]). One file per resource; [`server`] binds them with the
//! limits and middleware, [`auth`] decides who may call what.

pub mod analytics;
pub mod auth;
pub mod batches;
pub mod body;
pub mod chat;
pub mod config_api;
// Console (issue 5): remote controls and the metrics event stream.
pub mod control_api;
pub mod error;
pub mod events;
pub mod fields;
pub mod files;
pub mod health;
pub mod metrics;
pub mod openai;
pub mod peer;
pub mod priority;
pub mod prompts;
pub mod query;
pub mod record;
pub mod server;
pub mod settings;
pub mod stats;
pub mod tenant;

use actix_web::web;

pub use auth::{Caller, Keys};
pub use error::ApiError;
pub use server::build;

/// What every handler can reach: the [`App`](crate::app::App) — engine, config, store and
/// batch jobs, started together by [`App::start`](crate::app::App::start) — and its use-cases.
pub use crate::app::App as AppState;

/// Every endpoint, each resource file adding its own.
pub fn routes(cfg: &mut web::ServiceConfig) {
    health::configure(cfg);
    prompts::configure(cfg);
    config_api::configure(cfg);
    stats::configure(cfg);
    metrics::configure(cfg);
    query::configure(cfg);
    openai::configure(cfg);
    chat::configure(cfg);
    settings::configure(cfg);
    analytics::configure(cfg);
    batches::configure(cfg);
    files::configure(cfg);
    // Console (issue 5).
    control_api::configure(cfg);
    events::configure(cfg);
}
