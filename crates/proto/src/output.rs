//! What a session hands back to its driver after every call.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

/// How loud a log line is; drivers map it onto their logger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Something went wrong with this connection.
    Error,
    /// The protocol's normal narration (the course's console lines).
    Info,
    /// Every event, for `-d 1`.
    Debug,
}

/// An effect a session cannot perform itself; the driver performs it in its own way.
#[derive(Debug, PartialEq, Eq)]
pub enum Action<R> {
    /// Send a request to the hub, the state shared by all sessions. Answers and pushes come
    /// back through `Session::handle_message`.
    Hub(R),
    /// Make a blocking call lasting this long (a stand-in for a disk read or a DNS lookup).
    /// Thread-based drivers block one thread; `event` and `green` block every connection
    /// unless they offload it to a worker pool.
    Block(Duration),
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

/// The buffer a driver keeps per connection and passes to every `Session::handle_*` call: bytes
/// and file slices to send, in order, then actions.
///
/// Invariant: nothing is appended once the write side is closed; once closed it stays closed.
/// Invariant: no segment is empty.
#[derive(Debug)]
pub struct Output<R> {
    segments: VecDeque<Segment>,
    /// A drained byte buffer kept for reuse.
    spare: Vec<u8>,
    actions: Vec<Action<R>>,
    closing: Closing,
}

impl<R> Default for Output<R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R> Output<R> {
    /// An empty, open output.
    pub fn new() -> Self {
        Self { segments: VecDeque::new(), spare: Vec::new(), actions: Vec::new(), closing: Closing::Open }
    }

    /// Queue bytes for the peer. Ignored once the write side is closed.
    pub fn send(&mut self, data: &[u8]) {
        if self.closing != Closing::Open || data.is_empty() {
            return;
        }
        if let Some(Segment::Bytes { buf, .. }) = self.segments.back_mut() {
            buf.extend_from_slice(data);
        } else {
            let mut buf = std::mem::take(&mut self.spare);
            buf.extend_from_slice(data);
            self.segments.push_back(Segment::Bytes { buf, sent: 0 });
        }
    }

    /// Queue `len` bytes of `file` from `offset`, after everything queued before. Ignored once
    /// the write side is closed.
    pub fn send_file(&mut self, file: Arc<File>, offset: u64, len: u64) {
        if self.closing == Closing::Open && len > 0 {
            self.segments.push_back(Segment::File(FileSlice { file, offset, len }));
        }
    }

    /// Queue an action for the driver.
    pub fn act(&mut self, action: Action<R>) {
        self.actions.push(action);
    }

    /// Queue a request for the hub.
    pub fn hub(&mut self, request: R) {
        self.act(Action::Hub(request));
    }

    /// Queue a log line.
    pub fn log(&mut self, level: Level, line: impl Into<String>) {
        self.act(Action::Log(level, line.into()));
    }

    /// After the pending bytes, close the connection.
    pub fn close(&mut self) {
        self.closing = Closing::Both;
    }

    /// After the pending bytes, shut down the write side (a half-close); input may go on.
    pub fn close_write(&mut self) {
        self.closing = self.closing.max(Closing::Write);
    }

    /// Whether the session wants no more input: the driver closes once the bytes are sent.
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

    /// Whether more follows the front segment already (a file after its response head): a
    /// driver may then ask the kernel to hold a partial packet (`MSG_MORE`), as nginx's
    /// `tcp_nopush` does, so that head and body leave together.
    pub fn more_queued(&self) -> bool {
        self.segments.len() > 1
    }

    /// The bytes at the front of the queue (empty when a file slice is next or nothing is).
    /// Drivers that only ever serve byte protocols may use this; others use `poll_transmit`.
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
        if done && let Some(Segment::Bytes { mut buf, .. }) = self.segments.pop_front() {
            // Keep the allocation for the next `send`: echo-like sessions reuse one buffer.
            buf.clear();
            self.spare = buf;
        }
    }

    /// Move the queued actions into `into`, in order.
    pub fn take_actions(&mut self, into: &mut Vec<Action<R>>) {
        into.append(&mut self.actions);
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
