//! A TCP relay: each client connection is joined to a new connection to one backend, and bytes
//! flow both ways until both sides have ended (the cluster switch's NAT-style relay, one backend).
//!
//! The session opens the backend connection ([`Output::connect`]) and then splices both
//! directions ([`Action::Splice`]): the driver moves the bytes in the kernel, through a pipe,
//! without handing them to the session. A half-close travels: once the client ends its
//! requests, the backend's write side is shut, and the other way round. What the client sends
//! before the backend answers the connect is kept and sent first; past [`EARLY_MAX`] bytes of
//! it the client is not read until the backend is there.
//!
//! Refusals: a backend that cannot be reached within the connect timeout closes the client's
//! connection at once (it has no bytes of its own to explain why). A relay with no bytes moving
//! either way for the idle timeout is closed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::{Action, ConnInfo, Level, NoHub, Nothing, Output, Service, Session, StreamId, Token};

/// Bytes taken from the client while the backend connection is being made (one read more at
/// most).
pub const EARLY_MAX: usize = 64 * 1024;

/// The relay: where to, and its timeouts.
#[derive(Clone, Debug)]
pub struct Relay {
    pub backend: SocketAddr,
    /// Give up on a backend that does not accept within this long. Default 5 s.
    pub connect_timeout: Duration,
    /// Close a relay that moved no byte either way for this long. Default 5 minutes.
    pub idle_timeout: Duration,
}

impl Relay {
    /// A relay to `backend` with the default timeouts.
    pub fn new(backend: SocketAddr) -> Self {
        Self { backend, connect_timeout: Duration::from_secs(5), idle_timeout: Duration::from_secs(300) }
    }
}

impl Service for Relay {
    type Hub = NoHub;
    type Session = RelaySession;

    fn name(&self) -> &'static str {
        "relay"
    }

    fn new_session(&self, info: &ConnInfo, now: Instant) -> RelaySession {
        RelaySession {
            relay: self.clone(),
            peer: info.peer,
            backend: None,
            early: Vec::new(),
            client_done: false,
            backend_done: false,
            client_eof: false,
            idle_at: now + self.connect_timeout.max(self.idle_timeout),
        }
    }

    fn new_hub(&self, _: Instant) -> NoHub {
        NoHub
    }
}

/// One relayed connection.
#[derive(Debug)]
pub struct RelaySession {
    relay: Relay,
    peer: Option<SocketAddr>,
    /// The backend stream, once connected.
    backend: Option<StreamId>,
    /// What the client sent before the backend was connected.
    early: Vec<u8>,
    /// No more bytes will flow client → backend, and backend → client.
    client_done: bool,
    backend_done: bool,
    /// The client ended before the backend was connected.
    client_eof: bool,
    idle_at: Instant,
}

type Out = Output<Nothing>;

impl RelaySession {
    /// Both directions are over: close both sides.
    fn finish_if_done(&mut self, out: &mut Out) {
        if self.client_done && self.backend_done {
            if let Some(backend) = self.backend.and_then(|b| out.outbox_mut(b)) {
                backend.close();
            }
            out.close();
        }
    }
}

impl Session for RelaySession {
    type Request = Nothing;
    type Message = Nothing;
    type Done = Nothing;

    fn handle_open(&mut self, _: Instant, out: &mut Out) {
        out.connect(Token(0), self.relay.backend, self.relay.connect_timeout);
    }

    fn handle_input(&mut self, now: Instant, data: &[u8], _: &mut Out) {
        // Only before the backend is connected: afterwards the client's bytes are spliced.
        self.early.extend_from_slice(data);
        self.idle_at = now + self.relay.idle_timeout;
    }

    fn handle_read_closed(&mut self, _: Instant, out: &mut Out) {
        // Before the connect: the early bytes still go, then the backend's write side shuts.
        self.client_eof = true;
        if self.backend.is_none() && self.early.is_empty() {
            out.close();
        }
    }

    fn handle_message(&mut self, _: Instant, msg: Nothing, _: &mut Out) {
        match msg {}
    }

    fn handle_timeout(&mut self, now: Instant, out: &mut Out) {
        if now >= self.idle_at {
            out.log(Level::Debug, "relay: idle; closing");
            if let Some(backend) = self.backend.and_then(|b| out.outbox_mut(b)) {
                backend.close();
            }
            out.close();
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.idle_at)
    }

    fn wants_input(&self) -> bool {
        self.early.len() < EARLY_MAX
    }

