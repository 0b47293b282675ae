//! Graceful shutdown under load, per model: clients stream numbered lines to echo (and messages
//! to a chat channel) while the server gets SIGTERM. Every client sees a clean end of file, every
//! line it got back is whole and in order, no acknowledged chat message is lost, and the server
//! exits 0 within a bound. Also: pingpong's goodbyes, the idle exit, and fork and prefork
//! parents whose children do not stop on SIGTERM.

#[macro_use]
mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;
use support::chat::Json;
use support::{EXIT_BOUND, Lines, Server, T, end_of, eventually};

/// Lines per write: one small segment, so the server reads (and echoes) it whole.
const BATCH: u64 = 16;
/// Round trips each client makes before the signal.
const BEFORE: u64 = 20;

/// How one streaming client ended.
#[derive(Debug)]
struct Outcome {
    received: u64,
    end: Result<(), String>,
}

/// Write numbered lines in batches and check each echoed line, until the server ends the
/// connection; `acked` counts the batches echoed so far.
fn stream_echo(addr: std::net::SocketAddr, id: usize, acked: &AtomicU64) -> Outcome {
    let mut conn = Lines::connect(addr);
    let mut received = 0u64;
    let deadline = Instant::now() + 3 * T;
    let mut sending = true;
    loop {
        if Instant::now() > deadline {
            return Outcome { received, end: Err("still streaming after the bound".into()) };
        }
        if sending {
            let batch: String = (received..received + BATCH).map(|n| format!("client {id} line {n:08}\n")).collect();
            // After the server's goodbye a write may fail; what is in flight still counts.
            sending = std::io::Write::write_all(&mut conn.stream, batch.as_bytes()).is_ok();
        }
        for _ in 0..BATCH {
            match conn.next_line(T) {
                Ok(Some(line)) => {
                    let want = format!("client {id} line {received:08}");
                    if line != want {
                        return Outcome { received, end: Err(format!("got {line:?}, expected {want:?}")) };
                    }
                    received += 1;
                }
                Ok(None) => return Outcome { received, end: Ok(()) },
                Err(e) => return Outcome { received, end: Err(format!("{e} ({:?})", end_of(&e))) },
            }
        }
        acked.fetch_add(1, Ordering::SeqCst);
    }
}

fn echo_under_load(model: &str) {
    let server = Server::serve("echo", model, &[]);
    // `iterative` serves one client at a time: the others would only wait in the backlog.
    let clients = if model == "iterative" { 1 } else { 4 };
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..clients).map(|_| AtomicU64::new(0)).collect());
    let addr = server.addr;
    let streams: Vec<_> = (0..clients)
        .map(|id| {
            let acked = acked.clone();
            std::thread::spawn(move || stream_echo(addr, id, &acked[id]))
        })
        .collect();
    let busy = eventually(T, || acked.iter().all(|a| a.load(Ordering::SeqCst) >= BEFORE));
    assert!(busy, "{model}: the clients did not get going");
    let stopped = server.stop();
    for (id, stream) in streams.into_iter().enumerate() {
        let outcome = stream.join().expect("client thread");
        assert!(outcome.end.is_ok(), "{model}: client {id} after {} lines: {:?}", outcome.received, outcome.end);
        assert!(outcome.received >= BEFORE * BATCH, "{model}: client {id}: {outcome:?}");
    }
    stopped.assert_clean(model);
    assert!(stopped.took < EXIT_BOUND, "{model}: took {:?} to stop", stopped.took);
}

mod echo_load {
    per_model!(super::echo_under_load);
}

/// What one chat user saw of the others: for each sender, how many of its messages in order.
struct ChatOutcome {
    from: HashMap<usize, u64>,
    end: Result<(), String>,
}

