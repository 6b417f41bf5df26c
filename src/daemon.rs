//! `ferry serve`: the engine and the HTTP API as a headless daemon.
//!
//! [`run`] starts both, logs a line of totals once a minute, and on `shutdown` (SIGINT/SIGTERM
//! from [`signals`] in the binary, any future in tests) stops in order: the server stops
//! accepting connections, the engine drains queued and in-flight items for
//! `[server] shutdown_grace_ms` (less a short reserve) and answers what is left "shutting
//! down", the requests waiting on those items get their replies, and the server closes every
//! connection. The whole sequence fits in the grace.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::engine::{ControlError, Engine, EngineError, ShutdownReport, Snapshot};
use crate::http::server::{Bound, Unprotected, check_exposure};
use crate::http::{AppState, Keys};
use crate::jobs::{JobError, JobKind, Jobs};
use crate::store::{Store, StoreError, StoredSettings};

/// How often the totals line is logged.
const TOTALS_EVERY: Duration = Duration::from_secs(60);
/// Part of the shutdown grace kept for replies to be written after the engine's drain.
const REPLY_RESERVE: Duration = Duration::from_millis(250);
/// Pause between the last reply leaving its handler and the connections being closed.
const FLUSH: Duration = Duration::from_millis(20);

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Non-loopback bind without keys.
    #[error(transparent)]
    Unprotected(#[from] Unprotected),
    /// A configured key is too short.
    #[error(transparent)]
    Keys(#[from] crate::http::auth::KeyError),
    /// The engine did not start.
    #[error("starting the engine: {0}")]
    Engine(#[from] EngineError),
    /// The store could not be opened or read at start.
    #[error("the store ([storage] path = {path}): {source}")]
    Store {
        /// The configured database file.
        path: String,
        /// What went wrong.
        source: StoreError,
    },
    /// The stored settings could not be read at start.
    #[error("reading the stored settings at start: {0}")]
    LoadSettings(StoreError),
    /// The stored settings could not be applied to the engine at start.
    #[error("applying the stored settings (PUT /v1/settings) at start: {0}")]
    Settings(ControlError),
    /// The job machinery could not start.
    #[error("starting batch jobs: {0}")]
    Jobs(JobError),
    /// The server could not bind.
    #[error("binding {bind}: {source}")]
    Bind {
        /// The configured address.
        bind: String,
        /// The I/O error.
        source: io::Error,
    },
    /// The server stopped with an error before it was asked to.
    #[error("the HTTP server failed: {0}")]
    Server(io::Error),
}

/// Runs the daemon until `shutdown` completes, then shuts down gracefully. API keys are read
/// from the environment variables `[server]` names; binding beyond loopback without any is
/// refused before anything starts. Call inside a running `actix::System`.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<ShutdownReport, DaemonError> {
    run_with(config, |_| shutdown).await.map(|(report, ())| report)
}

/// What [`run_with`] hands its caller once the engine and the API are up.
pub struct Started {
    /// The engine.
    pub engine: Engine,
    /// Where the API listens.
    pub addr: std::net::SocketAddr,
}

/// [`run`], with the shutdown future made from the running engine and API (the console runs
/// as that future); returns the drain report and what the future returned.
pub async fn run_with<T, F, Fut>(config: Config, shutdown: F) -> Result<(ShutdownReport, T), DaemonError>
where
    F: FnOnce(Started) -> Fut,
    Fut: Future<Output = T>,
{
    let keys = Keys::from_env(&config.server, &config.tenants)?;
    check_exposure(&config.server, &keys)?;
    let auth = if keys.is_empty() { "off" } else { "bearer" };
    let config = Arc::new(config);
    let store_failed =
        |source| DaemonError::Store { path: config.storage.path.display().to_string(), source };
    let store = Store::open(&config.storage.path).map_err(store_failed)?;
    store.spawn_retention(&config.storage, Duration::from_secs(60));
    let engine = Engine::start(&config)?;
    if let Err(error) = apply_stored_settings(&engine, &store).await {
        engine.shutdown(Duration::ZERO).await;
        return Err(error);
    }
    let jobs = match Jobs::for_config(engine.clone(), &config) {
        Ok(jobs) => jobs,
        Err(error) => {
            engine.shutdown(Duration::ZERO).await;
            return Err(DaemonError::Jobs(error));
        }
    };
    let state = AppState {
        engine: engine.clone(),
        config: Arc::clone(&config),
        store: store.clone(),
        jobs: jobs.clone(),
    };
    let bind = config.server.bind.clone();
    let Bound { server, addr, in_flight } = crate::http::server::bind(state, &config.server, keys)
        .map_err(|source| DaemonError::Bind { bind: bind.clone(), source })?;
    let handle = server.handle();
    let mut server = actix_rt::spawn(server);
    // Jobs left under way by the last stop (or crash) go on where they stopped.
    match jobs.resume(JobKind::Api).await {
        Ok(ids) if !ids.is_empty() => tracing::info!(event = "batch_jobs_resumed", count = ids.len()),
        Ok(_) => {}
        Err(error) => tracing::error!(event = "batch_jobs_resume_failed", error = %error),
    }
    // Logged last, right before waiting for the shutdown signal: tests wait for this line.
    tracing::info!(event = "serve_started", bind = %addr, auth);
    let totals = actix_rt::spawn(log_totals(engine.clone()));
    let shutdown = shutdown(Started { engine: engine.clone(), addr });

    let output = tokio::select! {
        output = shutdown => output,
        ended = &mut server => {
            totals.abort();
            engine.shutdown(Duration::ZERO).await;
            let error = match ended {
                Ok(Ok(())) => io::Error::other("stopped unexpectedly"),
                Ok(Err(e)) => e,
                Err(e) => io::Error::other(e.to_string()),
            };
            return Err(DaemonError::Server(error));
        }
    };
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    tracing::info!(event = "shutdown", phase = "stop_accepting", grace_ms = config.server.shutdown_grace_ms);
    totals.abort();
    // Stop accepting connections; requests already in flight keep waiting for their items.
    handle.pause().await;
    // Batch jobs stop sending; what they have in flight is answered by the engine's drain and
    // stored, and the rest waits in the store for the next start.
    let jobs_stopped = jobs.stop(grace);
    let report = engine.shutdown(grace.saturating_sub(REPLY_RESERVE)).await;
    jobs_stopped.await;
    tracing::info!(
        event = "shutdown",
        phase = "drained",
        drained = report.drained,
        cut_off = report.cut_off,
        left = report.left
    );
    // Every item is answered; let the requests waiting on them reply, then close every
    // connection, idle keep-alive ones included.
    let settled = in_flight.settle(REPLY_RESERVE).await;
    tokio::time::sleep(FLUSH).await;
    handle.stop(false).await;
    let _ = server.await;
    // The chat log is written behind the replies: let it catch up before exiting.
    store.flush().await;
    tracing::info!(
        event = "shutdown",
        phase = "done",
        unanswered_requests = if settled { 0 } else { in_flight.count() }
    );
    Ok((report, output))
}

/// Applies the settings saved through `PUT /v1/settings` over `config.toml`: the stored upstream
/// key to the default upstream, the stored budgets to the lanes `high`, `medium` and `low`
/// (those that exist). Run at start, before the server takes requests.
pub async fn apply_stored_settings(engine: &Engine, store: &Store) -> Result<(), DaemonError> {
    let stored = store.settings().await.map_err(DaemonError::LoadSettings)?;
    crate::http::settings::apply(engine, &stored).await.map_err(DaemonError::Settings)?;
    if stored != StoredSettings::default() {
        tracing::info!(event = "settings_applied", api_key = stored.api_key.is_some());
    }
    Ok(())
}

/// Completes on the first SIGINT or SIGTERM (Unix); on Ctrl-C elsewhere. The handlers are
/// installed when this is called, not when the future is first polled, so a signal during
/// start-up is not lost to the default action: call it first thing inside the runtime.
pub fn signals() -> impl Future<Output = ()> + use<> {
    stop_signals(false)
}

/// [`signals`], and SIGHUP too when `hangup` (the console: a closed terminal or SSH session).
pub fn stop_signals(hangup: bool) -> impl Future<Output = ()> + use<> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (int, term) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()));
        let hup = if hangup { signal(SignalKind::hangup()).ok() } else { None };
        async move {
            match (int, term) {
                (Ok(mut int), Ok(mut term)) => {
                    let hung_up = async {
                        match hup {
                            Some(mut hup) => drop(hup.recv().await),
                            None => std::future::pending::<()>().await,
                        }
                    };
                    let name = tokio::select! {
                        _ = int.recv() => "SIGINT",
                        _ = term.recv() => "SIGTERM",
                        () = hung_up => "SIGHUP",
                    };
                    tracing::info!(event = "signal", signal = name);
                }
                _ => {
                    tracing::warn!(event = "signal", error = "cannot install handlers; waiting for Ctrl-C");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = hangup;
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn log_totals(engine: Engine) {
    let mut ticks = tokio::time::interval(TOTALS_EVERY);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        if let Ok(snapshot) = engine.snapshot().await {
            tracing::info!(
                event = "totals",
                items_ok = snapshot.items_ok,
                items_failed = snapshot.items_failed,
                batches = snapshot.batches,
                depth = %depths(&snapshot),
            );
        }
    }
}

/// `lane:depth` pairs, comma-separated, for the totals line.
fn depths(snapshot: &Snapshot) -> String {
    let pairs: Vec<String> =
        snapshot.lane_depths.iter().map(|(lane, depth)| format!("{lane}:{depth}")).collect();
    pairs.join(",")
}
