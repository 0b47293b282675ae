//! Limits: `--max-conns` refusals, the pool's bounded queue, `--max` waiting before accept, idle
//! and read timeouts, over-long lines. (Running out of file descriptors is in fds.rs.)

#[macro_use]
mod support;

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde_json::json;
use support::chat::Json;
use support::{End, Lines, Server, T, check_daytime, connect, read_all};

const CHAT_BUSY: &str = r#"{"event":"error","message":"server busy, try again later"}"#;

/// A pingpong connection holding a game: the hello answered, the server waiting for our toss.
fn pingpong_game(server: &Server) -> Lines {
    let mut conn = Lines::connect(server.addr);
    conn.send("PINGPONG 3");
    let line = conn.line();
    assert!(line.starts_with("PINGPONG 3 GAME "), "{}: {line:?}", server.label);
    conn
}

/// Connect until a connection is served again (the server may see the close after a while).
fn served_again(server: &Server, hello: &str, refused: &str) -> String {
    let end = Instant::now() + T;
    loop {
        let mut conn = Lines::connect(server.addr);
        conn.send(hello);
        let line = conn.line();
        if line != refused || Instant::now() >= end {
            return line;
        }
    }
}

/// `--max-conns 2`: the third concurrent connection gets the protocol's refusal, unread, and is
/// closed; once one of the two leaves, new connections are served again.
fn max_conns(model: &str) {
    let server = Server::serve("pingpong", model, &["--max-conns", "2", "--processes", "4"]);
    let (first, second) = (pingpong_game(&server), pingpong_game(&server));
    let mut third = Lines::connect(server.addr);
    let refusal = third.next_line(Duration::from_secs(3));
    assert_eq!(refusal.ok().flatten().as_deref(), Some("ERROR server busy"), "{model}: pingpong's refusal");
    third.expect_eof(T);
    drop(first);
    let line = served_again(&server, "PINGPONG 3", "ERROR server busy");
    assert!(line.starts_with("PINGPONG 3 GAME "), "{model}: served again after one left: {line:?}");
    drop(second);
    let stopped = server.stop_clean();
    assert!(stopped.counts().1 >= 1, "{model}: the refusal is counted: {}", stopped.stopped_line());

    let server = Server::serve("chat", model, &["--max-conns", "2", "--processes", "4"]);
    let (first, second) = (Json::named(server.addr, "one"), Json::named(server.addr, "two"));
    let mut third = Lines::connect(server.addr);
    assert_eq!(third.line(), CHAT_BUSY, "{model}: chat's refusal");
    third.expect_eof(T);
    drop(first);
    let line = served_again(&server, r#"{"cmd":"hello","version":1}"#, CHAT_BUSY);
    assert!(line.starts_with(r#"{"event":"welcome""#), "{model}: served again after one left: {line:?}");
    drop(second);
    server.stop_clean();
}

mod max_conns {
    // `iterative` serves one connection at a time, so it never holds two.
    per_concurrent_model!(super::max_conns);
}

/// `pool --threads 2 --queue 1`: both workers blocked (timeserver's blocking call), one
/// connection queued, the next is refused at once (timeserver has no refusal bytes: it is
/// closed unanswered); the queued one is served when a worker frees.
#[test]
fn pool_refuses_when_its_queue_is_full() {
    let server = Server::serve("timeserver", "pool", &["--threads", "2", "--queue", "1", "--delay", "1500ms"]);
    // One at a time: two connections arriving together could find the queue full before an idle
    // worker took the first.
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut conn = Lines::connect(server.addr);
        // The line is sent before the blocking call, so a worker is now blocked.
        check_daytime(format!("{}\n", conn.line()).as_bytes());
        busy.push(conn);
    }
    let mut queued = connect(server.addr);
    let mut refused = connect(server.addr);
    let (reply, end) = read_all(&mut refused, T);
    assert_eq!((reply.as_slice(), end), (&b""[..], End::Eof), "the connection beyond the queue is closed unanswered");
    assert!(!readable(&queued, Duration::ZERO), "the refusal comes before the queued connection is served");
    let (reply, end) = read_all(&mut queued, T);
    assert_eq!(end, End::Eof);
    check_daytime(&reply);
    let stopped = server.stop_clean();
    assert_eq!(stopped.counts(), (3, 1), "{}", stopped.stopped_line());
}

/// Whether `stream` has something to read (data or end of file) within `within`.
fn readable(stream: &std::net::TcpStream, within: Duration) -> bool {
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLIN)];
    let ms = PollTimeout::try_from(within.as_millis() as i32).unwrap();
    poll(&mut fds, ms).expect("poll") > 0
}

