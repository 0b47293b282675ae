//! The `/visits` demo on a virtual clock: HTTP sessions and one shared `VisitsHub`, driven by a
//! tiny router that runs hub requests at once, as a threaded server would.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::files::{Entry, Files, FilesError};
use super::path::SafePath;
use super::session::{Http, HttpSession};
use super::visits::{VisitsConfig, VisitsHub};
use crate::{Action, ConnInfo, Hub, HubOutput, Level, Output, Service, Session, SessionId};

struct NoFiles;

impl Files for NoFiles {
    fn open(&self, _: &SafePath) -> Result<Entry, FilesError> {
        Err(FilesError::NotFound)
    }
}

const KEY: [u8; 32] = [7; 32];

struct Sim {
    http: Http,
    hub: VisitsHub,
    now: Instant,
    conns: BTreeMap<u64, (HttpSession, crate::Out<HttpSession>)>,
    logs: Vec<(Level, String)>,
    next: u64,
}

impl Sim {
    fn new(config: VisitsConfig) -> Self {
        let mut http = Http::new(Arc::new(NoFiles));
        http.visits = Some(Arc::new(config));
        let now = Instant::now();
        let hub = http.new_hub(now);
        Self { http, hub, now, conns: BTreeMap::new(), logs: Vec::new(), next: 0 }
    }

    /// The server restarted with the same key: a new hub (with a new seed), no connections.
    fn restart(&mut self) {
        let mut config = (**self.http.visits.as_ref().unwrap()).clone();
        config.seed += 1;
        *self = Self { now: self.now, ..Self::new(config) };
    }

    fn connect(&mut self) -> u64 {
        self.next += 1;
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let info = ConnInfo { id: SessionId(self.next), peer: None, wall, seed: self.next };
        let session = self.http.new_session(&info, self.now);
        self.conns.insert(self.next, (session, Output::new()));
        self.next
    }

    /// Performs every action, delivering hub answers, until none is left.
    fn pump(&mut self) {
        loop {
            let mut requests = Vec::new();
            for (&id, (_, out)) in &mut self.conns {
                let mut actions = Vec::new();
                out.take_actions(&mut actions);
                for action in actions {
                    match action {
                        Action::Hub(request) => requests.push((id, request)),
                        Action::Log(level, line) => self.logs.push((level, line)),
                        other => panic!("no such action here: {other:?}"),
                    }
                }
            }
            if requests.is_empty() {
                return;
            }
            for (id, request) in requests {
                let mut msgs = HubOutput::new();
                self.hub.handle_request(self.now, SessionId(id), request, &mut msgs);
                for (to, msg) in msgs.drain_messages() {
                    let (session, out) = self.conns.get_mut(&to.0).unwrap();
                    session.handle_message(self.now, msg, out);
                }
            }
        }
    }

    fn input(&mut self, conn: u64, data: &str) {
        let (session, out) = self.conns.get_mut(&conn).unwrap();
        session.handle_input(self.now, data.as_bytes(), out);
        self.pump();
    }

    /// Everything sent to `conn` so far.
    fn take(&mut self, conn: u64) -> String {
        let out = &mut self.conns.get_mut(&conn).unwrap().1;
        let wire = String::from_utf8(out.pending().to_vec()).unwrap();
        out.consume(wire.len());
        wire
    }

