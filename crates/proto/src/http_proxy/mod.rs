//! An HTTP/1.1 reverse proxy session (the cluster switch's `http` mode): each request the
//! client sends on its connection goes to a backend picked for that request, over a backend
//! connection kept open for the next requests.
//!
//! Per request: the head is read (at most [`ProxySettings::max_head`] bytes within the client
//! timeout), checked and written again for the backend ([`head::request`]: hop-by-hop fields
//! out, `X-Forwarded-For` and `X-Forwarded-Proto` in); a [`Pick`] chooses the backend seeing
//! that head (so LARD and Maglev can key on the path); an idle connection to it that this
//! client connection already holds is reused, else (as [`Reuse`] allows) one that another
//! client connection left to the driver's idle pool ([`Output::reuse`]), else a new one is
//! opened ([`Output::connect`]). A client connection that ends leaves its idle backend
//! connections, each with its last answer read whole and kept alive by the backend, to that
//! pool ([`Output::park`]); a connection with an answer half read is closed.
//! The body follows as the client framed it (`Content-Length` or chunked), then the answer
//! comes back the same way ([`head::response`]), `Content-Length`, chunked or until the
//! backend closes. Bodies are not copied when they are long: what came with a head is passed
//! on, and the rest of a length, or of a chunk, longer than [`SPLICE_MIN`] is spliced in the
//! kernel ([`Action::Splice`] with a limit), so a client that reads slowly holds back the
//! backend through the socket buffers instead of filling this process's memory.
//!
//! Failures are answered: `502` when the backend refuses, resets, closes before answering or
//! sends something that is not HTTP; `503` (with `Retry-After`) when the pick offers no
//! backend; `504` when the backend is silent for the server timeout; `400`, `413`, `431` and
//! `505` for a request head that cannot be passed on, `408` for one that does not arrive in
//! time. A request that failed before any byte of an answer is sent again to another pick, up
//! to [`ProxySettings::retries`] times, when nothing of it had reached a backend (a refused
//! connect) or when it is idempotent and has no body; every failure but a reused connection's
//! close (the usual keep-alive race) is reported to the lease, for outlier ejection.
//!
//! A WebSocket handshake (`Connection: Upgrade`, `Upgrade: websocket`) is passed on with those
//! fields; when the backend answers `101 Switching Protocols`, the answer goes to the client and
//! from then on the two connections are a tunnel: both directions spliced, half-closes passed
//! on as the relay does, until both sides have ended or the tunnel has been idle for
//! [`ProxySettings::tunnel_timeout`]. Any other answer goes on as HTTP.

pub mod chunked;
pub mod head;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::chunked::Chunked;
use self::head::{Body, Request};
use crate::pick::{Failure, Lease, Pick, To};
use crate::{Action, ConnInfo, Level, NoHub, Nothing, Output, Service, Session, StreamId, Token};

/// A body longer than this beyond what arrived with its head is spliced, not copied; so at most
/// this much of one body waits in this process for a slow reader.
pub const SPLICE_MIN: u64 = 64 * 1024;

/// Backend connections one client connection keeps (busy or idle); past it the oldest idle one
/// is closed.
pub const MAX_BACKEND_CONNS: usize = 4;

/// Bytes of a chunked answer made of small chunks that may wait for a client that does not read
/// before the exchange is given up: the engine reads a backend whatever the client's backlog, so
/// this bounds the connection's memory.
pub const CHUNKED_BACKLOG: u64 = 1 << 20;

/// Picks asked for more in one retry when they offer a backend that already failed the request.
const REPICKS: usize = 4;

/// What the proxy does, shared by every connection.
#[derive(Debug)]
pub struct ProxySettings {
    /// Where each request goes.
    pub backend: To<SocketAddr>,
    /// A backend's time to accept a connection. Default 5 s.
    pub connect_timeout: Duration,
    /// The longest a backend may stay silent while a request waits on it (HAProxy's `timeout
    /// server`). Default 30 s.
    pub server_timeout: Duration,
    /// The longest a request head may take to arrive, and a kept-alive connection may wait for
    /// the next one (HAProxy's `timeout http-request`). Default 10 s.
    pub client_timeout: Duration,
    /// Further backends tried for a request that failed before its answer began. Default 3.
    pub retries: u32,
    /// The largest request or response head. Default 16 KiB.
    pub max_head: usize,
    /// The largest request body announced by `Content-Length`; `None`: any.
    pub max_body: Option<u64>,
    /// The longest an upgraded (WebSocket) connection may pass no byte either way (HAProxy's
    /// `timeout tunnel`). Default 1 hour.
    pub tunnel_timeout: Duration,
    /// Which requests may go over a backend connection another client connection left idle.
    /// Default [`Reuse::Safe`].
    pub reuse: Reuse,
}