/// `--max 1` (thread and fork): the second client's answer comes only after the first
/// connection is over. Without it the second is answered while the first is still open.
fn waits_before_accept(model: &str, max: bool) {
    let mut args = vec!["--delay", "1s"];
    if max {
        args.extend(["--max", "1"]);
    }
    let server = Server::serve("timeserver", model, &args);
    let mut first = Lines::connect(server.addr);
    check_daytime(format!("{}\n", first.line()).as_bytes());
    let second = connect(server.addr);
    // Watch both: the first ends after its blocking call; note whether the second was
    // answered before that. The first's end must be the end of file.
    let mut second_early = false;
    let end = Instant::now() + T;
    loop {
        assert!(Instant::now() < end, "{model}: the first connection never ended");
        second_early |= readable(&second, Duration::ZERO);
        if readable(&first.stream, Duration::from_millis(20)) {
            first.expect_eof(T);
            break;
        }
    }
    // Still connected until we close: under --max 1 the second cannot be served yet.
    second_early |= readable(&second, Duration::ZERO);
    drop(first);
    let mut second = second;
    let (reply, how) = read_all(&mut second, T);
    assert_eq!(how, End::Eof);
    check_daytime(&reply);
    if max {
        assert!(!second_early, "{model} --max 1: the second client was answered while the first was connected");
    } else {
        assert!(second_early, "{model}: without --max the second client is served at once");
    }
    server.stop_clean();
}

#[test]
fn thread_max_1_waits_before_accept() {
    waits_before_accept("thread", true);
}

#[test]
fn fork_max_1_waits_before_accept() {
    waits_before_accept("fork", true);
}

#[test]
fn thread_without_max_serves_at_once() {
    waits_before_accept("thread", false);
}

/// Idle and read timeouts and the longest line, under each model, one connection at a time.
fn timeouts(model: &str) {
    let server = Server::serve("echo", model, &["--idle-timeout", "300ms"]);
    let mut conn = Lines::connect(server.addr);
    conn.send("still here");
    assert_eq!(conn.line(), "still here");
    let quiet_since = Instant::now();
    conn.expect_eof(T);
    assert!(quiet_since.elapsed() >= Duration::from_millis(250), "{model}: echo closed before its idle timeout");
    drop(conn);
    server.stop_clean();

    let args = ["--idle-timeout", "600ms", "--read-timeout", "300ms", "--max-request", "64"];
    let server = Server::serve("chat", model, &args);
    // A started line not finished in time: the read timeout, though input keeps coming.
    let (mut user, _) = Json::connect(server.addr);
    let started = Instant::now();
    user.conn.send_raw(br#"{"cmd":"say","#);
    assert_eq!(user.expect("bye"), json!({"event": "bye", "message": "closing: read timeout"}));
    assert!(started.elapsed() >= Duration::from_millis(250), "{model}: read timeout fired early");
    assert_eq!(user.next_event(T), None, "{model}");
    drop(user);
    // Nothing at all: the idle timeout, in JSON since the mode is unknown.
    let mut silent = Lines::connect(server.addr);
    let started = Instant::now();
    assert_eq!(silent.line(), r#"{"event":"bye","message":"closing: idle timeout"}"#);
    assert!(started.elapsed() >= Duration::from_millis(500), "{model}: idle timeout fired early");
    silent.expect_eof(T);
    drop(silent);
    // A plain-text user who stops typing.
    let (mut plain, _) = support::chat::Plain::connect(server.addr, "/list");
    plain.until("* closing: idle timeout");
    plain.conn.expect_eof(T);
    drop(plain);
    // A line over --max-request: the error, then the close.
    let (mut user, _) = Json::connect(server.addr);
    user.conn.send(&format!(r#"{{"cmd":"say","text":"{}"}}"#, "x".repeat(100)));
    assert_eq!(user.expect("error"), json!({"event": "error", "message": "line longer than 64 bytes; closing"}));
    assert_eq!(user.next_event(T), None, "{model}");
    drop(user);
    server.stop_clean();
}

mod timeouts {
    per_model!(super::timeouts);
}

/// A chargen client that never reads, under each model: once the socket buffers are full, the
/// server gives the connection up after `--write-timeout`, though chargen always has more to say.
fn a_reader_that_never_reads(model: &str) {
    use std::io::Read;
    let server = Server::serve("chargen", model, &["--write-timeout", "200ms"]);
    // A small receive buffer (set before connecting, so that the window offered is small too):
    // the server's socket fills at once.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let stream: std::net::TcpStream = socket.into();
    // The peer's behaviour under test: it reads nothing for well past the write timeout. If the
    // server gave up, what it had queued then ends in a FIN (or a reset); if not, reading now
    // lets chargen go on for ever and the loop below runs out of time.
    std::thread::sleep(Duration::from_millis(1500));
    let end = Instant::now() + T;
    let mut stream = stream;
    stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        assert!(Instant::now() < end, "{model}: a peer that takes nothing was never given up");
        match stream.read(&mut buf) {
            Ok(0) => break,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Ok(_) | Err(_) => {}
        }
    }
    server.stop_clean();
}

mod never_reads {
    per_model!(super::a_reader_that_never_reads);
}
