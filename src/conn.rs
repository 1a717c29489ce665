//! A handle on each TCP connection, taken when it is accepted, so that the
//! hub can close a socket from outside its session actor.
//!
//! Why: actix-web runs a WebSocket session actor only while the HTTP/1
//! dispatcher polls the response body, and it stops polling once its write
//! buffer is full. So when a client stops reading, its session actor stops
//! running entirely: a close message sent to it is never handled. The hub
//! then closes the socket itself: `SO_LINGER 0` and `shutdown(Both)` on the
//! connection's fd, which makes the dispatcher fail and the
//! actor stop (`../shared/notes/actix-backpressure.md`).

use std::any::Any;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use actix_web::dev::Extensions;
use socket2::SockRef;

/// Which socket a connection is: its fd number and the socket's inode, and
/// whether the connection still holds it.
#[derive(Debug)]
struct Socket {
    fd: RawFd,
    id: (u64, u64),
    /// True until the connection's data is dropped. A reset holds this lock
    /// while it touches the fd, and the drop waits for it.
    open: Mutex<bool>,
}

/// Stored in the connection's data, and dropped with it: actix-http drops a
/// connection's data before its socket (`InnerDispatcher` declares
/// `conn_data` before `io`). Dropping the handle marks the socket closed
/// under the lock a reset holds, so the fd cannot be closed, and its number
/// reused by another connection, while a [`Closer`] is resetting it. The
/// closer also checks that the fd is still the same socket (device and
/// inode). No duplicate fd is kept: a connection costs one file descriptor,
/// not two.
pub struct ConnHandle(Arc<Socket>);

impl Drop for ConnHandle {
    fn drop(&mut self) {
        *self.0.open.lock().unwrap_or_else(|e| e.into_inner()) = false;
    }
}

impl ConnHandle {
    /// A closer that does nothing once the connection is gone.
    pub fn closer(&self) -> Closer {
        Closer(Arc::downgrade(&self.0))
    }
}

/// Resets a connection from any thread.
#[derive(Clone, Debug, Default)]
pub struct Closer(Weak<Socket>);

impl Closer {
    /// Aborts the connection: the peer sees a reset, the dispatcher an error.
    pub fn reset(&self) {
        let Some(socket) = self.0.upgrade() else { return };
        let open = socket.open.lock().unwrap_or_else(|e| e.into_inner());
        if !*open || socket_id(socket.fd) != Some(socket.id) {
            return;
        }
        // SAFETY: the connection has not dropped its data, and cannot until
        // `open` is released (see `ConnHandle`), so its fd is open and this
        // connection's; it is only borrowed for the two calls below.
        let fd = unsafe { BorrowedFd::borrow_raw(socket.fd) };
        let sock = SockRef::from(&fd);
        let _ = sock.set_linger(Some(Duration::ZERO));
        let _ = sock.shutdown(Shutdown::Both);
        drop(open);
    }

    /// How many bytes the peer has acknowledged so far (`TCP_INFO`), while
    /// the connection is open: whether a client is still reading.
    pub fn bytes_acked(&self) -> Option<u64> {
        let socket = self.0.upgrade()?;
        let open = socket.open.lock().unwrap_or_else(|e| e.into_inner());
        if !*open || socket_id(socket.fd) != Some(socket.id) {
            return None;
        }
        let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: the fd is open and this connection's while `open` is held
        // (see `reset`); getsockopt writes at most `len` bytes into `info`,
        // which starts zeroed, so a shorter answer leaves valid zeros.
        let done = unsafe {
            libc::getsockopt(
                socket.fd,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        drop(open);
        // SAFETY: zeroed, then filled by the kernel: every field is an integer.
        (done == 0).then(|| unsafe { info.assume_init() }.tcpi_bytes_acked)
    }

    /// True while the connection is open.
    pub fn is_open(&self) -> bool {
        self.0
            .upgrade()
            .is_some_and(|s| *s.open.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The device and inode of what `fd` refers to, or `None` if it is closed.
fn socket_id(fd: RawFd) -> Option<(u64, u64)> {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes only into `stat`, and reports EBADF for a closed fd.
    if unsafe { libc::fstat(fd, stat.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: fstat returned 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Some((stat.st_dev as u64, stat.st_ino as u64))
}

/// The `HttpServer::on_connect` hook: sets TCP_NODELAY (frames are small and
/// latency matters) and a TCP user timeout as a backstop for peers that
/// vanish, and records which socket the connection is.
pub fn on_connect(conn: &dyn Any, ext: &mut Extensions, user_timeout: Duration) {
    let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() else {
        return;
    };
    let _ = tcp.set_nodelay(true);
    let socket = SockRef::from(tcp);
    let _ = socket.set_tcp_user_timeout(Some(user_timeout));
    let fd = tcp.as_raw_fd();
    match socket_id(fd) {
        Some(id) => {
            ext.insert(ConnHandle(Arc::new(Socket {
                fd,
                id,
                open: Mutex::new(true),
            })));
        }
        None => log::warn!("could not stat a connection's socket; it cannot be reset if it stalls"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn socket_id_tells_sockets_apart_and_sees_a_closed_fd() {
        let a = TcpListener::bind("127.0.0.1:0").expect("bind");
        let b = TcpListener::bind("127.0.0.1:0").expect("bind");
        let id_a = socket_id(a.as_raw_fd()).expect("open socket");
        assert_eq!(socket_id(a.as_raw_fd()), Some(id_a));
        assert_ne!(socket_id(b.as_raw_fd()), Some(id_a));
        let fd = a.as_raw_fd();
        drop(a);
        assert_ne!(socket_id(fd), Some(id_a));
    }

    #[test]
    fn a_closer_without_a_connection_does_nothing() {
        let closer = Closer::default();
        assert!(!closer.is_open());
        closer.reset();
    }

    fn handle_for(stream: &std::net::TcpStream) -> ConnHandle {
        let fd = stream.as_raw_fd();
        ConnHandle(Arc::new(Socket {
            fd,
            id: socket_id(fd).expect("open socket"),
            open: Mutex::new(true),
        }))
    }

    #[test]
    fn a_closer_resets_its_connection_while_the_handle_lives_and_never_after() {
        use std::io::Read;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");

        // While the handle lives: the connection ends for the peer (a FIN
        // from the shutdown; the reset follows when the fd is closed).
        let mut peer = std::net::TcpStream::connect(addr).expect("connect");
        let (server_side, _) = listener.accept().expect("accept");
        let handle = handle_for(&server_side);
        let closer = handle.closer();
        assert!(closer.is_open());
        closer.reset();
        peer.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let mut buf = [0u8; 1];
        let read = peer.read(&mut buf);
        assert!(
            matches!(&read, Ok(0)) || matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "{read:?}"
        );

        // Once the handle is dropped (the connection's data goes before its
        // socket), the closer leaves the fd alone, even while it is open.
        let mut peer = std::net::TcpStream::connect(addr).expect("connect");
        let (server_side, _) = listener.accept().expect("accept");
        let handle = handle_for(&server_side);
        let closer = handle.closer();
        drop(handle);
        assert!(!closer.is_open());
        closer.reset();
        use std::io::Write;
        let mut server_side = server_side;
        server_side.write_all(b"x").expect("still open");
        assert_eq!(peer.read(&mut buf).expect("reads"), 1);
    }
}
