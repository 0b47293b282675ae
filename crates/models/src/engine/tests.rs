//! The engine's contract, driven by hand with a virtual clock and no sockets.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use warren_proto::{Action, Job, Output, Session, StreamId, Token, Transmit};

use super::{BACKPRESSURE, Ending, Engine, EngineConfig, LINGER};
use crate::urgent::UrgentMode;

/// A session that writes down every call and does what the test scripts on input.
struct Recorder {
    log: Arc<Mutex<Vec<String>>>,
    deadline: Option<Instant>,
}

type Out = Output<u8, u32>;

impl Recorder {
    fn note(&self, what: impl Into<String>) {
        self.log.lock().unwrap().push(what.into());
    }
}

impl Session for Recorder {
    type Request = u8;
    type Message = u8;
    type Done = u32;

    fn handle_open(&mut self, _: Instant, _: &mut Out) {
        self.note("open");
    }

    fn handle_input(&mut self, _: Instant, data: &[u8], out: &mut Out) {
        self.note(format!("input {}", String::from_utf8_lossy(data)));
        match data {
            b"big" => out.send(&vec![b'x'; BACKPRESSURE as usize]),
            b"close" => {
                out.send(b"bye");
                out.close();
            }
            b"job" => out.job(Token(1), Job::blocking(|| 7)),
            b"abort" => {
                out.job(Token(2), Job::blocking(|| 8));
                out.act(Action::Abort(Token(2)));
            }
            _ => out.send(data),
        }
    }

    fn handle_read_closed(&mut self, _: Instant, out: &mut Out) {
        self.note("read closed");
        out.close();
    }

    fn handle_message(&mut self, _: Instant, msg: u8, _: &mut Out) {
        self.note(format!("message {msg}"));
    }

    fn handle_timeout(&mut self, _: Instant, _: &mut Out) {
        self.note("timeout");
        self.deadline = None;
    }

