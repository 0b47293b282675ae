//! Helpers shared by the object server's tests: a `warren objects serve` on a fresh data
//! directory (binary and HTTP fronts on port 0), a tokio runtime for the stubs, a small HTTP/1.1
//! client written from docs/rpc.md, raw binary frames, and the admin CLI.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use warren_rpc::wire::{self, Call, Frame, Reply};
use warren_rpc::{Connection, Target};

use crate::support::{Server, T, command, run};

/// A running object server and what its readiness line told.
pub struct Objects {
    pub server: Server,
    /// The binary protocol.
    pub addr: SocketAddr,
    /// The JSON-over-HTTP front.
    pub http: SocketAddr,
    pub data: PathBuf,
    pub token: PathBuf,
}

/// A fresh, empty directory for `tag` (unique per process and call).
pub fn fresh_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("warren-objects-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

impl Objects {
    /// `warren objects serve` on a fresh data directory, with `extra` flags.
    pub fn start(tag: &str, extra: &[&str]) -> Objects {
        Objects::start_in(&fresh_dir(tag), extra)
    }

    /// `warren objects serve --listen 127.0.0.1:0 --http 127.0.0.1:0 --data DATA -d 0 EXTRA`
    /// (a restart when `data` was used before).
    pub fn start_in(data: &Path, extra: &[&str]) -> Objects {
        let data_arg = data.to_str().unwrap();
        let mut args =
            vec!["objects", "serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data", data_arg, "-d", "0"];
        args.extend_from_slice(extra);
        let server = Server::spawn(&args);
        let http = between(&server.ready, ", http ", ",").parse().expect("the HTTP address in the readiness line");
        let token = PathBuf::from(between(&server.ready, "admin token in ", ")"));
        Objects { addr: server.addr, server, http, data: data.to_owned(), token }
    }

    /// `warren objects ARGS… --server ADDR --token-file TOKEN`: (status, stdout, stderr).
    pub fn admin(&self, args: &[&str]) -> (ExitStatus, String, String) {
        self.admin_with(args, &self.token)
    }

    /// The same with another token file.
    pub fn admin_with(&self, args: &[&str], token: &Path) -> (ExitStatus, String, String) {
        let (server, token) = (self.addr.to_string(), token.to_str().unwrap().to_owned());
        let mut all = vec!["objects"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--server", &server, "--token-file", &token]);
        run(command(&all), b"", T * 3)
    }

    /// Add an object through the CLI, which must succeed.
    pub fn add(&self, name: &str, class: &str, policy: &str, persistent: bool) {
        let mut args = vec!["add", name, "--class", class, "--policy", policy];
        if persistent {
            args.push("--persistent");
        }
        let (status, out, err) = self.admin(&args);
        assert!(status.success(), "objects add {name}: {status:?}\n{out}\n{err}");
        assert!(out.starts_with(&format!("added {name} ")), "{out}");
    }

    /// `warren objects ls`: the names listed.
    pub fn names(&self) -> Vec<String> {
        let (status, out, err) = self.admin(&["ls"]);
        assert!(status.success(), "objects ls: {status:?}\n{err}");
        out.lines().skip(1).filter_map(|l| l.split_whitespace().next().map(str::to_owned)).collect()
    }

    /// `warren call NAME METHOD ARGS… --server ADDR`: (status, stdout, stderr).
    pub fn call_cli(&self, name: &str, method: &str, args: &[&str]) -> (ExitStatus, String, String) {
        let server = self.addr.to_string();
        let mut all = vec!["call", name, method];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--server", &server]);
        run(command(&all), b"", T * 3)
    }

    /// `POST /v1/objects/NAME/METHOD` with `body` on a new connection.
    pub fn post(&self, name: &str, method: &str, body: &str) -> (u16, Value) {
        Http::connect(self.http).request("POST", &format!("/v1/objects/{name}/{method}"), &[], body.as_bytes())
    }

    /// `GET /v1/objects/NAME`'s `active`.
    pub fn active(&self, name: &str) -> bool {
        let (status, info) = Http::connect(self.http).request("GET", &format!("/v1/objects/{name}"), &[], b"");
        assert_eq!(status, 200, "{info}");
        info["active"].as_bool().expect("active")
    }

    /// The server's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.server.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let after = text.split(start).nth(1).unwrap_or_else(|| panic!("no {start:?} in {text:?}"));
    after.split(end).next().unwrap()
}

/// A tokio runtime for the stubs.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A binary connection to `addr`.
pub async fn connect(addr: SocketAddr) -> Connection {
    Connection::connect(addr, T).await.unwrap_or_else(|e| panic!("connect {addr}: {e}"))
}

/// A target on `object` over `conn`, every call bounded by the tests' patience.
pub fn target(conn: &Connection, object: &str) -> Target {
    Target::on(conn, object).with_timeout(T)
}

/// One keep-alive HTTP/1.1 connection with bounded reads.
pub struct Http {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Http {
    pub fn connect(addr: SocketAddr) -> Http {
        Http { stream: crate::support::connect(addr), buf: Vec::new() }
    }

    /// Send a request and read its answer: (status, JSON body; `Null` for an empty one).
    pub fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: warren\r\nContent-Length: {}\r\n", body.len());
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        self.stream.write_all(head.as_bytes()).unwrap();
        self.stream.write_all(body).unwrap();
        self.answer(T).unwrap_or_else(|| panic!("no answer to {method} {path} within {T:?}"))
    }

    /// The next answer, or `None` if the connection ended or `within` passed first.
    pub fn answer(&mut self, within: Duration) -> Option<(u16, Value)> {
        let end = Instant::now() + within;
        loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if self.buf.len() >= at + 4 + length {
                    let body: Vec<u8> = self.buf.drain(..at + 4 + length).skip(at + 4).collect();
                    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
                    let value = if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).unwrap() };
                    return Some((status, value));
                }
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }
}