/// When a request may go over an idle backend connection that another client connection gave
/// up to the driver (`Action::Park` when a client connection ends; `Action::Reuse`), HAProxy's
/// `http-reuse`. A client connection always reuses its own idle connections first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reuse {
    /// Never: each client connection's backend connections close with it.
    Never,
    /// Every request but a client connection's first, which goes on a new connection: should an
    /// idle connection prove closed, a browser would not retry that first request itself.
    #[default]
    Safe,
    /// Any request, the first too.
    Always,
}

impl ProxySettings {
    /// Requests to backends `pick` chooses, with the default limits.
    pub fn picking(pick: Arc<dyn Pick<SocketAddr>>) -> Self {
        Self::to(To::Picked(pick))
    }

    /// Every request to `backend`, with the default limits.
    pub fn fixed(backend: SocketAddr) -> Self {
        Self::to(To::Fixed(backend))
    }

    fn to(backend: To<SocketAddr>) -> Self {
        Self {
            backend,
            connect_timeout: Duration::from_secs(5),
            server_timeout: Duration::from_secs(30),
            client_timeout: Duration::from_secs(10),
            retries: 3,
            max_head: 16 * 1024,
            max_body: None,
            tunnel_timeout: Duration::from_secs(3600),
            reuse: Reuse::Safe,
        }
    }
}

/// The proxy service.
#[derive(Clone, Debug)]
pub struct HttpProxy(Arc<ProxySettings>);

impl HttpProxy {
    pub fn new(settings: ProxySettings) -> Self {
        Self(Arc::new(settings))
    }
}

impl Service for HttpProxy {
    type Hub = NoHub;
    type Session = ProxySession;

    fn name(&self) -> &'static str {
        "http-proxy"
    }

    fn new_session(&self, info: &ConnInfo, now: Instant) -> ProxySession {
        ProxySession {
            settings: self.0.clone(),
            peer: info.peer,
            inbuf: Vec::new(),
            fwd: Vec::new(),
            held: Vec::new(),
            scratch: Vec::new(),
            conns: Vec::new(),
            exchange: None,
            next_token: 0,
            deadline: now + self.0.client_timeout,
            client_eof: false,
            closing: false,
            tunnel: None,
            served: false,
        }
    }

    fn new_hub(&self, _: Instant) -> NoHub {
        NoHub
    }

    fn refusal(&self) -> &'static [u8] {
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nRetry-After: 1\r\nConnection: close\r\n\r\nserver busy\n"
    }

    fn client_speaks_first(&self) -> bool {
        true
    }
}

/// A backend connection this client connection holds.
#[derive(Debug)]
struct Conn {
    stream: StreamId,
    addr: SocketAddr,
    busy: bool,
}

/// How far a body has gone through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Done,
    /// This many bytes of a `Content-Length` body still to pass.
    Left(u64),
    Chunked(Chunked),
    UntilClose,
}

impl Flow {
    fn of(body: Body) -> Self {
        match body {
            Body::None | Body::Length(0) => Flow::Done,
            Body::Length(n) => Flow::Left(n),
            Body::Chunked => Flow::Chunked(Chunked::new()),
            Body::UntilClose => Flow::UntilClose,
        }
    }

    /// `n` bytes went by in a splice.
    fn moved(&mut self, n: u64) {
        match self {
            Flow::Left(left) => {
                *left -= n.min(*left);
                if *left == 0 {
                    *self = Flow::Done;
                }
            }
            Flow::Chunked(c) => c.skip(n),
            Flow::Done | Flow::UntilClose => {}
        }
    }
}

/// An upgraded connection: the client and `backend` spliced both ways.
#[derive(Debug)]
struct Tunnel {
    backend: StreamId,
    /// Held while the tunnel lasts, so the pool counts it open.
    lease: Option<Box<dyn Lease<SocketAddr>>>,
    client_done: bool,
    backend_done: bool,
}

