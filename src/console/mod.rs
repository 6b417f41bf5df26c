//! The operator console: a ratatui + crossterm dashboard over the engine.
//!
//! `ferry` (or `ferry console`) runs the engine, the HTTP API and the dashboard in one process
//! ([`run_local`], built on [`crate::daemon::run_with`], so quitting drains like `ferry serve`,
//! with the dashboard live until the drain ends or a second `q` cuts it short);
//! `ferry console --connect URL` draws the same dashboard from a daemon's event stream
//! ([`run_remote`]). Either way the console is just another subscriber of the MetricsHub and
//! another sender of the engine's control calls — it never reaches into an actor.
//!
//! - [`state`]: what the dashboard knows, folded from metrics messages ([`source`], [`remote`]).
//! - [`keys`] and [`input`]: keys become actions and [`command`]s; the [`command::Controller`]
//!   carries them out.
//! - [`layout`], [`draw`] and [`panes`]: the screen, from the state alone.
//! - [`terminal`]: raw mode and the alternate screen, restored on every way out.
//! - [`app`]: the loop tying them together.

pub mod app;
pub mod command;
pub mod draw;
pub mod error;
pub mod input;
pub mod keys;
pub mod layout;
pub mod log_feed;
pub mod mode;
pub mod panes;
pub mod remote;
pub mod source;
pub mod state;
pub mod stats;
pub mod terminal;
pub mod view;

use std::future::Future;
use std::time::{Instant, SystemTime};

use app::Screen;
use crossterm::event::EventStream;
use tokio::sync::{mpsc, oneshot};

pub use command::{Command, Controller};
pub use draw::draw;
pub use error::ConsoleError;
pub use log_feed::LogFeed;
pub use source::Update;
pub use state::Dashboard;

use crate::app::AppError;
use crate::config::Config;
use crate::daemon::{self, Started};
use crate::engine::ShutdownReport;

/// Updates buffered between their sources and the console loop.
const UPDATES: usize = 4096;

/// The channel every update source sends on: make it first, hand the sender to the [`LogFeed`]
/// and the console.
pub fn channel() -> (mpsc::Sender<Update>, mpsc::Receiver<Update>) {
    mpsc::channel(UPDATES)
}

/// Why the local console stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// ferry or its API did not start, or failed.
    #[error(transparent)]
    App(#[from] AppError),
    /// The dashboard failed.
    #[error(transparent)]
    Console(#[from] ConsoleError),
}

/// Runs the engine, the HTTP API and the dashboard until `q`, Ctrl-C or `stop`, then drains
/// like `ferry serve` with the dashboard still live (a second `q` cuts the drain short) and
/// restores the terminal. `log_feed`: whether a [`LogFeed`] sends the log events to `tx`. Call
/// inside a running `actix::System`.
pub async fn run_local(
    config: Config,
    tx: mpsc::Sender<Update>,
    updates: mpsc::Receiver<Update>,
    log_feed: bool,
    stop: impl Future<Output = ()>,
) -> Result<ShutdownReport, LocalError> {
    let mut guard = terminal::TerminalGuard::enter().map_err(ConsoleError::Terminal)?;
    let (started_tx, started_rx) = oneshot::channel::<Started>();
    let (quit_tx, quit_rx) = oneshot::channel::<()>();
    // The daemon runs until the dashboard says quit, then drains while the dashboard watches.
    let daemon = daemon::run_with(config, move |started: Started| {
        let _ = started_tx.send(started);
        async move {
            let _ = quit_rx.await;
        }
    });
    tokio::pin!(daemon);
    let started = tokio::select! {
        biased;
        ended = &mut daemon => return Ok(ended?.0),
        started = started_rx => match started {
            Ok(started) => started,
            Err(_) => return Ok((&mut daemon).await?.0),
        },
    };
    let engine = started.engine.clone();
    let controller = Controller::Local(started.engine.clone());
    let mut state =
        Dashboard::new(format!("local · API http://{}", started.addr), Instant::now(), SystemTime::now());
    state.log_feed = log_feed;
    actix_rt::spawn(source::local(started.engine, tx.clone()));
    // A drill for the real-terminal test: an actor's panic is caught and the actor restarted;
    // the dashboard must stay up through it.
    // Only with the `fault-injection` feature (never in a release build).
    #[cfg(feature = "fault-injection")]
    if std::env::var("FERRY_CONSOLE_PANIC_DRILL").as_deref() == Ok("actor") {
        let _ = engine.inject_panic(crate::engine::FaultTarget::Pool).await;
    }
    // One screen, and so one key stream, for both phases: see `app::drain`.
    let terminal = &mut guard.terminal;
    let mut screen = Screen { terminal, keys: EventStream::new(), state, controller, tx, updates };
    let shown = tokio::select! {
        shown = app::run(&mut screen, stop) => shown,
        // The API server failed under the dashboard.
        ended = &mut daemon => return Ok(ended?.0),
    };
    let _ = quit_tx.send(());
    let ended = match shown {
        Ok(()) => {
            // A second signal (SIGTERM from a service manager losing patience) cuts off too.
            let signal = daemon::stop_signals(true);
            let cut_off = || engine.cut_off();
            app::drain(&mut screen, daemon, signal, cut_off).await
        }
        Err(_) => daemon.await,
    };
    drop(guard);
    let (report, ()) = ended?;
    shown?;
    Ok(report)
}

/// Draws the dashboard of the daemon at `url` until `q`, Ctrl-C or `stop`. Call inside a
/// running `actix::System`.
pub async fn run_remote(
    url: &str,
    api_key: Option<String>,
    tx: mpsc::Sender<Update>,
    updates: mpsc::Receiver<Update>,
    stop: impl Future<Output = ()>,
) -> Result<(), ConsoleError> {
    let client = remote::RemoteClient::new(url, api_key)?;
    let source = format!("remote · {}", client.base());
    let controller = Controller::Remote(client.clone());
    let follow = actix_rt::spawn(client.follow(tx.clone()));
    let mut guard = terminal::TerminalGuard::enter()?;
    let state = Dashboard::new(source, Instant::now(), SystemTime::now());
    let terminal = &mut guard.terminal;
    let mut screen = Screen { terminal, keys: EventStream::new(), state, controller, tx, updates };
    let result = app::run(&mut screen, stop).await;
    follow.abort();
    drop(guard);
    result
}
