//! The system calls of the engine's I/O step, on any socket a driver owns: reads, writes
//! (bytes with `write`, with `MSG_MORE` when a body or the FIN follows them, file slices with
//! `sendfile`), half-closes and splices through a pipe. All non-blocking.
//!
//! A tokio socket must learn when a call would block, or its readiness stays set and the task
//! spins: every call goes through [`Sock::attempt`], which tokio's sockets implement with
//! `try_io` and the others by making the call.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::fcntl::{OFlag, SpliceFFlags};
use warren_proto::{FileSlice, Transmit};

/// The most one `sendfile` or `splice` call is asked to move, so that one big file or one fast
/// stream cannot hold a loop.
const CHUNK: usize = 1 << 20;

/// Which way a call goes, for readiness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Way {
    Read,
    Write,
}

/// A socket the engine's I/O step may call on.
pub(crate) trait Sock: AsFd {
    /// Make `call`, a non-blocking system call on this socket going `way`.
    fn attempt<T>(&self, way: Way, call: impl FnOnce(BorrowedFd<'_>) -> io::Result<T>) -> io::Result<T> {
        let _ = way;
        call(self.as_fd())
    }
}

impl Sock for std::net::TcpStream {}
impl Sock for mio::net::TcpStream {}

/// tokio makes a call only once its reactor has reported readiness, and forgets readiness when
/// the call would block. A socket no event has been reported for yet (a new connection) is
/// still worth a try: the call is made anyway; if it would block, no readiness was recorded
/// that could go stale, and the next event wakes the task.
impl Sock for tokio::net::TcpStream {
    fn attempt<T>(&self, way: Way, call: impl FnOnce(BorrowedFd<'_>) -> io::Result<T>) -> io::Result<T> {
        let interest = match way {
            Way::Read => tokio::io::Interest::READABLE,
            Way::Write => tokio::io::Interest::WRITABLE,
        };
        let mut call = Some(call);
        match self.try_io(interest, || call.take().expect("called once")(self.as_fd())) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => match call {
                Some(call) => call(self.as_fd()),
                None => Err(e),
            },
            result => result,
        }
    }
}

/// Read into `buf`: `Ok(0)` at the end of the stream; `WouldBlock` when nothing is there.
pub(crate) fn read(sock: &impl Sock, buf: &mut [u8]) -> io::Result<usize> {
    sock.attempt(Way::Read, |fd| retry(|| nix::unistd::read(fd, buf).map_err(io::Error::from)))
}

/// Write the front of a queue: bytes (with `MSG_MORE` when `more` bytes or the FIN follow), or
/// part of a file.
pub(crate) fn write(sock: &impl Sock, transmit: Transmit<'_>, more: bool) -> io::Result<usize> {
    let n = sock.attempt(Way::Write, |fd| {
        retry(|| match transmit {
            Transmit::Bytes(bytes) => send(fd, bytes, more),
            Transmit::File(slice) => send_file(fd, slice),
        })
    })?;
    if n == 0 {
        return Err(io::ErrorKind::WriteZero.into());
    }
    Ok(n)
}

/// The longest file slice that [`write_with_body`] sends after its head by copying it.
pub(crate) const SMALL_BODY: u64 = 16 * 1024;

/// Send `head` and all of `body` in one call: the slice is read into `scratch` (at least its
/// length), and both leave together, with `MSG_MORE` when `more` follows them. For a small file
/// this costs less than a `send` and a `sendfile`: one trip through the TCP stack, and no pipe
/// between the page cache and the socket. `Ok(None)` when the file no longer holds the slice's
/// bytes (it shrank): the caller then sends the two apart, and `sendfile` reports the short file.
pub(crate) fn write_with_body(
    sock: &impl Sock,
    head: &[u8],
    body: &FileSlice,
    scratch: &mut [u8],
    more: bool,
) -> io::Result<Option<usize>> {
    use std::os::unix::fs::FileExt as _;
    let Ok(len) = usize::try_from(body.len) else { return Ok(None) };
    let scratch = &mut scratch[..len];
    match body.file.read_exact_at(scratch, body.offset) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let iov = [io::IoSlice::new(head), io::IoSlice::new(scratch)];
    let n = sock.attempt(Way::Write, |fd| {
        retry(|| nix::sys::socket::sendmsg::<()>(fd.as_raw_fd(), &iov, &[], flags(more), None).map_err(io::Error::from))
    })?;
    if n == 0 {
        return Err(io::ErrorKind::WriteZero.into());
    }
    Ok(Some(n))
}

/// Shut down the write side (a half-close).
pub(crate) fn shutdown_write(sock: &impl Sock) -> io::Result<()> {
    nix::sys::socket::shutdown(sock.as_fd().as_raw_fd(), nix::sys::socket::Shutdown::Write).map_err(io::Error::from)
}

fn retry<T>(mut call: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            result => return result,
        }
    }
}