/// One request and its answer.
#[derive(Debug)]
struct Exchange {
    request: Request,
    lease: Option<Box<dyn Lease<SocketAddr>>>,
    /// Backends asked so far.
    tries: u32,
    /// Backends that failed this request (empty, and unallocated, on the usual path).
    failed: Vec<SocketAddr>,
    connecting: Option<Token>,
    backend: Option<StreamId>,
    /// The backend connection carried an earlier request.
    reused: bool,
    /// `connecting` asks the driver for an idle connection (`Action::Reuse`), not a new one.
    taking: bool,
    /// A reused connection failed this request: it is sent again on a new one.
    fresh_only: bool,
    /// The request head went to the backend.
    sent: bool,
    upload: Flow,
    /// Bytes the running splice of the request body still moves (0: none runs).
    upload_splice: u64,
    /// `None` until the answer's head has come.
    download: Option<Flow>,
    download_splice: u64,
    /// The backend connection may carry another request after this answer.
    reusable: bool,
    /// The client's connection goes on after this answer.
    keep_alive: bool,
}

/// One client connection.
#[derive(Debug)]
pub struct ProxySession {
    settings: Arc<ProxySettings>,
    peer: Option<SocketAddr>,
    /// Client bytes not passed on yet: a head arriving, a body waiting for its backend, the
    /// next pipelined request.
    inbuf: Vec<u8>,
    /// The request head as the backend gets it (kept until answered, for a retry).
    fwd: Vec<u8>,
    /// A response head arriving in pieces.
    held: Vec<u8>,
    /// A response head as the client gets it.
    scratch: Vec<u8>,
    conns: Vec<Conn>,
    exchange: Option<Exchange>,
    next_token: u64,
    /// No exchange: the client's (head or keep-alive) deadline; during one, the backend's.
    deadline: Instant,
    client_eof: bool,
    /// The server is stopping: close after the answer in hand.
    closing: bool,
    /// After a `101` to a WebSocket handshake: no more HTTP on this connection.
    tunnel: Option<Tunnel>,
    /// An answer was passed on whole: later requests may take idle connections others left.
    served: bool,
}

type Out = Output<Nothing>;

impl ProxySession {
    /// With no exchange in hand, starts the next request if its head is in.
    fn begin(&mut self, now: Instant, out: &mut Out) {
        if self.exchange.is_some() || self.tunnel.is_some() || out.is_closed() {
            return;
        }
        if self.inbuf.is_empty() {
            if self.client_eof || (self.closing && self.served) {
                self.close_all(out);
            }
            return;
        }
        let s = &self.settings;
        let peer = self.peer.map(|p| p.ip());
        match head::request(&self.inbuf, s.max_head, s.max_body, peer, &mut self.fwd) {
            Ok(None) if self.client_eof => out.close(),
            Ok(None) => {}
            Err(refusal) => {
                out.log(Level::Debug, format!("http: {}: request refused with {}", self.peer_name(), refusal.status()));
                self.answer(refusal.status(), false, out);
            }
            Ok(Some(request)) => {
                self.inbuf.drain(..request.len);
                self.exchange = Some(Exchange {
                    request,
                    lease: None,
                    tries: 0,
                    failed: Vec::new(),
                    connecting: None,
                    backend: None,
                    reused: false,
                    taking: false,
                    fresh_only: false,
                    sent: false,
                    upload: Flow::of(request.body),
                    upload_splice: 0,
                    download: None,
                    download_splice: 0,
                    reusable: false,
                    keep_alive: false,
                });
                self.dispatch(now, out);
            }
        }
    }

    /// Picks a backend for the request in hand and sends it there, on a connection held idle
    /// or a new one.
    fn dispatch(&mut self, now: Instant, out: &mut Out) {
        let Some(ex) = self.exchange.as_mut() else { return };
        ex.tries += 1;
        // A retry goes elsewhere when the pick can offer elsewhere (HAProxy's `redispatch`):
        // the pick is shared by every connection, so its next choice may be the failed one.
        let mut lease = self.settings.backend.lease(self.peer, &self.fwd, now);
        for _ in 0..REPICKS {
            match &lease {
                Some(l) if ex.failed.contains(l.target()) => {
                    drop(lease.take());
                    lease = self.settings.backend.lease(self.peer, &self.fwd, now);
                }
                _ => break,
            }
        }
        let Some(lease) = lease else {
            let keep = ex.upload == Flow::Done;
            out.log(Level::Error, format!("http: {}: no backend in rotation", self.peer_name()));
            self.exchange = None;
            self.answer(503, keep, out);
            self.next(now, out);
            return;
        };
        let addr = *lease.target();
        ex.lease = Some(lease);
        self.deadline = now + self.settings.server_timeout;
        if let Some(conn) = self.conns.iter_mut().find(|c| !c.busy && c.addr == addr) {
            conn.busy = true;
            let stream = conn.stream;
            ex.reused = true;
            self.send_request(now, stream, out);
            return;
        }
        if self.conns.len() >= MAX_BACKEND_CONNS
            && let Some(idle) = self.conns.iter().position(|c| !c.busy)
        {
            let conn = self.conns.remove(idle);
            Self::give_up(self.settings.reuse, conn, out);
        }
        let token = Token(self.next_token);
        self.next_token += 1;
        ex.connecting = Some(token);
        ex.reused = false;
        let shared = match self.settings.reuse {
            Reuse::Never => false,
            Reuse::Safe => self.served,
            Reuse::Always => true,
        };
        ex.taking = shared && !ex.fresh_only;
        if ex.taking {
            out.reuse(token, addr);
        } else {
            out.connect(token, addr, self.settings.connect_timeout);
        }
    }

