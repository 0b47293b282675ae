//! The UDP and TCP driver: one thread running a current-thread tokio runtime, the datagram loop
//! of `udp.rs` and a task per TCP connection, every one of them handing bytes to [`answer`].
//!
//! One thread because the work per query is a few microseconds of parsing and encoding: a single
//! core answers tens of thousands of queries a second (docs/dns.md has the dnsperf figure), and
//! the registry keeps the other core.

use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, oneshot};
use tokio::time::timeout;

use crate::Directory;
use crate::answer::{MAX_QUERY, Transport, answer};
use crate::config::Config;
use crate::rotation::Rotation;
use crate::udp::serve_udp;

/// A running DNS server. Dropping it (or [`Server::shutdown`]) stops it and closes its sockets.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// What the UDP loop and every TCP connection answer from.
pub(crate) struct Shared {
    pub(crate) directory: Arc<dyn Directory>,
    pub(crate) config: Config,
    pub(crate) rotation: Rotation,
}

/// Attempts at finding a port free for both UDP and TCP when asked for port 0.
const BIND_ATTEMPTS: usize = 32;

impl Server {
    /// Binds UDP and TCP on `addr` (the same port for both; port 0 picks one free for both) and
    /// starts answering on a thread of its own.
    pub fn bind(addr: SocketAddr, config: Config, directory: Arc<dyn Directory>) -> io::Result<Server> {
        let (udp, tcp) = bind_both(addr)?;
        let addr = udp.local_addr()?;
        udp.set_nonblocking(true)?;
        tcp.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
        let (stop, stopped) = oneshot::channel();
        let shared = Arc::new(Shared { directory, config, rotation: Rotation::new() });
        let thread = std::thread::Builder::new().name("warren-dns".into()).spawn(move || {
            runtime.block_on(async move {
                let (udp, tcp) = match (UdpSocket::from_std(udp), TcpListener::from_std(tcp)) {
                    (Ok(udp), Ok(tcp)) => (udp, tcp),
                    (Err(e), _) | (_, Err(e)) => return tracing::error!(error = %e, "DNS sockets"),
                };
                tokio::spawn(serve_tcp(tcp, shared.clone()));
                tokio::select! {
                    () = serve_udp(udp, &shared) => {}
                    _ = stopped => {}
                }
            });
            // Dropping the runtime drops every connection task, closing their sockets.
        })?;
        Ok(Server { addr, stop: Some(stop), thread: Some(thread) })
    }

    /// The address answering on both UDP and TCP.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops answering, closes every socket and waits for the server's thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn bind_both(addr: SocketAddr) -> io::Result<(StdUdpSocket, StdTcpListener)> {
    if addr.port() != 0 {
        return Ok((StdUdpSocket::bind(addr)?, StdTcpListener::bind(addr)?));
    }
    // A port free for TCP may be taken for UDP: try again with another.
    let mut last_error = None;
    for _ in 0..BIND_ATTEMPTS {
        let tcp = StdTcpListener::bind(addr)?;
        match StdUdpSocket::bind(tcp.local_addr()?) {
            Ok(udp) => return Ok((udp, tcp)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)))
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(shared.config.max_tcp_connections));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors, most likely: give connections time to close rather than spin.
                tracing::warn!(%error, "DNS TCP accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    serve_connection(stream, &shared).await;
                    drop(slot);
                });
            }
            // Over the limit: closed at once, a clear refusal the client can act on.
            Err(_) => drop(stream),
        }
    }
}

/// Queries in sequence on one connection (RFC 7766), each with a 2-byte length prefix, until the
/// client closes, is idle too long, sends a frame longer than [`MAX_QUERY`] or something that is
/// not a query.
async fn serve_connection(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    let idle = shared.config.tcp_idle_timeout;
    let mut frame = Vec::new();
    loop {
        let query = match timeout(idle, read_frame(&mut stream, &mut frame)).await {
            Ok(Ok(true)) => &frame,
            _ => return,
        };
        let Some(response) = answer(query, &*shared.directory, &shared.config, &shared.rotation, Transport::Tcp) else {
            return;
        };
        let len = u16::try_from(response.len()).expect("TCP responses are limited to 65535 bytes");
        let mut out = Vec::with_capacity(2 + response.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&response);
        if !matches!(timeout(idle, stream.write_all(&out)).await, Ok(Ok(()))) {
            return;
        }
    }
}

/// Reads one length-prefixed message into `frame`; `false` at a clean end of the stream or for a
/// length of 0 or over [`MAX_QUERY`].
async fn read_frame(stream: &mut TcpStream, frame: &mut Vec<u8>) -> io::Result<bool> {
    let mut len = [0; 2];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let len = usize::from(u16::from_be_bytes(len));
    if len == 0 || len > MAX_QUERY {
        return Ok(false);
    }
    frame.resize(len, 0);
    stream.read_exact(frame).await?;
    Ok(true)
}
