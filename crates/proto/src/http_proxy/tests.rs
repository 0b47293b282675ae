//! The session driven by hand: a request reaches a picked backend over a connection that the
//! next request reuses, failures are retried or answered, timeouts answer 504 and 408.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::SystemTime;

use super::*;
use crate::SessionId;

/// Offers the backends in turn, round and round (none when empty); logs reports.
#[derive(Debug, Default)]
struct InTurn {
    ports: Vec<u16>,
    next: Mutex<usize>,
    log: Arc<Mutex<Vec<String>>>,
}

#[derive(Debug)]
struct Held(SocketAddr, Arc<Mutex<Vec<String>>>);

impl Pick<SocketAddr> for InTurn {
    fn pick(&self, _: Option<SocketAddr>, _: &[u8], _: Instant) -> Option<Box<dyn Lease<SocketAddr>>> {
        let mut next = self.next.lock().unwrap();
        let port = *self.ports.get(*next % self.ports.len().max(1))?;
        *next += 1;
        Some(Box::new(Held(SocketAddr::from(([127, 0, 0, 1], port)), self.log.clone())))
    }
}

impl Lease<SocketAddr> for Held {
    fn target(&self) -> &SocketAddr {
        &self.0
    }
    fn report(&mut self, _: Instant, ok: bool) {
        self.1.lock().unwrap().push(format!("{} {ok}", self.0.port()));
    }
}

struct Rig {
    s: ProxySession,
    out: Out,
    t0: Instant,
    log: Arc<Mutex<Vec<String>>>,
}

fn rig(ports: &[u16]) -> Rig {
    let pick = InTurn { ports: ports.to_vec(), ..InTurn::default() };
    let log = pick.log.clone();
    let mut settings = ProxySettings::picking(Arc::new(pick));
    settings.server_timeout = Duration::from_secs(3);
    let t0 = Instant::now();
    let info = ConnInfo {
        id: SessionId(1),
        peer: Some("10.1.2.3:999".parse().unwrap()),
        wall: SystemTime::UNIX_EPOCH,
        seed: 0,
    };
    let mut s = HttpProxy::new(settings).new_session(&info, t0);
    let mut out = Out::new();
    s.handle_open(t0, &mut out);
    Rig { s, out, t0, log }
}

impl Rig {
    /// The next connect asked for: its token and port. An idle connection asked for first is
    /// not there, as with a driver that keeps none.
    fn connect(&mut self) -> (Token, u16) {
        loop {
            match self.out.poll_action().expect("a connect") {
                Action::Connect { token, addr, .. } => return (token, addr.port()),
                Action::Reuse { token, .. } => {
                    self.s.handle_connected(self.t0, token, Err(std::io::ErrorKind::NotFound), &mut self.out);
                }
                Action::Log(..) => {}
                other => panic!("{other:?}"),
            }
        }
    }

    fn connected(&mut self, token: Token, stream: u32) -> StreamId {
        let stream = StreamId(stream);
        self.out.add_stream(stream);
        self.s.handle_connected(self.t0, token, Ok(stream), &mut self.out);
        stream
    }

    /// One whole exchange from a client's `GET` to backend `stream` on a new connection: the
    /// answer the client was sent, taken.
    fn exchange(&mut self, stream: u32) -> String {
        self.s.handle_input(self.t0, GET, &mut self.out);
        let (token, _) = self.connect();
        let b = self.connected(token, stream);
        self.sent(b);
        self.s.handle_stream_input(self.t0, b, OK, &mut self.out);
        self.sent(StreamId::CLIENT)
    }

    /// What was queued on `stream`, taken.
    fn sent(&mut self, stream: StreamId) -> String {
        let o = self.out.outbox_mut(stream).unwrap();
        let text = String::from_utf8(o.pending().to_vec()).unwrap();
        o.consume(text.len());
        text
    }
}

const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";

#[test]
fn requests_reach_their_picks_and_reuse_idle_backend_connections() {
    let mut r = rig(&[1, 2]);
    r.s.handle_input(r.t0, GET, &mut r.out);
    let (token, port) = r.connect();
    assert_eq!(port, 1);
    let b1 = r.connected(token, 1);
    let fwd = r.sent(b1);
    assert!(
        fwd.starts_with("GET /a HTTP/1.1\r\nHost: h\r\n") && fwd.contains("X-Forwarded-For: 10.1.2.3\r\n"),
        "{fwd}"
    );
    r.s.handle_stream_input(r.t0, b1, OK, &mut r.out);
    assert_eq!(r.sent(StreamId::CLIENT), "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi");
    // The second goes to backend 2, the third back over the first connection.
    r.s.handle_input(r.t0, GET, &mut r.out);
    let (token, port) = r.connect();
    assert_eq!(port, 2);
    let b2 = r.connected(token, 2);
    r.sent(b2);
    r.s.handle_stream_input(r.t0, b2, OK, &mut r.out);
    r.sent(StreamId::CLIENT);
    r.s.handle_input(r.t0, GET, &mut r.out);
    assert!(r.out.poll_action().is_none(), "no new connect");
    assert!(r.sent(b1).starts_with("GET /a "));
    assert!(!r.out.is_closed());
}