    /// An idle backend connection this client connection no longer keeps: left to the driver
    /// for others to reuse, unless reuse is off.
    fn give_up(reuse: Reuse, conn: Conn, out: &mut Out) {
        if conn.busy || reuse == Reuse::Never {
            if let Some(o) = out.outbox_mut(conn.stream) {
                o.close();
            }
        } else {
            out.park(conn.stream, conn.addr);
        }
    }

    fn send_request(&mut self, now: Instant, stream: StreamId, out: &mut Out) {
        let Some(ex) = self.exchange.as_mut() else { return };
        ex.backend = Some(stream);
        ex.sent = true;
        if let Some(lease) = ex.lease.as_mut() {
            lease.moved(self.fwd.len() as u64, 0);
        }
        out.send_on(stream, &self.fwd);
        self.deadline = now + self.settings.server_timeout;
        self.pump_upload(out);
    }

    /// Passes on the request body the client has sent, splicing a long rest.
    fn pump_upload(&mut self, out: &mut Out) {
        let Some(ex) = self.exchange.as_mut() else { return };
        let Some(backend) = ex.backend.filter(|_| ex.sent && ex.upload_splice == 0) else { return };
        let take = match &mut ex.upload {
            Flow::Left(left) => (*left).min(self.inbuf.len() as u64) as usize,
            Flow::Chunked(c) => match c.scan(&self.inbuf) {
                Ok(n) => n,
                Err(_) => {
                    out.log(Level::Debug, format!("http: {}: malformed chunked request body", self.peer_name()));
                    self.close_all(out);
                    return;
                }
            },
            Flow::Done | Flow::UntilClose => return,
        };
        out.send_on(backend, &self.inbuf[..take]);
        if let Some(lease) = ex.lease.as_mut() {
            lease.moved(take as u64, 0);
        }
        self.inbuf.drain(..take);
        ex.upload.moved(if matches!(ex.upload, Flow::Left(_)) { take as u64 } else { 0 });
        if matches!(ex.upload, Flow::Chunked(c) if c.is_done()) {
            ex.upload = Flow::Done;
        }
        let rest = match ex.upload {
            Flow::Left(left) => left,
            Flow::Chunked(c) => c.data_left(),
            _ => 0,
        };
        if self.inbuf.is_empty() && rest > SPLICE_MIN {
            ex.upload_splice = rest;
            out.act(Action::Splice { from: StreamId::CLIENT, to: backend, limit: Some(rest) });
        }
    }

    /// Bytes of the answer from the exchange's backend.
    fn download(&mut self, now: Instant, stream: StreamId, data: &[u8], out: &mut Out) {
        let Some(ex) = self.exchange.as_mut() else { return };
        if ex.download.is_some() {
            self.download_body(now, stream, data, out);
            return;
        }
        // A head that came in pieces is put together in `held`; a whole one is read in place.
        let from_held = !self.held.is_empty();
        let mut held = std::mem::take(&mut self.held);
        if from_held {
            held.extend_from_slice(data);
        }
        let close = self.closing || self.client_eof;
        let mut at = 0;
        while let Some(ex) = self.exchange.as_mut() {
            let buf = if from_held { &held[at..] } else { &data[at..] };
            self.scratch.clear();
            match head::response(buf, self.settings.max_head, &ex.request, close, &mut self.scratch) {
                Ok(None) => {
                    if from_held {
                        held.drain(..at);
                    } else {
                        held.extend_from_slice(&data[at..]);
                    }
                    self.held = held;
                    return;
                }
                Err(e) => {
                    out.log(Level::Error, format!("http: {}: backend {stream:?}: {e}", self.peer_name()));
                    self.fail(now, 502, true, out);
                    break;
                }
                Ok(Some(r)) if r.upgrade => {
                    if let Some(lease) = ex.lease.as_mut() {
                        lease.report(now, true);
                    }
                    out.send(&self.scratch);
                    // Bytes the backend sent after its `101` are the new protocol's already.
                    out.send(if from_held { &held[at + r.len..] } else { &data[at + r.len..] });
                    self.open_tunnel(now, stream, out);
                    break;
                }
                Ok(Some(r)) if r.status < 200 => {
                    // 100 Continue and the like: passed on, and the final answer follows.
                    if !ex.request.http10 {
                        out.send(&self.scratch);
                    }
                    if buf.len() == r.len {
                        break;
                    }
                    at += r.len;
                }
                Ok(Some(r)) => {
                    if let Some(lease) = ex.lease.as_mut() {
                        lease.report(now, true);
                    }
                    out.send(&self.scratch);
                    ex.download = Some(Flow::of(r.body));
                    ex.reusable = r.reusable;
                    ex.keep_alive = r.keep_alive;
                    let rest = if from_held { &held[at + r.len..] } else { &data[at + r.len..] };
                    self.download_body(now, stream, rest, out);
                    break;
                }
            }
        }
        held.clear();
        self.held = held;
    }

