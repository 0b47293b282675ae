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
//! The backend is fixed, or chosen per connection by a [`Pick`] (the cluster switch): then a
//! backend that refuses or does not answer within the connect timeout is reported and another
//! is asked for, up to [`CONNECT_RETRIES`] times (HAProxy's `retries 3` with `option
//! redispatch`); the client's early bytes wait meanwhile, since none reached a backend.
//!
//! A backend may ask for a PROXY protocol header ([`Upstream::proxy`]): it is written on the
//! backend connection before anything of the client's, naming the client's address and the
//! relay's own ([`Relay::local`]).
//!
//! Refusals: when no backend can be reached (or none is offered), the client's connection is
//! closed at once (it has no bytes of its own to explain why). A relay with no bytes moving
//! either way for the idle timeout is closed. At the server's shutdown a connection with a
//! backend, or on its way to one, is not cut: it ends when its sides do, or at the grace's end.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pick::{Failure, Lease, Pick, To};
use crate::proxy_header::{self, ProxyVersion};
use crate::{Action, ConnInfo, Level, NoHub, Nothing, Output, Service, Session, StreamId, Token};

/// Bytes taken from the client while the backend connection is being made (one read more at
/// most).
pub const EARLY_MAX: usize = 64 * 1024;

/// Further backends tried after a failed connect when the backend is picked (HAProxy's
/// `retries` default).
pub const CONNECT_RETRIES: u32 = 3;

/// A backend of the relay: where to connect, and whether it wants a PROXY protocol header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub proxy: Option<ProxyVersion>,
}

