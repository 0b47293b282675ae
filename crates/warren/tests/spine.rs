//! Streams a session opens and connections it hands over, through the real binary: `warren
//! serve relay` under every model, and `warren serve handoff` passing connections to another
//! process that answers them directly.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::path::Path;

use support::{End, Server, T, connect, eventually, read_all};

/// A relay in front of an echo server: a large payload written while reading comes back whole,
/// and the client's half-close travels to the backend and back as the end of the stream.
fn check_relay(model: &str) {
    let backend = Server::serve("echo", "event", &[]);
    let backend_addr = backend.addr.to_string();
    let relay = Server::serve("relay", model, &["--backend", &backend_addr]);
    let mut stream = connect(relay.addr);
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut writer = stream.try_clone().unwrap();
    let sent = payload.clone();
    let feeder = std::thread::spawn(move || {
        writer.write_all(&sent).expect("write the payload");
        writer.shutdown(Shutdown::Write).expect("half-close");
    });
    let (back, end) = read_all(&mut stream, T);
    feeder.join().unwrap();
    assert_eq!(end, End::Eof, "{model}: the backend's end comes through");
    assert!(back == payload, "{model}: {} of {} bytes came back, in order", back.len(), payload.len());
    drop(stream);
    let stopped = relay.stop_clean();
    assert_eq!(stopped.counts(), (1, 0), "{model}: {}", stopped.stopped_line());
    backend.stop_clean();
}

mod relay {
    per_model!(super::check_relay);
}

/// The sockets a process holds, by inode.
fn sockets(pid: i32) -> Vec<String> {
    let dir = format!("/proc/{pid}/fd");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")).flatten() {
        if let Ok(target) = std::fs::read_link(entry.path())
            && let Some(name) = target.to_str().filter(|t| t.starts_with("socket:"))
        {
            found.push(name.to_owned());
        }
    }
    found.sort();
    found
}

/// An HTTP request on a kept-alive connection and its answer's body.
fn get(stream: &mut std::net::TcpStream, path: &str) -> String {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "the answer's head ends");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|l| l.trim().parse().ok())
        .expect("a length");
    let mut body = vec![0; len];
    stream.read_exact(&mut body).unwrap();
    String::from_utf8(body).unwrap()
}

/// A front reads each request head and hands the connection to an HTTP server in another
/// process: that process answers the client directly, the front keeps no descriptor of it, and
/// the connection outlives the front.
fn check_handoff(model: &str) {
    let root = tempdir();
    std::fs::write(root.join("hello.txt"), "hello from the receiver\n").unwrap();
    let target = format!("@warren-test-handoff-{}-{model}", std::process::id());
    let root_arg = root.to_str().unwrap();
    let receiver = Server::spawn(&[
        "serve",
        "http",
        "--model",
        "event",
        "--handoff-listen",
        &target,
        "--root",
        root_arg,
        "-d",
        "0",
    ]);
    let front = Server::serve("handoff", model, &["--to", &target, "--peek", "head"]);
    let received_before = sockets(receiver.pid());

    let mut client = connect(front.addr);
    assert_eq!(get(&mut client, "/hello.txt"), "hello from the receiver\n", "{model}");
    // The connection's socket is the same one in both processes: the receiver holds it now.
    let handed: Vec<String> = sockets(receiver.pid()).into_iter().filter(|s| !received_before.contains(s)).collect();
    assert!(!handed.is_empty(), "{model}: the receiver holds the connection");
    // The front closes its copy right after handing it over, which the client cannot see:
    // look again (bounded) until it has.
    let pid = front.pid();
    let holds = || sockets(pid).into_iter().filter(|s| handed.contains(s)).count();
    assert!(eventually(T, || holds() == 0), "{model}: the front still holds {} copies of the connection", holds());

    // The front can die: the connection is the receiver's.
    let stopped = front.stop_with(nix::sys::signal::Signal::SIGKILL);
    assert!(!stopped.status.success());
    assert_eq!(get(&mut client, "/hello.txt"), "hello from the receiver\n", "{model}: a second request");
    drop(client);
    receiver.stop_clean();
    let _ = std::fs::remove_dir_all(&root);
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("warren-spine-{}-{}", std::process::id(), fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    assert!(Path::new(&dir).is_dir());
    dir
}

mod handoff {
    per_model!(super::check_handoff);
}