    /// The backend switched protocols: the exchange ends, every other backend connection
    /// closes, what the client sent after its handshake goes on, and both directions are
    /// spliced from now on.
    fn open_tunnel(&mut self, now: Instant, backend: StreamId, out: &mut Out) {
        let lease = self.exchange.take().and_then(|ex| ex.lease);
        for conn in std::mem::take(&mut self.conns) {
            if conn.stream != backend
                && let Some(o) = out.outbox_mut(conn.stream)
            {
                o.close();
            }
        }
        if !self.inbuf.is_empty() {
            out.send_on(backend, &self.inbuf);
            self.inbuf.clear();
        }
        self.deadline = now + self.settings.tunnel_timeout;
        if self.client_eof {
            if let Some(b) = out.outbox_mut(backend) {
                b.close_write();
            }
        } else {
            out.act(Action::Splice { from: StreamId::CLIENT, to: backend, limit: None });
        }
        out.act(Action::Splice { from: backend, to: StreamId::CLIENT, limit: None });
        self.tunnel = Some(Tunnel { backend, lease, client_done: self.client_eof, backend_done: false });
    }

    /// One side of the tunnel ended (`from` the client, or the backend): the other side hears
    /// the half-close, and once both have ended the connection closes.
    fn tunnel_ended(&mut self, from_client: bool, out: &mut Out) {
        let Some(t) = self.tunnel.as_mut() else { return };
        if from_client {
            t.client_done = true;
            if let Some(b) = out.outbox_mut(t.backend) {
                b.close_write();
            }
        } else {
            t.backend_done = true;
            out.close_write();
        }
        if t.client_done && t.backend_done {
            self.close_all(out);
        }
    }

    /// Body bytes of the answer: passed on; a long rest spliced; the end finishes the exchange.
    fn download_body(&mut self, now: Instant, stream: StreamId, data: &[u8], out: &mut Out) {
        let Some(ex) = self.exchange.as_mut() else { return };
        let Some(flow) = ex.download.as_mut() else { return };
        let take = match flow {
            Flow::Left(left) => (*left).min(data.len() as u64) as usize,
            Flow::Chunked(c) => match c.scan(data) {
                Ok(n) => n,
                Err(_) => {
                    out.log(Level::Error, format!("http: {}: malformed chunked answer", self.peer_name()));
                    self.close_all(out);
                    return;
                }
            },
            Flow::UntilClose => data.len(),
            Flow::Done => 0,
        };
        out.send(&data[..take]);
        if take < data.len() {
            // Bytes after the answer: the backend cannot be trusted with another request.
            ex.reusable = false;
        }
        if let Flow::Left(_) = flow {
            flow.moved(take as u64);
        }
        if matches!(flow, Flow::Chunked(c) if c.is_done()) {
            *flow = Flow::Done;
        }
        let splice = match *flow {
            Flow::Done => return self.finish(now, out),
            Flow::Left(left) if left > SPLICE_MIN => Some(left),
            Flow::Chunked(c) if c.data_left() > SPLICE_MIN => Some(c.data_left()),
            Flow::UntilClose => Some(u64::MAX),
            _ => None,
        };
        match splice {
            Some(u64::MAX) => {
                ex.download_splice = u64::MAX;
                out.act(Action::Splice { from: stream, to: StreamId::CLIENT, limit: None });
            }
            Some(limit) => {
                ex.download_splice = limit;
                out.act(Action::Splice { from: stream, to: StreamId::CLIENT, limit: Some(limit) });
            }
            None if out.pending_len() > CHUNKED_BACKLOG => {
                out.log(Level::Error, format!("http: {}: the client does not read its answer", self.peer_name()));
                self.close_all(out);
            }
            None => {}
        }
    }

