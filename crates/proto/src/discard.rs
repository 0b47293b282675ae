//! Discard (RFC 863): everything received is thrown away; nothing is ever sent.

use std::time::{Instant, SystemTime};

use crate::echo::EchoSession;
use crate::{ConnInfo, DatagramService, Limits, NoHub, Service};

/// The discard service.
#[derive(Clone, Debug, Default)]
pub struct Discard {
    /// Timeouts.
    pub limits: Limits,
}

impl Service for Discard {
    type Hub = NoHub;
    type Session = EchoSession;

    fn name(&self) -> &'static str {
        "discard"
    }

    fn new_session(&self, _: &ConnInfo, now: Instant) -> EchoSession {
        EchoSession::new(&self.limits, now, false)
    }

    fn new_hub(&self, _: Instant) -> NoHub {
        NoHub
    }
}

/// Over UDP every datagram is dropped unanswered.
impl DatagramService for Discard {
    fn name(&self) -> &'static str {
        "discard"
    }

    fn handle_datagram(&self, _: SystemTime, _: &[u8], _: &mut Vec<u8>) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Output, Session, SessionId};

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
