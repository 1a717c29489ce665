//! A handle on each TCP connection, taken when it is accepted, so that the
//! hub can close a socket from outside its session actor.
//!
//! Why: actix-web runs a WebSocket session actor only while the HTTP/1
//! dispatcher polls the response body, and it stops polling once its write
//! buffer is full. So when a client stops reading, its session actor stops
//! running entirely: a close message sent to it is never handled. The hub
//! then closes the socket itself: `SO_LINGER 0` and `shutdown(Both)` on a
//! duplicate of the connection's fd, which makes the dispatcher fail and the
//! actor stop (`../shared/notes/actix-backpressure.md`).

use std::any::Any;
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Weak};
use std::time::Duration;

use actix_web::dev::Extensions;
use socket2::SockRef;

/// Stored in the connection's data; dropped, with the duplicate fd, when the
/// connection ends.
#[derive(Clone)]
pub struct ConnHandle(Arc<OwnedFd>);

impl ConnHandle {
    /// A closer that does nothing once the connection is gone, so a reused
    /// fd number is never touched.
    pub fn closer(&self) -> Closer {
        Closer(Arc::downgrade(&self.0))
    }
}

/// Resets a connection from any thread.
#[derive(Clone, Debug, Default)]
pub struct Closer(Weak<OwnedFd>);

impl Closer {
    /// Aborts the connection: the peer sees a reset, the dispatcher an error.
    pub fn reset(&self) {
        if let Some(fd) = self.0.upgrade() {
            let socket = SockRef::from(&*fd);
            let _ = socket.set_linger(Some(Duration::ZERO));
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    /// True while the connection is open.
    pub fn is_open(&self) -> bool {
        self.0.strong_count() > 0
    }
}

/// The `HttpServer::on_connect` hook: duplicates the fd, sets TCP_NODELAY
/// (frames are small and latency matters) and a TCP user timeout as a
/// backstop for peers that vanish.
pub fn on_connect(conn: &dyn Any, ext: &mut Extensions, user_timeout: Duration) {
    let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() else {
        return;
    };
    let _ = tcp.set_nodelay(true);
    let socket = SockRef::from(tcp);
    let _ = socket.set_tcp_user_timeout(Some(user_timeout));
    match tcp.as_fd().try_clone_to_owned() {
        Ok(fd) => {
            ext.insert(ConnHandle(Arc::new(fd)));
        }
        Err(e) => log::warn!("could not duplicate a connection's fd ({e}); it cannot be reset if it stalls"),
    }
}
