//! One chat connection: splits lines, picks JSON or plain text, forwards commands to the hub
//! and renders the hub's events in the connection's mode.
//!
//! The session keeps no chat state beyond its own nickname (for log lines): the hub owns names
//! and channels. It answers locally only refused lines (bad JSON, unknown commands, a line too
//! long, a foreign version). Even `quit` goes through the hub, whose `bye` comes after every
//! earlier answer: a script such as `/join #a`, `hi`, `/quit` sent in one write sees it all.

use std::time::Instant;

use super::hub::ChatRequest;
use super::text::{Typed, parse_typed, render_text};
use super::wire::{Command, Event, PROTOCOL_VERSION};
use crate::lines::LineReader;
use crate::{ConnInfo, Deadline, Level, Limits, Output, Session, SessionId};

/// The most local answers (errors) held back while the welcome is on its way; later ones are
/// dropped, which only a client sending a flood of bad lines at once can notice.
const MAX_HELD: usize = 32;

/// Beyond this many unsent bytes the peer is not reading: the session closes rather than let
/// every broadcast grow its buffer.
pub const MAX_BACKLOG: usize = 256 * 1024;

/// How a connection speaks, fixed by the first byte it sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The first byte was `{`: JSON commands and events, one object per line.
    Json,
    /// Anything else: typed lines in, readable text out (for `nc` and `telnet`).
    Plain,
}

/// One chat connection.
#[derive(Debug)]
pub struct ChatSession {
    id: SessionId,
    /// The peer, for log lines.
    peer: String,
    reader: LineReader,
    deadline: Deadline,
    mode: Option<Mode>,
    /// Whether the hub has been sent `Hello`: at the first complete line, so that a connection
    /// that never completes one is never a user.
    registered: bool,
    /// The nickname the hub last gave this user, for log lines; set by the welcome.
    nick: Option<String>,
    /// Local answers waiting for the welcome, so that the welcome is always the first event.
    held: Vec<Event>,
    /// The hub was asked to let this user go; input is ignored until its `bye` closes us.
    quitting: bool,
}

type Out = Output<ChatRequest>;

impl ChatSession {
    /// A session for a connection accepted at `now`.
    pub fn new(info: &ConnInfo, limits: &Limits, now: Instant) -> Self {
        Self {
            id: info.id,
            peer: info.peer.map_or_else(|| "?".to_string(), |p| p.to_string()),
            reader: LineReader::new(limits.max_request),
            deadline: Deadline::new(limits, now),
            mode: None,
            registered: false,
            nick: None,
            held: Vec::new(),
            quitting: false,
        }
    }

    /// The mode, once the first byte has arrived.
    pub fn mode(&self) -> Option<Mode> {
        self.mode
    }

    /// Who this is, for log lines.
    fn who(&self) -> String {
        match &self.nick {
            Some(nick) => nick.clone(),
            None => format!("session {} ({})", self.id.0, self.peer),
        }
    }

    /// Send an event in this connection's mode. Before the first byte (a shutdown or an idle
    /// timeout of a silent connection) the mode is unknown: JSON, like the refusal line, is
    /// what a program can parse and a person can still read.
    fn emit(&self, event: &Event, out: &mut Out) {
        let mut line = match self.mode {
            Some(Mode::Plain) => render_text(event),
            Some(Mode::Json) | None => event.to_json(),
        };
        line.push('\n');
        out.send(line.as_bytes());
    }

    /// Send an error about the user's line; the connection stays. Held back while the
    /// welcome is on its way.
    fn refuse(&mut self, message: String, out: &mut Out) {
        out.log(Level::Error, format!("chat: {}: {message}", self.who()));
        let event = Event::Error { message };
        if self.registered && self.nick.is_none() {
            if self.held.len() < MAX_HELD {
                self.held.push(event);
            }
        } else {
            self.emit(&event, out);
        }
    }

    /// Send a last event (after anything held back) and close.
    fn close_with(&mut self, event: Event, out: &mut Out) {
        for held in std::mem::take(&mut self.held) {
            self.emit(&held, out);
        }
        self.emit(&event, out);
        out.close();
    }

    fn handle_line(&mut self, line: &[u8], out: &mut Out) {
        let parsed = match (std::str::from_utf8(line), self.mode) {
            (Err(_), _) => Err("line is not valid UTF-8".to_string()),
            (Ok(line), Some(Mode::Json)) if line.trim().is_empty() => Ok(None),
            (Ok(line), Some(Mode::Json)) => Command::from_json(line).map(Some),
            (Ok(line), _) => match parse_typed(line) {
                Ok(Typed::Nothing) => Ok(None),
                Ok(Typed::Command(command)) => Ok(Some(command)),
                Ok(Typed::Connect { .. }) => Err("already connected".to_string()),
                Err(e) => Err(e),
            },
        };
        if let Ok(Some(Command::Hello { version })) = parsed
            && version != PROTOCOL_VERSION
        {
            let message = format!("unsupported protocol version {version}; this server speaks {PROTOCOL_VERSION}");
            out.log(Level::Error, format!("chat: {}: {message}", self.who()));
            return self.close_with(Event::Error { message }, out);
        }
        // Any first line, even a bad or blank one, makes the connection a user.
        let first = !self.registered;
        if first {
            self.registered = true;
            out.hub(ChatRequest::Hello);
        }
        let request = match parsed {
            Err(e) => return self.refuse(e, out),
            Ok(None) => return,
            // The first hello is answered by the welcome above; a later one gets a fresh one.
            Ok(Some(Command::Hello { .. })) if first => return,
            Ok(Some(Command::Hello { .. })) => ChatRequest::Hello,
            Ok(Some(Command::Quit {})) => {
                self.quitting = true;
                ChatRequest::Quit
            }
            Ok(Some(Command::Nick { nick })) => ChatRequest::Nick(nick),
            Ok(Some(Command::List {})) => ChatRequest::List,
            Ok(Some(Command::Join { channel })) => ChatRequest::Join(channel),
            Ok(Some(Command::Leave { channel })) => ChatRequest::Leave(channel),
            Ok(Some(Command::Say { channel, text })) => ChatRequest::Say { channel, text },
            Ok(Some(Command::Help {})) => ChatRequest::Help,
            Ok(Some(Command::Stats {})) => ChatRequest::Stats,
        };
        out.hub(request);
    }

