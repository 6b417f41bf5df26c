//! Whether the caller is still there. actix-web keeps running a handler after its client has
//! closed the connection (it notices only when it next reads or writes), so a door that waits
//! for answers watches the socket itself: each connection keeps a duplicate of its socket, and
//! [`Peer::gone`] resolves when the peer has closed or reset it. A door selects on it and drops
//! its wait, which withdraws the request's unsent items.

use std::future::{Ready, pending, ready};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use actix_web::dev::{Extensions, Payload};
use actix_web::{FromRequest, HttpRequest};

/// The connection's socket, duplicated at connect (see [`on_connect`]).
#[derive(Clone)]
struct Socket(Arc<OwnedFd>);

/// Stores a duplicate of each new TCP connection's socket in its connection data.
pub fn on_connect(conn: &dyn std::any::Any, data: &mut Extensions) {
    if let Some(stream) = conn.downcast_ref::<actix_web::rt::net::TcpStream>()
        && let Ok(fd) = stream.as_fd().try_clone_to_owned()
    {
        data.insert(Socket(Arc::new(fd)));
    }
}

/// The caller of a request, to notice when it goes away.
pub struct Peer(Option<Arc<OwnedFd>>);

impl FromRequest for Peer {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(Peer(req.conn_data::<Socket>().map(|s| Arc::clone(&s.0)))))
    }
}

impl Peer {
    /// Resolves once the caller has closed or reset the connection; never, if that cannot be
    /// told (no socket, or the caller already sent more bytes, such as a pipelined request).
    pub async fn gone(&self) {
        if let Some(stream) = self.0.as_ref().and_then(|fd| watch(fd)) {
            let mut byte = [0u8; 1];
            // End of stream (0 bytes) or an error (a reset) is a caller gone; a byte is more
            // from a caller still there.
            if !matches!(stream.peek(&mut byte).await, Ok(n) if n > 0) {
                return;
            }
        }
        pending::<()>().await
    }
}

/// A socket of our own on the same connection, registered with the runtime to wait on.
fn watch(fd: &OwnedFd) -> Option<tokio::net::TcpStream> {
    let own = std::net::TcpStream::from(fd.try_clone().ok()?);
    own.set_nonblocking(true).ok()?;
    tokio::net::TcpStream::from_std(own).ok()
}
