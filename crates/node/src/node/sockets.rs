//! The node's sockets: binding a service's listener, and the status endpoint.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::time::Instant;

use super::{Node, Watch};
use crate::config::{Kind, Service, Transport};
use crate::status::{ServiceStatus, Status};

#[derive(Debug)]
pub(super) enum Socket {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

impl Socket {
    pub(super) fn raw(&self) -> i32 {
        match self {
            Socket::Tcp(l) => l.as_raw_fd(),
            Socket::Udp(u) => u.as_raw_fd(),
        }
    }
}

#[derive(Debug)]
pub(super) enum StatusSocket {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl StatusSocket {
    pub(super) fn raw(&self) -> i32 {
        match self {
            StatusSocket::Unix(l) => l.as_raw_fd(),
            StatusSocket::Tcp(l) => l.as_raw_fd(),
        }
    }

    pub(super) fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            StatusSocket::Unix(l) => l.set_nonblocking(true),
            StatusSocket::Tcp(l) => l.set_nonblocking(true),
        }
    }
}

impl Node {
    pub(super) fn snapshot(&self) -> Status {
        let services = self
            .entries
            .iter()
            .flatten()
            .map(|e| {
                // A builtin's connections are counted by its gate, on its own thread.
                let gated = e.builtin.as_ref().and_then(|b| b.admission.as_ref()).map(|a| a.counts());
                let c = &e.counters;
                let (running, spawned, refused, rate) = gated.unwrap_or((c.running, c.spawned, c.refused, c.last_rate));
                ServiceStatus {
                    name: e.service.name.clone(),
                    kind: match &e.service.kind {
                        Kind::Exec(x) if x.wait => "exec wait".into(),
                        Kind::Exec(_) => "exec nowait".into(),
                        Kind::Redirect(to) => format!("redirect {to}"),
                        Kind::Builtin(b) => format!("builtin {} ({})", b.protocol.name(), b.model),
                    },
                    transport: e.service.listen.transport.name(),
                    addr: e.addr,
                    running,
                    spawned,
                    refused,
                    rate,
                    state: match e.watch {
                        Watch::Watching => "listening".into(),
                        Watch::Handed(pid) => format!("handed to {pid}"),
                        Watch::Paused(at) => {
                            format!("paused {:.1}s", at.saturating_duration_since(Instant::now()).as_secs_f64())
                        }
                        Watch::Builtin => "serving".into(),
                    },
                }
            })
            .collect();
        Status { services, children: self.children.len() }
    }

    pub(super) fn serve_status(&mut self) {
        let text = self.snapshot().to_string();
        loop {
            let accepted: io::Result<Box<dyn Write>> = match &self.status {
                Some(StatusSocket::Unix(l)) => l.accept().map(|(s, _)| Box::new(s) as Box<dyn Write>),
                Some(StatusSocket::Tcp(l)) => l.accept().map(|(s, _)| Box::new(s) as Box<dyn Write>),
                None => return,
            };
            match accepted {
                // Accepted sockets are blocking; the text fits any socket buffer.
                Ok(mut conn) => {
                    let _ = conn.write_all(text.as_bytes());
                }
                Err(_) => return,
            }
        }
    }
}

/// Bind a service's socket: SO_REUSEADDR, the deepest backlog, non-blocking for `nowait`
/// (the loop accepts) and blocking for `wait` (the child accepts or reads).
pub(super) fn bind(service: &Service) -> io::Result<(Socket, SocketAddr)> {
    use socket2::{Domain, Protocol, Socket as Raw, Type};
    let addr = service.listen.addr;
    let (kind, protocol) = match service.listen.transport {
        Transport::Tcp => (Type::STREAM, Protocol::TCP),
        Transport::Udp => (Type::DGRAM, Protocol::UDP),
    };
    let raw = Raw::new(Domain::for_address(addr), kind, Some(protocol))?;
    raw.set_reuse_address(true)?;
    if let (Some(v6only), true) = (service.socket.v6only, addr.is_ipv6()) {
        raw.set_only_v6(v6only)?;
    }
    raw.bind(&addr.into())?;
    let wait = matches!(&service.kind, Kind::Exec(e) if e.wait);
    let socket = match service.listen.transport {
        Transport::Tcp => {
            raw.listen(4096)?;
            let listener: TcpListener = raw.into();
            listener.set_nonblocking(!wait && !matches!(service.kind, Kind::Builtin(_)))?;
            Socket::Tcp(listener)
        }
        Transport::Udp => Socket::Udp(raw.into()),
    };
    let local = match &socket {
        Socket::Tcp(l) => l.local_addr()?,
        Socket::Udp(u) => u.local_addr()?,
    };
    Ok((socket, local))
}
