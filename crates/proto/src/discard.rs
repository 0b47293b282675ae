//! Discard (RFC 863): everything received is thrown away; nothing is ever sent.

use std::time::Instant;

use crate::{ConnInfo, Deadline, Level, Limits, NoHub, Nothing, Output, Service, Session};

/// The discard service.
#[derive(Clone, Debug, Default)]
pub struct Discard {
    /// Timeouts.
    pub limits: Limits,
}

impl Service for Discard {
    type Hub = NoHub;
    type Session = DiscardSession;

    fn name(&self) -> &'static str {
        "discard"
    }

    fn new_session(&self, _: &ConnInfo, now: Instant) -> DiscardSession {
        DiscardSession { deadline: Deadline::new(&self.limits, now) }
    }

    fn new_hub(&self, _: Instant) -> NoHub {
        NoHub
    }
}

/// One discard connection.
#[derive(Debug)]
pub struct DiscardSession {
    deadline: Deadline,
}

impl Session for DiscardSession {
    type Request = Nothing;
    type Message = Nothing;

    fn handle_open(&mut self, _: Instant, _: &mut Output<Nothing>) {}

    fn handle_input(&mut self, now: Instant, _: &[u8], _: &mut Output<Nothing>) {
        self.deadline.input(now, false);
    }

    fn handle_read_closed(&mut self, _: Instant, out: &mut Output<Nothing>) {
        out.close();
    }

    fn handle_message(&mut self, _: Instant, msg: Nothing, _: &mut Output<Nothing>) {
        match msg {}
    }

    fn handle_timeout(&mut self, now: Instant, out: &mut Output<Nothing>) {
        if let Some(why) = self.deadline.expired(now) {
            out.log(Level::Debug, format!("discard: closing: {why}"));
            out.close();
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.deadline.at())
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::SessionId;

    #[test]
    fn sends_nothing_and_closes_on_eof() {
        let t0 = Instant::now();
        let info = ConnInfo { id: SessionId(1), peer: None, wall: SystemTime::UNIX_EPOCH, seed: 0 };
        let mut s = Discard::default().new_session(&info, t0);
        let mut out = Output::new();
        s.handle_open(t0, &mut out);
        s.handle_input(t0, b"lots of data", &mut out);
        assert!(out.pending().is_empty());
        s.handle_read_closed(t0, &mut out);
        assert!(out.is_closed());
    }
}