    /// The answer is all passed on: the backend connection goes back idle (or is closed), and
    /// the client's next request may start.
    fn finish(&mut self, now: Instant, out: &mut Out) {
        let Some(ex) = self.exchange.take() else { return };
        self.served = true;
        let uploaded = ex.upload == Flow::Done && ex.upload_splice == 0;
        if let Some(stream) = ex.backend {
            match self.conns.iter_mut().find(|c| c.stream == stream) {
                Some(conn) if ex.reusable && uploaded => conn.busy = false,
                _ => self.drop_conn(stream, out),
            }
        }
        if !ex.keep_alive || !uploaded {
            self.close_all(out);
            return;
        }
        self.next(now, out);
    }

    /// Between requests: the client's deadline runs, and a pipelined request starts.
    fn next(&mut self, now: Instant, out: &mut Out) {
        self.deadline = now + self.settings.client_timeout;
        self.begin(now, out);
    }

    /// The exchange's backend failed before its answer began (or, `bytes_seen`, sent a bad
    /// one): another backend is tried when the request may be sent again, else the client gets
    /// `status`.
    fn fail(&mut self, now: Instant, status: u16, bytes_seen: bool, out: &mut Out) {
        let Some(ex) = self.exchange.as_mut() else { return };
        if let Some(mut lease) = ex.lease.take() {
            ex.failed.push(*lease.target());
            // A reused connection closed unasked is the keep-alive race, not the backend's fault.
            if !(ex.reused && !bytes_seen && status == 502) {
                lease.report(now, false);
                // A failed connect was counted as what it was, where it failed.
                if status == 502 && ex.connecting.is_none() {
                    lease.failed(Failure::BadGateway);
                }
            }
        }
        if let Some(stream) = ex.backend.take() {
            self.drop_conn(stream, out);
        }
        let Some(ex) = self.exchange.as_mut() else { return };
        let resend = !ex.sent || ex.request.idempotent && ex.request.body == Body::None;
        // Another idle connection may have been closed as well: the next try is a new one.
        ex.fresh_only |= ex.reused;
        ex.connecting = None;
        ex.sent = false;
        if !bytes_seen && resend && ex.tries <= self.settings.retries {
            self.dispatch(now, out);
            return;
        }
        let keep = ex.upload == Flow::Done && ex.upload_splice == 0;
        self.exchange = None;
        self.answer(status, keep, out);
        self.next(now, out);
    }

    /// Answers the client with an error; `keep`: its connection may go on.
    fn answer(&mut self, status: u16, keep: bool, out: &mut Out) {
        let (reason, text) = match status {
            400 => ("Bad Request", "bad request\n"),
            408 => ("Request Timeout", "request head not received in time\n"),
            413 => ("Content Too Large", "request body too large\n"),
            431 => ("Request Header Fields Too Large", "request head too large\n"),
            502 => ("Bad Gateway", "the backend failed or sent an invalid answer\n"),
            503 => ("Service Unavailable", "no backend available\n"),
            504 => ("Gateway Timeout", "the backend did not answer in time\n"),
            505 => ("HTTP Version Not Supported", "only HTTP/1.0 and HTTP/1.1\n"),
            _ => ("Error", "error\n"),
        };
        let keep = keep && !self.closing && !self.client_eof;
        let mut head = String::with_capacity(160);
        let _ = write!(
            head,
            "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}{}\r\n{text}",
            text.len(),
            if status == 503 { "Retry-After: 1\r\n" } else { "" },
            if keep { "" } else { "Connection: close\r\n" },
        );
        out.send(head.as_bytes());
        if !keep {
            self.close_all(out);
        }
    }

    fn drop_conn(&mut self, stream: StreamId, out: &mut Out) {
        if let Some(o) = out.outbox_mut(stream) {
            o.close();
        }
        self.conns.retain(|c| c.stream != stream);
    }

    /// Ends the client connection (after what is queued for it) and every backend connection.
    fn close_all(&mut self, out: &mut Out) {
        if let Some(t) = self.tunnel.take()
            && let Some(o) = out.outbox_mut(t.backend)
        {
            o.close();
        }
        // An idle connection's last answer was read whole and the backend keeps it alive: it
        // may serve others. The one of an exchange in hand (an answer half read) closes.
        for conn in std::mem::take(&mut self.conns) {
            Self::give_up(self.settings.reuse, conn, out);
        }
        self.exchange = None;
        out.close();
    }