    fn handle_shutdown(&mut self, _: Instant, out: &mut Out) {
        self.note("shutdown");
        out.close();
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    fn handle_completion(&mut self, _: Instant, token: Token, done: u32, _: &mut Out) {
        self.note(format!("done {} {done}", token.0));
    }

    fn handle_drained(&mut self, _: Instant, _: &mut Out) {
        self.note("drained");
    }
}

const CONFIG: EngineConfig = EngineConfig { write_timeout: Duration::from_secs(30), urgent: UrgentMode::Off };

fn engine(preamble: &[u8]) -> (Engine<Recorder>, Arc<Mutex<Vec<String>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    (Engine::new(Recorder { log: log.clone(), deadline: None }, &CONFIG, preamble.to_vec()), log)
}

/// Hand the session every event that is due.
fn settle(engine: &mut Engine<Recorder>, now: Instant) {
    let mut timeout_due = engine.session_deadline().is_some_and(|at| now >= at);
    while engine.step(now, &mut timeout_due) {}
}

/// Send everything queued for the client, as a socket with room would.
fn send_all(engine: &mut Engine<Recorder>, now: Instant) -> Vec<u8> {
    let mut sent = Vec::new();
    while let Some((Transmit::Bytes(bytes), _)) = engine.poll_transmit(StreamId::CLIENT) {
        let n = bytes.len();
        sent.extend_from_slice(bytes);
        engine.handle_sent(now, StreamId::CLIENT, n);
    }
    if engine.take_drained() {
        engine.handle_drained(now);
    }
    sent
}

fn log(log: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    std::mem::take(&mut *log.lock().unwrap())
}

#[test]
fn open_comes_first_then_the_preamble() {
    let (mut e, l) = engine(b"GET /");
    let t0 = Instant::now();
    assert!(!e.wants_read(StreamId::CLIENT), "nothing is read before the session opened");
    settle(&mut e, t0);
    assert_eq!(log(&l), ["open", "input GET /"]);
    assert_eq!(send_all(&mut e, t0), b"GET /");
    assert!(e.wants_read(StreamId::CLIENT));
}

#[test]
fn messages_already_delivered_come_before_shutdown() {
    let (mut e, l) = engine(b"");
    let t0 = Instant::now();
    settle(&mut e, t0);
    e.handle_shutdown();
    e.handle_message(3);
    e.handle_message(4);
    settle(&mut e, t0);
    assert_eq!(log(&l), ["open", "message 3", "message 4", "shutdown"]);
    // Nothing reaches a session after it closed.
    e.handle_message(5);
    e.handle_shutdown();
    settle(&mut e, t0);
    assert_eq!(log(&l), Vec::<String>::new());
}

#[test]
fn no_input_while_too_much_waits_for_the_peer() {
    let (mut e, l) = engine(b"");
    let t0 = Instant::now();
    settle(&mut e, t0);
    e.handle_input(t0, StreamId::CLIENT, b"big");
    assert!(!e.wants_read(StreamId::CLIENT), "backpressure");
    assert_eq!(send_all(&mut e, t0).len(), BACKPRESSURE as usize);
    assert!(e.wants_read(StreamId::CLIENT));
    assert_eq!(log(&l), ["open", "input big", "drained"], "the session hears the queue drained, once");
}

#[test]
fn a_peer_that_takes_nothing_is_given_up() {
    let (mut e, _) = engine(b"");
    let t0 = Instant::now();
    settle(&mut e, t0);
    e.handle_input(t0, StreamId::CLIENT, b"ping");
    // The socket took one byte and no more.
    e.handle_sent(t0, StreamId::CLIENT, 1);
    let deadline = e.poll_timeout().expect("a write deadline");
    assert_eq!(deadline, t0 + CONFIG.write_timeout);
    e.check_deadlines(deadline - Duration::from_millis(1));
    assert!(e.is_done().is_none());
    e.check_deadlines(deadline);
    assert!(matches!(e.is_done(), Some(Ending::Failed(_))));
}

#[test]
fn a_peer_that_takes_nothing_after_a_flush_is_given_up_too() {
    let (mut e, _) = engine(b"");
    let t0 = Instant::now();
    settle(&mut e, t0);
    e.handle_input(t0, StreamId::CLIENT, b"ping");
    send_all(&mut e, t0);
    assert_eq!(e.poll_timeout(), None, "flushed: no write deadline");
    // More output (chargen refilling on drained), and this time the socket is full.
    e.handle_input(t0, StreamId::CLIENT, b"pong");
    let t1 = t0 + Duration::from_secs(1);
    e.handle_blocked(t1, StreamId::CLIENT);
    assert_eq!(e.poll_timeout(), Some(t1 + CONFIG.write_timeout), "the peer's time runs from the full socket");
    e.handle_blocked(t1 + Duration::from_secs(5), StreamId::CLIENT);
    assert_eq!(e.poll_timeout(), Some(t1 + CONFIG.write_timeout), "a later full socket does not extend it");
    e.check_deadlines(t1 + CONFIG.write_timeout);
    assert!(matches!(e.is_done(), Some(Ending::Failed(_))));
}

#[test]
fn completions_arrive_in_turn_and_aborted_ones_never() {
    let (mut e, l) = engine(b"");
    let t0 = Instant::now();
    settle(&mut e, t0);
    e.handle_input(t0, StreamId::CLIENT, b"job");
    e.handle_input(t0, StreamId::CLIENT, b"abort");
    let mut started = Vec::new();
    while let Some(action) = e.poll_action() {
        match action {
            Action::Job(token, _) => started.push(format!("job {}", token.0)),
            Action::Abort(token) => started.push(format!("abort {}", token.0)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(started, ["job 1", "job 2", "abort 2"]);
    e.handle_completion(Token(2), 8);
    e.handle_completion(Token(1), 7);
    e.handle_completion(Token(9), 9);
    settle(&mut e, t0);
    assert_eq!(log(&l), ["open", "input job", "input abort", "done 1 7"]);
}

#[test]
fn a_close_lingers_until_the_peer_closes_or_the_linger_ends() {
    for peer_closes in [true, false] {
        let (mut e, _) = engine(b"");
        let t0 = Instant::now();
        settle(&mut e, t0);
        e.handle_input(t0, StreamId::CLIENT, b"close");
        assert!(!e.begin_linger(t0), "not before the last bytes are out");
        assert_eq!(send_all(&mut e, t0), b"bye");
        assert!(e.needs_write_shutdown(StreamId::CLIENT));
        assert!(e.begin_linger(t0));
        assert!(e.is_lingering());
        assert!(e.wants_read(StreamId::CLIENT), "the peer's last bytes are read and dropped");
        if peer_closes {
            e.handle_read_closed(t0, StreamId::CLIENT);
        } else {
            assert_eq!(e.poll_timeout(), Some(t0 + LINGER));
            e.check_deadlines(t0 + LINGER);
        }
        assert_eq!(e.is_done(), Some(&Ending::Closed));
    }
}

#[test]
fn a_handed_off_connection_is_over_here() {
    let (mut e, l) = engine(b"");
    let t0 = Instant::now();
    settle(&mut e, t0);
    e.handed_off();
    assert_eq!(e.is_done(), Some(&Ending::HandedOff));
    e.handle_message(1);
    settle(&mut e, t0);
    assert!(!e.wants_read(StreamId::CLIENT));
    assert_eq!(log(&l), ["open"]);
}

#[test]
fn the_session_deadline_is_a_timeout_once() {
    let (mut e, l) = engine(b"");
    let t0 = Instant::now();
    settle(&mut e, t0);
    e.session_mut().deadline = Some(t0 + Duration::from_secs(1));
    assert_eq!(e.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    settle(&mut e, t0 + Duration::from_millis(999));
    settle(&mut e, t0 + Duration::from_secs(1));
    assert_eq!(log(&l), ["open", "timeout"]);
}

#[test]
fn the_last_bytes_before_a_close_wait_for_the_fin() {
    let (mut e, _) = engine(b"");
    let t0 = Instant::now();
    settle(&mut e, t0);
    e.handle_input(t0, StreamId::CLIENT, b"hello");
    settle(&mut e, t0);
    let (_, more) = e.poll_transmit(StreamId::CLIENT).expect("the echo");
    assert!(!more, "an answer on an open connection leaves at once");
    send_all(&mut e, t0);
    e.handle_input(t0, StreamId::CLIENT, b"close");
    settle(&mut e, t0);
    let (transmit, more) = e.poll_transmit(StreamId::CLIENT).expect("the goodbye");
    assert!(matches!(transmit, Transmit::Bytes(b"bye")));
    assert!(more, "held (MSG_MORE) for the shutdown that follows, so the FIN goes with it");
    send_all(&mut e, t0);
    assert!(e.needs_write_shutdown(StreamId::CLIENT), "the shutdown follows the flush");
}