impl From<SocketAddr> for Upstream {
    fn from(addr: SocketAddr) -> Self {
        Upstream { addr, proxy: None }
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.proxy {
            Some(version) => write!(f, "{} (PROXY {version})", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

/// The relay: where to, and its timeouts.
#[derive(Clone, Debug)]
pub struct Relay {
    /// The backend, fixed or picked per connection.
    pub backend: To<Upstream>,
    /// Give up on a backend that does not accept within this long. Default 5 s.
    pub connect_timeout: Duration,
    /// Close a relay that moved no byte either way for this long. Default 5 minutes.
    pub idle_timeout: Duration,
    /// The address clients reach the relay at: the destination a PROXY header names. Unset,
    /// the unspecified address of the client's family.
    pub local: Option<SocketAddr>,
}

impl Relay {
    /// A relay to `backend` with the default timeouts.
    pub fn new(backend: SocketAddr) -> Self {
        Self::to(To::Fixed(backend.into()))
    }

    /// A relay to a backend `pick` chooses for each connection, with the default timeouts.
    pub fn picking(pick: Arc<dyn Pick<Upstream>>) -> Self {
        Self::to(To::Picked(pick))
    }

    fn to(backend: To<Upstream>) -> Self {
        Self { backend, connect_timeout: Duration::from_secs(5), idle_timeout: Duration::from_secs(300), local: None }
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
            lease: None,
            attempts: 0,
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
    /// The backend being connected to or relayed to; dropped with the session.
    lease: Option<Box<dyn Lease<Upstream>>>,
    /// Connects tried so far.
    attempts: u32,
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
    /// Asks for a backend and connects to it; with none to be had, closes the client.
    fn connect(&mut self, now: Instant, out: &mut Out) {
        self.lease = self.relay.backend.lease(self.peer, b"", now);
        let Some(lease) = &self.lease else {
            out.log(Level::Error, format!("relay: {}: no backend in rotation", self.peer_name()));
            out.close();
            return;
        };
        out.connect(Token(u64::from(self.attempts)), lease.target().addr, self.relay.connect_timeout);
        self.attempts += 1;
        self.idle_at = now + self.relay.connect_timeout.max(self.relay.idle_timeout);
    }

    fn peer_name(&self) -> String {
        self.peer.map_or_else(|| "a client".to_owned(), |p| p.to_string())
    }

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

    fn handle_open(&mut self, now: Instant, out: &mut Out) {
        self.connect(now, out);
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

    /// A connection that has a backend, or is being connected to one, runs on until its sides
    /// end, within the server's grace: closing it would leave a client that already sent its
    /// request without an answer (a node reload replaces the switch under open connections).
    fn handle_shutdown(&mut self, _: Instant, out: &mut Out) {
        if self.lease.is_none() {
            out.close();
        }
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
        let peer = self.peer_name();
        let Some(lease) = self.lease.as_mut() else { return };
        lease.report(now, result.is_ok());
        let backend = match result {
            Ok(backend) => backend,
            Err(e) => {
                lease.failed(Failure::of_connect(e));
                out.log(Level::Error, format!("relay: {peer}: backend {}: {e}", lease.target()));
                if self.relay.backend.can_retry() && self.attempts <= CONNECT_RETRIES {
                    self.connect(now, out);
                } else {
                    out.close();
                }
                return;
            }
        };
        lease.connected();
        self.backend = Some(backend);
        self.idle_at = now + self.relay.idle_timeout;
        let early = std::mem::take(&mut self.early);
        lease.moved(early.len() as u64, 0);
        match lease.target().proxy {
            Some(version) => {
                let local = self.relay.local.unwrap_or_else(|| match self.peer {
                    Some(SocketAddr::V6(_)) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
                    _ => SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0)),
                });
                // One write: the header and the client's first bytes in one segment.
                let mut first = proxy_header::encode(version, self.peer, local);
                first.extend_from_slice(&early);
                out.send_on(backend, &first);
            }
            None => out.send_on(backend, &early),
        }
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

    fn handle_spliced(&mut self, now: Instant, from: StreamId, to: StreamId, moved: u64, ended: bool, out: &mut Out) {
        self.idle_at = now + self.relay.idle_timeout;
        if let Some(lease) = self.lease.as_mut() {
            let (to_backend, from_backend) = if from == StreamId::CLIENT { (moved, 0) } else { (0, moved) };
            lease.moved(to_backend, from_backend);
        }
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
    fn a_shutdown_lets_a_connection_on_its_way_to_a_backend_through() {
        let (mut s, t0) = session();
        let mut out = Out::new();
        s.handle_open(t0, &mut out);
        s.handle_input(t0, b"GET / HTTP/1.1\r\n\r\n", &mut out);
        s.handle_shutdown(t0, &mut out);
        assert!(!out.is_closed(), "the request already sent still goes to a backend");
        out.add_stream(StreamId(1));
        s.handle_connected(t0, Token(0), Ok(StreamId(1)), &mut out);
        assert_eq!(out.outbox(StreamId(1)).unwrap().pending(), b"GET / HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn an_unreachable_backend_closes_the_client() {
        let (mut s, t0) = session();
        let mut out = Out::new();
        s.handle_open(t0, &mut out);
        s.handle_connected(t0, Token(0), Err(std::io::ErrorKind::ConnectionRefused), &mut out);
        assert!(out.is_closed());
    }

    /// Offers the backends in turn; remembers every report and release.
    #[derive(Debug, Default)]
    struct InTurn {
        offers: std::sync::Mutex<Vec<SocketAddr>>,
        log: Arc<std::sync::Mutex<Vec<String>>>,
    }

    #[derive(Debug)]
    struct Held(Upstream, Arc<std::sync::Mutex<Vec<String>>>);

    impl Pick<Upstream> for InTurn {
        fn pick(&self, _: Option<SocketAddr>, _: &[u8], _: Instant) -> Option<Box<dyn Lease<Upstream>>> {
            let addr = self.offers.lock().unwrap().pop()?;
            Some(Box::new(Held(addr.into(), self.log.clone())))
        }
    }

    impl Lease<Upstream> for Held {
        fn target(&self) -> &Upstream {
            &self.0
        }
        fn report(&mut self, _: Instant, ok: bool) {
            self.1.lock().unwrap().push(format!("{} {ok}", self.0.addr.port()));
        }
    }

    impl Drop for Held {
        fn drop(&mut self) {
            self.1.lock().unwrap().push(format!("{} released", self.0.addr.port()));
        }
    }

    fn picking(offers: &[u16]) -> (RelaySession, Arc<std::sync::Mutex<Vec<String>>>, Instant) {
        let offers = offers.iter().rev().map(|p| SocketAddr::from(([127, 0, 0, 1], *p))).collect();
        let pick = InTurn { offers: std::sync::Mutex::new(offers), log: Arc::default() };
        let log = pick.log.clone();
        let t0 = Instant::now();
        let info = ConnInfo { id: SessionId(1), peer: None, wall: SystemTime::UNIX_EPOCH, seed: 0 };
        (Relay::picking(Arc::new(pick)).new_session(&info, t0), log, t0)
    }

    #[test]
    fn a_picked_backend_that_refuses_is_reported_and_another_is_tried() {
        let (mut s, log, t0) = picking(&[1, 2]);
        let mut out = Out::new();
        s.handle_open(t0, &mut out);
        s.handle_input(t0, b"early", &mut out);
        assert!(matches!(out.poll_action(), Some(Action::Connect { token: Token(0), addr, .. }) if addr.port() == 1));
        s.handle_connected(t0, Token(0), Err(std::io::ErrorKind::ConnectionRefused), &mut out);
        assert!(!out.is_closed());
        assert!(matches!(out.poll_action(), Some(Action::Log(..))));
        assert!(matches!(out.poll_action(), Some(Action::Connect { token: Token(1), addr, .. }) if addr.port() == 2));
        out.add_stream(StreamId(2));
        s.handle_connected(t0, Token(1), Ok(StreamId(2)), &mut out);
        assert_eq!(out.outbox(StreamId(2)).unwrap().pending(), b"early", "nothing lost on the way");
        drop(s);
        assert_eq!(*log.lock().unwrap(), ["1 false", "1 released", "2 true", "2 released"]);
    }

    #[test]
    fn with_no_backend_to_pick_the_client_is_closed() {
        let (mut s, _, t0) = picking(&[1]);
        let mut out = Out::new();
        s.handle_open(t0, &mut out);
        for attempt in 0..=CONNECT_RETRIES {
            s.handle_connected(t0, Token(u64::from(attempt)), Err(std::io::ErrorKind::ConnectionRefused), &mut out);
        }
        assert!(out.is_closed());
    }

    #[test]
    fn a_backend_that_asks_for_it_gets_a_proxy_header_before_the_clients_bytes() {
        let t0 = Instant::now();
        let peer: SocketAddr = "127.0.0.5:40000".parse().unwrap();
        let info = ConnInfo { id: SessionId(1), peer: Some(peer), wall: SystemTime::UNIX_EPOCH, seed: 0 };
        let upstream = Upstream { addr: "127.0.0.1:9".parse().unwrap(), proxy: Some(ProxyVersion::V1) };
        let mut relay = Relay::to(To::Fixed(upstream));
        relay.local = Some("127.0.0.1:8080".parse().unwrap());
        let mut s = relay.new_session(&info, t0);
        let mut out = Out::new();
        s.handle_open(t0, &mut out);
        s.handle_input(t0, b"early", &mut out);
        out.add_stream(StreamId(1));
        s.handle_connected(t0, Token(0), Ok(StreamId(1)), &mut out);
        assert_eq!(out.outbox(StreamId(1)).unwrap().pending(), b"PROXY TCP4 127.0.0.5 127.0.0.1 40000 8080\r\nearly");
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
