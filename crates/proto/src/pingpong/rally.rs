//! The game proper, shared by the server session and the client once the hello is done: the
//! coin toss, the ball hand-over, the hits, and every way a game ends.
//!
//! Both sides run the same machine; only the console lines and who holds the ball first differ
//! (the client always starts with it, as in the course).

use std::time::Instant;

use super::wire::{Line, MAX_LINE};
use super::{MAX_DELAY, Options};
use crate::{Deadline, Level, Output};

/// Which end of the connection this rally runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// The server, playing game number `game`.
    Server { game: u64 },
    /// The client.
    Client,
}

/// Which stroke this side plays, decided by the toss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Ping,
    Pong,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// In toss round `round` (from 1) we sent `mine` and wait for the peer's number.
    Toss { round: u32, mine: u64 },
    /// We are the server, won ping, and wait for the client to hand the ball over.
    AwaitBall,
    /// The ball is ours; we hit it at `at`, after the delay.
    Holding { at: Instant },
    /// The ball is with the peer; we wait for its hit.
    Waiting,
    /// The game is over and the output closed.
    Over,
}

/// One game from the first toss to the end.
#[derive(Debug)]
pub(crate) struct Rally {
    side: Side,
    options: Options,
    rng: fastrand::Rng,
    role: Role,
    phase: Phase,
    /// Hits this side made, for `Options::hits`.
    hits: u64,
    /// The number of the last `PING` sent or received.
    count: u64,
    /// Why the game ended abnormally (an error sent or received), for the client's exit status.
    failure: Option<String>,
}

/// Send `ERROR <reason>`, the reason cut to fit the peer's line limit; return it as sent.
pub(crate) fn send_error<R>(out: &mut Output<R>, reason: &str) -> String {
    let reason: String = reason.chars().take(MAX_LINE - "ERROR ".len()).collect();
    out.send(&Line::Error(reason.clone()).to_bytes());
    reason
}

impl Rally {
    /// A rally that has not tossed yet; `seed` feeds its toss numbers.
    pub(crate) fn new(side: Side, options: &Options, seed: u64) -> Self {
        Self {
            side,
            options: options.clone(),
            rng: fastrand::Rng::with_seed(seed),
            role: Role::Ping,
            phase: Phase::Over,
            hits: 0,
            count: 0,
            failure: None,
        }
    }

    /// Begin: send this side's first toss number without waiting for the peer's.
    pub(crate) fn start<R>(&mut self, out: &mut Output<R>) {
        let mine = self.draw();
        out.send(&Line::Toss(mine).to_bytes());
        self.phase = Phase::Toss { round: 1, mine };
    }

    /// The instant of this side's next hit, while it holds the ball.
    pub(crate) fn hit_at(&self) -> Option<Instant> {
        match self.phase {
            Phase::Holding { at } => Some(at),
            _ => None,
        }
    }

    pub(crate) fn is_over(&self) -> bool {
        self.phase == Phase::Over
    }

    pub(crate) fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// A line from the peer; `None` if it was not a message at all.
    pub(crate) fn handle_line<R>(&mut self, now: Instant, line: Option<Line>, out: &mut Output<R>) {
        let Some(line) = line else {
            return self.fail(out, "unreadable line");
        };
        match (self.phase, line) {
            (Phase::Over, _) => {}
            (_, Line::Bye) => {
                out.log(Level::Debug, format!("{} received bye", self.prefix()));
                self.finish(out);
            }
            (_, Line::Error(reason)) => {
                // Bounded by the line limit; sanitised by the parser (printable ASCII only).
                out.log(Level::Error, format!("{} received error: {reason}", self.prefix()));
                self.failure = Some(reason);
                self.finish(out);
            }
            (Phase::Toss { round, mine }, Line::Toss(theirs)) => self.toss(now, round, mine, theirs, out),
            (Phase::AwaitBall, Line::Ball) => self.turn(now, out),
            (Phase::Waiting, Line::Ping(k)) if self.role == Role::Pong && Some(k) == self.count.checked_add(1) => {
                self.count = k;
                out.log(Level::Info, format!("{} received ping", self.prefix()));
                self.turn(now, out);
            }
            (Phase::Waiting, Line::Pong(k)) if self.role == Role::Ping && k == self.count => {
                out.log(Level::Info, format!("{} received pong", self.prefix()));
                self.turn(now, out);
            }
            // Echoing the parsed line is safe: re-rendered, at most 36 bytes, printable ASCII.
            (_, line) => self.fail(out, &format!("unexpected {line}")),
        }
    }

    /// A timeout while playing: if this side holds the ball, hit it when due (which also counts
    /// as activity on `deadline`) and return `true`; the peer owes nothing then, so the caller
    /// skips its own idle check.
    pub(crate) fn handle_due<R>(&mut self, now: Instant, deadline: &mut Deadline, out: &mut Output<R>) -> bool {
        let Some(at) = self.hit_at() else { return false };
        if now >= at {
            self.handle_timeout(now, out);
            deadline.touch(now);
        }
        true
    }

