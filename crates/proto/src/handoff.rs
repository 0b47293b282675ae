//! A hand-off front: reads the start of each connection (its first line, or a whole HTTP
//! request head), then hands the connection and those bytes to another process, which answers
//! the client directly (the cluster switch's TCP hand-off, within one host).
//!
//! The front never answers and keeps nothing: once handed off, the connection is the receiving
//! process's alone. It reads at most [`Front::max_peek`] bytes; a start that does not end
//! within them or within the read timeout is refused with a close. The target is fixed, or
//! chosen per connection by a [`Pick`] that sees the start (the cluster switch, which routes by
//! the request's URL); with no target offered the connection is closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pick::{Lease, Pick, To};
use crate::{Action, ConnInfo, Deadline, HandOffTarget, Level, Limits, NoHub, Nothing, Output, Service, Session};

/// How much of a connection the front reads before it hands it off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peek {
    /// Up to and including the first `\n`.
    Line,
    /// Up to and including the blank line that ends an HTTP request head.
    Head,
}

/// The hand-off front.
#[derive(Clone, Debug)]
pub struct Front {
    /// Where connections are handed, fixed or picked per connection.
    pub to: To<HandOffTarget>,
    pub peek: Peek,
    /// The most bytes read before the hand-off. Default 8 KiB, a request head's usual limit.
    pub max_peek: usize,
    /// Close a connection whose start is not complete within this long. Default 10 s.
    pub read_timeout: Duration,
}

impl Front {
    /// A front handing every connection to `to`.
    pub fn new(to: HandOffTarget, peek: Peek) -> Self {
        Self::to(To::Fixed(to), peek)
    }

    /// A front handing each connection to the target `pick` chooses from its start.
    pub fn picking(pick: Arc<dyn Pick<HandOffTarget>>, peek: Peek) -> Self {
        Self::to(To::Picked(pick), peek)
    }

    fn to(to: To<HandOffTarget>, peek: Peek) -> Self {
        Self { to, peek, max_peek: 8 * 1024, read_timeout: Duration::from_secs(10) }
    }
}

impl Service for Front {
    type Hub = NoHub;
    type Session = FrontSession;

    fn name(&self) -> &'static str {
        "handoff"
    }

    fn new_session(&self, info: &ConnInfo, now: Instant) -> FrontSession {
        let limits = Limits { idle_timeout: self.read_timeout, read_timeout: self.read_timeout, max_request: 0 };
        FrontSession {
            front: self.clone(),
            peer: info.peer,
            buf: Vec::new(),
            deadline: Deadline::new(&limits, now),
            lease: None,
        }
    }

    fn new_hub(&self, _: Instant) -> NoHub {
        NoHub
    }
}

/// One connection until it is handed off.
#[derive(Debug)]
pub struct FrontSession {
    front: Front,
    peer: Option<SocketAddr>,
    buf: Vec<u8>,
    deadline: Deadline,
    /// The target chosen, held until the session ends (just after the hand-off).
    lease: Option<Box<dyn Lease<HandOffTarget>>>,
}

type Out = Output<Nothing>;

impl FrontSession {
    fn complete(&self) -> bool {
        match self.front.peek {
            Peek::Line => self.buf.contains(&b'\n'),
            Peek::Head => self.buf.windows(4).any(|w| w == b"\r\n\r\n") || self.buf.windows(2).any(|w| w == b"\n\n"),
        }
    }
}

impl Session for FrontSession {
    type Request = Nothing;
    type Message = Nothing;
    type Done = Nothing;

    fn handle_open(&mut self, _: Instant, _: &mut Out) {}

