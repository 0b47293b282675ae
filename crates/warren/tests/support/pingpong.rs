//! A pingpong (version 3) client over a raw socket, written from docs/protocols.md.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::Lines;

/// How a test client plays.
#[derive(Clone, Copy, Debug, Default)]
pub struct Play {
    /// Send the server's own number back in the first toss round, forcing a tie.
    pub force_tie: bool,
    /// How long to wait for each line (queued clients of `iterative` wait long).
    pub patience: Option<Duration>,
}

/// One finished game, as the client saw it.
#[derive(Clone, Debug)]
pub struct Game {
    pub number: u64,
    /// When the hello was sent and when the game number arrived.
    pub hello_at: Instant,
    pub numbered_at: Instant,
    /// Toss rounds played.
    pub tosses: u32,
    /// Whether the client played ping.
    pub client_pinged: bool,
    /// The server's hits (its `PING`s or `PONG`s) before its `BYE`.
    pub server_hits: u64,
}

/// Play one game against a server that ends games by itself (`--hits`): the client never
/// stops hitting. Errors describe what went wrong, with the lines seen.
pub fn play(addr: SocketAddr, how: Play) -> Result<Game, String> {
    let patience = how.patience.unwrap_or(super::T);
    let mut conn = Lines::connect(addr);
    let mut seen = Vec::new();
    let next = |conn: &mut Lines, seen: &mut Vec<String>| -> Result<String, String> {
        match conn.next_line(patience) {
            Ok(Some(line)) => {
                seen.push(line.clone());
                Ok(line)
            }
            Ok(None) => Err(format!("end of file after {seen:?}")),
            Err(e) => Err(format!("{e} after {seen:?}")),
        }
    };
    let hello_at = Instant::now();
    conn.send("PINGPONG 3");
    let welcome = next(&mut conn, &mut seen)?;
    let numbered_at = Instant::now();
    let number: u64 = welcome
        .strip_prefix("PINGPONG 3 GAME ")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("expected PINGPONG 3 GAME <n>, got {welcome:?}"))?;

    // The coin toss: the smaller number plays ping; a tie means another round.
    let mut tosses = 0;
    let (mine, theirs) = loop {
        tosses += 1;
        if tosses > 100 {
            return Err(format!("too many toss rounds: {seen:?}"));
        }
        let line = next(&mut conn, &mut seen)?;
        let theirs: u64 = line
            .strip_prefix("TOSS ")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("expected TOSS, got {seen:?}"))?;
        // Never tie unless asked to: the other number of the course's 0 and 1.
        let mine = if how.force_tie && tosses == 1 { theirs } else { u64::from(theirs == 0) };
        conn.send(&format!("TOSS {mine}"));
        if mine != theirs {
            break (mine, theirs);
        }
    };

    let client_pinged = mine < theirs;
    let mut server_hits = 0;
    if client_pinged {
        for k in 1.. {
            if k > 1000 {
                return Err("the server never said BYE".into());
            }
            conn.send(&format!("PING {k}"));
            let line = next(&mut conn, &mut seen)?;
            if line == "BYE" {
                break;
            }
            if line != format!("PONG {k}") {
                return Err(format!("expected PONG {k} or BYE: {seen:?}"));
            }
            server_hits += 1;
        }
    } else {
        conn.send("BALL");
        for k in 1.. {
            if k > 1000 {
                return Err("the server never said BYE".into());
            }
            let line = next(&mut conn, &mut seen)?;
            if line == "BYE" {
                break;
            }
            if line != format!("PING {k}") {
                return Err(format!("expected PING {k} or BYE: {seen:?}"));
            }
            server_hits += 1;
            conn.send(&format!("PONG {k}"));
        }
    }
    match conn.next_line(patience) {
        Ok(None) => {}
        other => return Err(format!("expected end of file after BYE, got {other:?}; {seen:?}")),
    }
    Ok(Game { number, hello_at, numbered_at, tosses, client_pinged, server_hits })
}
