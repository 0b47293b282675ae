//! oob: Stevens' `oobrecv` (`tcprecv01` of UNP, the course's out-of-band demonstration) as a
//! served protocol. Each connection's normal bytes are reported as they arrive and each urgent
//! byte when the driver reaches it, in the lines the C program prints; nothing is ever sent.
//!
//! The lines are built here once: `warren serve oob` logs them per connection, and
//! `warren oob recv` prints them for its one connection.
//!
//! Only drivers that arm urgent data call [`Session::handle_urgent`]; elsewhere the kernel drops
//! the urgent byte unseen and only the normal bytes would be reported, so `warren serve oob`
//! refuses such models.

use std::time::Instant;

use crate::{ConnInfo, Deadline, Level, Limits, NoHub, Nothing, Output, Service, Session, Urgent};

/// What `oobrecv` prints when its `SIGURG` handler runs.
pub const SIGNAL_LINE: &str = "SIGURG received";
/// What `oobrecv` prints when the sender has closed.
pub const EOF_LINE: &str = "received EOF";

/// The line for normal bytes read from the stream: `read 3 bytes: 123`.
pub fn normal_line(bytes: &[u8]) -> String {
    format!("read {} bytes: {}", bytes.len(), String::from_utf8_lossy(bytes))
}

/// The line for bytes taken out of band: `read 1 OOB byte: 4`.
pub fn urgent_line(bytes: &[u8]) -> String {
    format!("read {} OOB byte: {}", bytes.len(), String::from_utf8_lossy(bytes))
}

/// The oob service: every connection a receiver.
#[derive(Clone, Debug, Default)]
pub struct Oob {
    /// Timeouts (`max_request` does not apply: there are no requests).
    pub limits: Limits,
}

impl Service for Oob {
    type Hub = NoHub;
    type Session = OobSession;

    fn name(&self) -> &'static str {
        "oob"
    }

    fn new_session(&self, info: &ConnInfo, now: Instant) -> OobSession {
        OobSession { deadline: Deadline::new(&self.limits, now), until_mark: false, peer: info.peer }
    }

    fn new_hub(&self, _: Instant) -> NoHub {
        NoHub
    }
}

/// One sender's connection.
#[derive(Debug)]
pub struct OobSession {
    deadline: Deadline,
    /// An urgent pointer was announced and its byte not reached yet: a repeated pointer for the
    /// same byte (Linux moves it as the byte nears) is not a new signal.
    until_mark: bool,
    peer: Option<std::net::SocketAddr>,
}

impl OobSession {
    fn signal(&mut self, out: &mut Output<Nothing>) {
        if !self.until_mark {
            self.until_mark = true;
            out.log(Level::Info, SIGNAL_LINE.to_string());
        }
    }
}

impl Session for OobSession {
    type Request = Nothing;
    type Message = Nothing;
    type Done = Nothing;

    fn handle_open(&mut self, _: Instant, out: &mut Output<Nothing>) {
        if let Some(peer) = self.peer {
            out.log(Level::Debug, format!("oob: connection from {peer}"));
        }
    }

    fn handle_input(&mut self, now: Instant, data: &[u8], out: &mut Output<Nothing>) {
        self.deadline.input(now, false);
        out.log(Level::Info, normal_line(data));
    }

    fn handle_urgent(&mut self, now: Instant, urgent: Urgent, out: &mut Output<Nothing>) {
        self.deadline.touch(now);
        match urgent {
            Urgent::Pointer => self.signal(out),
            Urgent::Mark(byte) => {
                // A mark always follows its pointer; say the signal first if it was not said.
                self.signal(out);
                self.until_mark = false;
                out.log(Level::Info, urgent_line(&[byte]));
            }
        }
    }

    fn handle_read_closed(&mut self, _: Instant, out: &mut Output<Nothing>) {
        out.log(Level::Info, EOF_LINE.to_string());
        out.close();
    }

    fn handle_message(&mut self, _: Instant, msg: Nothing, _: &mut Output<Nothing>) {
        match msg {}
    }

    fn handle_timeout(&mut self, now: Instant, out: &mut Output<Nothing>) {
        if let Some(why) = self.deadline.expired(now) {
            out.log(Level::Debug, format!("oob: closing: {why}"));
            out.close();
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.deadline.at())
    }
}

#[cfg(test)]
mod tests;
