//! The full matrix: every TCP protocol under every server model (7 × 8 = 56 tests, named
//! `<protocol>::<model>`), each doing the protocol's basic exchange through the real binary,
//! then stopping the server with SIGTERM and checking its exit and report.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::Shutdown;

use serde_json::json;
use support::chat::Json;
use support::pingpong::{Play, play};
use support::{End, Lines, Server, T, check_daytime, check_time, connect, read_all};

/// A round trip, then a large transfer written while reading, then a half-close: everything
/// comes back in order, then a clean end of file.
fn check_echo(model: &str) {
    let server = Server::serve("echo", model, &[]);
    let mut conn = Lines::connect(server.addr);
    conn.send("hello, warren");
    assert_eq!(conn.line(), "hello, warren");

    let payload: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut writer = conn.stream.try_clone().unwrap();
    let sent = payload.clone();
    let feeder = std::thread::spawn(move || {
        writer.write_all(&sent).expect("write the payload");
        writer.shutdown(Shutdown::Write).expect("half-close");
    });
    let (back, end) = read_all(&mut conn.stream, T);
    feeder.join().unwrap();
    assert_eq!(end, End::Eof, "{model}: echo must end with end of file after the half-close");
    assert_eq!(back.len(), payload.len(), "{model}: every byte comes back");
    assert!(back == payload, "{model}: the echo differs from what was sent");
    drop(conn);

    let stopped = server.stop_clean();
    assert_eq!(stopped.counts(), (1, 0), "{model}: {}", stopped.stopped_line());
}

/// Nothing comes back, and the server closes once we half-close.
fn check_discard(model: &str) {
    let server = Server::serve("discard", model, &[]);
    let mut stream = connect(server.addr);
    stream.write_all(&vec![b'x'; 64 * 1024]).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let (back, end) = read_all(&mut stream, T);
    assert_eq!(end, End::Eof, "{model}: discard closes after the half-close");
    assert!(back.is_empty(), "{model}: discard sent {} bytes", back.len());
    drop(stream);
    let stopped = server.stop_clean();
    assert_eq!(stopped.counts(), (1, 0), "{model}: {}", stopped.stopped_line());
}

/// One RFC 867 line ended by CR LF, the time now, then the server closes; twice.
fn check_daytime_tcp(model: &str) {
    let server = Server::serve("daytime", model, &[]);
    for _ in 0..2 {
        let (reply, end) = read_all(&mut connect(server.addr), T);
        assert_eq!(end, End::Eof, "{model}: daytime closes after its line");
        check_daytime(&reply);
    }
    let stopped = server.stop_clean();
    assert_eq!(stopped.counts(), (2, 0), "{model}: {}", stopped.stopped_line());
}

/// Four bytes, seconds since 1900, now; then the server closes.
fn check_time_tcp(model: &str) {
    let server = Server::serve("time", model, &[]);
    for _ in 0..2 {
        let (reply, end) = read_all(&mut connect(server.addr), T);
        assert_eq!(end, End::Eof, "{model}: time closes after its four bytes");
        check_time(&reply);
    }
    let stopped = server.stop_clean();
    assert_eq!(stopped.counts(), (2, 0), "{model}: {}", stopped.stopped_line());
}

/// The daytime line, then (after the blocking call) the close.
fn check_timeserver(model: &str) {
    let server = Server::serve("timeserver", model, &["--delay", "50ms"]);
    let mut stream = connect(server.addr);
    let mut first = [0u8; 1];
    stream.read_exact(&mut first).expect("the line starts before the blocking call ends");
    let (rest, end) = read_all(&mut stream, T);
    assert_eq!(end, End::Eof, "{model}: timeserver closes after its blocking call");
    check_daytime(&[&first[..], &rest].concat());
    drop(stream);
    let stopped = server.stop_clean();
    assert_eq!(stopped.counts(), (1, 0), "{model}: {}", stopped.stopped_line());
}

/// Two whole games that the server ends after three hits; the first is game 1, then 2. The
/// second starts with a tied toss.
fn check_pingpong(model: &str) {
    let server = Server::serve("pingpong", model, &["--hits", "3", "--delay", "1ms"]);
    let first = play(server.addr, Play::default()).unwrap_or_else(|e| panic!("{model}: first game: {e}"));
    assert_eq!((first.number, first.server_hits), (1, 3), "{model}: {first:?}");
    let tie = Play { force_tie: true, ..Play::default() };
    let second = play(server.addr, tie).unwrap_or_else(|e| panic!("{model}: second game: {e}"));
    assert_eq!((second.number, second.server_hits), (2, 3), "{model}: {second:?}");
    assert!(second.tosses >= 2, "{model}: a tie takes another round: {second:?}");
    let stopped = server.stop_clean();
    assert_eq!(stopped.counts(), (2, 0), "{model}: {}", stopped.stopped_line());
}

/// hello, nick, join, say, quit: each answered with the documented event, byte for byte where
/// the format is fixed; then the close.
fn check_chat(model: &str) {
    let server = Server::serve("chat", model, &[]);
    let (mut user, welcome) = Json::connect(server.addr);
    let guest = welcome["nick"].as_str().expect("a default nick").to_owned();
    assert!(guest.starts_with("guest"), "{model}: {welcome}");
    user.cmd(json!({"cmd": "nick", "nick": "alice"}));
    assert_eq!(user.conn.line(), format!(r#"{{"event":"nick","old":"{guest}","new":"alice"}}"#));
    user.cmd(json!({"cmd": "join", "channel": "#matrix"}));
    assert_eq!(user.conn.line(), r##"{"event":"joined","channel":"#matrix","nick":"alice","users":1}"##);
    assert_eq!(user.conn.line(), r##"{"event":"names","channel":"#matrix","users":1,"nicks":["alice"]}"##);
    user.cmd(json!({"cmd": "say", "text": "hi there"}));
    assert_eq!(user.conn.line(), r##"{"event":"message","channel":"#matrix","from":"alice","text":"hi there"}"##);
    user.cmd(json!({"cmd": "quit"}));
    assert_eq!(user.conn.line(), r#"{"event":"bye","message":"bye"}"#);
    user.conn.expect_eof(T);
    drop(user);
    let stopped = server.stop_clean();
    assert_eq!(stopped.counts(), (1, 0), "{model}: {}", stopped.stopped_line());
    assert!(
        stopped.stdout.iter().any(|l| l.starts_with("chat: ") && l.contains(" relayed (")),
        "{model}: the chat hub's statistics: {:?}",
        stopped.stdout
    );
}

/// Each protocol's checks, once per model.
macro_rules! matrix {
    ($($protocol:ident => $check:ident;)*) => {
        $(
            mod $protocol {
                per_model!(super::$check);
            }
        )*
    };
}

matrix! {
    echo => check_echo;
    discard => check_discard;
    daytime => check_daytime_tcp;
    time => check_time_tcp;
    timeserver => check_timeserver;
    pingpong => check_pingpong;
    chat => check_chat;
}