    /// Hit the ball if its delay has passed; spurious calls are harmless.
    pub(crate) fn handle_timeout<R>(&mut self, now: Instant, out: &mut Output<R>) {
        if let Phase::Holding { at } = self.phase
            && now >= at
        {
            self.hit(out);
        }
    }

    /// The server is stopping (or the user interrupted the client): say goodbye.
    pub(crate) fn shutdown<R>(&mut self, out: &mut Output<R>) {
        if !self.is_over() {
            out.send(&Line::Bye.to_bytes());
            self.finish(out);
        }
    }

    /// The peer closed the connection (the course's `EOFException`): the game is over.
    pub(crate) fn peer_closed<R>(&mut self, out: &mut Output<R>) {
        if !self.is_over() {
            out.log(Level::Debug, format!("{} received end of file", self.prefix()));
            self.finish(out);
        }
    }

    /// Refuse to go on: tell the peer why, end the game and close.
    pub(crate) fn fail<R>(&mut self, out: &mut Output<R>, reason: &str) {
        if self.is_over() {
            return;
        }
        let reason = send_error(out, reason);
        out.log(Level::Error, format!("{} sent error: {reason}", self.prefix()));
        self.failure = Some(reason);
        self.finish(out);
    }

    fn toss<R>(&mut self, now: Instant, round: u32, mine: u64, theirs: u64, out: &mut Output<R>) {
        out.log(Level::Info, format!("{} coin toss:  my number: {mine} their number: {theirs}", self.name()));
        if mine == theirs {
            if round >= self.options.max_tosses {
                return self.fail(out, "too many tied tosses");
            }
            // Same order as the first round: send ours before reading theirs.
            let mine = self.draw();
            out.send(&Line::Toss(mine).to_bytes());
            self.phase = Phase::Toss { round: round + 1, mine };
            return;
        }
        self.role = if mine < theirs { Role::Ping } else { Role::Pong };
        let stroke = match self.role {
            Role::Ping => "ping",
            Role::Pong => "pong",
        };
        out.log(Level::Info, format!("Coin toss over: {} plays {stroke}", self.name()));
        match (self.side, self.role) {
            // The client holds the ball: it either serves or hands the ball to the server.
            (Side::Client, Role::Ping) => self.turn(now, out),
            (Side::Client, Role::Pong) => {
                out.send(&Line::Ball.to_bytes());
                self.phase = Phase::Waiting;
            }
            (Side::Server { .. }, Role::Ping) => self.phase = Phase::AwaitBall,
            (Side::Server { .. }, Role::Pong) => self.phase = Phase::Waiting,
        }
    }

    /// The ball reached this side: stop if the hits are used up, else hit after the delay.
    fn turn<R>(&mut self, now: Instant, out: &mut Output<R>) {
        if self.options.hits.is_some_and(|hits| self.hits >= hits) {
            out.send(&Line::Bye.to_bytes());
            return self.finish(out);
        }
        let delay = self.options.delay.min(MAX_DELAY);
        self.phase = Phase::Holding { at: now + delay };
        if delay.is_zero() {
            // No timer round trip through the driver when there is nothing to wait for.
            self.hit(out);
        }
    }

    fn hit<R>(&mut self, out: &mut Output<R>) {
        let (line, stroke) = match self.role {
            Role::Ping => {
                self.count += 1;
                (Line::Ping(self.count), "ping")
            }
            Role::Pong => (Line::Pong(self.count), "pong"),
        };
        out.send(&line.to_bytes());
        out.log(Level::Info, format!("{} sent {stroke}", self.prefix()));
        self.hits += 1;
        self.phase = Phase::Waiting;
    }

    fn finish<R>(&mut self, out: &mut Output<R>) {
        let line = match self.side {
            Side::Server { game } => format!("Game #{game} Over!"),
            Side::Client => "Game Over!".to_owned(),
        };
        out.log(Level::Info, line);
        out.close();
        self.phase = Phase::Over;
    }

    fn draw(&mut self) -> u64 {
        self.rng.u64(0..self.options.toss_range.max(1))
    }

    /// "Server" or "Client", as the course's coin toss lines say.
    fn name(&self) -> &'static str {
        match self.side {
            Side::Server { .. } => "Server",
            Side::Client => "Client",
        }
    }

    /// The start of the course's hit lines: `Game #1 Server sent ping`, `Client sent pong`.
    fn prefix(&self) -> String {
        match self.side {
            Side::Server { game } => format!("Game #{game} Server"),
            Side::Client => "Client".to_owned(),
        }
    }
}
