//! Handing a connection to another process: its descriptor and the bytes already read from it,
//! in one datagram over a Unix socket (`SCM_RIGHTS`).
//!
//! A session that has read a request's first bytes may decide that another process should
//! answer (the cluster switch's TCP hand-off, on one host). The sending side
//! ([`send`]) puts the connection's descriptor and the preamble into one `sendmsg` to the
//! receiver's socket and closes its own descriptor: it keeps nothing of the connection, and
//! since it never shuts the socket down, the client sees no difference. The receiving side
//! ([`HandOffListener`]) is a listener like a TCP one: every model serves it, and each
//! connection it yields starts a session that hears the preamble as its first input.
//!
//! A datagram socket makes each hand-off one atomic message, so a receiver never waits for the
//! rest of one. The receiver takes hand-offs only from its own user (or root), checked with
//! `SCM_CREDENTIALS`: another local user cannot push connections into it.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg, setsockopt, sockopt};
use warren_proto::HandOffTarget;

/// The most bytes a hand-off carries with its connection: a request head, with room to spare.
pub const MAX_PREAMBLE: usize = 64 * 1024;

fn address(target: &HandOffTarget) -> io::Result<UnixAddr> {
    let path = target.0.as_os_str().as_encoded_bytes();
    match path.strip_prefix(b"@") {
        Some(name) => UnixAddr::from_abstract_name(name),
        None => UnixAddr::from_pathname(&target.0),
    }
}

/// Hand `socket` and `preamble` to the receiver at `to`. On success the receiver holds the
/// connection; the caller closes its own descriptor (without shutting the socket down).
pub fn send(to: &HandOffTarget, socket: BorrowedFd<'_>, preamble: &[u8]) -> io::Result<()> {
    if preamble.len() > MAX_PREAMBLE {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "hand-off preamble over 64 KiB"));
    }
    let sender = UnixDatagram::unbound()?;
    sender.connect_addr(&address(to)?)?;
    let fds = [socket.as_raw_fd()];
    let iov = [IoSlice::new(preamble)];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    // Blocking: a receiver whose queue is full is worth a moment's wait, not a dropped client.
    sendmsg::<()>(sender.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None)?;
    Ok(())
}

/// A connection handed to this process.
#[derive(Debug)]
pub struct HandedOff {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// What the sender read from the connection before handing it off.
    pub preamble: Vec<u8>,
}

/// The socket on which this process receives connections handed to it.
#[derive(Debug)]
pub struct HandOffListener {
    socket: UnixDatagram,
    target: HandOffTarget,
}

impl HandOffListener {
    /// Receive hand-offs at `target`. A path is replaced if a socket is there already (left by
    /// a process that died); it is removed again when the listener is dropped.
    pub fn bind(target: &HandOffTarget) -> io::Result<Self> {
        let addr = address(target)?;
        if let Some(path) = addr.as_pathname()
            && std::fs::symlink_metadata(path).is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
        {
            std::fs::remove_file(path)?;
        }
        let socket = UnixDatagram::bind_addr(&addr)?;
        setsockopt(&socket, sockopt::PassCred, &true)?;
        socket.set_nonblocking(true)?;
        Ok(Self { socket, target: target.clone() })
    }

    /// Where this listener receives.
    pub fn target(&self) -> &HandOffTarget {
        &self.target
    }

    /// The next connection handed over, without waiting: `WouldBlock` when none is there.
    /// Hand-offs from another user, or that came without exactly one descriptor or with a
    /// preamble cut short, are dropped (their descriptors closed) and the next one is tried.
    pub fn receive(&self) -> io::Result<HandedOff> {
        loop {
            let mut preamble = vec![0u8; MAX_PREAMBLE];
            let mut cmsg = nix::cmsg_space!([RawFd; 4], nix::sys::socket::UnixCredentials);
            let (len, fds, creds, truncated) = {
                let mut iov = [IoSliceMut::new(&mut preamble)];
                let msg = recvmsg::<()>(
                    self.socket.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
                )?;
                let mut fds = Vec::new();
                let mut creds = None;
                for c in msg.cmsgs()? {
                    match c {
                        ControlMessageOwned::ScmRights(raw) => fds.extend(raw.into_iter().map(|fd| {
                            // SAFETY: the kernel installed this descriptor in this process for
                            // us; it is owned from here on and closed if not used.
                            unsafe { OwnedFd::from_raw_fd(fd) }
                        })),
                        ControlMessageOwned::ScmCredentials(c) => creds = Some(c),
                        _ => {}
                    }
                }
                let truncated = msg.flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
                (msg.bytes, fds, creds, truncated)
            };
            let me = nix::unistd::geteuid().as_raw();
            let trusted = creds.is_some_and(|c| c.uid() == me || c.uid() == 0);
            if !trusted || truncated || fds.len() != 1 {
                tracing::warn!(
                    target: "warren",
                    "hand-off refused: {}",
                    if trusted { "malformed" } else { "from another user" }
                );
                continue;
            }
            let stream = TcpStream::from(fds.into_iter().next().expect("one"));
            let Ok(peer) = stream.peer_addr() else {
                // Not a connected TCP socket, or its client is gone already.
                continue;
            };
            preamble.truncate(len);
            preamble.shrink_to_fit();
            return Ok(HandedOff { stream, peer, preamble });
        }
    }
}

impl AsFd for HandOffListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl Drop for HandOffListener {
    fn drop(&mut self) {
        if let Ok(addr) = address(&self.target)
            && let Some(path) = addr.as_pathname()
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn a_connection_and_its_preamble_cross_over() {
        let target = HandOffTarget::new(format!("@warren-handoff-test-{}-{}", std::process::id(), fastrand::u64(..)));
        let receiver = HandOffListener::bind(&target).unwrap();
        assert_eq!(receiver.receive().unwrap_err().kind(), io::ErrorKind::WouldBlock);

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        send(&target, server.as_fd(), b"GET / HTTP/1.1\r\n").unwrap();
        drop(server);

        let mut handed = receiver.receive().unwrap();
        assert_eq!(handed.preamble, b"GET / HTTP/1.1\r\n");
        assert_eq!(handed.peer, client.local_addr().unwrap());
        handed.stream.write_all(b"answered by the receiver").unwrap();
        drop(handed);
        let mut got = String::new();
        client.read_to_string(&mut got).unwrap();
        assert_eq!(got, "answered by the receiver");
    }

    #[test]
    fn an_oversized_preamble_is_refused_before_sending() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let target = HandOffTarget::new("@warren-handoff-nobody");
        let e = send(&target, client.as_fd(), &vec![0; MAX_PREAMBLE + 1]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