    /// Handle every complete line, until one closes the connection or quits.
    fn read_lines(&mut self, out: &mut Out) {
        while !out.is_closed() && !self.quitting {
            match self.reader.next_line() {
                Ok(Some(line)) => self.handle_line(&line, out),
                Ok(None) => break,
                Err(e) => {
                    let message = format!("{e}; closing");
                    out.log(Level::Error, format!("chat: {}: {message}", self.who()));
                    self.close_with(Event::Error { message }, out);
                }
            }
        }
    }

    /// Log the events about this user, so that each event is logged once, by its subject.
    fn log_event(&mut self, event: &Event, out: &mut Out) {
        let me = self.nick.as_deref();
        let line = match event {
            Event::Welcome { nick, .. } => {
                let mode = if self.mode == Some(Mode::Json) { "JSON" } else { "plain-text" };
                let line = format!("chat: {} connected as {nick} ({mode} mode)", self.peer);
                self.nick = Some(nick.clone());
                line
            }
            Event::Nick { old, new } if Some(old.as_str()) == me => {
                let line = format!("chat: {old} is now {new}");
                self.nick = Some(new.clone());
                line
            }
            Event::Joined { channel, nick, .. } if Some(nick.as_str()) == me => {
                format!("chat: {nick} joined {channel}")
            }
            Event::Left { channel, nick, .. } if Some(nick.as_str()) == me => {
                format!("chat: {nick} left {channel}")
            }
            Event::Message { channel, from, text } if Some(from.as_str()) == me => {
                format!("chat: {from} to {channel}: {text}")
            }
            Event::Error { message } => format!("chat: {}: refused: {message}", self.who()),
            // Logged when the hub lets the user go, after the answers to their earlier lines.
            Event::Bye { .. } => format!("chat: {} quit", self.who()),
            _ => return,
        };
        out.log(Level::Debug, line);
    }
}

impl Session for ChatSession {
    type Request = ChatRequest;
    type Message = Event;
    type Done = crate::Nothing;

    /// The server speaks only once the client has: a JSON client and a human share the port,
    /// and the first byte tells them apart.
    fn handle_open(&mut self, _: Instant, out: &mut Out) {
        out.log(Level::Debug, format!("chat: connection {} from {}", self.id.0, self.peer));
    }

    fn handle_input(&mut self, now: Instant, data: &[u8], out: &mut Out) {
        if self.mode.is_none() {
            self.mode = Some(if data.first() == Some(&b'{') { Mode::Json } else { Mode::Plain });
        }
        if self.quitting {
            return;
        }
        self.reader.push(data);
        self.read_lines(out);
        self.deadline.input(now, self.reader.is_partial());
    }

    /// A peer that stops sending is let go like one that quits, so that the answers to its
    /// last lines still reach it; a last line without a newline still counts.
    fn handle_read_closed(&mut self, _: Instant, out: &mut Out) {
        out.log(Level::Debug, format!("chat: {} disconnected", self.who()));
        if !self.quitting && self.reader.is_partial() {
            self.reader.push(b"\n");
            self.read_lines(out);
        }
        if !self.registered {
            out.close();
        } else if !self.quitting && !out.is_closed() {
            self.quitting = true;
            out.hub(ChatRequest::Quit);
        }
    }

    fn handle_message(&mut self, _: Instant, event: Event, out: &mut Out) {
        if out.is_write_closed() {
            return;
        }
        self.log_event(&event, out);
        if matches!(event, Event::Bye { .. }) {
            return self.close_with(event, out);
        }
        self.emit(&event, out);
        if matches!(event, Event::Welcome { .. }) {
            for held in std::mem::take(&mut self.held) {
                self.emit(&held, out);
            }
        }
        if out.pending().len() > MAX_BACKLOG {
            out.log(
                Level::Error,
                format!("chat: {}: not reading ({} bytes unsent); closing", self.who(), out.pending().len()),
            );
            out.close();
        }
    }

    fn handle_timeout(&mut self, now: Instant, out: &mut Out) {
        if let Some(why) = self.deadline.expired(now) {
            out.log(Level::Debug, format!("chat: closing {}: {why}", self.who()));
            self.close_with(Event::Bye { message: format!("closing: {why}") }, out);
        }
    }

    fn handle_shutdown(&mut self, _: Instant, out: &mut Out) {
        self.close_with(Event::Shutdown { message: "server shutting down".into() }, out);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.deadline.at())
    }
}