/// Say numbered messages in batches on #load and read everything, until the server's goodbye.
fn stream_chat(addr: std::net::SocketAddr, id: usize, joined: &Barrier, acked: &AtomicU64) -> ChatOutcome {
    let mut user = Json::named(addr, &format!("user{id}"));
    user.join("#load");
    joined.wait();
    let mut from: HashMap<usize, u64> = HashMap::new();
    let mut sent = 0u64;
    let deadline = Instant::now() + 3 * T;
    let mut sending = true;
    let fail = |from, why: String| ChatOutcome { from, end: Err(why) };
    loop {
        if Instant::now() > deadline {
            return fail(from, "still streaming after the bound".into());
        }
        if sending {
            let batch: String =
                (sent..sent + 8).map(|n| format!("{}\n", json!({"cmd": "say", "text": format!("{id} {n}")}))).collect();
            sending = std::io::Write::write_all(&mut user.conn.stream, batch.as_bytes()).is_ok();
            sent += 8;
        }
        // Read until our own batch is back (or the end).
        while from.get(&id).copied().unwrap_or(0) < sent {
            let ev = match user.conn.next_line(T) {
                Ok(Some(line)) => match serde_json::from_str::<serde_json::Value>(&line) {
                    Ok(ev) => ev,
                    Err(e) => return fail(from, format!("not a whole JSON event ({e}): {line:?}")),
                },
                Ok(None) => return fail(from, "end of file without the shutdown notice".into()),
                Err(e) => return fail(from, format!("{e} ({:?})", end_of(&e))),
            };
            match ev["event"].as_str() {
                Some("message") => {
                    let text = ev["text"].as_str().unwrap_or_default();
                    let (who, n) = text.split_once(' ').unwrap_or_else(|| panic!("bad text {ev}"));
                    let (who, n): (usize, u64) = (who.parse().unwrap(), n.parse().unwrap());
                    let next = from.get(&who).copied().unwrap_or(0);
                    if n != next {
                        return fail(from, format!("from user{who}: got message {n}, expected {next}"));
                    }
                    from.insert(who, next + 1);
                    if who == id && (next + 1) % 8 == 0 {
                        acked.store(next + 1, Ordering::SeqCst);
                    }
                }
                Some("shutdown") => {
                    let end = match user.conn.next_line(T) {
                        Ok(None) => Ok(()),
                        other => Err(format!("after the shutdown notice: {other:?}")),
                    };
                    return ChatOutcome { from, end };
                }
                Some("joined" | "names" | "left") => {}
                _ => return fail(from, format!("unexpected event {ev}")),
            }
        }
    }
}

/// Repeated: a lost message depends on which of the server's wake-ups comes first.
fn chat_under_load(model: &str) {
    for round in 0..6 {
        chat_round(&format!("{model} (round {round})"), model);
    }
}

fn chat_round(what: &str, model: &str) {
    const USERS: usize = 3;
    let server = Server::serve("chat", model, &[]);
    let addr = server.addr;
    let joined = Arc::new(Barrier::new(USERS));
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..USERS).map(|_| AtomicU64::new(0)).collect());
    let users: Vec<_> = (0..USERS)
        .map(|id| {
            let (joined, acked) = (joined.clone(), acked.clone());
            std::thread::spawn(move || stream_chat(addr, id, &joined, &acked[id]))
        })
        .collect();
    let busy = eventually(T, || acked.iter().all(|a| a.load(Ordering::SeqCst) >= 40));
    assert!(busy, "{what}: the users did not get going");
    // Acknowledged before the signal: relayed to every member before the server began to stop.
    let before: Vec<u64> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    let stopped = server.stop();
    for (id, user) in users.into_iter().enumerate() {
        let outcome = user.join().expect("user thread");
        assert!(outcome.end.is_ok(), "{what}: user{id}: {:?} (saw {:?})", outcome.end, outcome.from);
        for (sender, &acked) in before.iter().enumerate() {
            let got = outcome.from.get(&sender).copied().unwrap_or(0);
            assert!(got >= acked, "{what}: user{id} got {got} of user{sender}'s messages; {acked} were acknowledged");
        }
    }
    stopped.assert_clean(what);
    assert!(stopped.took < EXIT_BOUND, "{what}: took {:?} to stop", stopped.took);
}

mod chat_load {
    // `iterative` has a single user at a time, so no channel to share.
    per_concurrent_model!(super::chat_under_load);
}

