//! Accepting connections without spinning when file descriptors run out.
//!
//! `accept` failing with EMFILE leaves the connection in the backlog, so a level-triggered loop
//! would spin at 100% CPU (tokio-rs/tokio#3529). [`Acceptor`] keeps one descriptor in reserve:
//! on EMFILE it frees it, accepts the waiting connection, sends the protocol's refusal, closes
//! it and takes the reserve back. If even that fails the caller backs off (10 ms doubling to
//! 1 s) before accepting again.

use std::fs::File;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

use crate::handoff::HandOffListener;

/// Where a server's connections come from: a TCP listener, or a socket on which other
/// processes hand connections over.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    HandOff(HandOffListener),
}

impl From<TcpListener> for Listener {
    fn from(listener: TcpListener) -> Self {
        Listener::Tcp(listener)
    }
}

impl From<HandOffListener> for Listener {
    fn from(listener: HandOffListener) -> Self {
        Listener::HandOff(listener)
    }
}

impl std::os::fd::AsRawFd for Listener {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::HandOff(l) => l.as_fd(),
        }
    }
}

impl Listener {
    /// Make accepting return at once when nothing waits (a hand-off socket always does).
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.set_nonblocking(nonblocking),
            Listener::HandOff(_) => Ok(()),
        }
    }
}

/// A source of connections [`Acceptor`] takes them from.
pub trait Accept: AsFd {
    /// One connection, without the policy (blocking or not, as the socket is).
    fn accept_one(&self) -> io::Result<Incoming>;
}

/// Accepted streams are non-blocking from the start (`accept4` with `SOCK_NONBLOCK`, sparing
/// an `ioctl` per connection: every driver wants them so), and inherit `TCP_NODELAY` from a
/// listener prepared by [`prepare`].
impl Accept for TcpListener {
    fn accept_one(&self) -> io::Result<Incoming> {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: accept4 writes at most `len` bytes of address into the storage socket2 hands
        // us and sets `len`; the descriptor it returns is new and ours alone.
        let (fd, addr) = unsafe {
            socket2::SockAddr::try_init(|storage, len| {
                let flags = nix::libc::SOCK_NONBLOCK | nix::libc::SOCK_CLOEXEC;
                match nix::libc::accept4(self.as_raw_fd(), storage.cast(), len, flags) {
                    -1 => Err(io::Error::last_os_error()),
                    fd => Ok(fd),
                }
            })?
        };
        // SAFETY: `fd` is a connected socket nothing else owns.
        let stream = unsafe { TcpStream::from_raw_fd(fd) };
        let peer = addr.as_socket().ok_or_else(|| io::Error::other("a TCP connection without an IP address"))?;
        Ok(Incoming { stream, peer, preamble: Vec::new(), pass: None })
    }
}

/// Streams handed over come as their sender left them: made non-blocking and `TCP_NODELAY`
/// here, as accepted ones are.
impl Accept for HandOffListener {
    fn accept_one(&self) -> io::Result<Incoming> {
        let h = self.receive()?;
        h.stream.set_nonblocking(true)?;
        let _ = h.stream.set_nodelay(true);
        Ok(Incoming { stream: h.stream, peer: h.peer, preamble: h.preamble, pass: None })
    }
}

/// Set what every accepted connection inherits from its listener: `TCP_NODELAY` (answers are
/// written whole, so Nagle's delay only adds latency), once here instead of per connection.
/// With `defer` (see `run::defers_accept`), the listener holds each connection until its first
/// bytes arrive, as Apache's `AcceptFilter http data` and nginx's `listen … deferred` do.
pub fn prepare(listener: &Listener, defer: bool) {
    if let Listener::Tcp(l) = listener {
        let _ = socket2::SockRef::from(l).set_tcp_nodelay(true);
        if defer && let Err(e) = defer_accept(l, 1) {
            tracing::debug!(target: "warren", "TCP_DEFER_ACCEPT: {e}");
        }
    }
}

