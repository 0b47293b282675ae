//! `pingpong_session`: arbitrary bytes, chunked, into a pingpong server session (with its
//! [`GameCounter`] hub) and into a pingpong client core.
//!
//! Input: a [`Script`]: the settings byte, then the bytes the server's peer sends, then
//! optionally a `--` line and the bytes the client's peer sends (without it, both get the same
//! bytes). Settings bits:
//!
//! | bits | meaning |
//! |---|---|
//! | 0-2 | chunking (see [`Chunker`]); the whole byte seeds the chunk sizes and the tosses ([`client_seed`]) |
//! | 3 | the clock moves between chunks (see [`clock_step`](crate::clock_step)) |
//! | 4 | at the end the peer half-closes (set) or the side shuts down (clear) |
//! | 5 | a 1 s delay before each hit instead of none (hits then wait for the clock) |
//! | 6 | each side stops after 3 hits instead of playing on |
//! | 7 | toss numbers from `0..1` (always a tie, up to the toss limit) instead of `0..2` |
//!
//! Checks:
//! - no panic;
//! - everything sent is whole lines of at most `MAX_LINE` bytes that `Line::parse` accepts:
//!   a side never sends what it would itself refuse;
//! - output bounded by the input: at most 128 bytes plus 8 per input byte, 16 actions per line;
//! - at the end the connection is closed (a half-close or a shutdown always ends it).

use std::time::{Duration, Instant, SystemTime};

use warren_proto::pingpong::{Client, GameCounter, Line, MAX_LINE, Options, PingPong};
use warren_proto::{Action, ConnInfo, Hub, Limits, Output, Service, Session, SessionId};

use crate::{Chunker, Rng, Script};

/// Run one input; panics on a failed check.
pub fn run(data: &[u8]) {
    let Some(Script { settings, scripts }) = Script::parse(data) else {
        return;
    };
    let to_server = scripts[0];
    let to_client = scripts.get(1).copied().unwrap_or(to_server);
    let options = Options {
        delay: if settings & 0x20 != 0 { Duration::from_secs(1) } else { Duration::ZERO },
        hits: (settings & 0x40 != 0).then_some(3),
        toss_range: if settings & 0x80 != 0 { 1 } else { 2 },
        ..Options::default()
    };
    let limits = Limits::default();
    let t0 = Instant::now();
    let seed = u64::from(settings);

    let service = PingPong { limits: limits.clone(), options: options.clone() };
    let info = ConnInfo { id: SessionId(1), peer: None, wall: SystemTime::UNIX_EPOCH, seed };
    let server = service.new_session(&info, t0);
    drive(server, GameCounter::default(), settings, to_server, t0);

    let client = Client::new(&options, &limits, client_seed(settings), t0);
    drive(client, NoAnswers, settings, to_client, t0);
}

/// The server's toss seed is the settings byte; the client's differs, so that a recorded game
/// between the two replays (with equal seeds every toss would tie).
pub fn client_seed(settings: u8) -> u64 {
    u64::from(settings) + 256
}

/// A stand-in hub for the client core, which asks none.
struct NoAnswers;

/// What a hub does for [`drive`]: answer one request with the messages for the session.
trait Answer<S: Session> {
    fn answer(&mut self, now: Instant, request: S::Request) -> Vec<S::Message>;
}

impl<S: Session<Request = warren_proto::pingpong::NextGame, Message = warren_proto::pingpong::Game>> Answer<S>
    for GameCounter
{
    fn answer(&mut self, now: Instant, request: S::Request) -> Vec<S::Message> {
        let mut out = warren_proto::HubOutput::new();
        self.handle_request(now, SessionId(1), request, &mut out);
        out.drain_messages()
            .map(|(to, game)| {
                assert_eq!(to, SessionId(1), "the counter answered another session");
                game
            })
            .collect()
    }
}

impl<S: Session<Request = warren_proto::Nothing>> Answer<S> for NoAnswers {
    fn answer(&mut self, _: Instant, request: S::Request) -> Vec<S::Message> {
        match request {}
    }
}

/// Feed `input` to `session` in chunks, answering its hub requests, firing its timeouts, and
/// checking what it sends.
fn drive<S: Session, H: Answer<S>>(mut session: S, mut hub: H, settings: u8, input: &[u8], t0: Instant) {
    let mut now = t0;
    let mut out = Output::new();
    let mut sent = 0usize;
    let mut actions = 0usize;
    let mut step = |session: &mut S, out: &mut warren_proto::Out<S>, now: Instant| {
        // Perform actions until none is left (an answer can cause more).
        loop {
            let mut taken = Vec::new();
            out.take_actions(&mut taken);
            if taken.is_empty() {
                break;
            }
            actions += taken.len();
            for action in taken {
                if let Action::Hub(request) = action {
                    for msg in hub.answer(now, request) {
                        session.handle_message(now, msg, out);
                    }
                }
            }
        }
        let pending = out.pending();
        check_output(pending);
        sent += pending.len();
        let n = pending.len();
        out.consume(n);
    };

    session.handle_open(now, &mut out);
    step(&mut session, &mut out, now);
    let clock = settings & 0x08 != 0;
    let chunks = Chunker::new(settings).split(&mut Rng::new(u64::from(settings)), input);
    let mut rng = Rng::new(u64::from(settings) + 256);
    for chunk in chunks {
        if out.is_closed() {
            break;
        }
        session.handle_input(now, chunk, &mut out);
        step(&mut session, &mut out, now);
        if clock {
            now += crate::clock_step(&mut rng);
        }
        // A due hit (the delay), or a timeout.
        if !out.is_closed() && session.poll_timeout().is_some_and(|at| at <= now) {
            session.handle_timeout(now, &mut out);
            step(&mut session, &mut out, now);
        }
    }
    if !out.is_closed() {
        if settings & 0x10 != 0 {
            session.handle_read_closed(now, &mut out);
        } else {
            session.handle_shutdown(now, &mut out);
        }
        step(&mut session, &mut out, now);
    }
    assert!(out.is_closed(), "the connection is still open at the end");

    let lines = input.iter().filter(|&&b| b == b'\n').count() + 1;
    assert!(sent <= 128 + 8 * input.len(), "{sent} bytes sent for {} bytes of input", input.len());
    assert!(actions <= 16 * (lines + 4), "{actions} actions for {lines} lines");
}

/// Whole lines, each one a message the other side accepts.
fn check_output(bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let body = bytes.strip_suffix(b"\n").expect("a partial line was sent");
    for line in body.split(|&b| b == b'\n') {
        assert!(line.len() <= MAX_LINE, "a line of {} bytes was sent: {:?}", line.len(), String::from_utf8_lossy(line));
        assert!(Line::parse(line).is_some(), "an invalid line was sent: {:?}", String::from_utf8_lossy(line));
    }
}
