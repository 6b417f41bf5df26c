//! Where the dashboard's messages come from: the engine's MetricsHub in process, or a daemon's
//! event stream ([`super::remote`]). Both end up as [`Update`]s on one channel.

use tokio::sync::{broadcast, mpsc};

use crate::engine::{Engine, MetricsEvent, Snapshot};

use super::state::Link;
use super::view::ConfigView;

/// Messages the console loop folds into its state.
#[derive(Debug)]
pub enum Update {
    /// A metrics message.
    Metrics(MetricsEvent),
    /// What the hub knew at (re)attach.
    Snapshot(Snapshot),
    /// The configuration (at start and after each change).
    Config(ConfigView),
    /// A log event (the console's own tracing feed).
    Log {
        /// Warning or worse.
        severe: bool,
        /// The line.
        text: String,
    },
    /// A control call finished: its status line, or why it failed.
    Done(Result<String, String>),
    /// Attached or not.
    Link(Link),
}

/// Forwards the engine's metrics to `tx` until either side closes. A console too slow to keep up
/// skips messages and takes a fresh snapshot.
pub async fn local(engine: Engine, tx: mpsc::Sender<Update>) {
    let mut events = engine.subscribe();
    if let Ok(snapshot) = engine.snapshot().await
        && tx.send(Update::Snapshot(snapshot)).await.is_err()
    {
        return;
    }
    loop {
        let update = match events.recv().await {
            Ok(event) => Update::Metrics(event),
            Err(broadcast::error::RecvError::Lagged(skipped)) => {
                tracing::warn!(event = "console_lagged", skipped);
                match engine.snapshot().await {
                    Ok(snapshot) => Update::Snapshot(snapshot),
                    Err(_) => return,
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if tx.send(update).await.is_err() {
            return;
        }
    }
}
