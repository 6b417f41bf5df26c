//! `ferry serve`: the engine and the HTTP API as a headless daemon — the door that puts the API
//! in front of the [`App`] (started by [`App::start`], the one composition root).
//!
//! [`run`] starts both, logs a line of totals once a minute, and on `shutdown` (SIGINT/SIGTERM
//! from [`signals`] in the binary, any future in tests) stops in order: the server stops
//! accepting connections, the engine drains queued and in-flight items for
//! `[server] shutdown_grace_ms` (less a short reserve) and answers what is left "shutting
//! down", the requests waiting on those items get their replies, and the server closes every
//! connection. The whole sequence fits in the grace.

use std::future::Future;
use std::io;
use std::time::Duration;

use crate::app::{App, AppError, Purpose};
use crate::config::Config;
use crate::engine::{Engine, ShutdownReport, Snapshot};
use crate::http::Keys;
use crate::http::server::{Bound, check_exposure};

/// How often the totals line is logged.
const TOTALS_EVERY: Duration = Duration::from_secs(60);
/// Part of the shutdown grace kept for replies to be written after the engine's drain.
const REPLY_RESERVE: Duration = Duration::from_millis(250);
/// Pause between the last reply leaving its handler and the connections being closed.
const FLUSH: Duration = Duration::from_millis(20);

/// Runs the daemon until `shutdown` completes, then shuts down gracefully. API keys are read
/// from the environment variables `[server]` names; binding beyond loopback without any is
/// refused before anything starts. Call inside a running `actix::System`.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<ShutdownReport, AppError> {
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
pub async fn run_with<T, F, Fut>(config: Config, shutdown: F) -> Result<(ShutdownReport, T), AppError>
where
    F: FnOnce(Started) -> Fut,
    Fut: Future<Output = T>,
{
    let keys = Keys::from_env(&config.server, &config.tenants).map_err(|e| AppError::Refused(Box::new(e)))?;
    check_exposure(&config.server, &keys).map_err(|e| AppError::Refused(Box::new(e)))?;
    let auth = if keys.is_empty() { "off" } else { "bearer" };
    let app = App::start(config, Purpose::Serve).await?;
    let config = std::sync::Arc::clone(&app.config);
    let bind = config.server.bind.clone();
    let Bound { server, addr, in_flight } = match crate::http::server::bind(app.clone(), &config.server, keys)
    {
        Ok(bound) => bound,
        Err(source) => {
            app.engine.shutdown(Duration::ZERO).await;
            return Err(AppError::Bind { bind, source });
        }
    };
    let handle = server.handle();
    let mut server = actix_rt::spawn(server);
    app.resume_batches().await;
    // Logged last, right before waiting for the shutdown signal: tests wait for this line.
    tracing::info!(event = "serve_started", bind = %addr, auth);
    let totals = actix_rt::spawn(log_totals(app.engine.clone()));
    let shutdown = shutdown(Started { engine: app.engine.clone(), addr });

    let output = tokio::select! {
        output = shutdown => output,
        ended = &mut server => {
            totals.abort();
            app.engine.shutdown(Duration::ZERO).await;
            let error = match ended {
                Ok(Ok(())) => io::Error::other("stopped unexpectedly"),
                Ok(Err(e)) => e,
                Err(e) => io::Error::other(e.to_string()),
            };
            return Err(AppError::Server(error));
        }
    };
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    tracing::info!(event = "shutdown", phase = "stop_accepting", grace_ms = config.server.shutdown_grace_ms);
    totals.abort();
    // Stop accepting connections; requests already in flight keep waiting for their items.
    handle.pause().await;
    // Batch jobs stop sending; what they have in flight is answered by the engine's drain and
    // stored, and the rest waits in the store for the next start.
    let report = app.drain(grace, grace.saturating_sub(REPLY_RESERVE)).await;
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
    app.store.flush().await;
    tracing::info!(
        event = "shutdown",
        phase = "done",
        unanswered_requests = if settled { 0 } else { in_flight.count() }
    );
    Ok((report, output))
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