    fn peer_name(&self) -> String {
        self.peer.map_or_else(|| "a client".to_owned(), |p| p.to_string())
    }
}

impl Session for ProxySession {
    type Request = Nothing;
    type Message = Nothing;
    type Done = Nothing;

    fn handle_open(&mut self, now: Instant, _: &mut Out) {
        self.deadline = now + self.settings.client_timeout;
    }

    fn handle_input(&mut self, now: Instant, data: &[u8], out: &mut Out) {
        if let Some(t) = &self.tunnel {
            // Read before the splice began: passed on in order.
            out.send_on(t.backend, data);
            return;
        }
        self.inbuf.extend_from_slice(data);
        if self.exchange.is_some() {
            self.deadline = self.deadline.max(now + self.settings.server_timeout);
            self.pump_upload(out);
        } else {
            self.begin(now, out);
        }
    }

    fn handle_read_closed(&mut self, now: Instant, out: &mut Out) {
        self.client_eof = true;
        if self.tunnel.is_some() {
            self.tunnel_ended(true, out);
            return;
        }
        match &self.exchange {
            None => self.begin(now, out),
            // The request's body will never be whole: nothing to wait for.
            Some(ex) if ex.upload != Flow::Done || ex.upload_splice > 0 => self.close_all(out),
            Some(_) => {}
        }
    }

    fn handle_message(&mut self, _: Instant, msg: Nothing, _: &mut Out) {
        match msg {}
    }

    fn handle_timeout(&mut self, now: Instant, out: &mut Out) {
        if now < self.deadline {
            return;
        }
        if self.tunnel.is_some() {
            out.log(Level::Debug, format!("http: {}: the tunnel was idle; closing", self.peer_name()));
            self.close_all(out);
            return;
        }
        match &self.exchange {
            None if self.inbuf.is_empty() => self.close_all(out),
            None => self.answer(408, false, out),
            Some(ex) if ex.download.is_none() => {
                out.log(Level::Error, format!("http: {}: the backend did not answer in time", self.peer_name()));
                let keep = ex.upload == Flow::Done && ex.upload_splice == 0;
                if let Some(stream) = ex.backend {
                    self.drop_conn(stream, out);
                }
                if let Some(mut lease) = self.exchange.take().and_then(|ex| ex.lease) {
                    lease.report(now, false);
                    lease.failed(Failure::GatewayTimeout);
                }
                self.answer(504, keep, out);
                self.next(now, out);
            }
            Some(_) => {
                out.log(Level::Error, format!("http: {}: the answer stalled", self.peer_name()));
                self.close_all(out);
            }
        }
    }

    fn handle_shutdown(&mut self, _: Instant, out: &mut Out) {
        self.closing = true;
        // A request begun (its head partly in, or its answer on the way) is answered, with
        // `Connection: close`; only a kept-alive connection waiting for its next request closes
        // now, as clients expect of an idle one. A connection not yet served waits for its first
        // request (until the head deadline): its client has sent it, or is about to, and has no
        // reason to retry a connection that never answered. A tunnel has no answer to wait for:
        // it may run until the server's grace ends.
        if self.served && self.exchange.is_none() && self.tunnel.is_none() && self.inbuf.is_empty() {
            self.close_all(out);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.deadline)
    }

    fn wants_input(&self) -> bool {
        self.inbuf.len() < self.settings.max_head
    }

    fn handle_connected(
        &mut self,
        now: Instant,
        token: Token,
        result: Result<StreamId, std::io::ErrorKind>,
        out: &mut Out,
    ) {
        let ours = self.exchange.as_ref().is_some_and(|ex| ex.connecting == Some(token));
        match result {
            Ok(stream) if !ours => {
                // For a request already answered (timed out, or the client gone).
                if let Some(o) = out.outbox_mut(stream) {
                    o.close();
                }
            }
            Err(_) if !ours => {}
            Ok(stream) => {
                let ex = self.exchange.as_mut().expect("ours");
                ex.connecting = None;
                ex.reused = std::mem::take(&mut ex.taking);
                let lease = ex.lease.as_mut().expect("a lease while connecting");
                lease.connected();
                let addr = *lease.target();
                self.conns.push(Conn { stream, addr, busy: true });
                self.send_request(now, stream, out);
            }
            Err(_) if self.exchange.as_ref().is_some_and(|ex| ex.taking) => {
                // No idle connection to that backend is kept: a new one.
                let ex = self.exchange.as_mut().expect("ours");
                ex.taking = false;
                let addr = *ex.lease.as_ref().expect("a lease while connecting").target();
                ex.connecting = Some(Token(self.next_token));
                self.next_token += 1;
                out.connect(ex.connecting.expect("just set"), addr, self.settings.connect_timeout);
            }
            Err(e) => {
                out.log(Level::Error, format!("http: {}: connect: {e}", self.peer_name()));
                if let Some(lease) = self.exchange.as_mut().and_then(|ex| ex.lease.as_mut()) {
                    lease.failed(Failure::of_connect(e));
                }
                self.fail(now, 502, false, out);
            }
        }
    }

