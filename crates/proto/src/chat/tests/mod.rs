//! Sessions and a hub driven together by a tiny router on a virtual clock, as a threaded
//! server would drive them: hub requests run at once and their events are delivered in order.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::{Action, ConnInfo, Hub, HubOutput, Level, Output, Session, SessionId};

struct Conn {
    session: ChatSession,
    out: Output<ChatRequest>,
    /// Whether it made a hub request (only then does the hub hear it leave).
    joined: bool,
    /// Closed: the driver calls it no more.
    gone: bool,
}

pub(super) struct Sim {
    chat: Chat,
    pub now: Instant,
    pub hub: ChatHub,
    conns: BTreeMap<u64, Conn>,
    pub logs: Vec<(Level, String)>,
    next: u64,
}

impl Sim {
    pub fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    pub fn with_limits(limits: Limits) -> Self {
        let t0 = Instant::now();
        Self {
            chat: Chat { limits },
            now: t0,
            hub: ChatHub::new(t0),
            conns: BTreeMap::new(),
            logs: Vec::new(),
            next: 0,
        }
    }

    pub fn connect(&mut self) -> u64 {
        self.next += 1;
        let info = ConnInfo { id: SessionId(self.next), peer: None, wall: SystemTime::UNIX_EPOCH, seed: 0 };
        let mut conn =
            Conn { session: self.chat.new_session(&info, self.now), out: Output::new(), joined: false, gone: false };
        conn.session.handle_open(self.now, &mut conn.out);
        self.conns.insert(self.next, conn);
        self.pump();
        self.next
    }

    /// Feed raw bytes to a connection (ignored once it is closed, as a driver would).
    pub fn input(&mut self, id: u64, data: &[u8]) {
        let conn = self.conns.get_mut(&id).unwrap();
        if !conn.gone {
            conn.session.handle_input(self.now, data, &mut conn.out);
        }
        self.pump();
    }

    pub fn line(&mut self, id: u64, line: &str) {
        self.input(id, format!("{line}\n").as_bytes());
    }

    /// A JSON client: connect and say hello; returns its id, its welcome consumed.
    pub fn json_client(&mut self) -> u64 {
        let id = self.connect();
        self.line(id, r#"{"cmd":"hello","version":1}"#);
        assert!(matches!(self.events(id)[..], [Event::Welcome { .. }]));
        id
    }

    pub fn read_closed(&mut self, id: u64) {
        let conn = self.conns.get_mut(&id).unwrap();
        if !conn.gone {
            conn.session.handle_read_closed(self.now, &mut conn.out);
        }
        self.pump();
    }

    pub fn shutdown(&mut self) {
        for conn in self.conns.values_mut().filter(|c| !c.gone) {
            conn.session.handle_shutdown(self.now, &mut conn.out);
        }
        self.pump();
    }

    /// Move the clock and fire the timeouts that are due.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        for conn in self.conns.values_mut().filter(|c| !c.gone) {
            if conn.session.poll_timeout().is_some_and(|at| at <= self.now) {
                conn.session.handle_timeout(self.now, &mut conn.out);
            }
        }
        self.pump();
    }

    /// Perform every queued action and hub delivery until nothing moves.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            let ids: Vec<u64> = self.conns.keys().copied().collect();
            for id in ids {
                let mut actions = Vec::new();
                self.conns.get_mut(&id).unwrap().out.take_actions(&mut actions);
                for action in actions {
                    moved = true;
                    match action {
                        Action::Hub(request) => {
                            self.conns.get_mut(&id).unwrap().joined = true;
                            let mut events = HubOutput::new();
                            self.hub.handle_request(self.now, SessionId(id), request, &mut events);
                            self.deliver(events);
                        }
                        Action::Log(level, line) => self.logs.push((level, line)),
                        other => panic!("no such action here: {other:?}"),
                    }
                }
                let conn = self.conns.get_mut(&id).unwrap();
                if conn.out.is_closed() && !conn.gone {
                    moved = true;
                    conn.gone = true;
                    if conn.joined {
                        let mut events = HubOutput::new();
                        self.hub.handle_leave(self.now, SessionId(id), &mut events);
                        self.deliver(events);
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn deliver(&mut self, mut events: HubOutput<ChatHub>) {
        for (to, event) in events.drain_messages() {
            if let Some(conn) = self.conns.get_mut(&to.0).filter(|c| !c.gone) {
                conn.session.handle_message(self.now, event, &mut conn.out);
            }
        }
    }

    /// Everything sent to `id` since the last call.
    pub fn take(&mut self, id: u64) -> String {
        let out = &mut self.conns.get_mut(&id).unwrap().out;
        let text = String::from_utf8(out.pending().to_vec()).unwrap();
        out.consume(text.len());
        text
    }

    /// Everything sent to JSON client `id` since the last call, parsed.
    pub fn events(&mut self, id: u64) -> Vec<Event> {
        self.take(id).lines().map(|l| Event::from_json(l).unwrap()).collect()
    }

    pub fn is_closed(&self, id: u64) -> bool {
        self.conns[&id].out.is_closed()
    }

    pub fn pending_len(&self, id: u64) -> usize {
        self.conns[&id].out.pending().len()
    }
}

pub(super) fn error_of(events: &[Event]) -> &str {
    match events {
        [Event::Error { message }] => message,
        other => panic!("expected one error, got {other:?}"),
    }
}

mod flows;
mod limits;
mod props;
mod wire;
