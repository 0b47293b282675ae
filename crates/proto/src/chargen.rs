//! Character generator (RFC 864): over TCP the server sends lines of 72 printable ASCII
//! characters until the client closes; each line starts one character further along the 95
//! printable characters, so line `n` is `(' ' + n mod 95)` onwards, wrapping, then CRLF. Over
//! UDP each datagram gets one datagram of up to 512 such characters (the RFC's "random number
//! between 0 and 512"; the length here is taken from the wall clock, since cores draw no global
//! randomness).
//!
//! The session queues [`BATCH`] bytes when the connection opens and again each time the driver
//! reports them sent (`handle_drained`): the peer's window paces the stream, and memory stays
//! bounded by one batch.

use std::time::{Instant, SystemTime};

use crate::{ConnInfo, DatagramService, NoHub, Nothing, Output, Service, Session};

/// Characters per line, CRLF excluded.
pub const LINE: usize = 72;
/// The printable ASCII characters the lines rotate through (`' '` to `'~'`).
const PRINTABLE: usize = 95;
/// Bytes queued per refill.
pub const BATCH: usize = 64 * 1024;

/// The chargen service.
#[derive(Clone, Copy, Debug, Default)]
pub struct Chargen;

/// Append line `n` (72 characters and CRLF) to `into`.
pub fn push_line(n: usize, into: &mut Vec<u8>) {
    let start = n % PRINTABLE;
    into.extend((0..LINE).map(|i| b' ' + ((start + i) % PRINTABLE) as u8));
    into.extend_from_slice(b"\r\n");
}

impl Service for Chargen {
    type Hub = NoHub;
    type Session = ChargenSession;

    fn name(&self) -> &'static str {
        "chargen"
    }

    fn new_session(&self, _: &ConnInfo, _: Instant) -> ChargenSession {
        ChargenSession { line: 0, batch: Vec::with_capacity(BATCH) }
    }

    fn new_hub(&self, _: Instant) -> NoHub {
        NoHub
    }
}

impl DatagramService for Chargen {
    fn name(&self) -> &'static str {
        "chargen"
    }

    fn handle_datagram(&self, wall: SystemTime, _: &[u8], reply: &mut Vec<u8>) -> bool {
        let len = wall.duration_since(SystemTime::UNIX_EPOCH).map_or(512, |d| d.subsec_nanos() as usize % 513);
        let mut line = 0;
        while reply.len() < len {
            push_line(line, reply);
            line += 1;
        }
        reply.truncate(len);
        true
    }
}

/// One chargen connection: the number of the next line.
#[derive(Debug)]
pub struct ChargenSession {
    line: usize,
    batch: Vec<u8>,
}

impl ChargenSession {
    fn refill(&mut self, out: &mut Output<Nothing>) {
        if out.is_closed() {
            return;
        }
        self.batch.clear();
        while self.batch.len() < BATCH {
            push_line(self.line, &mut self.batch);
            self.line = (self.line + 1) % PRINTABLE;
        }
        out.send(&self.batch);
    }
}

impl Session for ChargenSession {
    type Request = Nothing;
    type Message = Nothing;
    type Done = Nothing;

    fn handle_open(&mut self, _: Instant, out: &mut Output<Nothing>) {
        self.refill(out);
    }

    /// Whatever the client sends is thrown away (RFC 864).
    fn handle_input(&mut self, _: Instant, _: &[u8], _: &mut Output<Nothing>) {}

    fn handle_read_closed(&mut self, _: Instant, out: &mut Output<Nothing>) {
        out.close();
    }

    fn handle_message(&mut self, _: Instant, msg: Nothing, _: &mut Output<Nothing>) {
        match msg {}
    }

    fn handle_timeout(&mut self, _: Instant, _: &mut Output<Nothing>) {}

    fn handle_drained(&mut self, _: Instant, out: &mut Output<Nothing>) {
        self.refill(out);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SessionId;

    fn info() -> ConnInfo {
        ConnInfo { id: SessionId(1), peer: None, wall: SystemTime::UNIX_EPOCH, seed: 0 }
    }

    #[test]
    fn lines_rotate_through_the_printable_characters() {
        let mut out = Vec::new();
        push_line(0, &mut out);
        push_line(1, &mut out);
        push_line(94, &mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(&lines[0][..10], " !\"#$%&'()");
        assert_eq!(lines[1].as_bytes()[0], b'!');
        assert_eq!(lines[2].as_bytes()[..2], *b"~ ", "line 94 starts at the last character and wraps");
        assert!(lines[..3].iter().all(|l| l.len() == LINE));
    }

    #[test]
    fn refills_each_time_the_queue_drains() {
        let t0 = Instant::now();
        let mut s = Chargen.new_session(&info(), t0);
        let mut out = Output::new();
        s.handle_open(t0, &mut out);
        let first = out.pending_len();
        assert!(first >= BATCH as u64);
        assert_eq!(s.poll_timeout(), None, "no polling: the driver says when the queue drained");
        out.consume(out.pending().len());
        s.handle_drained(t0, &mut out);
        assert!(out.pending_len() >= BATCH as u64, "a drained queue is refilled");
        assert_eq!(out.pending()[0], b' ' + (first / 74 % 95) as u8, "the stream carries on where it was");
        s.handle_read_closed(t0, &mut out);
        assert!(out.is_closed());
    }

    #[test]
    fn datagram_answer_is_at_most_512_characters() {
        let mut reply = Vec::new();
        let wall = SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(300);
        assert!(Chargen.handle_datagram(wall, b"", &mut reply));
        assert_eq!(reply.len(), 300);
        assert_eq!(&reply[..3], b" !\"");
    }
}
