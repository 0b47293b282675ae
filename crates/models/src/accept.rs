//! Accepting connections without spinning when file descriptors run out.
//!
//! `accept` failing with EMFILE leaves the connection in the backlog, so a level-triggered loop
//! would spin at 100% CPU (tokio-rs/tokio#3529). [`Acceptor`] keeps one descriptor in reserve:
//! on EMFILE it frees it, accepts the waiting connection, sends the protocol's refusal, closes
//! it and takes the reserve back. If even that fails the caller backs off (10 ms doubling to
//! 1 s) before accepting again.

use std::fs::File;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// What one accept attempt gave.
#[derive(Debug)]
pub enum Accepted {
    /// A new connection.
    Conn(TcpStream, SocketAddr),
    /// Nothing waiting (or a connection was aborted before it could be accepted).
    Nothing,
    /// Out of descriptors: a waiting connection was refused; try again after the back-off.
    Exhausted(Duration),
}

/// Accepts with a reserve descriptor and an exponential back-off.
#[derive(Debug)]
pub struct Acceptor {
    reserve: Option<File>,
    backoff: Duration,
}

const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

impl Default for Acceptor {
    fn default() -> Self {
        Self::new()
    }
}

impl Acceptor {
    /// An acceptor holding its reserve descriptor.
    pub fn new() -> Self {
        Self { reserve: File::open("/dev/null").ok(), backoff: BACKOFF_MIN }
    }

    /// Accept one connection from `listener` (blocking or not, as the listener is).
    pub fn accept(&mut self, listener: &TcpListener, refusal: &[u8]) -> io::Result<Accepted> {
        match listener.accept() {
            Ok((stream, peer)) => {
                self.backoff = BACKOFF_MIN;
                Ok(Accepted::Conn(stream, peer))
            }
            Err(e) if is_transient(&e) => Ok(Accepted::Nothing),
            Err(e) if is_exhausted(&e) => {
                tracing::warn!("accept: out of file descriptors; refusing a connection and backing off");
                self.reserve = None;
                if let Ok((mut stream, _)) = listener.accept() {
                    refuse(&mut stream, refusal);
                }
                self.reserve = File::open("/dev/null").ok();
                let wait = self.backoff;
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                Ok(Accepted::Exhausted(wait))
            }
            Err(e) => Err(e),
        }
    }
}

/// Send `refusal` without blocking and close: the clear answer to a client over the limit.
pub fn refuse(stream: &mut TcpStream, refusal: &[u8]) {
    if !refusal.is_empty() {
        let _ = stream.set_nonblocking(true);
        let _ = stream.write(refusal);
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// Errors after which accepting again at once is right.
pub fn is_transient(e: &io::Error) -> bool {
    use nix::libc;
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted)
        || matches!(
            e.raw_os_error(),
            Some(
                libc::EPROTO
                    | libc::EPERM
                    | libc::ENETDOWN
                    | libc::ENOPROTOOPT
                    | libc::EHOSTDOWN
                    | libc::EHOSTUNREACH
                    | libc::ENETUNREACH
                    | libc::EOPNOTSUPP
            )
        )
}

/// Errors that mean the process or system is out of descriptors or memory.
pub fn is_exhausted(e: &io::Error) -> bool {
    use nix::libc;
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}