/// pingpong's goodbyes: a game in progress gets `BYE`, a connection that has not said hello gets
/// `ERROR server shutting down`; both are closed. SIGINT does what SIGTERM does.
fn pingpong_goodbyes(model: &str) {
    let server = Server::serve("pingpong", model, &[]);
    // Connected before the game, so accepted before it: the game's answer shows the server
    // holds this connection too (one still in the backlog could only be reset).
    let silent = (model != "iterative").then(|| Lines::connect(server.addr));
    let mut game = Lines::connect(server.addr);
    game.send("PINGPONG 3");
    assert!(game.line().starts_with("PINGPONG 3 GAME "));
    let toss: u64 = game.line().strip_prefix("TOSS ").unwrap().parse().unwrap();
    // A bigger number: the server plays ping and waits for the ball, which we keep.
    game.send(&format!("TOSS {}", toss + 1));
    let stopped = server.stop_with(Signal::SIGINT);
    assert_eq!(game.line(), "BYE", "{model}");
    game.expect_eof(T);
    if let Some(mut silent) = silent {
        assert_eq!(silent.line(), "ERROR server shutting down", "{model}");
        silent.expect_eof(T);
    }
    stopped.assert_clean(model);
}

mod pingpong_goodbyes {
    per_model!(super::pingpong_goodbyes);
}

/// `--idle-exit`: a server with nothing to do stops by itself, exit 0, with the idle line.
fn idle_exit(model: &str) {
    let server = Server::serve("echo", model, &["--idle-exit", "500ms"]);
    let mut conn = Lines::connect(server.addr);
    conn.send("one");
    assert_eq!(conn.line(), "one");
    drop(conn);
    let last_activity = Instant::now();
    let stopped = server.wait_exit(T);
    stopped.assert_clean(model);
    assert_eq!(stopped.stopped_line(), "warren: stopped (idle): 1 connections served, 0 refused", "{model}");
    assert!(last_activity.elapsed() >= Duration::from_millis(400), "{model}: stopped before it was idle");
}

mod idle_exit {
    per_model!(super::idle_exit);
}

/// The children of `pid` (from /proc).
fn children(pid: i32) -> Vec<i32> {
    let list = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    list.split_whitespace().map(|p| p.parse().unwrap()).collect()
}

/// Whether a process ignores SIGTERM (the hub process does; connection processes do not).
fn ignores_sigterm(pid: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let ignored =
        status.lines().find_map(|l| l.strip_prefix("SigIgn:")).map(|m| u64::from_str_radix(m.trim(), 16).unwrap());
    ignored.is_some_and(|mask| mask & (1 << (15 - 1)) != 0)
}

/// A child that does not stop on SIGTERM (here: stopped with SIGSTOP) is killed after the grace
/// period, and the parent still exits 0 with its report.
fn stuck_child(model: &str) {
    let server = Server::serve("echo", model, &["--processes", "2"]);
    let mut conn = Lines::connect(server.addr);
    conn.send("hello");
    assert_eq!(conn.line(), "hello");
    // The connection processes (the `fork` child serving us, or `prefork`'s workers).
    let mut workers = Vec::new();
    let found = eventually(T, || {
        workers = children(server.pid()).into_iter().filter(|&p| !ignores_sigterm(p)).collect();
        !workers.is_empty()
    });
    assert!(found, "{model}: no connection process under {}", server.pid());
    for &pid in &workers {
        kill(Pid::from_raw(pid), Signal::SIGSTOP).expect("SIGSTOP a connection process");
    }
    let stopped = server.stop();
    stopped.assert_clean(model);
    drop(conn);
}

#[test]
fn fork_stops_with_a_stuck_child() {
    stuck_child("fork");
}

#[test]
fn prefork_stops_with_a_stuck_worker() {
    stuck_child("prefork");
}

/// SIGTERM right after the readiness line (scripts wait for it, then may stop the server at
/// once): still a graceful stop, exit 0 with the stopped line, and prompt (no connection to wait
/// for). Repeated, since the window is short.
fn stops_right_after_starting(model: &str) {
    for round in 0..15 {
        let server = Server::serve("echo", model, &["--processes", "4"]);
        server.signal(Signal::SIGTERM);
        let stopped = server.wait_exit(Duration::from_secs(4));
        stopped.assert_clean(&format!("{model}, round {round}"));
    }
}

mod right_after_start {
    per_model!(super::stops_right_after_starting);
}
