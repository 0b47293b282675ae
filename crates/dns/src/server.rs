//! The UDP and TCP drivers. UDP: one thread running a current-thread tokio runtime with the
//! datagram loop of `udp.rs`, which takes and answers queries in `recvmmsg`/`sendmmsg` batches
//! (a datagram protocol with no connection has no use for the connection engine, and batching
//! is where its speed comes from). TCP: the session of `tcp.rs`, served by the `event` model on
//! a thread of its own like any protocol, with the models' accept policy and limits.
//!
//! One thread for UDP because the work per query is a few microseconds of parsing and encoding:
//! a single core answers tens of thousands of queries a second (docs/dns.md has the dnsperf
//! figure), and the registry keeps the other core.

use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use warren_models::{Model, ServeConfig, Shutdown, serve_until};

use crate::Directory;
use crate::config::Config;
use crate::metrics::DnsMetrics;
use crate::rotation::Rotation;
use crate::tcp::DnsTcp;
use crate::udp::serve_udp;

/// A running DNS server. Dropping it (or [`Server::shutdown`]) stops it and closes its sockets.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    tcp_stop: Arc<Shutdown>,
    tcp: Option<JoinHandle<()>>,
    metrics: Arc<DnsMetrics>,
}

/// What the UDP loop and every TCP connection answer from.
pub(crate) struct Shared {
    pub(crate) directory: Arc<dyn Directory>,
    pub(crate) config: Config,
    pub(crate) rotation: Rotation,
    pub(crate) metrics: Arc<DnsMetrics>,
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
        let runtime = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
        let (stop, stopped) = oneshot::channel();
        let max_conns = config.max_tcp_connections;
        let metrics = Arc::new(DnsMetrics::default());
        let shared = Arc::new(Shared { directory, config, rotation: Rotation::new(), metrics: metrics.clone() });
        let tcp_stop = Arc::new(Shutdown::new()?);
        let service = DnsTcp { shared: shared.clone() };
        let config = ServeConfig { max_conns, ..ServeConfig::for_model(Model::Event) };
        let trigger = tcp_stop.clone();
        let tcp = std::thread::Builder::new().name("warren-dns-tcp".into()).spawn(move || {
            if let Err(e) = serve_until(Model::Event, service, tcp, &config, trigger) {
                tracing::error!(error = %e, "DNS over TCP stopped");
            }
        })?;
        let thread = std::thread::Builder::new().name("warren-dns".into()).spawn(move || {
            runtime.block_on(async move {
                let udp = match UdpSocket::from_std(udp) {
                    Ok(udp) => udp,
                    Err(e) => return tracing::error!(error = %e, "DNS socket"),
                };
                tokio::select! {
                    () = serve_udp(udp, &shared) => {}
                    _ = stopped => {}
                }
            });
        })?;
        Ok(Server { addr, stop: Some(stop), thread: Some(thread), tcp_stop, tcp: Some(tcp), metrics })
    }

    /// The address answering on both UDP and TCP.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its counters, for a metrics page ([`DnsMetrics::registry`]).
    pub fn metrics(&self) -> Arc<DnsMetrics> {
        self.metrics.clone()
    }

    /// Stops answering, closes every socket and waits for the server's thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.tcp_stop.trigger();
        for thread in [self.thread.take(), self.tcp.take()].into_iter().flatten() {
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
