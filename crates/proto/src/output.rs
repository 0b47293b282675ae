//! What a session hands back to its driver after every call.

use std::collections::VecDeque;
use std::fs::File;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::effect::{HandOffTarget, Job, StreamId, Token};
use crate::hub::Nothing;

/// How loud a log line is; drivers map it onto their logger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Something went wrong with this connection.
    Error,
    /// The protocol's normal narration (the course's console lines).
    Info,
    /// Every event, for `-d 1`.
    Debug,
    /// A request served, as one line of the access log (HTTP's, in nginx's `combined`
    /// format): the driver writes it to the access log, not to the narration.
    Access,
}

/// An effect a session cannot perform itself; the driver performs it in its own way.
#[derive(Debug)]
pub enum Action<R, D = Nothing> {
    /// Send a request to the hub, the state shared by all sessions. Answers and pushes come
    /// back through `Session::handle_message`.
    Hub(R),
    /// Run a job that may wait; its result comes back through `Session::handle_completion`
    /// with this token.
    Job(Token, Job<D>),
    /// Give up on the job with this token: a future is dropped at its next await, a blocking
    /// call runs to its end. Either way no completion comes back.
    Abort(Token),
    /// Open a TCP connection to `addr`, giving up after `timeout`; the outcome comes back
    /// through `Session::handle_connected` with this token.
    Connect { token: Token, addr: SocketAddr, timeout: Duration },
    /// Move bytes from stream `from` to stream `to` in the kernel (`splice(2)` through a pipe
    /// where the model allows it), without handing them to the session, until `from` ends or
    /// `limit` bytes have moved; then `Session::handle_spliced`. Meanwhile the session hears
    /// no input from `from` and must queue nothing on `to`.
    Splice { from: StreamId, to: StreamId, limit: Option<u64> },
    /// Hand the accepted connection, with `preamble` (the bytes already read from it that the
    /// receiver must see first), to the process listening at `to`. The session ends here: no
    /// more calls, nothing more is sent, and this process keeps no descriptor of it.
    HandOff { to: HandOffTarget, preamble: Vec<u8> },
    /// Hand stream `stream`, a connection to `addr` that may carry another request (every byte
    /// of the last answer read, the peer willing to go on), to the driver's idle connections,
    /// where any session of this server may take it back with [`Action::Reuse`]. The session
    /// hears nothing more of it. A driver that keeps no idle connections, or has enough to
    /// `addr`, closes it.
    Park { stream: StreamId, addr: SocketAddr },
    /// Take an idle connection to `addr` that the driver keeps ([`Action::Park`]): it comes
    /// back as a new stream through `Session::handle_connected` with this token, or, with none
    /// kept, as `Err(NotFound)`. A kept connection the peer closed meanwhile reads as ended.
    Reuse { token: Token, addr: SocketAddr },
    /// Write a line to the server's log.
    Log(Level, String),
}

/// How far the connection is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Closing {
    Open,
    /// After the pending bytes, shut down the write side; keep reading.
    Write,
    /// After the pending bytes, close the connection.
    Both,
}

/// A stretch of an open file to send as it is, without copying it through the session: the
/// driver hands it to `sendfile(2)` where its model allows.
#[derive(Clone, Debug)]
pub struct FileSlice {
    /// The open file.
    pub file: Arc<File>,
    /// Where the bytes still to send start.
    pub offset: u64,
    /// How many bytes are still to send.
    pub len: u64,
}

impl PartialEq for FileSlice {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.file, &other.file) && self.offset == other.offset && self.len == other.len
    }
}

impl Eq for FileSlice {}