/// Send `bytes`; with `more`, tell the kernel more follows at once, so that it waits for it
/// before it sends a short segment (nginx's `tcp_nopush`).
fn send(fd: BorrowedFd<'_>, bytes: &[u8], more: bool) -> io::Result<usize> {
    nix::sys::socket::send(fd.as_raw_fd(), bytes, flags(more)).map_err(io::Error::from)
}

/// No SIGPIPE; with `more`, `MSG_MORE`.
fn flags(more: bool) -> nix::sys::socket::MsgFlags {
    use nix::sys::socket::MsgFlags;
    // nix names no MSG_MORE; the bit is libc's.
    let more = if more { MsgFlags::from_bits_retain(nix::libc::MSG_MORE) } else { MsgFlags::empty() };
    more | MsgFlags::MSG_NOSIGNAL
}

/// One `sendfile` call for the front of `slice`.
fn send_file(fd: BorrowedFd<'_>, slice: &FileSlice) -> io::Result<usize> {
    let mut offset = i64::try_from(slice.offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let count = slice.len.min(CHUNK as u64) as usize;
    match nix::sys::sendfile::sendfile64(fd, &*slice.file, Some(&mut offset), count) {
        // The file shrank under us: say so rather than spin on a slice that cannot finish.
        Ok(0) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file ended before its announced length")),
        Ok(n) => Ok(n),
        Err(e) => Err(e.into()),
    }
}

/// Empty pipes kept per thread for the next splice (HAProxy keeps a pool of pipes too): a
/// relayed connection splices both ways, and making and closing its two pipes was 6 of the
/// 30 system calls a short relayed connection cost.
const SPARE_PIPES: usize = 32;

thread_local! {
    static SPARE: std::cell::RefCell<Vec<(OwnedFd, OwnedFd)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The kernel buffer a splice moves bytes through: what the source gave and the destination
/// has not taken yet stays in it.
#[derive(Debug)]
pub(crate) struct Pipe {
    /// The read and write ends; taken only by the drop that keeps an empty pipe for reuse.
    ends: Option<(OwnedFd, OwnedFd)>,
    /// Bytes in the pipe.
    held: usize,
}

impl Pipe {
    /// A spare empty pipe of this thread's, or a new one.
    pub(crate) fn new() -> io::Result<Self> {
        let ends = match SPARE.with(|spare| spare.borrow_mut().pop()) {
            Some(ends) => ends,
            None => nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?,
        };
        Ok(Self { ends: Some(ends), held: 0 })
    }

    /// Whether bytes wait in the pipe for the destination.
    pub(crate) fn holds(&self) -> bool {
        self.held > 0
    }

    fn read_end(&self) -> &OwnedFd {
        &self.ends.as_ref().expect("taken only on drop").0
    }

    fn write_end(&self) -> &OwnedFd {
        &self.ends.as_ref().expect("taken only on drop").1
    }
}

impl Drop for Pipe {
    /// An empty pipe goes back to the thread's spares; one still holding bytes (its
    /// destination went away) is closed with them.
    fn drop(&mut self) {
        if self.held > 0 {
            return;
        }
        if let Some(ends) = self.ends.take() {
            SPARE.with(|spare| {
                let mut spare = spare.borrow_mut();
                if spare.len() < SPARE_PIPES {
                    spare.push(ends);
                }
            });
        }
    }
}

/// What one round of a splice did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Spliced {
    /// Bytes that reached the destination.
    pub moved: u64,
    /// The source ended and the pipe is empty.
    pub eof: bool,
    /// The source would block (wait for it to be readable).
    pub source_blocked: bool,
    /// The destination would block (wait for it to be writable).
    pub dest_blocked: bool,
}

/// Move bytes from `from` to `to` through `pipe`, at most `limit`, until either side would
/// block, the source ends or the limit is reached.
pub(crate) fn splice(from: &impl Sock, to: &impl Sock, pipe: &mut Pipe, limit: Option<u64>) -> io::Result<Spliced> {
    let flags = SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE;
    let mut done = Spliced::default();
    loop {
        let room = limit.map_or(CHUNK as u64, |l| l.saturating_sub(done.moved + pipe.held as u64)).min(CHUNK as u64);
        if pipe.held == 0 && room > 0 && !done.eof {
            match from.attempt(Way::Read, |fd| {
                retry(|| {
                    nix::fcntl::splice(fd, None, pipe.write_end(), None, room as usize, flags).map_err(io::Error::from)
                })
            }) {
                Ok(0) => done.eof = true,
                Ok(n) => pipe.held += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => done.source_blocked = true,
                Err(e) => return Err(e),
            }
        }
        if pipe.held == 0 {
            return Ok(done);
        }
        match to.attempt(Way::Write, |fd| {
            retry(|| nix::fcntl::splice(pipe.read_end(), None, fd, None, pipe.held, flags).map_err(io::Error::from))
        }) {
            Ok(n) => {
                pipe.held -= n;
                done.moved += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                done.dest_blocked = true;
                return Ok(done);
            }
            Err(e) => return Err(e),
        }
        if done.source_blocked || limit.is_some_and(|l| done.moved >= l) {
            return Ok(done);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;

    use warren_proto::Outbox;

    use super::*;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    #[test]
    fn bytes_and_file_slices_arrive_in_order() {
        let path = std::env::temp_dir().join(format!("warren-io-{}", std::process::id()));
        std::fs::write(&path, b"0123456789").unwrap();
        let file = Arc::new(std::fs::File::open(&path).unwrap());
        std::fs::remove_file(&path).unwrap();

        let (client, server) = pair();
        let mut out = Outbox::new();
        out.send(b"<");
        out.send_file(file.clone(), 2, 5);
        out.send(b">");
        out.send_file(file, 0, 1);
        while let Some(t) = out.poll_transmit() {
            let n = write(&server, t, out.more_queued()).unwrap();
            out.consume(n);
        }
        shutdown_write(&server).unwrap();
        let mut got = String::new();
        (&client).read_to_string(&mut got).unwrap();
        assert_eq!(got, "<23456>0");
    }

    #[test]
    fn a_head_and_a_small_body_leave_in_one_call() {
        let path = std::env::temp_dir().join(format!("warren-io-body-{}", std::process::id()));
        std::fs::write(&path, b"0123456789").unwrap();
        let file = Arc::new(std::fs::File::open(&path).unwrap());
        std::fs::remove_file(&path).unwrap();

        let (client, server) = pair();
        let mut scratch = [0u8; 64];
        let body = FileSlice { file: file.clone(), offset: 3, len: 4 };
        assert_eq!(write_with_body(&server, b"head:", &body, &mut scratch, false).unwrap(), Some(9));
        // A slice past the file's end is not sent this way.
        let past = FileSlice { file, offset: 8, len: 4 };
        assert_eq!(write_with_body(&server, b"x", &past, &mut scratch, false).unwrap(), None);
        shutdown_write(&server).unwrap();
        let mut got = String::new();
        (&client).read_to_string(&mut got).unwrap();
        assert_eq!(got, "head:3456");
    }

    #[test]
    fn an_empty_pipe_is_reused_and_one_holding_bytes_is_not() {
        let ends = |p: &Pipe| p.read_end().as_raw_fd();
        let first = Pipe::new().unwrap();
        let fd = ends(&first);
        drop(first);
        let again = Pipe::new().unwrap();
        assert_eq!(ends(&again), fd, "the spare came back");
        let spares = || SPARE.with(|spare| spare.borrow().len());
        let mut full = again;
        full.held = 1;
        drop(full);
        assert_eq!(spares(), 0, "a pipe with bytes in it was closed, not kept");
    }

    #[test]
    fn splice_moves_up_to_the_limit_then_to_the_end() {
        let (mut a_peer, a) = pair();
        let (b, mut b_peer) = pair();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        let mut pipe = Pipe::new().unwrap();
        a_peer.write_all(b"hello world").unwrap();
        a_peer.shutdown(std::net::Shutdown::Write).unwrap();
        let mut moved = 0;
        // Bounded: the bytes are on loopback already, a few rounds at most.
        for _ in 0..100 {
            let done = splice(&a, &b, &mut pipe, Some(5 - moved)).unwrap();
            moved += done.moved;
            if moved == 5 {
                break;
            }
        }
        assert_eq!(moved, 5);
        let mut rest = 0;
        for _ in 0..100 {
            let done = splice(&a, &b, &mut pipe, None).unwrap();
            rest += done.moved;
            if done.eof {
                break;
            }
        }
        assert_eq!(rest, 6);
        drop(b);
        let mut got = String::new();
        b_peer.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hello world");
    }
}
