//! The client's side of a game: send the hello, read the game number, then play the rally.
//!
//! A [`Session`] with no hub, so that the command-line driver and the tests pump it exactly
//! like a server session.

use std::time::Instant;

use super::Options;
use super::rally::{Rally, Side, send_error};
use super::wire::{Line, MAX_LINE, VERSION};
use crate::lines::LineReader;
use crate::{Deadline, Level, Limits, Nothing, Output, Session};

#[derive(Debug)]
enum Stage {
    /// The hello is sent; waiting for `PINGPONG 3 GAME <n>`.
    Welcome,
    /// The game runs (or ran) here.
    Playing(Rally),
    /// Closed before a game started.
    Closed,
}

/// The pingpong client core: one game over one connection.
#[derive(Debug)]
pub struct Client {
    options: Options,
    seed: u64,
    lines: LineReader,
    deadline: Deadline,
    stage: Stage,
    /// Why the connection ended before a game started.
    failure: Option<String>,
}

impl Client {
    /// A client for a connection opened at `now`; `seed` feeds its toss numbers.
    pub fn new(options: &Options, limits: &Limits, seed: u64, now: Instant) -> Self {
        Self {
            options: options.clone(),
            seed,
            lines: LineReader::new(MAX_LINE),
            deadline: Deadline::new(limits, now),
            stage: Stage::Welcome,
            failure: None,
        }
    }

    /// Why the game failed (refused, an error sent or received, a timeout), once closed; `None`
    /// after a normal end (`BYE` or end of file from either side).
    pub fn failure(&self) -> Option<&str> {
        match &self.stage {
            Stage::Playing(rally) => rally.failure(),
            _ => self.failure.as_deref(),
        }
    }

    fn handle_line(&mut self, now: Instant, line: Option<Line>, out: &mut Output<Nothing>) {
        match (&mut self.stage, line) {
            (Stage::Welcome, Some(Line::Welcome { version: VERSION, game })) => {
                out.log(Level::Info, format!("Game #{game}"));
                let mut rally = Rally::new(Side::Client, &self.options, self.seed);
                rally.start(out);
                self.stage = Stage::Playing(rally);
            }
            (Stage::Welcome, Some(Line::Error(reason))) => {
                out.log(Level::Error, format!("pingpong: the server refused: {reason}"));
                self.close(out, reason);
            }
            (Stage::Welcome, Some(Line::Welcome { .. })) => self.fail(out, "unsupported version"),
            (Stage::Welcome, _) => self.fail(out, "expected PINGPONG 3 GAME"),
            (Stage::Playing(rally), line) => rally.handle_line(now, line, out),
            (Stage::Closed, _) => {}
        }
    }

    fn fail(&mut self, out: &mut Output<Nothing>, reason: &str) {
        match &mut self.stage {
            Stage::Playing(rally) => rally.fail(out, reason),
            _ => {
                let reason = send_error(out, reason);
                out.log(Level::Error, format!("pingpong: {reason}"));
                self.close(out, reason);
            }
        }
    }

    fn close(&mut self, out: &mut Output<Nothing>, reason: String) {
        out.close();
        self.failure = Some(reason);
        self.stage = Stage::Closed;
    }
}

impl Session for Client {
    type Request = Nothing;
    type Message = Nothing;
    type Done = Nothing;

    fn handle_open(&mut self, _: Instant, out: &mut Output<Nothing>) {
        out.send(&Line::Hello(VERSION).to_bytes());
    }

    fn handle_input(&mut self, now: Instant, data: &[u8], out: &mut Output<Nothing>) {
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

    fn handle_read_closed(&mut self, _: Instant, out: &mut Output<Nothing>) {
        match &mut self.stage {
            Stage::Playing(rally) => rally.peer_closed(out),
            Stage::Welcome => {
                out.log(Level::Error, "pingpong: the server closed the connection");
                self.close(out, "the server closed the connection".into());
            }
            Stage::Closed => out.close(),
        }
    }

    fn handle_message(&mut self, _: Instant, msg: Nothing, _: &mut Output<Nothing>) {
        match msg {}
    }

    fn handle_timeout(&mut self, now: Instant, out: &mut Output<Nothing>) {
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

    /// The user interrupted the client: end the game politely.
    fn handle_shutdown(&mut self, _: Instant, out: &mut Output<Nothing>) {
        match &mut self.stage {
            Stage::Playing(rally) => rally.shutdown(out),
            _ => self.close(out, "interrupted".into()),
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match &self.stage {
            Stage::Closed => None,
            Stage::Playing(rally) if rally.is_over() => None,
            Stage::Playing(rally) => rally.hit_at().or(Some(self.deadline.at())),
            Stage::Welcome => Some(self.deadline.at()),
        }
    }
}
