//! Whether the caller is still there. actix-web keeps running a handler after its client has
//! closed the connection (it notices only when it next reads or writes), so a door that waits
//! for answers watches the socket itself: each connection keeps a duplicate of its socket, and
//! [`Peer::gone`] resolves when the peer has closed or reset it. A door selects on it and drops
//! its wait, which withdraws the request's unsent items.
//!
//! One request at a time runs on an HTTP/1 connection, so the duplicate is lent to the request
//! that watches and given back when the watch ends: one extra descriptor per connection.

use std::future::{Ready, pending, ready};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};

use actix_web::dev::{Extensions, Payload};
use actix_web::{FromRequest, HttpRequest};

/// The connection's socket, duplicated at connect (see [`on_connect`]); None while lent out.
#[derive(Clone)]
struct Socket(Arc<Mutex<Option<OwnedFd>>>);

/// Stores a duplicate of each new TCP connection's socket in its connection data.
pub fn on_connect(conn: &dyn std::any::Any, data: &mut Extensions) {
    if let Some(stream) = conn.downcast_ref::<actix_web::rt::net::TcpStream>()
        && let Ok(fd) = stream.as_fd().try_clone_to_owned()
    {
        data.insert(Socket(Arc::new(Mutex::new(Some(fd)))));
    }
}

/// The caller of a request, to notice when it goes away.
pub struct Peer(Option<Socket>);

impl FromRequest for Peer {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(Peer(req.conn_data::<Socket>().cloned())))
    }
}

/// The lent socket, registered with the runtime; given back to its connection when dropped.
struct Lent {
    stream: Option<tokio::net::TcpStream>,
    home: Socket,
}

impl Drop for Lent {
    fn drop(&mut self) {
        let back = self.stream.take().and_then(|stream| stream.into_std().ok()).map(OwnedFd::from);
        *self.home.0.lock().unwrap_or_else(PoisonError::into_inner) = back;
    }
}

impl Peer {
    /// Resolves once the caller has closed or reset the connection; never, if that cannot be
    /// told (no socket, or the caller already sent more bytes, such as a pipelined request).
    pub async fn gone(&self) {
        if let Some(lent) = self.0.as_ref().and_then(lend)
            && let Some(stream) = &lent.stream
        {
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

/// Takes the connection's socket out to watch it.
fn lend(home: &Socket) -> Option<Lent> {
    let fd = home.0.lock().unwrap_or_else(PoisonError::into_inner).take()?;
    let std = std::net::TcpStream::from(fd);
    let registered = std.set_nonblocking(true).ok().and_then(|()| tokio::net::TcpStream::from_std(std).ok());
    // A socket that cannot be registered is not watched (and is closed here).
    Some(Lent { stream: registered, home: home.clone() })
}
