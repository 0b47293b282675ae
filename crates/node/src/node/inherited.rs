//! Listeners a service manager opened for the node (systemd's socket activation): each is
//! matched to the service that would otherwise bind it, so the node serves on sockets it could
//! not open itself (a privileged port without the capability) and a restart refuses nothing (the
//! manager keeps the socket, and its backlog, while the node is away).

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::OwnedFd;

use socket2::{SockRef, Type};

use super::sockets::Socket;
use crate::config::{Kind, Service, Transport};

/// The descriptors passed at start, not yet taken by a service.
#[derive(Debug, Default)]
pub struct Inherited {
    sockets: Vec<InheritedSocket>,
}

#[derive(Debug)]
struct InheritedSocket {
    /// The manager's name for it (systemd's `FileDescriptorName=`, else the socket unit's name).
    name: String,
    transport: Transport,
    addr: SocketAddr,
    fd: OwnedFd,
}

impl Inherited {
    /// Classifies `fds` (descriptor and name, as `sd_listen_fds_with_names` gives them). Only
    /// bound TCP listeners and UDP sockets are accepted: anything else is an error that names
    /// the descriptor, since a unit that passes it is misconfigured.
    pub fn new(fds: Vec<(OwnedFd, String)>) -> io::Result<Self> {
        let sockets = fds
            .into_iter()
            .map(|(fd, name)| {
                let sock = SockRef::from(&fd);
                let what = |e: io::Error| io::Error::new(e.kind(), format!("inherited socket {name:?}: {e}"));
                let transport = match sock.r#type().map_err(what)? {
                    Type::STREAM if sock.is_listener().map_err(what)? => Transport::Tcp,
                    Type::DGRAM => Transport::Udp,
                    _ => {
                        return Err(what(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "is neither a listening TCP socket nor a UDP socket",
                        )));
                    }
                };
                let addr = sock
                    .local_addr()
                    .map_err(what)?
                    .as_socket()
                    .ok_or_else(|| what(io::Error::new(io::ErrorKind::InvalidInput, "is not an IP socket")))?;
                Ok(InheritedSocket { name, transport, addr, fd })
            })
            .collect::<io::Result<_>>()?;
        Ok(Inherited { sockets })
    }

    /// The socket for `service`, if one was passed: the one named as the service first (so a
    /// unit may say which service gets which socket), else one of its transport bound to its
    /// address. It is prepared as [`super::sockets::bind`] prepares a socket it binds.
    pub(super) fn take(&mut self, service: &Service) -> Option<io::Result<(Socket, SocketAddr)>> {
        let transport = service.listen.transport;
        let position =
            self.sockets.iter().position(|s| s.name == service.name && s.transport == transport).or_else(|| {
                self.sockets.iter().position(|s| s.transport == transport && s.addr == service.listen.addr)
            })?;
        let inherited = self.sockets.remove(position);
        let addr = inherited.addr;
        let socket = match transport {
            Transport::Tcp => {
                let listener = TcpListener::from(inherited.fd);
                let wait = matches!(&service.kind, Kind::Exec(e) if e.wait);
                listener
                    .set_nonblocking(!wait && !matches!(service.kind, Kind::Builtin(_)))
                    .map(|()| Socket::Tcp(listener))
            }
            Transport::Udp => Ok(Socket::Udp(UdpSocket::from(inherited.fd))),
        };
        Some(socket.map(|s| (s, addr)))
    }

    /// Gives back a socket taken for a service that did not start after all (a reload that
    /// failed on another service), so a later configuration may still use it.
    pub(super) fn give_back(&mut self, service: &Service, socket: Socket, addr: SocketAddr) {
        let fd = match socket {
            Socket::Tcp(l) => OwnedFd::from(l),
            Socket::Udp(u) => OwnedFd::from(u),
        };
        let name = service.name.clone();
        self.sockets.push(InheritedSocket { name, transport: service.listen.transport, addr, fd });
    }

    /// The sockets no service took, as `name (transport address)`, for a warning.
    pub fn unused(&self) -> Vec<String> {
        self.sockets.iter().map(|s| format!("{} ({} {})", s.name, s.transport.name(), s.addr)).collect()
    }

    /// How many are left.
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    /// Whether none is left.
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, UdpSocket};

    use super::*;
    use crate::config::Transport;

    fn owned(l: impl Into<OwnedFd>) -> OwnedFd {
        l.into()
    }

    #[test]
    fn sockets_are_classified_and_anything_else_is_refused_by_name() {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (t, u) = (tcp.local_addr().unwrap(), udp.local_addr().unwrap());
        let inherited = Inherited::new(vec![(owned(tcp), "web".into()), (owned(udp), "dns".into())]).unwrap();
        assert_eq!(inherited.len(), 2);
        assert_eq!(inherited.sockets[0].transport, Transport::Tcp);
        assert_eq!(inherited.sockets[0].addr, t);
        assert_eq!(inherited.sockets[1].transport, Transport::Udp);
        assert_eq!(inherited.sockets[1].addr, u);

        // A connected stream is not a listener.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let e = Inherited::new(vec![(owned(stream), "odd".into())]).unwrap_err();
        assert!(e.to_string().contains("\"odd\""), "{e}");
        let (a, _b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let e = Inherited::new(vec![(owned(a), "unix".into())]).unwrap_err();
        assert!(e.to_string().contains("\"unix\""), "{e}");
    }
}
