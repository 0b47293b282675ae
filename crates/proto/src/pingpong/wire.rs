//! The pingpong wire format: one ASCII line per message, words separated by one space.
//!
//! Documented byte by byte in `docs/protocols.md`. Parsing is strict (exact verbs, one space,
//! decimal digits only) so that a garbled stream is refused at once rather than half-understood.

use std::fmt;

/// The protocol version spoken here: version 3 of the course's homework, with the coin toss
/// (version 2) and server-assigned game numbers (version 3).
pub const VERSION: u32 = 3;

/// The longest line either side accepts, newline excluded. The longest valid line, a welcome
/// with a 20-digit game number, is 36 bytes; our own `ERROR` lines stay under this limit too.
pub const MAX_LINE: usize = 64;

/// One message of the protocol, in either direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// `PINGPONG <version>`: the client's first line.
    Hello(u32),
    /// `PINGPONG <version> GAME <n>`: the server accepts and numbers the game.
    Welcome {
        /// The version the server speaks (equal to the client's).
        version: u32,
        /// The game number, from 1, unique per server.
        game: u64,
    },
    /// `TOSS <n>`: this side's number in one round of the coin toss.
    Toss(u64),
    /// `BALL`: the client hands the ball to a server that plays ping.
    Ball,
    /// `PING <k>`: the ping side's `k`-th hit, from 1.
    Ping(u64),
    /// `PONG <k>`: the answer to `PING <k>`.
    Pong(u64),
    /// `BYE`: this side ends the game and closes.
    Bye,
    /// `ERROR <reason>`: this side refuses to go on and closes.
    Error(String),
}

use Line::*;

impl Line {
    /// Parse one line (without its newline). `None` for anything that is not a message.
    pub fn parse(line: &[u8]) -> Option<Line> {
        if !line.iter().all(|b| (0x20..0x7f).contains(b)) {
            return None;
        }
        // Only printable ASCII remains, so the conversion cannot fail.
        let text = std::str::from_utf8(line).ok()?;
        if let Some(rest) = text.strip_prefix("ERROR") {
            return match rest.strip_prefix(' ') {
                Some(reason) => Some(Error(reason.to_owned())),
                None if rest.is_empty() => Some(Error(String::new())),
                None => None,
            };
        }
        let mut words = [""; 5];
        let mut n = 0;
        for word in text.split(' ') {
            // Five words is more than any message has: refuse without collecting the rest.
            if n == words.len() {
                return None;
            }
            words[n] = word;
            n += 1;
        }
        match &words[..n] {
            ["PINGPONG", v] => Some(Hello(number(v)?)),
            ["PINGPONG", v, "GAME", g] => Some(Welcome { version: number(v)?, game: number(g)? }),
            ["TOSS", x] => Some(Toss(number(x)?)),
            ["BALL"] => Some(Ball),
            ["PING", k] => Some(Ping(number(k)?)),
            ["PONG", k] => Some(Pong(number(k)?)),
            ["BYE"] => Some(Bye),
            _ => None,
        }
    }

    /// The line as sent, newline included.
    pub fn to_bytes(&self) -> Vec<u8> {
        format!("{self}\n").into_bytes()
    }
}

/// A decimal number: ASCII digits only (`str::parse` alone would also take a leading `+`).
fn number<T: std::str::FromStr>(word: &str) -> Option<T> {
    if word.is_empty() || !word.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    word.parse().ok()
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hello(v) => write!(f, "PINGPONG {v}"),
            Welcome { version, game } => write!(f, "PINGPONG {version} GAME {game}"),
            Toss(x) => write!(f, "TOSS {x}"),
            Ball => f.write_str("BALL"),
            Ping(k) => write!(f, "PING {k}"),
            Pong(k) => write!(f, "PONG {k}"),
            Bye => f.write_str("BYE"),
            Error(reason) if reason.is_empty() => f.write_str("ERROR"),
            Error(reason) => write!(f, "ERROR {reason}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips() {
        let all = [
            Hello(3),
            Welcome { version: 3, game: u64::MAX },
            Toss(0),
            Ball,
            Ping(1),
            Pong(18),
            Bye,
            Error("server busy".into()),
            Error(String::new()),
        ];
        for line in all {
            let bytes = line.to_bytes();
            assert_eq!(bytes.last(), Some(&b'\n'));
            assert!(bytes.len() <= MAX_LINE + 1, "{line} is too long");
            assert_eq!(Line::parse(&bytes[..bytes.len() - 1]), Some(line));
        }
    }

    #[test]
    fn strict_parsing() {
        for bad in [
            &b""[..],
            b"PINGPONG",
            b"PINGPONG  3",
            b"PINGPONG 3 ",
            b"pingpong 3",
            b"TOSS +1",
            b"TOSS -1",
            b"TOSS 18446744073709551616",
            b"PING",
            b"BALL 1",
            b"BYE BYE",
            b"ERRORS",
            b"PINGPONG 3 GAME 1 2 3 4 5",
            b"TOSS 1\0",
            b"PONG \xff",
        ] {
            assert_eq!(Line::parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(Line::parse(b"TOSS 007"), Some(Toss(7)));
    }
}
