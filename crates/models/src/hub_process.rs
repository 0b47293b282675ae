//! The hub process of the `fork` and `prefork` models.
//!
//! Processes do not share memory, so the state shared between connections (chat rooms, the game
//! counter) lives in one more process, forked first, which runs the protocol's `Hub` and talks to
//! every connection over a Unix stream socket of its own. Each connection that asks the hub
//! anything opens one; closing it means the session left.
//!
//! The hub has no address. Before forking it, the server makes a `SOCK_SEQPACKET` socketpair,
//! the *connector*: the hub keeps one end, the server and every process it forks inherit the
//! other. Opening a link makes a fresh stream socketpair and passes one end to the hub over the
//! connector (`SCM_RIGHTS`). So only the server's own processes can reach the hub: there is no
//! name in `/proc/net/unix` to connect to and no peer to check, where an abstract socket could be
//! reached by any local user (sshd's privilege-separation monitor talks to its children over
//! socketpairs for the same reason).
//!
//! Frames, both ways: a 4-byte big-endian length, then that many bytes of postcard
//! ([`Up`] towards the hub, [`Down`] back), in `warren_proto::frame`'s codec. Frames over
//! [`MAX_FRAME`] bytes are an error.
//!
//! The hub process is single-threaded: it runs the hub's jobs itself (a journal's `fdatasync`
//! holds up only the hub, whose answers wait for it anyway) and keeps its deadlines in its
//! loop's timeout.

use std::collections::HashMap;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::UnixStream as MioStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recv, recvmsg, sendmsg,
    socketpair,
};
use nix::unistd::{ForkResult, Pid, fork};
use serde::{Deserialize, Serialize};
use warren_proto::frame::Framing;
use warren_proto::{Hub, HubOutput, SessionId};

use crate::blocking::HubLink;
use crate::helpers::run_here;

/// The largest frame either side accepts.
pub const MAX_FRAME: usize = 1 << 20;

/// Messages that may wait for one slow session before the hub disconnects it.
const MAX_BACKLOG: usize = 4 << 20;

/// A frame from a connection to the hub.
#[derive(Debug, Serialize, Deserialize)]
pub enum Up<R> {
    /// The first frame on a socket: which session speaks on it.
    Open(SessionId),
    /// A request from that session.
    Request(R),
    /// Ask for the hub's closing summary (sent by the server's parent at shutdown).
    Report,
}

/// A frame from the hub to a connection.
#[derive(Debug, Serialize, Deserialize)]
pub enum Down<M> {
    /// A message for the session on this socket.
    Message(M),
    /// The answer to [`Up::Report`].
    Report(Option<String>),
}

/// How the hub's frames are cut: no prefix, a length, postcard.
const FRAMING: Framing = Framing { prefix: &[], max: MAX_FRAME };

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix is over [`MAX_FRAME`].
    #[error(transparent)]
    Frame(#[from] warren_proto::frame::FrameError),
    /// The body is not a valid postcard encoding.
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
}

/// Append one frame holding `value` to `buf`.
pub fn encode_frame<T: Serialize>(value: &T, buf: &mut Vec<u8>) {
    let start = FRAMING.begin(buf);
    *buf = postcard::to_extend(value, std::mem::take(buf)).expect("encoding to a Vec cannot fail");
    // A frame too large for the peer to take is a bug in the protocol's types, not input.
    FRAMING.finish(buf, start).expect("hub frames stay under MAX_FRAME");
}

/// Take one complete frame off the front of `buf`, if there is one.
pub fn decode_frame<T: for<'de> Deserialize<'de>>(buf: &mut Vec<u8>) -> Result<Option<T>, FrameError> {
    let Some((body, len)) = FRAMING.split(buf)? else { return Ok(None) };
    let value = postcard::from_bytes(body);
    buf.drain(..len);
    Ok(Some(value?))
}

/// How long opening a link or sending a request may wait for a hub that takes nothing.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// A running hub process.
#[derive(Debug)]
pub(crate) struct HubProcess {
    pub pid: Pid,
    pub connector: Connector,
}

/// The server's end of the hub's connector, shared by every process the server forks.
#[derive(Clone, Debug)]
pub(crate) struct Connector(Arc<OwnedFd>);