#[test]
fn a_refused_connect_is_retried_and_reported_then_answered_502() {
    let mut r = rig(&[1, 2]);
    r.s.handle_input(r.t0, GET, &mut r.out);
    for _ in 0..=3 {
        let (token, _) = r.connect();
        r.s.handle_connected(r.t0, token, Err(std::io::ErrorKind::ConnectionRefused), &mut r.out);
    }
    let answer = r.sent(StreamId::CLIENT);
    assert!(answer.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{answer}");
    assert!(!answer.contains("Connection: close") && !r.out.is_closed(), "nothing of the client's is lost");
    assert_eq!(*r.log.lock().unwrap(), ["1 false", "2 false", "1 false", "2 false"]);
}

#[test]
fn an_idempotent_request_whose_backend_closes_unanswered_goes_to_another() {
    let mut r = rig(&[1, 2]);
    r.s.handle_input(r.t0, GET, &mut r.out);
    let (token, _) = r.connect();
    let b1 = r.connected(token, 1);
    r.s.handle_stream_closed(r.t0, b1, &mut r.out);
    let (token, port) = r.connect();
    assert_eq!(port, 2);
    let b2 = r.connected(token, 2);
    assert!(r.sent(b2).starts_with("GET /a "));
    r.s.handle_stream_input(r.t0, b2, OK, &mut r.out);
    assert!(r.sent(StreamId::CLIENT).ends_with("hi"));
}

#[test]
fn a_post_whose_backend_closes_unanswered_is_answered_502() {
    let mut r = rig(&[1, 2]);
    r.s.handle_input(r.t0, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc", &mut r.out);
    let (token, _) = r.connect();
    let b1 = r.connected(token, 1);
    assert!(r.sent(b1).ends_with("\r\n\r\nabc"));
    r.s.handle_stream_closed(r.t0, b1, &mut r.out);
    assert!(r.sent(StreamId::CLIENT).starts_with("HTTP/1.1 502 "));
}

#[test]
fn no_backend_is_503_with_retry_after() {
    let mut r = rig(&[]);
    r.s.handle_input(r.t0, GET, &mut r.out);
    let answer = r.sent(StreamId::CLIENT);
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n") && answer.contains("Retry-After: 1\r\n"),
        "{answer}"
    );
}

#[test]
fn a_silent_backend_is_504_and_a_slow_head_408() {
    let mut r = rig(&[1]);
    r.s.handle_input(r.t0, GET, &mut r.out);
    let (token, _) = r.connect();
    r.connected(token, 1);
    let at = r.s.poll_timeout().unwrap();
    assert_eq!(at, r.t0 + Duration::from_secs(3));
    r.s.handle_timeout(at, &mut r.out);
    assert!(r.sent(StreamId::CLIENT).starts_with("HTTP/1.1 504 Gateway Timeout\r\n"));
    r.s.handle_input(at, b"GET / HTTP/1.1\r\n", &mut r.out);
    let at = r.s.poll_timeout().unwrap();
    assert_eq!(at, r.t0 + Duration::from_secs(13), "the client's 10 s from the last answer");
    r.s.handle_timeout(at, &mut r.out);
    assert!(r.sent(StreamId::CLIENT).starts_with("HTTP/1.1 408 "));
    assert!(r.out.is_closed());
}

#[test]
fn a_long_body_is_spliced_past_what_came_with_the_head() {
    let mut r = rig(&[1]);
    r.s.handle_input(r.t0, GET, &mut r.out);
    let (token, _) = r.connect();
    let b1 = r.connected(token, 1);
    r.sent(b1);
    r.s.handle_stream_input(r.t0, b1, b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nabc", &mut r.out);
    assert!(r.sent(StreamId::CLIENT).ends_with("\r\n\r\nabc"));
    match r.out.poll_action() {
        Some(Action::Splice { from, to: StreamId::CLIENT, limit: Some(999_997) }) => assert_eq!(from, b1),
        other => panic!("{other:?}"),
    }
    r.s.handle_spliced(r.t0, b1, StreamId::CLIENT, 999_997, true, &mut r.out);
    // Whole: the next request reuses the connection.
    r.s.handle_input(r.t0, GET, &mut r.out);
    assert!(r.sent(b1).starts_with("GET /a "));
}

#[test]
fn a_chunked_answer_passes_unchanged_in_pieces() {
    let mut r = rig(&[1]);
    r.s.handle_input(r.t0, GET, &mut r.out);
    let (token, _) = r.connect();
    let b1 = r.connected(token, 1);
    r.sent(b1);
    r.s.handle_stream_input(r.t0, b1, b"HTTP/1.1 200 OK\r\nTransfer-", &mut r.out);
    r.s.handle_stream_input(r.t0, b1, b"Encoding: chunked\r\n\r\n3\r\nabc\r\n", &mut r.out);
    r.s.handle_stream_input(r.t0, b1, b"0\r\n\r\n", &mut r.out);
    assert_eq!(r.sent(StreamId::CLIENT), "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
    r.s.handle_input(r.t0, GET, &mut r.out);
    assert!(r.sent(b1).starts_with("GET /a "), "the connection is reused");
}

#[test]
fn bad_heads_get_their_status_and_a_close() {
    for (raw, status) in [(&b"GET / HTTP/1.1\r\n\r\n"[..], "400"), (b"BAD\x01 / HTTP/1.1\r\n\r\n", "400")] {
        let mut r = rig(&[1]);
        r.s.handle_input(r.t0, raw, &mut r.out);
        let answer = r.sent(StreamId::CLIENT);
        assert!(answer.starts_with(&format!("HTTP/1.1 {status} ")) && answer.contains("Connection: close"), "{answer}");
        assert!(r.out.is_closed());
    }
    let mut r = rig(&[1]);
    r.s.handle_input(r.t0, &[b'a'; 16 * 1024], &mut r.out);
    assert!(r.sent(StreamId::CLIENT).starts_with("HTTP/1.1 431 "));
}

#[test]
fn a_websocket_101_turns_the_connection_into_a_tunnel_spliced_both_ways_until_both_end() {
    let mut r = rig(&[1]);
    let handshake = b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
    r.s.handle_input(r.t0, handshake, &mut r.out);
    let (token, _) = r.connect();
    let b1 = r.connected(token, 1);
    assert!(r.sent(b1).ends_with("Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"));
    // The backend's first bytes of the new protocol come with its 101: they go on after it.
    let switching = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nframe";
    r.s.handle_stream_input(r.t0, b1, switching, &mut r.out);
    assert_eq!(
        r.sent(StreamId::CLIENT),
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nframe"
    );
    let mut splices = Vec::new();
    while let Some(action) = r.out.poll_action() {
        if let Action::Splice { from, to, limit: None } = action {
            splices.push((from, to));
        }
    }
    assert_eq!(splices, [(StreamId::CLIENT, b1), (b1, StreamId::CLIENT)]);
    assert_eq!(*r.log.lock().unwrap(), ["1 true"]);
    // The client ends: the backend hears it; the backend ends: both close.
    r.s.handle_spliced(r.t0, StreamId::CLIENT, b1, 6, true, &mut r.out);
    assert!(r.out.outbox(b1).unwrap().is_write_closed() && !r.out.is_closed());
    r.s.handle_spliced(r.t0, b1, StreamId::CLIENT, 6, true, &mut r.out);
    assert!(r.out.is_closed() && r.out.outbox(b1).unwrap().is_closed());
}

#[test]
fn a_shutdown_answers_a_request_begun_or_a_first_one_awaited_and_closes_an_idle_kept_alive_connection() {
    let mut r = rig(&[1]);
    r.s.handle_input(r.t0, b"GET /a HTTP/1.1\r\n", &mut r.out);
    r.s.handle_shutdown(r.t0, &mut r.out);
    assert!(!r.out.is_closed(), "half a head in: the request is waited for");
    r.s.handle_input(r.t0, b"Host: h\r\n\r\n", &mut r.out);
    let (token, _) = r.connect();
    let b1 = r.connected(token, 1);
    assert!(r.sent(b1).starts_with("GET /a "));
    r.s.handle_stream_input(r.t0, b1, OK, &mut r.out);
    let answer = r.sent(StreamId::CLIENT);
    assert!(answer.contains("Connection: close\r\n") && answer.ends_with("hi"), "{answer}");
    assert!(r.out.is_closed());

    // A connection not yet served waits for its first request, and answers it with a close.
    let mut fresh = rig(&[1]);
    fresh.s.handle_shutdown(fresh.t0, &mut fresh.out);
    assert!(!fresh.out.is_closed(), "a new connection's first request is waited for");
    assert!(fresh.exchange(1).contains("Connection: close\r\n"));
    assert!(fresh.out.is_closed());

    // A kept-alive connection between requests closes at once.
    let mut idle = rig(&[1]);
    idle.exchange(1);
    assert!(!idle.out.is_closed(), "kept alive after its answer");
    idle.s.handle_shutdown(idle.t0, &mut idle.out);
    assert!(idle.out.is_closed(), "served and idle: closed at once");
}

/// The next action that is not a log line.
fn next_action(r: &mut Rig) -> Action<Nothing> {
    loop {
        match r.out.poll_action().expect("an action") {
            Action::Log(..) => {}
            other => return other,
        }
    }
}

#[test]
fn a_first_request_goes_on_a_new_connection_and_later_ones_may_take_an_idle_one() {
    let mut r = rig(&[1, 2]);
    r.s.handle_input(r.t0, GET, &mut r.out);
    assert!(matches!(next_action(&mut r), Action::Connect { .. }), "safe: the first request never reuses");
    let b1 = r.connected(Token(0), 1);
    r.sent(b1);
    r.s.handle_stream_input(r.t0, b1, OK, &mut r.out);
    r.sent(StreamId::CLIENT);
    // The second goes to backend 2: an idle connection is asked for, none is kept, so a new one.
    r.s.handle_input(r.t0, GET, &mut r.out);
    let token = match next_action(&mut r) {
        Action::Reuse { token, addr } if addr.port() == 2 => token,
        other => panic!("{other:?}"),
    };
    r.s.handle_connected(r.t0, token, Err(std::io::ErrorKind::NotFound), &mut r.out);
    let (token, port) = r.connect();
    assert_eq!(port, 2);
    let b2 = r.connected(token, 2);
    assert!(r.sent(b2).starts_with("GET /a "));
}

#[test]
fn a_reused_connection_closed_by_its_backend_is_replaced_by_a_new_one_unseen_by_the_client() {
    let mut r = rig(&[1]);
    r.s.handle_input(r.t0, GET, &mut r.out);
    let (token, _) = r.connect();
    let b1 = r.connected(token, 1);
    r.sent(b1);
    r.s.handle_stream_input(r.t0, b1, OK, &mut r.out);
    r.sent(StreamId::CLIENT);
    // Its own connection went stale: gone, so the next request takes one another client left.
    r.s.handle_stream_closed(r.t0, b1, &mut r.out);
    r.s.handle_input(r.t0, GET, &mut r.out);
    let token = match next_action(&mut r) {
        Action::Reuse { token, .. } => token,
        other => panic!("{other:?}"),
    };
    let kept = r.connected(token, 7);
    assert!(r.sent(kept).starts_with("GET /a "));
    r.s.handle_stream_closed(r.t0, kept, &mut r.out);
    let (token, _) = r.connect();
    let fresh = r.connected(token, 8);
    assert!(r.sent(fresh).starts_with("GET /a "), "sent again on a new connection");
    r.s.handle_stream_input(r.t0, fresh, OK, &mut r.out);
    assert!(r.sent(StreamId::CLIENT).starts_with("HTTP/1.1 200 OK"));
    assert_eq!(*r.log.lock().unwrap(), ["1 true", "1 true"], "the keep-alive race is not the backend's fault");
}

#[test]
fn a_client_that_ends_leaves_idle_connections_to_the_pool_and_closes_one_half_read() {
    let mut r = rig(&[1, 2]);
    r.s.handle_input(r.t0, GET, &mut r.out);
    let (token, _) = r.connect();
    let b1 = r.connected(token, 1);
    r.sent(b1);
    r.s.handle_stream_input(r.t0, b1, OK, &mut r.out);
    r.sent(StreamId::CLIENT);
    r.s.handle_input(r.t0, GET, &mut r.out);
    let Action::Reuse { token, .. } = next_action(&mut r) else { panic!("a reuse") };
    r.s.handle_connected(r.t0, token, Err(std::io::ErrorKind::NotFound), &mut r.out);
    let (token, _) = r.connect();
    let b2 = r.connected(token, 2);
    r.sent(b2);
    r.s.handle_stream_input(r.t0, b2, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf", &mut r.out);
    // The client goes in the middle of the second answer.
    r.s.handle_read_closed(r.t0, &mut r.out);
    r.s.handle_timeout(r.t0 + Duration::from_secs(3), &mut r.out);
    let parked: Vec<StreamId> = std::iter::from_fn(|| r.out.poll_action())
        .filter_map(|a| match a {
            Action::Park { stream, addr } => Some((stream, addr.port())),
            _ => None,
        })
        .map(|(stream, port)| {
            assert_eq!(port, 1);
            stream
        })
        .collect();
    assert_eq!(parked, [b1], "only the connection whose answer was read whole");
    assert!(r.out.outbox(b2).is_none_or(|o| o.is_closed()), "the half-read one closes");
}
