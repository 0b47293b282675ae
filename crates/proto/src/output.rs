//! What a session hands back to its driver after every call.

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

/// The buffer a driver keeps per connection and passes to every `Session::handle_*` call.
///
/// Invariant: bytes are appended only while the output is not closed; once closed it stays
/// closed.
#[derive(Debug)]
pub struct Output<R> {
    bytes: Vec<u8>,
    /// Bytes of `bytes` already sent; compacted lazily so that sending is not a memmove.
    sent: usize,
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
        Self { bytes: Vec::new(), sent: 0, actions: Vec::new(), closing: Closing::Open }
    }

    /// Queue bytes for the peer. Ignored once the write side is closed.
    pub fn send(&mut self, data: &[u8]) {
        if self.closing == Closing::Open {
            if self.sent == self.bytes.len() {
                self.bytes.clear();
                self.sent = 0;
            }
            self.bytes.extend_from_slice(data);
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

    /// The bytes not yet sent.
    pub fn pending(&self) -> &[u8] {
        &self.bytes[self.sent..]
    }

    /// Mark `n` pending bytes as sent.
    pub fn consume(&mut self, n: usize) {
        self.sent = (self.sent + n).min(self.bytes.len());
        if self.sent == self.bytes.len() {
            self.bytes.clear();
            self.sent = 0;
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
    }
}