impl Connector {
    /// A new stream to the hub: one end of a fresh socketpair, the other passed to the hub.
    fn connect(&self) -> io::Result<UnixStream> {
        let (mine, theirs) = UnixStream::pair()?;
        let fds = [theirs.as_raw_fd()];
        let rights = [ControlMessage::ScmRights(&fds)];
        // `theirs` is closed on return: once sent, the hub holds its own copy.
        loop {
            match sendmsg::<()>(self.0.as_raw_fd(), &[IoSlice::new(b"+")], &rights, MsgFlags::empty(), None) {
                Ok(_) => return Ok(mine),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Fork the hub process, which closes `close_in_child` (the server's listener). Call while the
/// process is single-threaded.
pub(crate) fn spawn<H: Hub>(hub: H, close_in_child: &[RawFd]) -> io::Result<HubProcess> {
    let parent = nix::unistd::getpid();
    let (server_end, hub_end) =
        socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).map_err(io::Error::from)?;
    // A hub that stops taking links fails the sender after a while instead of hanging it.
    nix::sys::socket::setsockopt(
        &server_end,
        nix::sys::socket::sockopt::SendTimeout,
        &nix::sys::time::TimeVal::new(SEND_TIMEOUT.as_secs() as _, 0),
    )
    .map_err(io::Error::from)?;
    // SAFETY: the caller guarantees no other thread exists, so the child inherits a consistent
    // address space; the child never returns from `run`.
    match unsafe { fork() }.map_err(io::Error::from)? {
        ForkResult::Child => {
            // The hub ends when the server says so (see `finish`) or dies, even by SIGKILL. A Ctrl-C
            // reaches the whole process group; the hub ignores it so that the server can still
            // ask it for its report while the connections say goodbye.
            let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
            if nix::unistd::getppid() != parent {
                crate::procs::exit_child(1);
            }
            for &fd in close_in_child {
                let _ = nix::unistd::close(fd);
            }
            drop(server_end);
            for signal in [nix::sys::signal::Signal::SIGINT, nix::sys::signal::Signal::SIGTERM] {
                // SAFETY: SIG_IGN installs no handler code.
                let _ = unsafe { nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigIgn) };
            }
            let code = match run(hub, hub_end) {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!(target: "warren", "hub process: {e}");
                    1
                }
            };
            crate::procs::exit_child(code)
        }
        ForkResult::Parent { child } => {
            drop(hub_end);
            Ok(HubProcess { pid: child, connector: Connector(Arc::new(server_end)) })
        }
    }
}

/// Ask the hub for its summary, then stop it.
pub(crate) fn finish(hub: &HubProcess) -> Option<String> {
    let report = (|| -> io::Result<Option<String>> {
        let mut stream = hub.connector.connect()?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = Vec::new();
        encode_frame(&Up::<()>::Report, &mut buf);
        stream.write_all(&buf)?;
        buf.clear();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(Down::<()>::Report(report)) = decode_frame(&mut buf).map_err(io::Error::other)? {
                return Ok(report);
            }
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Ok(None);
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })()
    .ok()
    .flatten();
    // The hub holds nothing durable: once its report is read it can go at once.
    let _ = nix::sys::signal::kill(hub.pid, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(hub.pid, None);
    report
}

struct Peer {
    stream: MioStream,
    input: Vec<u8>,
    output: Vec<u8>,
    id: Option<SessionId>,
    asked: bool,
}

const CONNECTOR: Token = Token(usize::MAX);

/// The streams passed over the connector since the last call, until it would block; and
/// whether it is still open (not once every sender has closed its end: the server and all its
/// processes are gone).
fn take_streams(connector: &OwnedFd) -> io::Result<(Vec<UnixStream>, bool)> {
    let mut streams = Vec::new();
    loop {
        let mut byte = [0u8; 1];
        let mut iov = [IoSliceMut::new(&mut byte)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
        let msg = match recvmsg::<()>(connector.as_raw_fd(), &mut iov, Some(&mut space), flags) {
            Ok(msg) => msg,
            Err(Errno::EAGAIN) => return Ok((streams, true)),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                fds.extend(received);
            }
        }
        if msg.bytes == 0 && fds.is_empty() {
            return Ok((streams, false));
        }
        for fd in fds {
            // SAFETY: the kernel just installed `fd` in this process for this message; nothing
            // else owns it.
            streams.push(UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
}

/// The hub process's event loop; runs until the server kills it.
fn run<H: Hub>(mut hub: H, connector: OwnedFd) -> io::Result<()> {
    let mut poll = Poll::new()?;
    poll.registry().register(&mut SourceFd(&connector.as_raw_fd()), CONNECTOR, Interest::READABLE)?;
    let mut connector_open = true;
    let mut peers: HashMap<usize, Peer> = HashMap::new();
    let mut by_id: HashMap<SessionId, usize> = HashMap::new();
    let mut next_token = 0usize;
    let mut events = Events::with_capacity(256);
    let mut out = HubOutput::new();
    loop {
        let timeout = hub.poll_timeout().map(|at| at.saturating_duration_since(Instant::now()));
        match poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let mut dead = Vec::new();
        let now = Instant::now();
        if hub.poll_timeout().is_some_and(|at| now >= at) {
            hub.handle_timeout(now, &mut out);
            settle(&mut hub, &mut out);
            deliver(&mut out, &mut peers, &by_id, &mut dead);
        }
        for event in events.iter() {
            match event.token() {
                CONNECTOR if connector_open => {
                    let (streams, open) = take_streams(&connector)?;
                    for stream in streams {
                        stream.set_nonblocking(true)?;
                        let mut stream = MioStream::from_std(stream);
                        let token = next_token;
                        next_token += 1;
                        poll.registry().register(&mut stream, Token(token), Interest::READABLE | Interest::WRITABLE)?;
                        peers.insert(
                            token,
                            Peer { stream, input: Vec::new(), output: Vec::new(), id: None, asked: false },
                        );
                    }
                    // No process can open a link any more; the links open still count.
                    if !open {
                        poll.registry().deregister(&mut SourceFd(&connector.as_raw_fd()))?;
                        connector_open = false;
                    }
                }
                CONNECTOR => {}
                Token(token) => {
                    let Some(peer) = peers.get_mut(&token) else { continue };
                    if event.is_readable() && read_all(peer).is_err() {
                        dead.push(token);
                        continue;
                    }
                    let now = Instant::now();
                    loop {
                        let frame = match decode_frame::<Up<H::Request>>(&mut peer.input) {
                            Ok(Some(frame)) => frame,
                            Ok(None) => break,
                            Err(e) => {
                                tracing::error!(target: "warren", "hub: dropping a connection: {e}");
                                dead.push(token);
                                break;
                            }
                        };
                        match (frame, peer.id) {
                            (Up::Open(id), None) => {
                                peer.id = Some(id);
                                by_id.insert(id, token);
                            }
                            (Up::Request(request), Some(id)) => {
                                peer.asked = true;
                                hub.handle_request(now, id, request, &mut out);
                                settle(&mut hub, &mut out);
                                // The requester hears last: once it sees its answer (a chat
                                // message echoed back), every other recipient's copy is
                                // already in its socket, so a shutdown that follows loses none.
                                let (others, mine): (Vec<_>, Vec<_>) =
                                    out.drain_messages().partition(|(to, _)| *to != id);
                                for (to, msg) in others.into_iter().chain(mine) {
                                    out.push(to, msg);
                                }
                            }
                            (Up::Report, _) => {
                                encode_frame(&Down::<H::Message>::Report(hub.report(now)), &mut peer.output)
                            }
                            _ => {
                                dead.push(token);
                                break;
                            }
                        }
                    }
                    let peer = peers.get_mut(&token).expect("peer still present");
                    if flush(peer).is_err() {
                        dead.push(token);
                    }
                }
            }
            deliver(&mut out, &mut peers, &by_id, &mut dead);
        }
        // Leaving can make the hub tell others (a chat user left), which can drop more peers.
        while let Some(token) = dead.pop() {
            if let Some(peer) = peers.remove(&token) {
                let _ = poll.registry().deregister(&mut { peer.stream });
                if let Some(id) = peer.id {
                    by_id.remove(&id);
                    if peer.asked {
                        hub.handle_leave(Instant::now(), id, &mut out);
                        settle(&mut hub, &mut out);
                        deliver(&mut out, &mut peers, &by_id, &mut dead);
                    }
                }
            }
        }
    }
}

/// Run the hub's jobs here, one after the other, until it starts no more.
fn settle<H: Hub>(hub: &mut H, out: &mut HubOutput<H>) {
    loop {
        let jobs: Vec<_> = out.drain_jobs().collect();
        if jobs.is_empty() {
            return;
        }
        for (token, job) in jobs {
            let done = run_here(job);
            hub.handle_completion(Instant::now(), token, done, out);
        }
    }
}

fn deliver<H: Hub>(
    out: &mut HubOutput<H>,
    peers: &mut HashMap<usize, Peer>,
    by_id: &HashMap<SessionId, usize>,
    dead: &mut Vec<usize>,
) {
    for (to, msg) in out.drain_messages() {
        let Some(&token) = by_id.get(&to) else { continue };
        let Some(peer) = peers.get_mut(&token) else { continue };
        encode_frame(&Down::Message(msg), &mut peer.output);
        if peer.output.len() > MAX_BACKLOG || flush(peer).is_err() {
            dead.push(token);
        }
    }
}

fn read_all(peer: &mut Peer) -> io::Result<()> {
    loop {
        match read_appending(&mut peer.input, |buf| peer.stream.read(buf)) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {
                if peer.input.len() > MAX_FRAME + 4 {
                    return Err(io::Error::other("peer floods the hub"));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// One read appended to `input`, straight into its spare room. A buffer on the stack would
/// cost every forked connection process pages of its own: the stack probes touch each page of
/// the frame, and each touch copies a page the parent shares.
fn read_appending(input: &mut Vec<u8>, read: impl FnOnce(&mut [u8]) -> io::Result<usize>) -> io::Result<usize> {
    const CHUNK: usize = 4096;
    let start = input.len();
    input.resize(start + CHUNK, 0);
    let result = read(&mut input[start..]);
    input.truncate(start + result.as_ref().map_or(0, |n| *n));
    result
}

/// Write what the socket takes now; the rest waits for the next writable event.
fn flush(peer: &mut Peer) -> io::Result<()> {
    let mut written = 0;
    while written < peer.output.len() {
        match peer.stream.write(&peer.output[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    peer.output.drain(..written);
    Ok(())
}

/// A connection's link to the hub process, opened on its first request.
pub(crate) struct RemoteLink {
    connector: Connector,
    id: SessionId,
    stream: Option<UnixStream>,
    input: Vec<u8>,
    scratch: Vec<u8>,
}

impl RemoteLink {
    pub(crate) fn new(connector: Connector, id: SessionId) -> Self {
        Self { connector, id, stream: None, input: Vec::new(), scratch: Vec::new() }
    }

    fn stream(&mut self) -> io::Result<&mut UnixStream> {
        if self.stream.is_none() {
            let mut stream = self.connector.connect()?;
            stream.set_write_timeout(Some(SEND_TIMEOUT))?;
            let mut open = Vec::new();
            encode_frame(&Up::<()>::Open(self.id), &mut open);
            stream.write_all(&open)?;
            self.stream = Some(stream);
        }
        Ok(self.stream.as_mut().expect("just connected"))
    }
}

impl<H: Hub> HubLink<H> for RemoteLink {
    fn request(&mut self, _: Instant, request: H::Request) -> io::Result<()> {
        let mut frame = std::mem::take(&mut self.scratch);
        frame.clear();
        encode_frame(&Up::Request(request), &mut frame);
        let result = self.stream()?.write_all(&frame);
        self.scratch = frame;
        result
    }

    fn drain(&mut self, into: &mut Vec<H::Message>) -> io::Result<()> {
        let Some(stream) = &self.stream else { return Ok(()) };
        loop {
            let fd = stream.as_raw_fd();
            match read_appending(&mut self.input, |buf| Ok(recv(fd, buf, MsgFlags::MSG_DONTWAIT)?)) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        while let Some(frame) = decode_frame::<Down<H::Message>>(&mut self.input).map_err(io::Error::other)? {
            if let Down::Message(msg) = frame {
                into.push(msg);
            }
        }
        Ok(())
    }

    fn wake_fd(&self) -> Option<BorrowedFd<'_>> {
        self.stream.as_ref().map(|s| s.as_fd())
    }

    fn overflowed(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_read_appends_only_what_it_gave() {
        let mut input = b"ab".to_vec();
        assert_eq!(read_appending(&mut input, |buf| (&b"cd"[..]).read(buf)).unwrap(), 2);
        assert_eq!(input, b"abcd");
        let failed = read_appending(&mut input, |_| Err(io::ErrorKind::WouldBlock.into()));
        assert_eq!(failed.unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert_eq!(input, b"abcd");
    }

    #[test]
    fn frames_round_trip_in_pieces() {
        let mut buf = Vec::new();
        encode_frame(&Up::Request(42u64), &mut buf);
        encode_frame(&Up::<u64>::Open(SessionId(7)), &mut buf);
        let mut input = Vec::new();
        let mut got = Vec::new();
        for byte in buf {
            input.push(byte);
            while let Some(frame) = decode_frame::<Up<u64>>(&mut input).unwrap() {
                got.push(format!("{frame:?}"));
            }
        }
        assert_eq!(got, ["Request(42)", "Open(SessionId(7))"]);
    }

    #[test]
    fn oversized_frames_are_refused() {
        let mut buf = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        assert!(matches!(decode_frame::<Up<u64>>(&mut buf), Err(FrameError::Frame(_))));
    }

    proptest! {
        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut buf = bytes;
            while let Ok(Some(_)) = decode_frame::<Up<String>>(&mut buf) {}
        }
    }
}