/// The error code of an HTTP error body (`{"error":{"code":…}}`).
pub fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_else(|| panic!("not an error body: {body}"))
}

/// A generic call frame (JSON arguments, any interface), as `warren call` sends it.
pub fn json_call(id: u64, object: &str, method: &str, args: &str, timeout_ms: u32) -> Vec<u8> {
    let call = Call {
        id,
        object: object.into(),
        interface: String::new(),
        version: 0,
        method: method.into(),
        json: true,
        timeout_ms,
        args: args.as_bytes().to_vec(),
    };
    let mut bytes = Vec::new();
    wire::encode(&Frame::Call(call), &mut bytes).unwrap();
    bytes
}

/// A raw binary connection that reads whole frames with a deadline.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// The server ended the connection.
    pub ended: bool,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        Raw { stream: crate::support::connect(addr), buf: Vec::new(), ended: false }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next reply, or `None` if the connection ended or `within` passed first.
    pub fn reply(&mut self, within: Duration) -> Option<Reply> {
        let end = Instant::now() + within;
        loop {
            if let Some((frame, used)) = wire::decode(&self.buf).expect("a well-formed frame from the server") {
                self.buf.drain(..used);
                match frame {
                    Frame::Reply(reply) => return Some(reply),
                    other => panic!("the server sent {other:?}"),
                }
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.ended = true;
                    return None;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return None;
                }
                Err(_) => {
                    self.ended = true;
                    return None;
                }
            }
        }
    }

    /// Whether the server ends the connection (end of file or reset) within `within`, with no
    /// reply before.
    pub fn closed(&mut self, within: Duration) -> bool {
        match self.reply(within) {
            Some(reply) => panic!("a reply where the end was expected: {reply:?}"),
            None => self.ended,
        }
    }
}

/// Adds a persistent counter `name` to `server` with the admin token in `data`.
pub fn add_counter(server: &Server, data: &Path, name: &str) {
    let token = data.join("admin.token");
    let out = std::process::Command::new(crate::support::BIN)
        .args(["objects", "add", name, "--class", "counter", "--persistent"])
        .args(["--server", &server.addr.to_string(), "--token-file", token.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "add: {}", String::from_utf8_lossy(&out.stderr));
}

/// A client of counter `name` on `server`, over a connection of its own.
pub async fn counter(server: &Server, name: &str) -> warren_objects::examples::CounterClient {
    let conn = Connection::connect(server.addr, T).await.unwrap();
    warren_objects::examples::CounterClient::new(Target::on(&conn, name).with_timeout(T))
}
