//! `chat_session`: arbitrary bytes, chunked, from up to four connections into chat server
//! sessions, with a [`ChatHub`] answering their requests through a small router (as the
//! threaded models drive them, or late, as the hub process of `fork` does).
//!
//! Input: a [`Script`]: the settings byte, then one script per connection (at most four;
//! further ones are ignored) separated by `--` lines. Settings bits:
//!
//! | bits | meaning |
//! |---|---|
//! | 0-2 | chunking (see [`Chunker`]); the whole byte seeds the chunk sizes and interleaving |
//! | 3 | the clock moves between chunks (see [`clock_step`](crate::clock_step)) |
//! | 4 | at the end the peers half-close (set) or the server shuts down (clear) |
//! | 5 | line limit 64 bytes instead of the default 4 KiB |
//! | 6 | connection 0 never reads: its output piles up (the backlog limit) |
//! | 7 | hub answers arrive one step late, after the next chunk (the `fork` model's hub) |
//!
//! Checks:
//! - no panic, in the sessions or the hub;
//! - output bounded by the input: at most 4 KiB per connection per input line, and at most 16
//!   actions per connection per line;
//! - every write is whole lines; in JSON mode each line is a valid event, in plain-text mode no
//!   line holds a control character (no forged lines, no terminal escapes);
//! - at the end every connection is closed (a half-close or a shutdown always ends it), and
//!   the hub, having seen every connection leave, has no user and no channel left.

use std::collections::VecDeque;
use std::time::{Instant, SystemTime};

use warren_proto::chat::{Chat, ChatHub, ChatRequest, ChatSession, Event, Mode};
use warren_proto::{Action, ConnInfo, Hub, Limits, Output, Service, Session, SessionId};

use crate::{Chunker, Rng, Script};

/// The most connections one input drives.
pub const MAX_CONNS: usize = 4;

struct Conn {
    session: ChatSession,
    out: Output<ChatRequest>,
    /// The bytes this connection has yet to send.
    script: Vec<u8>,
    /// Whether it made a hub request: only then does the hub hear it leave.
    asked: bool,
    /// Closed: the driver calls it no more.
    gone: bool,
    /// Every byte it was sent (read or not).
    sent: usize,
}

enum Job {
    Request(usize, ChatRequest),
    Leave(usize),
}

struct Router {
    now: Instant,
    hub: ChatHub,
    conns: Vec<Conn>,
    jobs: VecDeque<Job>,
    actions: usize,
    /// Connection 0 never reads.
    slow: bool,
}

impl Router {
    /// Take every connection's actions and closes into the job queue.
    fn collect(&mut self) {
        for (i, conn) in self.conns.iter_mut().enumerate() {
            let mut actions = Vec::new();
            conn.out.take_actions(&mut actions);
            self.actions += actions.len();
            for action in actions {
                match action {
                    Action::Hub(request) => {
                        conn.asked = true;
                        self.jobs.push_back(Job::Request(i, request));
                    }
                    Action::Log(_, line) => assert!(line.len() <= 64 * 1024, "a log line of {} bytes", line.len()),
                    other => panic!("the chat session starts no {other:?}"),
                }
            }
            if conn.out.is_closed() && !conn.gone {
                conn.gone = true;
                if conn.asked {
                    self.jobs.push_back(Job::Leave(i));
                }
            }
        }
    }

    /// Run the hub until no job is left, delivering its events in order.
    fn pump(&mut self) {
        self.collect();
        while let Some(job) = self.jobs.pop_front() {
            let mut events = warren_proto::HubOutput::new();
            match job {
                Job::Request(i, request) => self.hub.handle_request(self.now, id(i), request, &mut events),
                Job::Leave(i) => self.hub.handle_leave(self.now, id(i), &mut events),
            }
            for (to, event) in events.drain_messages() {
                let i = to.0 as usize - 1;
                let conn = self.conns.get_mut(i).expect("the hub addressed an unknown session");
                if !conn.gone {
                    conn.session.handle_message(self.now, event, &mut conn.out);
                }
            }
            self.collect();
        }
    }

    /// Read what each connection was sent, checking it.
    fn drain(&mut self) {
        for (i, conn) in self.conns.iter_mut().enumerate() {
            if self.slow && i == 0 {
                continue;
            }
            let pending = conn.out.pending();
            check_output(conn.session.mode(), pending);
            conn.sent += pending.len();
            let n = pending.len();
            conn.out.consume(n);
        }
    }