    fn handle_stream_input(&mut self, now: Instant, stream: StreamId, data: &[u8], out: &mut Out) {
        let current = self.exchange.as_ref().is_some_and(|ex| ex.backend == Some(stream));
        if current {
            self.deadline = now + self.settings.server_timeout;
            if let Some(lease) = self.exchange.as_mut().and_then(|ex| ex.lease.as_mut()) {
                lease.moved(0, data.len() as u64);
            }
            self.download(now, stream, data, out);
        } else {
            // An idle backend connection speaks unasked: it cannot be trusted with a request.
            self.drop_conn(stream, out);
        }
    }

    fn handle_stream_closed(&mut self, now: Instant, stream: StreamId, out: &mut Out) {
        if self.tunnel.as_ref().is_some_and(|t| t.backend == stream) {
            self.tunnel_ended(false, out);
            return;
        }
        let Some(ex) = self.exchange.as_mut().filter(|ex| ex.backend == Some(stream)) else {
            self.drop_conn(stream, out);
            return;
        };
        match ex.download {
            None => {
                let bytes_seen = !self.held.is_empty();
                self.held.clear();
                out.log(Level::Debug, format!("http: {}: the backend closed before answering", self.peer_name()));
                self.fail(now, 502, bytes_seen, out);
            }
            Some(Flow::UntilClose) => {
                ex.download = Some(Flow::Done);
                ex.reusable = false;
                self.finish(now, out);
            }
            Some(_) => {
                out.log(Level::Error, format!("http: {}: the backend closed mid-answer", self.peer_name()));
                self.close_all(out);
            }
        }
    }

    fn handle_spliced(&mut self, now: Instant, from: StreamId, _: StreamId, moved: u64, ended: bool, out: &mut Out) {
        if let Some(t) = self.tunnel.as_mut() {
            self.deadline = now + self.settings.tunnel_timeout;
            if let Some(lease) = t.lease.as_mut() {
                let (to_backend, from_backend) = if from == StreamId::CLIENT { (moved, 0) } else { (0, moved) };
                lease.moved(to_backend, from_backend);
            }
            if ended {
                self.tunnel_ended(from == StreamId::CLIENT, out);
            }
            return;
        }
        let Some(ex) = self.exchange.as_mut() else { return };
        self.deadline = now + self.settings.server_timeout;
        if let Some(lease) = ex.lease.as_mut() {
            let (to_backend, from_backend) = if from == StreamId::CLIENT { (moved, 0) } else { (0, moved) };
            lease.moved(to_backend, from_backend);
        }
        if from == StreamId::CLIENT {
            ex.upload.moved(moved);
            ex.upload_splice -= moved.min(ex.upload_splice);
            if !ended {
                return;
            }
            if ex.upload_splice > 0 {
                // The client ended (or a side failed) inside its body.
                self.close_all(out);
                return;
            }
            self.pump_upload(out);
            return;
        }
        let Some(flow) = ex.download.as_mut() else { return };
        flow.moved(moved);
        if ex.download_splice != u64::MAX {
            ex.download_splice -= moved.min(ex.download_splice);
        }
        if !ended {
            return;
        }
        let whole = ex.download_splice == 0;
        ex.download_splice = 0;
        let flow = *flow;
        match flow {
            Flow::Done if whole => self.finish(now, out),
            // The rest of the chunked body comes through the session again.
            Flow::Chunked(_) if whole => {}
            Flow::UntilClose => {
                ex.download = Some(Flow::Done);
                ex.reusable = false;
                self.finish(now, out);
            }
            _ => {
                out.log(Level::Error, format!("http: {}: the answer was cut short", self.peer_name()));
                self.close_all(out);
            }
        }
    }
}

#[cfg(test)]
mod tests;
