//! A tracing layer that copies ferry's info-and-worse events into the console's log pane, as the
//! same `event=… key=value` text the log file gets. The console never writes log lines to the
//! terminal: the file layer writes to `logs/`, this layer only to a channel.

use std::fmt::Write as _;

use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

use super::source::Update;
use super::state::short_id;

/// Log lines buffered for the console; more are dropped while it is behind.
pub const FEED_BUFFER: usize = 1024;

/// The layer; see the module docs.
pub struct LogFeed {
    tx: mpsc::Sender<Update>,
}

impl LogFeed {
    /// A layer sending to `tx`.
    pub fn new(tx: mpsc::Sender<Update>) -> Self {
        LogFeed { tx }
    }
}

impl<S: Subscriber> Layer<S> for LogFeed {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > Level::INFO || !meta.target().starts_with("ferry") {
            return;
        }
        let mut text = Fields(String::new());
        event.record(&mut text);
        let severe = *meta.level() <= Level::WARN;
        // Full: the console is behind; dropping a line beats blocking an actor.
        let _ = self.tx.try_send(Update::Log { severe, text: text.0 });
    }
}

struct Fields(String);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        let sep = if self.0.is_empty() { "" } else { " " };
        if value.contains(' ') {
            let _ = write!(self.0, "{sep}{}={value:?}", field.name());
        } else {
            let _ = write!(self.0, "{sep}{}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let sep = if self.0.is_empty() { "" } else { " " };
        if field.name() == "batch_id" {
            // The batches table shows ids by their last six characters; so does the log pane.
            let id = format!("{value:?}");
            let _ = write!(self.0, "{sep}batch_id={}", short_id(&id));
            return;
        }
        let _ = write!(self.0, "{sep}{}={value:?}", field.name());
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn info_and_worse_from_ferry_reach_the_pane_as_key_values() {
        let (tx, mut rx) = mpsc::channel(16);
        let subscriber = tracing_subscriber::registry().with(LogFeed::new(tx));
        tracing::subscriber::with_default(subscriber, || {
            let id = "01M88D8VFAYEEGVBABEHQA1234";
            tracing::info!(target: "ferry::engine", event = "batch_complete", batch_id = %id, lane = "high");
            tracing::debug!(target: "ferry::engine", event = "enqueue");
            tracing::warn!(target: "ferry::engine", event = "retry", error = "HTTP 500 from upstream");
            tracing::info!(target: "actix_server", event = "elsewhere");
        });
        let mut lines = Vec::new();
        while let Ok(Update::Log { severe, text }) = rx.try_recv() {
            lines.push((severe, text));
        }
        assert_eq!(
            lines,
            vec![
                (false, "event=batch_complete batch_id=QA1234 lane=high".to_string()),
                (true, "event=retry error=\"HTTP 500 from upstream\"".to_string()),
            ]
        );
    }
}