/// The next thing a driver must send.
#[derive(Debug, PartialEq, Eq)]
pub enum Transmit<'a> {
    /// Bytes from the session.
    Bytes(&'a [u8]),
    /// Part of a file.
    File(&'a FileSlice),
}

#[derive(Debug)]
enum Segment {
    /// Bytes, of which the first `sent` are gone; sent lazily compacted so that sending is no
    /// memmove.
    Bytes {
        buf: Vec<u8>,
        sent: usize,
    },
    File(FileSlice),
}

/// What is queued for one stream: bytes and file slices, in order, and how far the stream is
/// to be closed once they are sent.
///
/// Invariant: nothing is appended once the write side is closed; once closed it stays closed.
/// Invariant: no segment is empty.
///
/// A drained queue holds no memory: an idle connection costs only its bookkeeping.
#[derive(Debug)]
pub struct Outbox {
    segments: VecDeque<Segment>,
    closing: Closing,
}

impl Default for Outbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Outbox {
    /// An empty, open outbox.
    pub const fn new() -> Self {
        Self { segments: VecDeque::new(), closing: Closing::Open }
    }

    /// Queue bytes. Ignored once the write side is closed.
    pub fn send(&mut self, data: &[u8]) {
        if self.closing != Closing::Open || data.is_empty() {
            return;
        }
        if let Some(Segment::Bytes { buf, .. }) = self.segments.back_mut() {
            buf.extend_from_slice(data);
        } else {
            self.segments.push_back(Segment::Bytes { buf: data.to_vec(), sent: 0 });
        }
    }

    /// Queue `len` bytes of `file` from `offset`, after everything queued before. Ignored once
    /// the write side is closed.
    pub fn send_file(&mut self, file: Arc<File>, offset: u64, len: u64) {
        if self.closing == Closing::Open && len > 0 {
            self.segments.push_back(Segment::File(FileSlice { file, offset, len }));
        }
    }

    /// After the pending bytes, close the stream.
    pub fn close(&mut self) {
        self.closing = Closing::Both;
    }

    /// After the pending bytes, shut down the write side (a half-close); input may go on.
    pub fn close_write(&mut self) {
        self.closing = self.closing.max(Closing::Write);
    }

    /// Whether the stream is to be closed once the bytes are sent.
    pub fn is_closed(&self) -> bool {
        self.closing == Closing::Both
    }

    /// Whether the write side is shut (or about to be, once the bytes are sent).
    pub fn is_write_closed(&self) -> bool {
        self.closing != Closing::Open
    }

    /// The next thing to send, if any.
    pub fn poll_transmit(&self) -> Option<Transmit<'_>> {
        self.segments.front().map(|segment| match segment {
            Segment::Bytes { buf, sent } => Transmit::Bytes(&buf[*sent..]),
            Segment::File(slice) => Transmit::File(slice),
        })
    }

    /// The second thing queued, and whether more follows it: a driver may send a response head
    /// and a small body in one call.
    pub fn poll_transmit_second(&self) -> Option<(Transmit<'_>, bool)> {
        let transmit = match self.segments.get(1)? {
            Segment::Bytes { buf, sent } => Transmit::Bytes(&buf[*sent..]),
            Segment::File(slice) => Transmit::File(slice),
        };
        Some((transmit, self.segments.len() > 2))
    }

    /// Whether more follows the front segment already (a file after its response head): a
    /// driver may then ask the kernel to hold a partial packet (`MSG_MORE`), as nginx's
    /// `tcp_nopush` does, so that head and body leave together.
    pub fn more_queued(&self) -> bool {
        self.segments.len() > 1
    }

    /// The bytes at the front of the queue (empty when a file slice is next or nothing is).
    pub fn pending(&self) -> &[u8] {
        match self.poll_transmit() {
            Some(Transmit::Bytes(bytes)) => bytes,
            _ => &[],
        }
    }

    /// How many bytes are still to send, files included.
    pub fn pending_len(&self) -> u64 {
        self.segments
            .iter()
            .map(|segment| match segment {
                Segment::Bytes { buf, sent } => (buf.len() - sent) as u64,
                Segment::File(slice) => slice.len,
            })
            .sum()
    }

    /// Whether everything queued has been sent.
    pub fn is_flushed(&self) -> bool {
        self.segments.is_empty()
    }

    /// Mark `n` bytes at the front (of the front segment only) as sent.
    pub fn consume(&mut self, n: usize) {
        let done = match self.segments.front_mut() {
            None => return,
            Some(Segment::Bytes { buf, sent }) => {
                *sent = (*sent + n).min(buf.len());
                *sent == buf.len()
            }
            Some(Segment::File(slice)) => {
                let n = (n as u64).min(slice.len);
                slice.offset += n;
                slice.len -= n;
                slice.len == 0
            }
        };
        if done {
            self.segments.pop_front();
            if self.segments.is_empty() {
                // An emptied deque keeps its ring: give it back, as an idle connection should.
                self.segments = VecDeque::new();
            }
        }
    }
}