    fn handle_input(&mut self, now: Instant, data: &[u8], out: &mut Out) {
        self.buf.extend_from_slice(data);
        self.deadline.input(now, true);
        if self.complete() {
            self.lease = self.front.to.lease(self.peer, &self.buf, now);
            let Some(lease) = &self.lease else {
                out.log(Level::Error, "handoff: no target in rotation; closing");
                out.close();
                return;
            };
            let preamble = std::mem::take(&mut self.buf);
            out.act(Action::HandOff { to: lease.target().clone(), preamble });
        } else if self.buf.len() >= self.front.max_peek {
            out.log(Level::Debug, "handoff: no complete start within the peek limit; closing");
            out.close();
        }
    }

    fn handle_read_closed(&mut self, _: Instant, out: &mut Out) {
        out.close();
    }

    fn handle_message(&mut self, _: Instant, msg: Nothing, _: &mut Out) {
        match msg {}
    }

    fn handle_timeout(&mut self, now: Instant, out: &mut Out) {
        if self.deadline.expired(now).is_some() {
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

    fn session(peek: Peek) -> (FrontSession, Instant) {
        let t0 = Instant::now();
        let info = ConnInfo { id: SessionId(1), peer: None, wall: SystemTime::UNIX_EPOCH, seed: 0 };
        (Front::new(HandOffTarget::new("@x"), peek).new_session(&info, t0), t0)
    }

    #[test]
    fn hands_off_once_the_head_is_complete_with_every_byte_read() {
        let (mut s, t0) = session(Peek::Head);
        let mut out = Out::new();
        s.handle_input(t0, b"GET / HTTP/1.1\r\nHost: x\r\n", &mut out);
        assert!(out.poll_action().is_none());
        s.handle_input(t0, b"\r\nGET /next", &mut out);
        match out.poll_action() {
            Some(Action::HandOff { to, preamble }) => {
                assert_eq!(to, HandOffTarget::new("@x"));
                assert_eq!(preamble, b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /next");
            }
            other => panic!("{other:?}"),
        }
    }

    /// Hands to the target named by the request's path; has none for `/nowhere`.
    #[derive(Debug)]
    struct ByPath;

    #[derive(Debug)]
    struct Held(HandOffTarget);

    impl Pick<HandOffTarget> for ByPath {
        fn pick(&self, _: Option<SocketAddr>, head: &[u8], _: Instant) -> Option<Box<dyn Lease<HandOffTarget>>> {
            let path = String::from_utf8_lossy(head).split(' ').nth(1)?.to_owned();
            (path != "/nowhere").then(|| Box::new(Held(HandOffTarget::new(format!("@{path}")))) as Box<dyn Lease<_>>)
        }
    }

    impl Lease<HandOffTarget> for Held {
        fn target(&self) -> &HandOffTarget {
            &self.0
        }
        fn report(&mut self, _: Instant, _: bool) {}
    }

    #[test]
    fn a_picked_target_sees_the_head_and_none_closes() {
        let t0 = Instant::now();
        let info = ConnInfo { id: SessionId(1), peer: None, wall: SystemTime::UNIX_EPOCH, seed: 0 };
        let front = Front::picking(Arc::new(ByPath), Peek::Head);
        let mut s = front.new_session(&info, t0);
        let mut out = Out::new();
        s.handle_input(t0, b"GET /b HTTP/1.1\r\n\r\n", &mut out);
        assert!(matches!(out.poll_action(), Some(Action::HandOff { to, .. }) if to == HandOffTarget::new("@/b")));
        let mut s = front.new_session(&info, t0);
        let mut out = Out::new();
        s.handle_input(t0, b"GET /nowhere HTTP/1.1\r\n\r\n", &mut out);
        assert!(out.is_closed());
    }

    #[test]
    fn a_start_too_long_or_too_slow_is_closed() {
        let (mut s, t0) = session(Peek::Line);
        let mut out = Out::new();
        s.handle_input(t0, &[b'x'; 8 * 1024], &mut out);
        assert!(out.is_closed());
        let (mut s, t0) = session(Peek::Line);
        let mut out = Out::new();
        s.handle_input(t0, b"partial", &mut out);
        s.handle_timeout(s.poll_timeout().unwrap(), &mut out);
        assert!(out.is_closed());
    }
}
