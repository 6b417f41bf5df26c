//! Chat recording off the reply path.
//!
//! A door hands each finished item's chat to [`Store::record_later`](super::Store::record_later)
//! and replies at once; one task writes what has queued up in a single transaction, then takes
//! the next lot. Under load the lots grow, so the single SQLite writer keeps up with far more
//! chats per second than one transaction each would allow (measured ~7,000 single inserts/s).
//! Reads flush first, so a client sees its own chats.

use actix::Addr;
use tokio::sync::{mpsc, oneshot};

use super::actor::{RecordChats, StoreActor};
use super::chats::NewChat;

/// Most chats written in one transaction.
const MAX_LOT: usize = 2_000;

/// What the writer task is asked to do.
pub(super) enum Write {
    /// Record this chat.
    Chat(Box<NewChat>),
    /// Answer once everything queued before it is written.
    Flush(oneshot::Sender<()>),
}

/// Writes queued chats in lots until every sender is gone, then ends.
pub(super) async fn run(mut queue: mpsc::UnboundedReceiver<Write>, actor: Addr<StoreActor>) {
    while let Some(first) = queue.recv().await {
        let mut chats = Vec::new();
        let mut flushes = Vec::new();
        let mut next = Some(first);
        while let Some(write) = next {
            match write {
                Write::Chat(chat) => chats.push(*chat),
                Write::Flush(done) => flushes.push(done),
            }
            next = if chats.len() < MAX_LOT { queue.try_recv().ok() } else { None };
        }
        if !chats.is_empty() {
            let count = chats.len();
            match actor.send(RecordChats(chats)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(event = "store_failed", what = "record_chats", count, error = %error)
                }
                Err(error) => {
                    tracing::warn!(event = "store_failed", what = "record_chats", count, error = %error)
                }
            }
        }
        for done in flushes {
            // A flusher that stopped waiting is fine.
            let _ = done.send(());
        }
    }
}
