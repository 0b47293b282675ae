//! Echo (RFC 862): every byte received is sent back, over TCP and UDP.

use std::time::{Instant, SystemTime};

use crate::{ConnInfo, DatagramService, Deadline, Level, Limits, NoHub, Nothing, Output, Service, Session};

/// The echo service.
#[derive(Clone, Debug, Default)]
pub struct Echo {
    /// Timeouts; `max_request` does not apply (echo has no requests, only bytes).
    pub limits: Limits,
}

impl Service for Echo {
    type Hub = NoHub;
    type Session = EchoSession;

    fn name(&self) -> &'static str {
        "echo"
    }

    fn new_session(&self, _: &ConnInfo, now: Instant) -> EchoSession {
        EchoSession::new(&self.limits, now, true)
    }

    fn new_hub(&self, _: Instant) -> NoHub {
        NoHub
    }
}

impl DatagramService for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }

    fn handle_datagram(&self, _: SystemTime, input: &[u8], reply: &mut Vec<u8>) -> bool {
        reply.extend_from_slice(input);
        true
    }
}

/// One echo connection, or one discard connection: the same stream with the reflection off.
#[derive(Debug)]
pub struct EchoSession {
    deadline: Deadline,
    /// Whether input is sent back (echo) or dropped (discard).
    reflect: bool,
}

impl EchoSession {
    /// A session opened at `now`; `reflect` chooses echo over discard.
    pub fn new(limits: &Limits, now: Instant, reflect: bool) -> Self {
        Self { deadline: Deadline::new(limits, now), reflect }
    }
}

impl Session for EchoSession {
    type Request = Nothing;
    type Message = Nothing;
    type Done = Nothing;

    fn handle_open(&mut self, _: Instant, _: &mut Output<Nothing>) {}

    fn handle_input(&mut self, now: Instant, data: &[u8], out: &mut Output<Nothing>) {
        self.deadline.input(now, false);
        if self.reflect {
            out.send(data);
        }
    }

    fn handle_read_closed(&mut self, _: Instant, out: &mut Output<Nothing>) {
        out.close();
    }

    fn handle_message(&mut self, _: Instant, msg: Nothing, _: &mut Output<Nothing>) {
        match msg {}
    }

    fn handle_timeout(&mut self, now: Instant, out: &mut Output<Nothing>) {
        if let Some(why) = self.deadline.expired(now) {
            out.log(Level::Debug, format!("closing: {why}"));
            out.close();
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.deadline.at())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::SessionId;

    fn info() -> ConnInfo {
        ConnInfo { id: SessionId(1), peer: None, wall: SystemTime::UNIX_EPOCH, seed: 0 }
    }

    #[test]
    fn echoes_then_closes_after_half_close() {
        let t0 = Instant::now();
        let echo = Echo::default();
        let mut s = echo.new_session(&info(), t0);
        let mut out = Output::new();
        s.handle_open(t0, &mut out);
        s.handle_input(t0, b"hello", &mut out);
        s.handle_input(t0, b" world", &mut out);
        assert_eq!(out.pending(), b"hello world");
        s.handle_read_closed(t0, &mut out);
        assert!(out.is_closed());
        assert_eq!(out.pending(), b"hello world", "a half-close still delivers what was echoed");
    }

    #[test]
    fn idle_connection_is_closed_on_the_virtual_clock() {
        let t0 = Instant::now();
        let echo = Echo { limits: Limits { idle_timeout: Duration::from_secs(5), ..Limits::default() } };
        let mut s = echo.new_session(&info(), t0);
        let mut out = Output::new();
        s.handle_input(t0 + Duration::from_secs(3), b"x", &mut out);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(8)));
        s.handle_timeout(t0 + Duration::from_secs(7), &mut out);
        assert!(!out.is_closed(), "spurious timeouts are harmless");
        s.handle_timeout(t0 + Duration::from_secs(8), &mut out);
        assert!(out.is_closed());
    }

    #[test]
    fn datagram_is_echoed() {
        let mut reply = Vec::new();
        assert!(Echo::default().handle_datagram(SystemTime::UNIX_EPOCH, b"ping", &mut reply));
        assert_eq!(reply, b"ping");
    }
}
