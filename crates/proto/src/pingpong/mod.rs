//! PingPong, the course's first homework (versions 2 and 3): a client and a server toss a coin
//! over the network, then hit a ball back and forth; the server numbers its games.
//!
//! The course exchanged Java objects (an `Integer` per toss, an empty `Ball` per hit); here the
//! same order of operations runs over an explicit line protocol, documented byte by byte in
//! `docs/protocols.md`:
//!
//! ```text
//!  client                          server
//!  PINGPONG 3            ──▶                      (asks the GameCounter hub for a number)
//!                        ◀──  PINGPONG 3 GAME 1
//!                        ◀──  TOSS 0              (each side sends its number before
//!  TOSS 1                ──▶                       reading the other's; a tie tosses again)
//!  BALL                  ──▶                      (the server won ping: hand it the ball)
//!                        ◀──  PING 1
//!  PONG 1                ──▶
//!  …                                              until BYE, ERROR or EOF from either side
//! ```
//!
//! [`PingPong`] is the server [`Service`](crate::Service); [`Client`] is the client's core, a
//! [`Session`](crate::Session) too so that drivers and tests pump both the same way. The game
//! itself (toss, ball, hits, delays) is shared by both sides in `rally`.

mod client;
mod rally;
mod server;
#[cfg(test)]
mod tests;
mod wire;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::{Hub, HubOutput, Nothing, SessionId};

pub use client::Client;
pub use server::{PingPong, ServerSession};
pub use wire::{Line, MAX_LINE, VERSION};

/// How one side plays; the server and the client take the same options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Wait this long before each of this side's hits, so that a game can be watched. Capped at
    /// one day (a longer wait is indistinguishable from a hang). Default 1 second.
    pub delay: Duration,
    /// After this many hits, this side ends the game (with `BYE`) instead of hitting again.
    /// `None`, the default, plays until the other side stops.
    pub hits: Option<u64>,
    /// Toss numbers are drawn uniformly from `0..toss_range`. Default 2: the numbers 0 and 1
    /// of the course's sample output, so a tie (and a re-toss) happens half the time.
    pub toss_range: u64,
    /// Give up with an error after this many tied toss rounds in a row. The course's toss
    /// "may in theory never terminate"; this one may not. Default 100.
    pub max_tosses: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self { delay: Duration::from_secs(1), hits: None, toss_range: 2, max_tosses: 100 }
    }
}

/// The longest delay honoured, see [`Options::delay`].
const MAX_DELAY: Duration = Duration::from_secs(86_400);

/// A session's request to the [`GameCounter`]: number my game.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextGame;

/// The [`GameCounter`]'s answer: your game's number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Game(pub u64);

/// The course's "synchronized counter": numbers games from 1, unique and increasing across
/// every connection of one server (and across processes, since the hub is shared).
#[derive(Debug, Default)]
pub struct GameCounter {
    /// The last number handed out; 0 before the first game.
    last: u64,
}

impl Hub for GameCounter {
    type Request = NextGame;
    type Message = Game;
    type Done = Nothing;

    fn handle_request(&mut self, _: Instant, from: SessionId, _: NextGame, out: &mut HubOutput<Self>) {
        // Saturating: 2^64 games will not happen, and a repeated number beats a panic.
        self.last = self.last.saturating_add(1);
        out.push(from, Game(self.last));
    }

    fn handle_leave(&mut self, _: Instant, _: SessionId, _: &mut HubOutput<Self>) {}

    fn report(&self, _: Instant) -> Option<String> {
        Some(format!("pingpong: {} games played", self.last))
    }
}
