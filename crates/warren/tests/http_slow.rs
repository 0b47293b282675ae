//! Slow clients: while 500 connections dribble their request heads a byte at a time, the server
//! keeps answering everyone else, and cuts the dribblers off with 408 once the read timeout
//! passes. Run under the models that hold many connections at once (`iterative` serves one
//! by design, `fork` and `prefork` spend a process per connection).

#[macro_use]
mod support;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{Server, T, connect, read_all};

const SLOW: usize = 500;

fn check(model: &str) {
    let root = std::env::temp_dir().join(format!("warren-http-slow-{model}-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), b"ok\n").unwrap();
    // The visit counter's signing key: beside the root (never inside, where it would be served),
    // not in $HOME.
    let key = root.with_extension("key");
    let server = Server::serve(
        "http",
        model,
        &["--root", root.to_str().unwrap(), "--read-timeout", "3s", "--cookie-key-file", key.to_str().unwrap()],
    );
    let addr = server.addr;

    // Every slow client starts a request and then sends one byte at a time.
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .map(|_| {
            let mut stream = connect(addr);
            stream.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
            stream
        })
        .collect();
    let started = Instant::now();
    let mut answered = 0;
    for round in 0..10 {
        for stream in &mut slow {
            // A header byte per round keeps each head unfinished but never quiet.
            let _ = stream.write_all(if round % 2 == 0 { b"s" } else { b"t" });
        }
        let mut fast = connect(addr);
        fast.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let (answer, _) = read_all(&mut fast, T);
        assert!(answer.starts_with(b"HTTP/1.1 200") && answer.ends_with(b"ok\n"), "{model}: {answer:?}");
        answered += 1;
    }
    assert_eq!(answered, 10);
    assert!(started.elapsed() < Duration::from_secs(3), "{model}: the fast clients were held up behind the slow ones");

    // Past the read timeout, a dribbler is answered 408 and closed, however busy it keeps.
    let mut cut = 0;
    for stream in slow.iter_mut().step_by(25) {
        let (answer, _) = read_all(stream, Duration::from_secs(10));
        assert!(answer.starts_with(b"HTTP/1.1 408"), "{model}: {:?}", String::from_utf8_lossy(&answer));
        cut += 1;
    }
    assert_eq!(cut, SLOW / 25);
    drop(slow);
    server.stop_clean();
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_file(key);
}

#[test]
fn thread() {
    check("thread")
}

#[test]
fn pool() {
    check("pool")
}

#[test]
fn event() {
    check("event")
}

#[test]
fn green() {
    check("green")
}

#[test]
fn hybrid() {
    check("hybrid")
}
