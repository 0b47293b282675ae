//! Chat: the course's p1 chat server, a simplified IRC (RFC 1459), over newline-delimited
//! lines in either of two modes chosen by the first byte a client sends.
//!
//! - **JSON** (first byte `{`): commands such as `{"cmd":"join","channel":"#a"}`, events such
//!   as `{"event":"message","channel":"#a","from":"bob","text":"hi"}`. The course's
//!   "object-based protocol", made explicit and versioned ([`PROTOCOL_VERSION`]).
//! - **Plain text** (anything else): the user types `/nick bob`, `/join #a`, `hello all`, and
//!   reads lines such as `[#a] <bob> hello all`, so that `nc host port` is a chat client.
//!
//! The server sends nothing until the first line arrives (it cannot know the mode before), then
//! answers with a `welcome` giving the user's default nickname (`guest1`, ...). Messages are
//! echoed to their sender too, so every member sees one order. Byte-level details are in
//! `docs/protocols.md`.
//!
//! The pieces: [`wire`] (commands, events, JSON, name rules), [`text`] (typed lines and
//! rendered events, shared with the interactive client), [`hub`] (names, channels, statistics)
//! and [`session`] (one connection).

use std::time::Instant;

use crate::{ConnInfo, Limits, Service};

pub mod hub;
pub mod session;
pub mod text;
pub mod wire;

#[cfg(test)]
mod tests;

pub use hub::{ChatHub, ChatRequest, MAX_CHANNELS, MAX_CHANNELS_PER_USER};
pub use session::{ChatSession, Mode};
pub use text::{Typed, help_lines, parse_typed, render_text};
pub use wire::{ChannelInfo, Command, Event, LeaveReason, MAX_CHANNEL, MAX_NICK, MAX_TEXT, PROTOCOL_VERSION};

/// The port the client's `/connect` uses when none is given (IRC's).
pub const DEFAULT_PORT: u16 = 6667;

/// Sent to a connection refused because the server is full. The client has sent nothing yet,
/// so its mode is unknown: the line is JSON, which a JSON client parses as an `error` event
/// and which a person reading `nc` output still understands.
pub const REFUSAL: &[u8] = b"{\"event\":\"error\",\"message\":\"server busy, try again later\"}\n";

/// The chat service.
#[derive(Clone, Debug, Default)]
pub struct Chat {
    /// Idle and read timeouts, and the longest line (`max_request`).
    pub limits: Limits,
}

impl Service for Chat {
    type Hub = ChatHub;
    type Session = ChatSession;

    fn name(&self) -> &'static str {
        "chat"
    }

    fn new_session(&self, info: &ConnInfo, now: Instant) -> ChatSession {
        ChatSession::new(info, &self.limits, now)
    }

    /// The statistics' uptime counts from `now`, the instant the server started.
    fn new_hub(&self, now: Instant) -> ChatHub {
        ChatHub::new(now)
    }

    fn refusal(&self) -> &'static [u8] {
        REFUSAL
    }
}