    fn fire_timeouts(&mut self) {
        for conn in self.conns.iter_mut().filter(|c| !c.gone) {
            if conn.session.poll_timeout().is_some_and(|at| at <= self.now) {
                conn.session.handle_timeout(self.now, &mut conn.out);
            }
        }
    }
}

fn id(i: usize) -> SessionId {
    SessionId(i as u64 + 1)
}

/// Whole lines; JSON events in JSON mode (and before the mode is known), clean text otherwise.
fn check_output(mode: Option<Mode>, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let text = std::str::from_utf8(bytes).expect("the session sent invalid UTF-8");
    let body = text.strip_suffix('\n').expect("the session sent a partial line");
    for line in body.split('\n') {
        match mode {
            Some(Mode::Plain) => {
                assert!(!line.chars().any(char::is_control), "plain-text output holds a control character: {line:?}")
            }
            Some(Mode::Json) | None => {
                if let Err(e) = Event::from_json(line) {
                    panic!("JSON output is not an event ({e}): {line:?}");
                }
            }
        }
    }
}

/// Run one input; panics on a failed check.
pub fn run(data: &[u8]) {
    let Some(Script { settings, scripts }) = Script::parse(data) else {
        return;
    };
    let scripts = &scripts[..scripts.len().min(MAX_CONNS)];
    let n = scripts.len();
    let limits = Limits {
        max_request: if settings & 0x20 != 0 { 64 } else { Limits::default().max_request },
        ..Limits::default()
    };
    let chat = Chat { limits };
    let t0 = Instant::now();
    let mut router = Router {
        now: t0,
        hub: ChatHub::new(t0),
        conns: Vec::new(),
        jobs: VecDeque::new(),
        actions: 0,
        slow: settings & 0x40 != 0,
    };
    for (i, script) in scripts.iter().enumerate() {
        let info = ConnInfo { id: id(i), peer: None, wall: SystemTime::UNIX_EPOCH, seed: i as u64 };
        let mut conn = Conn {
            session: chat.new_session(&info, t0),
            out: Output::new(),
            script: script.to_vec(),
            asked: false,
            gone: false,
            sent: 0,
        };
        conn.session.handle_open(t0, &mut conn.out);
        router.conns.push(conn);
    }
    router.pump();
    router.drain();

    let late_hub = settings & 0x80 != 0;
    let clock = settings & 0x08 != 0;
    let chunker = Chunker::new(settings);
    let mut rng = Rng::new(u64::from(settings));
    loop {
        let live: Vec<usize> =
            (0..n).filter(|&i| !router.conns[i].gone && !router.conns[i].script.is_empty()).collect();
        if live.is_empty() {
            break;
        }
        if late_hub {
            // Answers to the previous chunk arrive now, before this one.
            router.pump();
        }
        let i = live[rng.below(live.len() as u64) as usize];
        let conn = &mut router.conns[i];
        let len = chunker.next_len(&mut rng, conn.script.len());
        let chunk: Vec<u8> = conn.script.drain(..len).collect();
        conn.session.handle_input(router.now, &chunk, &mut conn.out);
        if late_hub {
            router.collect();
        } else {
            router.pump();
        }
        if clock {
            router.now += crate::clock_step(&mut rng);
            router.fire_timeouts();
            if !late_hub {
                router.pump();
            }
        }
        router.drain();
    }
    router.pump();
    router.drain();

    // The end: every peer half-closes, or the server stops.
    let half_close = settings & 0x10 != 0;
    for conn in router.conns.iter_mut().filter(|c| !c.gone) {
        if half_close {
            conn.session.handle_read_closed(router.now, &mut conn.out);
        } else {
            conn.session.handle_shutdown(router.now, &mut conn.out);
        }
    }
    router.pump();
    router.slow = false;
    router.drain();
    for (i, conn) in router.conns.iter().enumerate() {
        assert!(
            conn.gone,
            "connection {i} is still open after a {}",
            if half_close { "half-close" } else { "shutdown" }
        );
    }
    let Event::Stats { users, channels, .. } = router.hub.stats(router.now) else {
        unreachable!("stats is a stats event");
    };
    assert_eq!((users, channels), (0, 0), "the hub kept users or channels of closed connections");

    let lines = scripts.iter().map(|s| s.iter().filter(|&&b| b == b'\n').count()).sum::<usize>() + n;
    let sent: usize = router.conns.iter().map(|c| c.sent).sum();
    assert!(sent <= 4096 * n * (lines + 2), "{sent} bytes sent to {n} connections for {lines} lines");
    assert!(router.actions <= 16 * n * (lines + 4), "{} actions for {n} connections and {lines} lines", router.actions);
}
