//! Whole games between a server session and a client core, pumped in memory on a virtual clock.

use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::{Action, ConnInfo, HubOutput, Level, Limits, Nothing, Output, Service, Session};

mod edges;
mod games;

/// A seed whose first toss number in `0..2` is `first`, so that tests can choose who plays ping.
fn seed_drawing(first: u64) -> u64 {
    (0..).find(|&s| fastrand::Rng::with_seed(s).u64(0..2) == first).unwrap()
}

fn info(id: u64, seed: u64) -> ConnInfo {
    ConnInfo { id: SessionId(id), peer: Some("127.0.0.1:40000".parse().unwrap()), wall: SystemTime::UNIX_EPOCH, seed }
}

fn quick(hits: Option<u64>) -> Options {
    Options { delay: Duration::ZERO, hits, ..Options::default() }
}

/// One side of a match: a session, its output, and what it logged (with the virtual time).
struct End<S: Session> {
    session: S,
    out: crate::Out<S>,
    log: Vec<(Duration, Level, String)>,
    /// Every byte this side sent.
    sent: Vec<u8>,
    /// Whether it was told the peer closed.
    eof: bool,
}

impl<S: Session> End<S> {
    fn new(session: S) -> Self {
        Self { session, out: Output::new(), log: Vec::new(), sent: Vec::new(), eof: false }
    }

    /// The Info lines, the course's console output.
    fn console(&self) -> Vec<&str> {
        self.log.iter().filter(|(_, level, _)| *level == Level::Info).map(|(_, _, l)| l.as_str()).collect()
    }

    /// When each Info line containing `what` was logged.
    fn times(&self, what: &str) -> Vec<Duration> {
        self.log.iter().filter(|(_, level, l)| *level == Level::Info && l.contains(what)).map(|(t, _, _)| *t).collect()
    }

    fn sent(&self) -> &str {
        std::str::from_utf8(&self.sent).unwrap()
    }
}

/// A server session and a client connected back to back; bytes cross in `chunk`-sized pieces.
struct Match {
    t0: Instant,
    now: Instant,
    chunk: usize,
    server: End<ServerSession>,
    client: End<Client>,
}

impl Match {
    fn new(id: u64, server: &PingPong, server_seed: u64, client: &Options, client_seed: u64) -> Self {
        let t0 = Instant::now();
        let mut m = Self {
            t0,
            now: t0,
            chunk: usize::MAX,
            server: End::new(server.new_session(&info(id, server_seed), t0)),
            client: End::new(Client::new(client, &Limits::default(), client_seed, t0)),
        };
        m.server.session.handle_open(t0, &mut m.server.out);
        m.client.session.handle_open(t0, &mut m.client.out);
        m
    }

    /// A match between two sides with these options and toss seeds.
    fn with(server: Options, server_seed: u64, client: Options, client_seed: u64) -> Self {
        Self::new(1, &PingPong { limits: Limits::default(), options: server }, server_seed, &client, client_seed)
    }

    fn done(&self) -> bool {
        let settled = |closed: bool, pending: &[u8], actions: bool| closed && pending.is_empty() && !actions;
        settled(self.server.out.is_closed(), self.server.out.pending(), self.server.out.has_actions())
            && settled(self.client.out.is_closed(), self.client.out.pending(), self.client.out.has_actions())
    }

    /// One move: hub traffic and logs, then bytes one way or the other, else the clock jumps
    /// to the next deadline. Returns `false` once both sides closed and everything was sent.
    fn step(&mut self, hub: &mut GameCounter) -> bool {
        let elapsed = self.now - self.t0;
        let mut actions = Vec::new();
        while self.server.out.has_actions() {
            self.server.out.take_actions(&mut actions);
            for action in actions.drain(..) {
                match action {
                    Action::Hub(request) => {
                        let mut msgs = HubOutput::new();
                        hub.handle_request(self.now, SessionId(0), request, &mut msgs);
                        for (_, msg) in msgs.drain_messages() {
                            self.server.session.handle_message(self.now, msg, &mut self.server.out);
                        }
                    }
                    Action::Log(level, line) => self.server.log.push((elapsed, level, line)),
                    _ => panic!("pingpong asks only the hub and the log"),
                }
            }
        }
        let mut actions: Vec<Action<Nothing>> = Vec::new();
        self.client.out.take_actions(&mut actions);
        for action in actions {
            if let Action::Log(level, line) = action {
                self.client.log.push((elapsed, level, line));
            }
        }
        if self.done() {
            return false;
        }
        if transfer(self.now, self.chunk, &mut self.server, &mut self.client)
            || transfer(self.now, self.chunk, &mut self.client, &mut self.server)
        {
            return true;
        }
        let next = [self.server.session.poll_timeout(), self.client.session.poll_timeout()].into_iter().flatten().min();
        let next = next.expect("stalled: nothing to send and no deadline");
        self.now = self.now.max(next);
        if !self.server.out.is_closed() {
            self.server.session.handle_timeout(self.now, &mut self.server.out);
        }
        if !self.client.out.is_closed() {
            self.client.session.handle_timeout(self.now, &mut self.client.out);
        }
        true
    }

    fn play(&mut self, hub: &mut GameCounter) {
        for _ in 0..100_000 {
            if !self.step(hub) {
                return;
            }
        }
        panic!("the game did not end");
    }

    /// Step until `until` holds (or the match ends).
    fn play_until(&mut self, hub: &mut GameCounter, until: impl Fn(&Match) -> bool) {
        while !until(self) && self.step(hub) {}
    }
}

/// Move up to `chunk` pending bytes from `from` to `to`, or tell `to` that `from` closed.
fn transfer<A: Session, B: Session>(now: Instant, chunk: usize, from: &mut End<A>, to: &mut End<B>) -> bool {
    let pending = from.out.pending();
    if !pending.is_empty() {
        let n = pending.len().min(chunk);
        from.sent.extend_from_slice(&pending[..n]);
        if !to.out.is_closed() {
            to.session.handle_input(now, &pending[..n], &mut to.out);
        }
        from.out.consume(n);
        return true;
    }
    if from.out.is_closed() && !to.eof && !to.out.is_closed() {
        to.eof = true;
        to.session.handle_read_closed(now, &mut to.out);
        return true;
    }
    false
}
