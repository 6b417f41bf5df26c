//! Exact rate limits: "N per window" as the providers state them (requests per minute, tokens per
//! minute, requests per day).
//!
//! A token bucket is not exact: a full bucket spent at the end of one window plus its refill at the
//! start of the next lets up to 2N calls into one window, and the upstream answers that with 429s.
//! [`SlidingWindow`] keeps a log of what was taken and when, so no window of the stated length —
//! whatever its start — ever holds more than the limit. [`Limits`] holds the windows of one
//! upstream, takes from all of them or none, and adapts to the rate headers the upstream sends.
//!
//! Nothing here reads a clock: every call is given `now` (a [`tokio::time::Instant`], so the actors
//! can run under tokio's paused clock in tests).

use std::time::Duration;

pub mod adaptive;
mod rates;
mod upstream;
mod window;

pub use adaptive::AdaptiveLimit;

pub use upstream::{Limit, Limits, LimitsSnapshot, Permit};
pub use window::{SlidingWindow, Taken};

/// The length of the requests-per-minute and tokens-per-minute windows.
pub const MINUTE: Duration = Duration::from_secs(60);
/// The length of the requests-per-day window.
pub const DAY: Duration = Duration::from_secs(24 * 60 * 60);
