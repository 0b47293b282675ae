//! The server's side of a game: read the client's hello, number the game through the hub,
//! answer, then play the rally.

use std::net::SocketAddr;
use std::time::Instant;

use super::rally::{Rally, Side, send_error};
use super::wire::{Line, MAX_LINE, VERSION};
use super::{Game, GameCounter, NextGame, Options};
use crate::lines::LineReader;
use crate::{ConnInfo, Deadline, Level, Limits, Output, Service, Session};

/// The pingpong server: one game per connection, numbered by a shared [`GameCounter`].
#[derive(Clone, Debug, Default)]
pub struct PingPong {
    /// Idle and read timeouts. `max_request` does not apply: lines are capped at [`MAX_LINE`].
    pub limits: Limits,
    /// How the server plays (its delay and hits).
    pub options: Options,
}

impl Service for PingPong {
    type Hub = GameCounter;
    type Session = ServerSession;

    fn name(&self) -> &'static str {
        "pingpong"
    }

    fn new_session(&self, info: &ConnInfo, now: Instant) -> ServerSession {
        ServerSession {
            options: self.options.clone(),
            seed: info.seed,
            peer: info.peer,
            lines: LineReader::new(MAX_LINE),
            deadline: Deadline::new(&self.limits, now),
            stage: Stage::Hello,
        }
    }

    fn new_hub(&self, _: Instant) -> GameCounter {
        GameCounter::default()
    }

    fn refusal(&self) -> &'static [u8] {
        b"ERROR server busy\n"
    }
}

#[derive(Debug)]
enum Stage {
    /// Waiting for `PINGPONG 3`.
    Hello,
    /// The hello arrived; waiting for the hub's game number before answering it.
    Numbering,
    /// Answered; the game runs (or ran) here.
    Playing(Rally),
    /// Closed before a game started.
    Closed,
}

/// The server's state for one connection.
#[derive(Debug)]
pub struct ServerSession {
    options: Options,
    seed: u64,
    peer: Option<SocketAddr>,
    lines: LineReader,
    deadline: Deadline,
    stage: Stage,
}

impl ServerSession {
    fn handle_line(&mut self, now: Instant, line: Option<Line>, out: &mut Output<NextGame>) {
        match (&mut self.stage, line) {
            (Stage::Hello, Some(Line::Hello(VERSION))) => {
                out.hub(NextGame);
                self.stage = Stage::Numbering;
            }
            (Stage::Hello, Some(Line::Hello(_))) => self.refuse(out, "unsupported version"),
            (Stage::Hello, _) => self.refuse(out, "expected PINGPONG 3"),
            // The client must wait for the answer: buffering its lines meanwhile would be
            // unbounded, and a correct client has nothing to say yet.
            (Stage::Numbering, _) => self.refuse(out, "unexpected line before the game number"),
            (Stage::Playing(rally), line) => rally.handle_line(now, line, out),
            (Stage::Closed, _) => {}
        }
    }

    /// End a connection whose game has not started.
    fn refuse(&mut self, out: &mut Output<NextGame>, reason: &str) {
        let reason = send_error(out, reason);
        out.log(Level::Debug, format!("pingpong: refused a client: {reason}"));
        out.close();
        self.stage = Stage::Closed;
    }

    fn fail(&mut self, out: &mut Output<NextGame>, reason: &str) {
        match &mut self.stage {
            Stage::Playing(rally) => rally.fail(out, reason),
            _ => self.refuse(out, reason),
        }
    }
}

impl Session for ServerSession {
    type Request = NextGame;
    type Message = Game;
    type Done = crate::Nothing;

    fn handle_open(&mut self, _: Instant, _: &mut Output<NextGame>) {}

    fn handle_input(&mut self, now: Instant, data: &[u8], out: &mut Output<NextGame>) {
        self.lines.push(data);
        while !out.is_closed() {
            match self.lines.next_line() {
                Ok(Some(line)) => self.handle_line(now, Line::parse(&line), out),
                Ok(None) => break,
                Err(_) => self.fail(out, "line too long"),
            }
        }
        self.deadline.input(now, self.lines.is_partial());
    }

    fn handle_read_closed(&mut self, _: Instant, out: &mut Output<NextGame>) {
        match &mut self.stage {
            Stage::Playing(rally) => rally.peer_closed(out),
            _ => {
                out.close();
                self.stage = Stage::Closed;
            }
        }
    }

    fn handle_message(&mut self, now: Instant, Game(game): Game, out: &mut Output<NextGame>) {
        // A number for a connection that closed meanwhile is simply dropped.
        if !matches!(self.stage, Stage::Numbering) || out.is_closed() {
            return;
        }
        let client = match self.peer {
            Some(peer) => format!("/{}", peer.ip()),
            None => "(unknown)".to_owned(),
        };
        out.log(Level::Info, format!("Starting game #{game} with client {client}"));
        out.send(&Line::Welcome { version: VERSION, game }.to_bytes());
        let mut rally = Rally::new(Side::Server { game }, &self.options, self.seed);
        rally.start(out);
        self.stage = Stage::Playing(rally);
        // The wait for the hub is not the client's idleness.
        self.deadline.touch(now);
    }

    fn handle_timeout(&mut self, now: Instant, out: &mut Output<NextGame>) {
        // While we hold the ball the peer has nothing to send: only our hit is due.
        if let Stage::Playing(rally) = &mut self.stage
            && rally.handle_due(now, &mut self.deadline, out)
        {
            return;
        }
        if let Some(why) = self.deadline.expired(now) {
            self.fail(out, why);
        }
    }

    fn handle_shutdown(&mut self, _: Instant, out: &mut Output<NextGame>) {
        match &mut self.stage {
            Stage::Playing(rally) => rally.shutdown(out),
            Stage::Closed => out.close(),
            _ => self.refuse(out, "server shutting down"),
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match &self.stage {
            Stage::Closed => None,
            Stage::Playing(rally) if rally.is_over() => None,
            Stage::Playing(rally) => rally.hit_at().or(Some(self.deadline.at())),
            _ => Some(self.deadline.at()),
        }
    }
}