    fn handle_connected(
        &mut self,
        now: Instant,
        _: Token,
        result: Result<StreamId, std::io::ErrorKind>,
        out: &mut Out,
    ) {
        let backend = match result {
            Ok(backend) => backend,
            Err(e) => {
                let peer = self.peer.map_or_else(|| "a client".to_owned(), |p| p.to_string());
                out.log(Level::Error, format!("relay: {peer}: backend {}: {e}", self.relay.backend));
                out.close();
                return;
            }
        };
        self.backend = Some(backend);
        self.idle_at = now + self.relay.idle_timeout;
        out.send_on(backend, &std::mem::take(&mut self.early));
        if self.client_eof {
            self.client_done = true;
            if let Some(b) = out.outbox_mut(backend) {
                b.close_write();
            }
        } else {
            out.act(Action::Splice { from: StreamId::CLIENT, to: backend, limit: None });
        }
        out.act(Action::Splice { from: backend, to: StreamId::CLIENT, limit: None });
    }

    fn handle_spliced(&mut self, now: Instant, from: StreamId, to: StreamId, _: u64, ended: bool, out: &mut Out) {
        self.idle_at = now + self.relay.idle_timeout;
        if !ended {
            return;
        }
        // The source ended: pass the half-close on to the other side.
        if let Some(dest) = out.outbox_mut(to) {
            dest.close_write();
        }
        if from == StreamId::CLIENT {
            self.client_done = true;
        } else {
            self.backend_done = true;
        }
        self.finish_if_done(out);
    }

    fn handle_stream_closed(&mut self, _: Instant, _: StreamId, out: &mut Out) {
        // The backend failed before or outside a splice: nothing more will come from it.
        self.backend_done = true;
        out.close_write();
        self.finish_if_done(out);
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::SessionId;

    fn session() -> (RelaySession, Instant) {
        let t0 = Instant::now();
        let info = ConnInfo { id: SessionId(1), peer: None, wall: SystemTime::UNIX_EPOCH, seed: 0 };
        (Relay::new("127.0.0.1:9".parse().unwrap()).new_session(&info, t0), t0)
    }

    #[test]
    fn connects_then_splices_both_ways_with_early_bytes_first() {
        let (mut s, t0) = session();
        let mut out = Out::new();
        s.handle_open(t0, &mut out);
        assert!(matches!(out.poll_action(), Some(Action::Connect { token: Token(0), .. })));
        s.handle_input(t0, b"early", &mut out);
        let backend = StreamId(1);
        out.add_stream(backend);
        s.handle_connected(t0, Token(0), Ok(backend), &mut out);
        assert_eq!(out.outbox(backend).unwrap().pending(), b"early");
        let splices: Vec<_> = std::iter::from_fn(|| out.poll_action())
            .map(|a| match a {
                Action::Splice { from, to, limit: None } => (from, to),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(splices, [(StreamId::CLIENT, backend), (backend, StreamId::CLIENT)]);
        // The client ends: the backend hears it; the backend ends: both close.
        s.handle_spliced(t0, StreamId::CLIENT, backend, 5, true, &mut out);
        assert!(out.outbox(backend).unwrap().is_write_closed() && !out.is_closed());
        s.handle_spliced(t0, backend, StreamId::CLIENT, 7, true, &mut out);
        assert!(out.is_closed() && out.outbox(backend).unwrap().is_closed());
    }

    #[test]
    fn an_unreachable_backend_closes_the_client() {
        let (mut s, t0) = session();
        let mut out = Out::new();
        s.handle_open(t0, &mut out);
        s.handle_connected(t0, Token(0), Err(std::io::ErrorKind::ConnectionRefused), &mut out);
        assert!(out.is_closed());
    }

    #[test]
    fn moving_bytes_keeps_a_relay_from_idling_out() {
        let (mut s, t0) = session();
        let mut out = Out::new();
        s.handle_open(t0, &mut out);
        out.add_stream(StreamId(1));
        s.handle_connected(t0, Token(0), Ok(StreamId(1)), &mut out);
        let later = t0 + Duration::from_secs(200);
        s.handle_spliced(later, StreamId(1), StreamId::CLIENT, 10, false, &mut out);
        assert_eq!(s.poll_timeout(), Some(later + Duration::from_secs(300)));
        s.handle_timeout(later + Duration::from_secs(300), &mut out);
        assert!(out.is_closed());
    }
}
