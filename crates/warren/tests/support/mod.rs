//! Shared helpers for the integration tests: a guard for a running `warren` server, line-based
//! connections with bounded reads, and small protocol clients written from the wire formats in
//! docs/protocols.md (not from the crate's own client cores).
#![allow(dead_code)]

#[macro_use]
mod macros;
pub mod chat;
pub mod check;
pub mod pingpong;
pub mod server;
pub mod who;

#[allow(unused_imports)]
pub use check::*;
#[allow(unused_imports)]
pub use server::*;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_warren");

/// Every server model, in the chapter's order.
pub const MODELS: [&str; 8] = ["iterative", "thread", "pool", "fork", "prefork", "event", "green", "hybrid"];

/// How long any single read, connect or wait may take before a test gives up.
pub const T: Duration = Duration::from_secs(10);

/// How long a server may take to exit after SIGTERM (fork and prefork wait up to 5 s for their
/// children before SIGKILL).
pub const EXIT_BOUND: Duration = Duration::from_secs(10);

/// A `warren` command with a clean environment: no `RUST_LOG`, stdin closed, output piped, and a
/// process group of its own (so that a forced stop can take the hub and worker processes too).
pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("RUST_LOG").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.process_group(0);
    cmd
}

/// Run a `warren` command to the end (bounded by `within`); its status, stdout and stderr.
pub fn run(mut cmd: Command, stdin: &[u8], within: Duration) -> (ExitStatus, String, String) {
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn warren");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let (out, err) = (drain(child.stdout.take().expect("stdout")), drain(child.stderr.take().expect("stderr")));
    let status = wait_bounded(&mut child, within);
    let Some(status) = status else {
        force_kill(&mut child);
        panic!("{cmd:?} did not finish within {within:?}; stdout:\n{}\nstderr:\n{}", out.take(), err.take());
    };
    let _ = feeder.join();
    (status, out.take_after_eof(), err.take_after_eof())
}

/// Collects a pipe's output on a thread.
pub struct Drained {
    text: Arc<Mutex<String>>,
    done: Receiver<()>,
}

impl Drained {
    /// What was read so far.
    pub fn take(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// Everything, once the pipe closed (bounded: a stray child could hold it open).
    pub fn take_after_eof(&self) -> String {
        let _ = self.done.recv_timeout(Duration::from_secs(3));
        self.take()
    }
}

pub fn drain(mut pipe: impl Read + Send + 'static) -> Drained {
    let text = Arc::new(Mutex::new(String::new()));
    let (tx, done) = mpsc::channel();
    let sink = text.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        let _ = tx.send(());
    });
    Drained { text, done }
}

pub(crate) fn wait_bounded(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub(crate) fn force_kill(child: &mut Child) {
    // The whole group: the server and any hub or worker processes it forked.
    let _ = kill(Pid::from_raw(-(child.id() as i32)), Signal::SIGKILL);
    let _ = child.kill();
    let _ = child.wait();
}

/// Connect with bounded connect, read and write timeouts.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, T).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(T)).unwrap();
    stream.set_write_timeout(Some(T)).unwrap();
    stream
}

/// How a byte stream ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// A clean end of file.
    Eof,
    /// Reset or another error (its kind).
    Error(io::ErrorKind),
    /// Nothing within the deadline.
    Timeout,
}

pub fn end_of(e: &io::Error) -> End {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => End::Timeout,
        kind => End::Error(kind),
    }
}

/// Read everything until the peer closes (or `within` passes); the bytes and how it ended.
pub fn read_all(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, End) {
    let end = Instant::now() + within;
    let mut data = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (data, End::Timeout);
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return (data, End::Eof),
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (data, end_of(&e)),
        }
    }
}

/// Send `GET path` on a kept-alive HTTP/1.1 connection.
pub fn http_get(stream: &mut TcpStream, path: &str) {
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: warren\r\n\r\n").as_bytes()).unwrap();
}

/// Read one HTTP answer (a head and a `Content-Length` body) within `within`: its status line,
/// or how the stream ended first (`Timeout`: no whole answer in time).
pub fn http_answer(stream: &mut TcpStream, within: Duration) -> Result<String, End> {
    let end = Instant::now() + within;
    let mut data = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..at]).into_owned();
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .unwrap_or(0);
            if data.len() >= at + 4 + length {
                return Ok(head.lines().next().unwrap_or_default().to_owned());
            }
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(End::Timeout);
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return Err(End::Eof),
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(end_of(&e)),
        }
    }
}

/// A line-oriented connection with bounded reads; keeps partial lines.
pub struct Lines {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Lines {
    pub fn connect(addr: SocketAddr) -> Lines {
        Lines { stream: connect(addr), buf: Vec::new() }
    }

    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes());
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap_or_else(|e| panic!("write {:?}: {e}", String::from_utf8_lossy(bytes)));
    }

    pub fn half_close(&mut self) {
        self.stream.shutdown(Shutdown::Write).expect("shutdown(Write)");
    }

    /// The next whole line (without its `\n`), `Ok(None)` at a clean end of file. A partial
    /// line at the end of file is an `UnexpectedEof` error.
    pub fn next_line(&mut self, within: Duration) -> io::Result<Option<String>> {
        let end = Instant::now() + within;
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Ok(Some(String::from_utf8_lossy(&line[..pos]).into_owned()));
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no whole line; have {:?}", self.partial()),
                ));
            }
            self.stream.set_read_timeout(Some(left))?;
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) if self.buf.is_empty() => return Ok(None),
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("partial line {:?}", self.partial()),
                    ));
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The next line; panics on end of file, error or timeout.
    pub fn line(&mut self) -> String {
        match self.next_line(T) {
            Ok(Some(line)) => line,
            Ok(None) => panic!("end of file where a line was expected"),
            Err(e) => panic!("no line: {e}"),
        }
    }

    /// The connection must end cleanly (end of file, no more data) within `within`.
    pub fn expect_eof(&mut self, within: Duration) {
        match self.next_line(within) {
            Ok(None) => {}
            Ok(Some(line)) => panic!("expected end of file, got line {line:?}"),
            Err(e) => panic!("expected a clean end of file, got {e} ({:?})", end_of(&e)),
        }
    }

    fn partial(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}

/// Poll `cond` until it holds or `within` passes.
pub fn eventually(within: Duration, cond: impl FnMut() -> bool) -> bool {
    eventually_every(within, Duration::from_millis(10), cond)
}

/// [`eventually`], asking every `every` (for conditions that cost something to ask).
pub fn eventually_every(within: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// A scratch data directory (not made: the server under test makes it), removed on drop.
pub struct Data(pub std::path::PathBuf);

impl Data {
    pub fn new(tag: &str) -> Data {
        let dir = std::env::temp_dir().join(format!("warren-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Data(dir)
    }

    /// The path as a command-line argument.
    pub fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Data {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