/// The buffer a driver keeps per connection and passes to every `Session::handle_*` call: what
/// to send on the accepted connection and on any stream the session opened, in order, then
/// actions.
///
/// The methods without a stream in their name are about the accepted connection
/// ([`StreamId::CLIENT`]).
#[derive(Debug)]
pub struct Output<R, D = Nothing> {
    client: Outbox,
    /// The streams the session opened, by id; empty (and unallocated) for most sessions.
    streams: Vec<(StreamId, Outbox)>,
    actions: VecDeque<Action<R, D>>,
}

impl<R, D> Default for Output<R, D> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R, D> Output<R, D> {
    /// An empty, open output.
    pub const fn new() -> Self {
        Self { client: Outbox::new(), streams: Vec::new(), actions: VecDeque::new() }
    }

    /// Queue bytes for the peer. Ignored once the write side is closed.
    pub fn send(&mut self, data: &[u8]) {
        self.client.send(data);
    }

    /// Queue `len` bytes of `file` from `offset`, after everything queued before. Ignored once
    /// the write side is closed.
    pub fn send_file(&mut self, file: Arc<File>, offset: u64, len: u64) {
        self.client.send_file(file, offset, len);
    }

    /// After the pending bytes, close the connection.
    pub fn close(&mut self) {
        self.client.close();
    }

    /// After the pending bytes, shut down the write side (a half-close); input may go on.
    pub fn close_write(&mut self) {
        self.client.close_write();
    }

    /// Whether the session wants no more input: the driver closes once the bytes are sent.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Whether the write side is shut (or about to be, once the bytes are sent).
    pub fn is_write_closed(&self) -> bool {
        self.client.is_write_closed()
    }

