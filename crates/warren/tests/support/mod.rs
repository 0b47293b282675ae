//! Shared helpers for the integration tests: a guard for a running `warren` server, line-based
//! connections with bounded reads, and small protocol clients written from the wire formats in
//! docs/protocols.md (not from the crate's own client cores).
#![allow(dead_code)]

pub mod chat;
pub mod pingpong;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

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

fn wait_bounded(child: &mut Child, within: Duration) -> Option<ExitStatus> {
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

fn force_kill(child: &mut Child) {
    // The whole group: the server and any hub or worker processes it forked.
    let _ = kill(Pid::from_raw(-(child.id() as i32)), Signal::SIGKILL);
    let _ = child.kill();
    let _ = child.wait();
}

/// A running server. Dropping it stops it: SIGTERM, a bounded wait, then SIGKILL.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub label: String,
    /// The readiness line.
    pub ready: String,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Drained,
    exited: Option<ExitStatus>,
}

/// What a stopped server left behind.
#[derive(Debug)]
pub struct Stopped {
    pub status: ExitStatus,
    /// Every stdout line after the readiness line.
    pub stdout: Vec<String>,
    pub stderr: String,
    /// From the signal to the exit.
    pub took: Duration,
}

impl Stopped {
    /// The `warren: stopped...` line, which must be there.
    pub fn stopped_line(&self) -> &str {
        self.stdout
            .iter()
            .rev()
            .find(|l| l.starts_with("warren: stopped"))
            .unwrap_or_else(|| panic!("no stopped line; stdout: {:?}; stderr: {}", self.stdout, self.stderr))
    }

    /// (served, refused) from the stopped line.
    pub fn counts(&self) -> (u64, u64) {
        let line = self.stopped_line();
        let rest = line.split(": ").nth(2).unwrap_or_else(|| panic!("malformed stopped line {line:?}"));
        let words: Vec<&str> = rest.split_whitespace().collect();
        match words.as_slice() {
            [served, "connections", "served,", refused, "refused"] => {
                (served.parse().expect("served"), refused.parse().expect("refused"))
            }
            _ => panic!("malformed stopped line {line:?}"),
        }
    }

    /// Exit status 0 and a stopped line.
    pub fn assert_clean(&self, what: &str) {
        assert!(self.status.success(), "{what}: exit {:?}; stdout: {:?}; stderr: {}", self.status, self.stdout, self.stderr);
        let _ = self.stopped_line();
    }
}

impl Server {
    /// `warren serve <protocol> --model <model> --listen 127.0.0.1:0 -d 0 <extra>`.
    pub fn serve(protocol: &str, model: &str, extra: &[&str]) -> Server {
        let mut args = vec!["serve", protocol, "--model", model, "--listen", "127.0.0.1:0", "-d", "0"];
        args.extend_from_slice(extra);
        Server::spawn(&args)
    }

    /// Any server command that prints the readiness line.
    pub fn spawn(args: &[&str]) -> Server {
        Server::start(command(args), args.join(" "))
    }

    /// Start `cmd` (stdout and stderr piped) and wait for its readiness line.
    pub fn start(mut cmd: Command, label: String) -> Server {
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{label}: spawn: {e}"));
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = drain(child.stderr.take().expect("stderr piped"));
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = io::BufReader::new(stdout);
            let mut line = String::new();
            while matches!(io::BufRead::read_line(&mut reader, &mut line), Ok(n) if n > 0) {
                if tx.send(line.trim_end_matches(['\r', '\n']).to_owned()).is_err() {
                    break;
                }
                line.clear();
            }
        });
        let mut server =
            Server { child, addr: ([0, 0, 0, 0], 0).into(), label, ready: String::new(), lines, seen: Vec::new(), stderr, exited: None };
        let ready = server.wait_stdout(|l| l.starts_with("warren: serving "), T).unwrap_or_else(|| {
            let status = server.child.try_wait().ok().flatten();
            panic!("{}: no readiness line within {T:?} (exit {status:?}); stdout: {:?}; stderr: {}", server.label, server.seen, server.stderr.take())
        });
        let addr = ready.rsplit(" on ").next().and_then(|a| a.parse().ok());
        server.addr = addr.unwrap_or_else(|| panic!("{}: no address in {ready:?}", server.label));
        server.ready = ready;
        server.seen.clear();
        server
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Wait (bounded) for a stdout line matching `pred`; lines before it are kept.
    pub fn wait_stdout(&mut self, pred: impl Fn(&str) -> bool, within: Duration) -> Option<String> {
        let end = Instant::now() + within;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = pred(&line);
                    self.seen.push(line.clone());
                    if hit {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid()), sig).unwrap_or_else(|e| panic!("{}: kill {sig}: {e}", self.label));
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("try_wait");
        }
        self.exited.is_none()
    }

    /// Wait (bounded) for the server to exit by itself.
    pub fn wait_exit(mut self, within: Duration) -> Stopped {
        let start = Instant::now();
        let status = self.exited.take().or_else(|| wait_bounded(&mut self.child, within));
        let Some(status) = status else {
            let label = self.label.clone();
            let stderr = self.stderr.take();
            force_kill(&mut self.child);
            self.exited = self.child.try_wait().ok().flatten();
            panic!("{label}: did not exit within {within:?}; stdout: {:?}; stderr: {stderr}", self.seen);
        };
        self.exited = Some(status);
        self.finish(status, start.elapsed())
    }

    /// Send `sig` and wait (bounded) for the exit.
    pub fn stop_with(self, sig: Signal) -> Stopped {
        self.signal(sig);
        self.wait_exit(EXIT_BOUND)
    }

    /// SIGTERM and wait (bounded) for the exit.
    pub fn stop(self) -> Stopped {
        self.stop_with(Signal::SIGTERM)
    }

    /// SIGTERM, wait, and check exit status 0 and the stopped line.
    pub fn stop_clean(self) -> Stopped {
        let label = self.label.clone();
        let stopped = self.stop();
        stopped.assert_clean(&label);
        stopped
    }

    fn finish(&mut self, status: ExitStatus, took: Duration) -> Stopped {
        // The rest of stdout: until the pipe closes, bounded in case a stray child holds it.
        let end = Instant::now() + Duration::from_secs(3);
        loop {
            match self.lines.recv_timeout(end.saturating_duration_since(Instant::now())) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Disconnected) | Err(RecvTimeoutError::Timeout) => break,
            }
        }
        Stopped { status, stdout: std::mem::take(&mut self.seen), stderr: self.stderr.take_after_eof(), took }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exited.is_some() || matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = kill(Pid::from_raw(self.pid()), Signal::SIGTERM);
        if wait_bounded(&mut self.child, EXIT_BOUND).is_none() {
            force_kill(&mut self.child);
        }
    }
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
                return Err(io::Error::new(io::ErrorKind::TimedOut, format!("no whole line; have {:?}", self.partial())));
            }
            self.stream.set_read_timeout(Some(left))?;
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) if self.buf.is_empty() => return Ok(None),
                Ok(0) => {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("partial line {:?}", self.partial())));
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

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64
}

const WEEKDAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const MONTHS: [&str; 12] =
    ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];

/// Parse an RFC 867 line as warren sends it (`Sunday, November 29, 2026 15:16:34-UTC\r\n`,
/// CR LF included) into seconds since the Unix epoch, checking the weekday.
pub fn parse_daytime(line: &str) -> Result<i64, String> {
    let bad = |why: &str| format!("bad daytime line {line:?}: {why}");
    let body = line.strip_suffix("\r\n").ok_or_else(|| bad("not ended by CR LF"))?;
    let words: Vec<&str> = body.split(' ').collect();
    let [weekday, month, day, year, clock] = words.as_slice() else { return Err(bad("not five words")) };
    let weekday = weekday.strip_suffix(',').ok_or_else(|| bad("weekday"))?;
    let day = day.strip_suffix(',').ok_or_else(|| bad("day comma"))?;
    if day.starts_with('0') {
        return Err(bad("day has a leading zero"));
    }
    let day: i64 = day.parse().map_err(|_| bad("day"))?;
    let month = MONTHS.iter().position(|m| m == month).ok_or_else(|| bad("month"))? as i64 + 1;
    let year: i64 = year.parse().map_err(|_| bad("year"))?;
    let clock = clock.strip_suffix("-UTC").ok_or_else(|| bad("no -UTC"))?;
    let hms: Vec<&str> = clock.split(':').collect();
    if hms.len() != 3 || hms.iter().any(|p| p.len() != 2) {
        return Err(bad("time is not hh:mm:ss"));
    }
    let hms: Vec<i64> = hms.iter().map(|p| p.parse().map_err(|_| bad("time"))).collect::<Result<_, _>>()?;
    let days = days_from_civil(year, month, day);
    if WEEKDAYS[(days + 4).rem_euclid(7) as usize] != weekday {
        return Err(bad("weekday does not match the date"));
    }
    Ok(days * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2])
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Check a daytime answer: one line, CR LF, within a few seconds of now.
pub fn check_daytime(reply: &[u8]) {
    let text = std::str::from_utf8(reply).unwrap_or_else(|_| panic!("daytime reply is not text: {reply:?}"));
    assert_eq!(text.matches('\n').count(), 1, "one line: {text:?}");
    let at = parse_daytime(text).unwrap_or_else(|e| panic!("{e}"));
    assert!((at - unix_now()).abs() <= 5, "daytime {text:?} is not now");
}

/// Check an RFC 868 answer: exactly four bytes, within a few seconds of now.
pub fn check_time(reply: &[u8]) {
    let bytes: [u8; 4] = reply.try_into().unwrap_or_else(|_| panic!("time: expected 4 bytes, got {reply:?}"));
    let unix = i64::from(u32::from_be_bytes(bytes)) - 2_208_988_800;
    assert!((unix - unix_now()).abs() <= 5, "time {unix} is not now ({})", unix_now());
}

/// User plus system CPU time of a process, from /proc/<pid>/stat.
pub fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 1000 / clock_ticks())
}

fn clock_ticks() -> u64 {
    let out = Command::new("getconf").arg("CLK_TCK").output();
    out.ok().and_then(|o| String::from_utf8(o.stdout).ok()).and_then(|s| s.trim().parse().ok()).unwrap_or(100)
}

/// Poll `cond` until it holds or `within` passes.
pub fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One `#[test]` per server model, each calling `$check(model)`.
#[allow(unused_macros)]
macro_rules! per_model {
    ($check:expr) => {
        #[test]
        fn iterative() {
            $check("iterative")
        }
        #[test]
        fn thread() {
            $check("thread")
        }
        #[test]
        fn pool() {
            $check("pool")
        }
        #[test]
        fn fork() {
            $check("fork")
        }
        #[test]
        fn prefork() {
            $check("prefork")
        }
        #[test]
        fn event() {
            $check("event")
        }
        #[test]
        fn green() {
            $check("green")
        }
        #[test]
        fn hybrid() {
            $check("hybrid")
        }
    };
}