    /// GET `path` with `cookie`; the count in the body and the cookie set, `name=value` only.
    fn visit(&mut self, conn: u64, path: &str, cookie: Option<&str>) -> (u64, String) {
        let cookie = cookie.map_or(String::new(), |c| format!("Cookie: {c}\r\n"));
        self.input(conn, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n{cookie}\r\n"));
        parse(&self.take(conn))
    }
}

/// The count and the `Set-Cookie` pair of one answer.
fn parse(wire: &str) -> (u64, String) {
    assert!(wire.starts_with("HTTP/1.1 200 OK\r\n"), "{wire}");
    assert!(wire.contains("Cache-Control: no-store\r\n"), "{wire}");
    let set = wire.lines().find_map(|l| l.strip_prefix("Set-Cookie: ")).expect("a cookie");
    assert!(set.contains("; Path=/visits") && set.contains("; HttpOnly; SameSite=Lax"), "{set}");
    let body = wire.split("\r\n\r\n").nth(1).unwrap();
    let count = body.strip_prefix("visits: ").unwrap().split(' ').next().unwrap().parse().unwrap();
    (count, set.split(';').next().unwrap().to_owned())
}

fn sim() -> Sim {
    Sim::new(VisitsConfig::new(KEY, 1))
}

#[test]
fn cookie_counts_and_the_server_stores_nothing() {
    let mut sim = sim();
    let c = sim.connect();
    let (n, cookie) = sim.visit(c, "/visits/cookie", None);
    assert_eq!(n, 1);
    let (n, cookie) = sim.visit(c, "/visits/cookie?x=1", Some(&cookie));
    assert_eq!(n, 2);
    // Another connection, same cookie: the state is the client's.
    let d = sim.connect();
    let (n, _) = sim.visit(d, "/visits/cookie", Some(&format!("other=1; {cookie}")));
    assert_eq!(n, 3);
    assert!(sim.hub.is_empty());
}

#[test]
fn tampered_or_foreign_cookies_are_never_trusted() {
    let mut sim = sim();
    let c = sim.connect();
    let (_, cookie) = sim.visit(c, "/visits/cookie", None);
    let (_, cookie) = sim.visit(c, "/visits/cookie", Some(&cookie));
    let value = cookie.strip_prefix("warren_visits=").unwrap();
    let (payload, mac) = value.rsplit_once('.').unwrap();
    let (count, expiry) = payload.split_once('.').unwrap();
    assert_eq!(count, "2");
    let mut flipped = mac.to_owned();
    flipped.replace_range(0..1, if mac.starts_with('0') { "1" } else { "0" });
    let foreign = VisitsConfig::new([8; 32], 1).sign(99, expiry.parse().unwrap());
    let expired = VisitsConfig::new(KEY, 1).sign(99, 1_000_000_000);
    for bad in [
        format!("99.{expiry}.{mac}"),
        format!("{payload}.{flipped}"),
        format!("{payload}.{}", &mac[..10]),
        format!("{payload}."),
        foreign,
        expired,
        "garbage".to_owned(),
    ] {
        sim.logs.clear();
        let (n, _) = sim.visit(c, "/visits/cookie", Some(&format!("warren_visits={bad}")));
        assert_eq!(n, 1, "{bad}");
        assert!(sim.logs.iter().any(|(l, m)| *l == Level::Debug && m.contains("failed verification")), "{bad}");
    }
}

#[test]
fn sessions_count_per_id_across_connections() {
    let mut sim = sim();
    let (a, b) = (sim.connect(), sim.connect());
    let (n, ca) = sim.visit(a, "/visits/session", None);
    assert_eq!(n, 1);
    let (n, cb) = sim.visit(b, "/visits/session", None);
    assert_eq!(n, 1);
    assert_ne!(ca, cb, "each client its own id");
    assert_eq!(ca.len(), "warren_session=".len() + 32);
    assert_eq!(sim.visit(a, "/visits/session", Some(&ca)), (2, ca.clone()));
    // The id works from any connection: the table is the hub's.
    assert_eq!(sim.visit(b, "/visits/session", Some(&ca)), (3, ca.clone()));
    assert_eq!(sim.visit(b, "/visits/session", Some(&cb)), (2, cb.clone()));
    // An id the server never issued gets a fresh one, not the one asked for.
    let forged = format!("warren_session={:032x}", 42);
    let (n, fresh) = sim.visit(a, "/visits/session", Some(&forged));
    assert_eq!(n, 1);
    assert_ne!(fresh, forged);
    assert_eq!(sim.hub.len(), 3);
}

#[test]
fn use_renews_the_ttl_and_expiry_forgets() {
    let mut config = VisitsConfig::new(KEY, 1);
    config.ttl = Duration::from_secs(60);
    let mut sim = Sim::new(config);
    let c = sim.connect();
    let (_, cookie) = sim.visit(c, "/visits/session", None);
    for n in 2..=5 {
        // Each visit within the TTL renews it: 4 × 50 s is well past one TTL.
        sim.now += Duration::from_secs(50);
        assert_eq!(sim.visit(c, "/visits/session", Some(&cookie)).0, n);
    }
    sim.now += Duration::from_secs(60);
    let (n, fresh) = sim.visit(c, "/visits/session", Some(&cookie));
    assert_eq!(n, 1, "expired exactly at the TTL");
    assert_ne!(fresh, cookie);
    assert_eq!(sim.hub.len(), 1, "the expired session was swept");
}

#[test]
fn the_table_is_bounded_and_evicts_the_oldest() {
    let mut config = VisitsConfig::new(KEY, 1);
    config.max_sessions = 3;
    let mut sim = Sim::new(config);
    let c = sim.connect();
    let mut ids = Vec::new();
    for _ in 0..3 {
        sim.now += Duration::from_secs(1);
        ids.push(sim.visit(c, "/visits/session", None).1);
    }
    // Using the first makes the second the oldest.
    sim.now += Duration::from_secs(1);
    assert_eq!(sim.visit(c, "/visits/session", Some(&ids[0])).0, 2);
    sim.now += Duration::from_secs(1);
    let (n, _) = sim.visit(c, "/visits/session", None);
    assert_eq!(n, 1);
    assert_eq!(sim.hub.len(), 3);
    assert_eq!(sim.visit(c, "/visits/session", Some(&ids[1])).0, 1, "evicted");
    assert_eq!(sim.visit(c, "/visits/session", Some(&ids[0])).0, 3, "kept");
}

#[test]
fn pipelined_requests_wait_behind_the_hub() {
    let mut sim = sim();
    let c = sim.connect();
    let (session, out) = sim.conns.get_mut(&c).unwrap();
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let both = get("/visits/session") + &get("/visits/cookie");
    session.handle_input(sim.now, both.as_bytes(), out);
    assert!(out.pending().is_empty(), "nothing answered before the hub's reply");
    sim.pump();
    let wire = sim.take(c);
    let first = wire.find("session table").unwrap();
    let second = wire.find("signed cookie").unwrap();
    assert!(first < second, "{wire}");
}

#[test]
fn a_restart_keeps_cookie_counts_and_loses_sessions() {
    let mut sim = sim();
    let c = sim.connect();
    let (_, cookie) = sim.visit(c, "/visits/cookie", None);
    let (_, cookie) = sim.visit(c, "/visits/cookie", Some(&cookie));
    let (_, session) = sim.visit(c, "/visits/session", None);
    assert_eq!(sim.visit(c, "/visits/session", Some(&session)).0, 2);
    sim.restart();
    let c = sim.connect();
    assert_eq!(sim.visit(c, "/visits/cookie", Some(&cookie)).0, 3, "the key persisted");
    let (n, fresh) = sim.visit(c, "/visits/session", Some(&session));
    assert_eq!(n, 1, "soft state is gone");
    assert_ne!(fresh, session);
}

#[test]
fn without_the_demo_visits_are_files() {
    let http = Http::new(Arc::new(NoFiles));
    let info = ConnInfo { id: SessionId(1), peer: None, wall: SystemTime::UNIX_EPOCH, seed: 0 };
    let now = Instant::now();
    let mut session = http.new_session(&info, now);
    let mut out = Output::new();
    session.handle_input(now, b"GET /visits/cookie HTTP/1.1\r\nHost: x\r\n\r\n", &mut out);
    assert!(out.pending().starts_with(b"HTTP/1.1 404 "));
}