/// `TCP_DEFER_ACCEPT`: hold a connection in the kernel until data arrives, or for about `secs`
/// (the kernel counts SYN-ACK retransmissions), then hand it over anyway.
fn defer_accept(listener: &std::net::TcpListener, secs: nix::libc::c_int) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor, and a c_int option value of the size given.
    let rc = unsafe {
        nix::libc::setsockopt(
            listener.as_raw_fd(),
            nix::libc::IPPROTO_TCP,
            nix::libc::TCP_DEFER_ACCEPT,
            (&raw const secs).cast(),
            size_of::<nix::libc::c_int>() as nix::libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

impl Accept for Listener {
    fn accept_one(&self) -> io::Result<Incoming> {
        match self {
            Listener::Tcp(l) => l.accept_one(),
            Listener::HandOff(l) => l.accept_one(),
        }
    }
}

/// A connection accepted, or handed over with the bytes already read from it.
#[derive(Debug)]
pub struct Incoming {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// What its session hears first (empty unless it was handed over).
    pub preamble: Vec<u8>,
    /// The [`Gate`]'s admission, held by the driver for as long as the connection lives.
    pub pass: Option<Pass>,
}

/// Who may connect, asked for every connection the [`Acceptor`] takes, before any byte of it
/// is read: the node's access control (`only_from`, `no_access`, `access_times`, `per_source`,
/// `cps`, `instances`, `max_load`) for the services it hosts in-process, the same rules its exec
/// services get.
pub trait Gate: Send + Sync + std::fmt::Debug {
    /// Whether a connection from `peer` is served; a refused one is closed unanswered.
    fn admit(&self, peer: IpAddr) -> bool;
    /// An admitted connection from `peer` has ended.
    fn release(&self, peer: IpAddr);
}

/// An admitted connection's place at its [`Gate`]: dropping it (when the connection ends, with
/// whatever holds it) gives the place back.
#[derive(Debug)]
pub struct Pass {
    gate: Arc<dyn Gate>,
    peer: IpAddr,
}

impl Drop for Pass {
    fn drop(&mut self) {
        self.gate.release(self.peer);
    }
}

/// What one accept attempt gave.
#[derive(Debug)]
pub enum Accepted {
    /// A new connection.
    Conn(Incoming),
    /// Nothing waiting.
    Nothing,
    /// Out of descriptors: a waiting connection was refused; try again after the back-off.
    Exhausted(Duration),
}

/// Accepts with a reserve descriptor and an exponential back-off, and asks the [`Gate`] if any.
#[derive(Debug)]
pub struct Acceptor {
    reserve: Option<File>,
    backoff: Duration,
    gate: Option<Arc<dyn Gate>>,
}

const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Aborted connections skipped per call before it reports `Nothing`, so that a flood of them
/// cannot hold a loop.
const SKIP_MAX: usize = 64;
const BACKOFF_MAX: Duration = Duration::from_secs(1);

impl Default for Acceptor {
    fn default() -> Self {
        Self::new()
    }
}

impl Acceptor {
    /// An acceptor holding its reserve descriptor.
    pub fn new() -> Self {
        Self { reserve: File::open("/dev/null").ok(), backoff: BACKOFF_MIN, gate: None }
    }

    /// An acceptor that lets in only the connections `gate` admits.
    pub fn with_gate(gate: Option<Arc<dyn Gate>>) -> Self {
        Self { gate, ..Self::new() }
    }

    /// Accept one connection from `listener` (blocking or not, as the listener is). Errors
    /// about one connection that is gone already are skipped; `Nothing` means the backlog is
    /// empty (the accept would block).
    pub fn accept(&mut self, listener: &impl Accept, refusal: &[u8]) -> io::Result<Accepted> {
        let mut skipped = 0;
        match loop {
            match listener.accept_one() {
                Err(e) if is_transient(&e) && e.kind() != io::ErrorKind::WouldBlock && skipped < SKIP_MAX => {
                    skipped += 1;
                }
                // Refused at the gate: closed unanswered, as xinetd closes a refused connection;
                // like aborted ones, only so many per call. A blocking listener's caller gets
                // `Nothing` at once: accepting again here would block, deaf to its shutdown.
                Ok(mut incoming) => {
                    if self.admit(&mut incoming) {
                        break Ok(incoming);
                    }
                    refuse(&mut incoming.stream, b"");
                    skipped += 1;
                    if skipped >= SKIP_MAX || !is_nonblocking(listener.as_fd()) {
                        break Err(io::ErrorKind::WouldBlock.into());
                    }
                }
                result => break result,
            }
        } {
            Ok(incoming) => {
                self.backoff = BACKOFF_MIN;
                Ok(Accepted::Conn(incoming))
            }
            Err(e) if is_transient(&e) => Ok(Accepted::Nothing),
            Err(e) if is_exhausted(&e) => {
                tracing::warn!("accept: out of file descriptors; refusing a connection and backing off");
                self.reserve = None;
                if let Ok(mut incoming) = listener.accept_one() {
                    refuse(&mut incoming.stream, refusal);
                }
                self.reserve = File::open("/dev/null").ok();
                let wait = self.backoff;
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                Ok(Accepted::Exhausted(wait))
            }
            Err(e) => Err(e),
        }
    }

    /// Ask the gate, if any, about `incoming`; an admitted connection carries its pass.
    fn admit(&self, incoming: &mut Incoming) -> bool {
        let Some(gate) = &self.gate else { return true };
        let peer = incoming.peer.ip();
        if !gate.admit(peer) {
            return false;
        }
        incoming.pass = Some(Pass { gate: gate.clone(), peer });
        true
    }
}

/// Whether `fd` is in non-blocking mode (asked only after a refusal, off the common path).
fn is_nonblocking(fd: BorrowedFd<'_>) -> bool {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    fcntl(fd, FcntlArg::F_GETFL).is_ok_and(|flags| OFlag::from_bits_truncate(flags).contains(OFlag::O_NONBLOCK))
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

/// Accepting on a tokio runtime with the same policy: the reserve descriptor, the refusal and
/// the back-off. Every tokio listener of warren accepts through it: the `green` and `hybrid`
/// models, and the registry's HTTP API (`warren_registry_server::api::CappedListener`, which
/// also waits for a free slot before accepting). The blocking models, and the DNS front end's
/// TCP side served by one of them, use [`Acceptor`] itself.
#[derive(Debug)]
pub struct AsyncAcceptor {
    listener: tokio::io::unix::AsyncFd<Listener>,
    acceptor: Acceptor,
    refusal: &'static [u8],
}

impl AsyncAcceptor {
    /// Accept from `listener`, refusing with `refusal` when out of descriptors. Call inside a
    /// tokio runtime.
    pub fn new(listener: impl Into<Listener>, refusal: &'static [u8]) -> io::Result<Self> {
        let listener = listener.into();
        listener.set_nonblocking(true)?;
        let interest = tokio::io::Interest::READABLE;
        // SAFETY: the listener owns its descriptor, which stays open and the same for as long as
        // the `AsyncFd` owns the listener.
        let listener = unsafe { tokio::io::unix::AsyncFd::register_with_interest(listener, interest) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Self { listener, acceptor: Acceptor::new(), refusal })
    }

    /// Let in only the connections `gate` admits.
    pub fn gated(mut self, gate: Option<Arc<dyn Gate>>) -> Self {
        self.acceptor.gate = gate;
        self
    }

    /// The next connection; waits (without spinning) through a shortage of descriptors.
    pub async fn accept(&mut self) -> io::Result<Incoming> {
        loop {
            let mut ready = self.listener.readable().await?;
            match self.acceptor.accept(ready.get_inner(), self.refusal)? {
                Accepted::Conn(incoming) => return Ok(incoming),
                Accepted::Nothing => ready.clear_ready(),
                Accepted::Exhausted(wait) => {
                    drop(ready);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// The address a TCP listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self.listener.get_ref() {
            Listener::Tcp(l) => l.local_addr(),
            Listener::HandOff(_) => Err(io::Error::new(io::ErrorKind::Unsupported, "a hand-off socket has no address")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

    use super::{Listener, prepare};

    fn accept_waiting(listener: &TcpListener) -> std::io::Result<TcpStream> {
        listener.set_nonblocking(true)?;
        listener.accept().map(|(stream, _)| stream)
    }

    #[test]
    fn a_client_first_listener_hands_over_connections_with_their_first_bytes() {
        let listener = Listener::Tcp(TcpListener::bind("127.0.0.1:0").unwrap());
        prepare(&listener, true);
        let Listener::Tcp(l) = &listener else { unreachable!() };
        let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        // Connected, but nothing said yet: the kernel keeps it (for about a second).
        let early = accept_waiting(l);
        assert_eq!(early.err().map(|e| e.kind()), Some(std::io::ErrorKind::WouldBlock));
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut fds = [PollFd::new(l.as_fd(), PollFlags::POLLIN)];
        assert_eq!(poll(&mut fds, PollTimeout::from(5000u16)).unwrap(), 1, "the request lets it in");
        let mut accepted = accept_waiting(l).unwrap();
        accepted.set_nonblocking(true).unwrap();
        let mut buf = [0; 64];
        let n = accepted.read(&mut buf).expect("the request is there at the accept");
        assert_eq!(&buf[..n], b"GET / HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn other_listeners_hand_over_connections_at_once() {
        let listener = Listener::Tcp(TcpListener::bind("127.0.0.1:0").unwrap());
        prepare(&listener, false);
        let Listener::Tcp(l) = &listener else { unreachable!() };
        let _client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let mut fds = [PollFd::new(l.as_fd(), PollFlags::POLLIN)];
        assert_eq!(poll(&mut fds, PollTimeout::from(5000u16)).unwrap(), 1);
        accept_waiting(l).expect("a daytime client says nothing, and is let in anyway");
    }
}
