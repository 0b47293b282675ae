//! `warren switch --mode http` shares idle backend connections across client connections: a
//! client connection that ends leaves its idle ones to a pool, and later requests of other
//! clients take them (`--http-reuse always`: any request; `safe`: all but a client's first),
//! counted by the accepts of a test backend. A pooled connection its backend closed is replaced
//! without the client seeing it, and a connection whose answer was half read is never pooled.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use support::who::switch;
use support::{T, connect, eventually};

/// The answer to `/big`: long enough that a client reading a little leaves most of it unread.
const BIG: usize = 4 << 20;

/// An HTTP/1.1 backend on a thread per connection: `/big` answers `BIG` bytes, anything else
/// its name; every answer keeps the connection alive. It counts the connections it accepted
/// and those that ended, and can close every open one at once (as a backend closing idle
/// keep-alive connections).
struct Backend {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Backend {
    fn start(name: &'static str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, ended, open) = (Arc::default(), Arc::default(), Arc::default());
        let backend = Backend { addr, accepted, ended, open };
        let (accepted, ended, open) = (backend.accepted.clone(), backend.ended.clone(), backend.open.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                accepted.fetch_add(1, Ordering::SeqCst);
                open.lock().unwrap().push(stream.try_clone().unwrap());
                let ended = ended.clone();
                std::thread::spawn(move || {
                    serve(stream, name);
                    ended.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        backend
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Closes every connection it holds, as a backend whose keep-alive timeout passed.
    fn close_all(&self) {
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Answers requests on `stream` until it ends or fails.
fn serve(mut stream: TcpStream, name: &str) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Bounded: each turn answers a request or ends.
    for _ in 0..1_000_000 {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let body = if head.starts_with("GET /big ") { vec![b'x'; BIG] } else { name.as_bytes().to_vec() };
        let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
        if stream.write_all(answer.as_bytes()).and_then(|()| stream.write_all(&body)).is_err() {
            return;
        }
    }
}

/// One keep-alive GET of `path` on `stream`: the answer's body.
fn get(stream: &mut TcpStream, path: &str) -> String {
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: pool\r\n\r\n").as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "the answer's head ends: {:?}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let len: usize = head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).unwrap().trim().parse().unwrap();
    let mut body = vec![0; len];
    stream.read_exact(&mut body).unwrap();
    String::from_utf8(body).unwrap()
}

/// A client connection that makes `paths` requests in turn, then ends and waits for the
/// switch's close: by then the switch has pooled (or closed) that client's backend connections.
fn client(switch: SocketAddr, paths: &[&str]) -> Vec<String> {
    let mut stream = connect(switch);
    let bodies = paths.iter().map(|p| get(&mut stream, p)).collect();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    bodies
}

fn http_switch(backends: &[&Backend], reuse: &str) -> support::Server {
    let addrs: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
    let mut args = vec!["--mode", "http", "--no-check", "--http-reuse", reuse];
    for addr in &addrs {
        args.extend(["--backend", addr.as_str()]);
    }
    switch(&args)
}

#[test]
fn sequential_clients_share_pooled_backend_connections() {
    let a = Backend::start("a");
    let sw = http_switch(&[&a], "always");
    for _ in 0..6 {
        assert_eq!(client(sw.addr, &["/who", "/who", "/who"]), ["a", "a", "a"]);
    }
    assert_eq!(a.accepted(), 1, "six client connections, one backend connection");
    sw.stop_clean();
}

#[test]
fn under_safe_reuse_a_first_request_opens_a_connection_and_later_ones_take_pooled_ones() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let sw = http_switch(&[&a, &b], "safe");
    // Round-robin per request: each client's first request goes to a, its second to b.
    for _ in 0..5 {
        assert_eq!(client(sw.addr, &["/who", "/who"]), ["a", "b"]);
    }
    assert_eq!(a.accepted(), 5, "each client's first request on a new connection");
    assert_eq!(b.accepted(), 1, "the second requests share one pooled connection");
    sw.stop_clean();
}

#[test]
fn a_pooled_connection_its_backend_closed_is_replaced_unseen_by_the_client() {
    let a = Backend::start("a");
    let sw = http_switch(&[&a], "always");
    assert_eq!(client(sw.addr, &["/who"]), ["a"]);
    a.close_all();
    assert!(eventually(T, || a.ended.load(Ordering::SeqCst) == 1), "the backend closed its connection");
    assert_eq!(client(sw.addr, &["/who", "/who"]), ["a", "a"], "no error reaches the client");
    assert_eq!(a.accepted(), 2, "the closed one was replaced by a new one");
    sw.stop_clean();
}

#[test]
fn a_connection_whose_answer_was_half_read_is_never_pooled() {
    let a = Backend::start("a");
    let sw = http_switch(&[&a], "always");
    let mut half = connect(sw.addr);
    assert_eq!(get(&mut half, "/who"), "a");
    half.write_all(b"GET /big HTTP/1.1\r\nHost: pool\r\n\r\n").unwrap();
    let mut some = [0u8; 64 * 1024];
    half.read_exact(&mut some).unwrap();
    drop(half);
    // The switch closes that backend connection rather than keep it: the backend sees its end.
    assert!(eventually(T, || a.ended.load(Ordering::SeqCst) == 1), "the half-read connection was closed");
    assert_eq!(client(sw.addr, &["/who"]), ["a"], "the next client gets its own answer");
    assert_eq!(a.accepted(), 2);
    sw.stop_clean();
}
