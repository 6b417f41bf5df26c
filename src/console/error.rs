//! Why the console stopped or a control call failed.

use std::io;

use crate::engine::{ControlError, SubmitError};

/// A console failure.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The terminal could not be set up, drawn on or read.
    #[error("terminal: {0}")]
    Terminal(#[from] io::Error),
    /// The engine refused a change.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The engine refused a submission.
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// The configuration is not known yet, so a relative change has nothing to start from.
    #[error("the configuration is not known yet; try again in a moment")]
    NoConfig,
    /// A typed value outside what the HTTP API accepts.
    #[error("{field} must be {min}..={max}, got {got}")]
    OutOfRange {
        /// What was typed for.
        field: &'static str,
        /// The smallest accepted.
        min: u64,
        /// The largest accepted.
        max: u64,
        /// What was typed.
        got: u64,
    },
    /// The daemon could not be reached.
    #[error("{url}: {source}")]
    Http {
        /// What was asked.
        url: String,
        /// Why it failed.
        source: reqwest::Error,
    },
    /// The daemon answered with an error.
    #[error("{url}: HTTP {status}: {message}")]
    Remote {
        /// What was asked.
        url: String,
        /// Its status.
        status: u16,
        /// Its error message.
        message: String,
    },
    /// The `--connect` URL is not an http(s) URL.
    #[error("--connect {0}: expected http://HOST:PORT or https://HOST:PORT")]
    BadUrl(String),
}