    /// The next thing to send to the peer, if any.
    pub fn poll_transmit(&self) -> Option<Transmit<'_>> {
        self.client.poll_transmit()
    }

    /// See [`Outbox::more_queued`].
    pub fn more_queued(&self) -> bool {
        self.client.more_queued()
    }

    /// The bytes at the front of the peer's queue (empty when a file slice is next or nothing is).
    pub fn pending(&self) -> &[u8] {
        self.client.pending()
    }

    /// How many bytes are still to send to the peer, files included.
    pub fn pending_len(&self) -> u64 {
        self.client.pending_len()
    }

    /// Whether everything queued for the peer has been sent.
    pub fn is_flushed(&self) -> bool {
        self.client.is_flushed()
    }

    /// Mark `n` bytes at the front of the peer's queue as sent.
    pub fn consume(&mut self, n: usize) {
        self.client.consume(n);
    }

    /// The queue of `stream`, if the session has it.
    pub fn outbox(&self, stream: StreamId) -> Option<&Outbox> {
        if stream == StreamId::CLIENT {
            return Some(&self.client);
        }
        self.streams.iter().find(|(id, _)| *id == stream).map(|(_, outbox)| outbox)
    }

    /// The queue of `stream`, to send on it or close it; `None` if the session has no such stream.
    pub fn outbox_mut(&mut self, stream: StreamId) -> Option<&mut Outbox> {
        if stream == StreamId::CLIENT {
            return Some(&mut self.client);
        }
        self.streams.iter_mut().find(|(id, _)| *id == stream).map(|(_, outbox)| outbox)
    }

    /// Queue bytes on `stream`; ignored if the session has no such stream or its write side is
    /// closed.
    pub fn send_on(&mut self, stream: StreamId, data: &[u8]) {
        if let Some(outbox) = self.outbox_mut(stream) {
            outbox.send(data);
        }
    }

    /// Drivers: `stream` is connected; it gets an empty queue.
    pub fn add_stream(&mut self, stream: StreamId) {
        if self.outbox(stream).is_none() {
            self.streams.push((stream, Outbox::new()));
        }
    }

    /// Drivers: `stream` is gone; its queue goes with it.
    pub fn remove_stream(&mut self, stream: StreamId) {
        self.streams.retain(|(id, _)| *id != stream);
    }

    /// Every stream the session opened, in the order they connected.
    pub fn streams(&self) -> impl Iterator<Item = StreamId> + '_ {
        self.streams.iter().map(|(id, _)| *id)
    }

    /// Queue an action for the driver.
    pub fn act(&mut self, action: Action<R, D>) {
        self.actions.push_back(action);
    }

    /// Queue a request for the hub.
    pub fn hub(&mut self, request: R) {
        self.act(Action::Hub(request));
    }

    /// Start `job`; its result comes back with `token`.
    pub fn job(&mut self, token: Token, job: Job<D>) {
        self.act(Action::Job(token, job));
    }

    /// Connect to `addr`; the outcome comes back with `token`.
    pub fn connect(&mut self, token: Token, addr: SocketAddr, timeout: Duration) {
        self.act(Action::Connect { token, addr, timeout });
    }

    /// Give up stream `stream`, a reusable connection to `addr`, to the driver's idle ones.
    pub fn park(&mut self, stream: StreamId, addr: SocketAddr) {
        self.act(Action::Park { stream, addr });
    }

    /// Take an idle connection to `addr` kept by the driver; the outcome comes back with `token`.
    pub fn reuse(&mut self, token: Token, addr: SocketAddr) {
        self.act(Action::Reuse { token, addr });
    }

    /// Queue a log line.
    pub fn log(&mut self, level: Level, line: impl Into<String>) {
        self.act(Action::Log(level, line.into()));
    }

    /// The next action, in the order they were queued.
    pub fn poll_action(&mut self) -> Option<Action<R, D>> {
        self.actions.pop_front()
    }

    /// Move the queued actions into `into`, in order.
    pub fn take_actions(&mut self, into: &mut Vec<Action<R, D>>) {
        into.extend(self.actions.drain(..));
    }

    /// Whether actions are waiting.
    pub fn has_actions(&self) -> bool {
        !self.actions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_consume_and_close() {
        let mut out: Output<()> = Output::new();
        out.send(b"hello");
        out.consume(2);
        assert_eq!(out.pending(), b"llo");
        out.close_write();
        out.send(b"ignored");
        assert_eq!(out.pending(), b"llo");
        assert!(out.is_write_closed() && !out.is_closed());
        out.close();
        out.close_write();
        assert!(out.is_closed());
        out.consume(10);
        assert!(out.pending().is_empty());
        assert!(out.is_flushed());
    }

    #[test]
    fn files_keep_their_place_between_bytes() {
        let file = Arc::new(File::open("/dev/null").unwrap());
        let mut out: Output<()> = Output::new();
        out.send(b"head1");
        out.send_file(file.clone(), 10, 100);
        out.send(b"head2");
        out.send_file(file.clone(), 0, 0);
        assert_eq!(out.pending_len(), 110);
        assert_eq!(out.poll_transmit(), Some(Transmit::Bytes(b"head1")));
        out.consume(5);
        assert_eq!(out.pending(), b"", "a file is next");
        out.consume(60);
        assert_eq!(out.poll_transmit(), Some(Transmit::File(&FileSlice { file: file.clone(), offset: 70, len: 40 })));
        out.consume(40);
        assert_eq!(out.poll_transmit(), Some(Transmit::Bytes(b"head2")));
        out.consume(5);
        assert!(out.is_flushed() && out.poll_transmit().is_none());
    }
}
