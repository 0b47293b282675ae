//! The soak's clients: one kind per way a peer uses (or misuses) a service. Every exchange has
//! read and write timeouts, every hold has a limit, and every loop looks at the soak's end, so
//! all of them stop by themselves.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Read and write timeout of every exchange.
const T: Duration = Duration::from_secs(5);
/// How long past a server's own timeout a held connection may stay open before the client
/// calls it an error: the node's deadlines fire late by at most a scheduling delay.
const MARGIN: Duration = Duration::from_secs(15);
/// The idle timeout the soak's config gives http, echo and chat (`idle_timeout`).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// The protocols' default read timeout: a request started must end within it (HTTP answers
/// 408, line protocols close).
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The connection engine's `write_timeout`: a peer that takes no byte for this long is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Queries per second the DNS client keeps under: the registry's DNS limits answers to 20/s per
/// source /24 (BIND's RRL), and the soak is not about that limit.
const DNS_PAUSE: Duration = Duration::from_millis(100);

/// Where the node's services listen.
#[derive(Clone, Debug)]
pub struct Targets {
    pub http: SocketAddr,
    pub echo: SocketAddr,
    pub chat: SocketAddr,
    pub daytime: SocketAddr,
    pub time: SocketAddr,
    pub chargen: SocketAddr,
    pub exec: SocketAddr,
    pub registry: SocketAddr,
    pub registry_http: SocketAddr,
    pub dns: SocketAddr,
}

/// The kinds of client, each run by [`Kind::workers`] threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    HttpKeepAlive,
    HttpClose,
    Echo,
    Chat,
    Daytime,
    Time,
    ChargenReset,
    Exec,
    RegistryBinary,
    RegistryHttp,
    Dns,
    SlowHttp,
    IdleEcho,
    IdleChat,
    NeverReadChargen,
    NeverReadHttp,
}

impl Kind {
    pub const ALL: [Kind; 16] = [
        Kind::HttpKeepAlive,
        Kind::HttpClose,
        Kind::Echo,
        Kind::Chat,
        Kind::Daytime,
        Kind::Time,
        Kind::ChargenReset,
        Kind::Exec,
        Kind::RegistryBinary,
        Kind::RegistryHttp,
        Kind::Dns,
        Kind::SlowHttp,
        Kind::IdleEcho,
        Kind::IdleChat,
        Kind::NeverReadChargen,
        Kind::NeverReadHttp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::HttpKeepAlive => "http keep-alive",
            Kind::HttpClose => "http close",
            Kind::Echo => "echo",
            Kind::Chat => "chat",
            Kind::Daytime => "daytime",
            Kind::Time => "time",
            Kind::ChargenReset => "chargen reset",
            Kind::Exec => "exec /bin/echo",
            Kind::RegistryBinary => "registry lookup",
            Kind::RegistryHttp => "registry HTTP API",
            Kind::Dns => "DNS",
            Kind::SlowHttp => "slow HTTP header",
            Kind::IdleEcho => "idle echo",
            Kind::IdleChat => "idle chat",
            Kind::NeverReadChargen => "never-read chargen",
            Kind::NeverReadHttp => "never-read HTTP",
        }
    }

    /// What one counted unit of this kind is, and what makes it count.
    pub fn unit(self) -> &'static str {
        match self {
            Kind::HttpKeepAlive => "GETs, 20 per connection (index.html and a 64 KiB file)",
            Kind::HttpClose => "GETs with `Connection: close`",
            Kind::Echo => "sessions of 10 lines echoed, then a half-close",
            Kind::Chat => "sessions: hello, join #soak, say, quit, `bye` seen",
            Kind::Daytime | Kind::Time => "answers read to the end",
            Kind::ChargenReset => "connections: 8 KiB read, then a reset (SO_LINGER 0)",
            Kind::Exec => "`hello` answers, one process each",
            Kind::RegistryBinary => "lookups of `echo` on the binary protocol, 50 per connection",
            Kind::RegistryHttp => "`GET /v1/names/echo`, a connection each",
            Kind::Dns => "A queries for `echo.warren` over UDP, under 10/s",
            Kind::SlowHttp => "a header line every 2 s, closed by the 30 s read timeout",
            Kind::IdleEcho | Kind::IdleChat => "silent connections, closed by the 15 s idle timeout",
            Kind::NeverReadChargen => "chargen never read, given up by the 30 s write timeout",
            Kind::NeverReadHttp => "64 pipelined GETs never read, given up by the 30 s write timeout",
        }
    }

    /// Threads running this kind at once.
    pub fn workers(self) -> usize {
        match self {
            Kind::HttpKeepAlive | Kind::HttpClose | Kind::Echo | Kind::SlowHttp | Kind::IdleEcho | Kind::IdleChat => 2,
            Kind::Chat => 3,
            _ => 1,
        }
    }
}

/// What the clients of one kind have done so far.
#[derive(Debug, Default)]
pub struct Tally {
    pub done: AtomicU64,
    pub errors: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

impl Tally {
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

/// Run `kind` until `end`, pausing `pause` between exchanges, counting into `tally`.
pub fn run(kind: Kind, targets: &Targets, end: Instant, pause: Duration, tally: &Tally) {
    let pause = if kind == Kind::Dns { pause.max(DNS_PAUSE) } else { pause };
    while Instant::now() < end {
        match once(kind, targets, end, pause) {
            Ok(n) => {
                tally.done.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                tally.errors.fetch_add(1, Ordering::Relaxed);
                *tally.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
            }
        }
        std::thread::sleep(pause);
    }
}

/// One exchange (or hold) of `kind`: the units it completed, 0 if the soak ended first.
fn once(kind: Kind, t: &Targets, end: Instant, pause: Duration) -> io::Result<u64> {
    match kind {
        Kind::HttpKeepAlive => http_keep_alive(t.http),
        Kind::HttpClose => http_close(t.http, "/index.html").map(|_| 1),
        Kind::Echo => echo(t.echo),
        Kind::Chat => chat(t.chat),
        Kind::Daytime => read_answer(t.daytime, |a| a.ends_with(b"\r\n")),
        Kind::Time => read_answer(t.time, |a| a.len() == 4),
        Kind::ChargenReset => chargen_reset(t.chargen),
        Kind::Exec => read_answer(t.exec, |a| a == b"hello\n"),
        Kind::RegistryBinary => registry_lookups(t.registry, end, pause),
        Kind::RegistryHttp => http_close(t.registry_http, "/v1/names/echo").map(|_| 1),
        Kind::Dns => dns_queries(t.dns, end, pause),
        Kind::SlowHttp => slow_http(t.http, end),
        Kind::IdleEcho => idle(t.echo, end),
        Kind::IdleChat => idle(t.chat, end),
        Kind::NeverReadChargen => never_read(t.chargen, b"", end),
        Kind::NeverReadHttp => {
            let request = "GET /64k.bin HTTP/1.1\r\nHost: soak\r\n\r\n".repeat(64);
            never_read(t.http, request.as_bytes(), end)
        }
    }
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, T)?;
    stream.set_read_timeout(Some(T))?;
    stream.set_write_timeout(Some(T))?;
    Ok(stream)
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::other(what.into())
}

/// Read one HTTP response; the body is read and dropped. Errors unless the status is 200.
fn read_response(reader: &mut impl BufRead) -> io::Result<u64> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line.split_whitespace().nth(1).unwrap_or("").to_owned();
    let mut length = None;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(bad("HTTP head cut short"));
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<u64>().ok();
        }
    }
    let body = match length {
        Some(n) => io::copy(&mut reader.take(n), &mut io::sink())?,
        None => io::copy(reader, &mut io::sink())?,
    };
    if status != "200" {
        return Err(bad(format!("HTTP {status}")));
    }
    Ok(body)
}

fn http_keep_alive(addr: SocketAddr) -> io::Result<u64> {
    let stream = connect(addr)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    for i in 0..20 {
        let path = if i % 2 == 0 { "/index.html" } else { "/64k.bin" };
        write!(writer, "GET {path} HTTP/1.1\r\nHost: soak\r\n\r\n")?;
        read_response(&mut reader)?;
    }
    Ok(20)
}

fn http_close(addr: SocketAddr, path: &str) -> io::Result<u64> {
    let mut stream = connect(addr)?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")?;
    read_response(&mut BufReader::new(stream))
}

fn echo(addr: SocketAddr) -> io::Result<u64> {
    let stream = connect(addr)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    for i in 0..10 {
        let sent = format!("soak line {i}\n");
        writer.write_all(sent.as_bytes())?;
        line.clear();
        reader.read_line(&mut line)?;
        if line != sent {
            return Err(bad(format!("echo answered {line:?} to {sent:?}")));
        }
    }
    writer.shutdown(Shutdown::Write)?;
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest)?;
    if !rest.is_empty() {
        return Err(bad("echo sent bytes after the half-close"));
    }
    Ok(1)
}

fn chat(addr: SocketAddr) -> io::Result<u64> {
    let stream = connect(addr)?;
    let mut writer = stream.try_clone()?;
    writer.write_all(
        b"{\"cmd\":\"hello\",\"version\":1}\n{\"cmd\":\"join\",\"channel\":\"#soak\"}\n\
          {\"cmd\":\"say\",\"text\":\"hello from the soak\"}\n{\"cmd\":\"quit\"}\n",
    )?;
    // Other chat clients' messages on #soak arrive too; what counts is the `bye` at the end.
    // Bounded: the server closes after `bye`, and a line takes at most T to come.
    for line in BufReader::new(stream).lines().take(10_000) {
        if line?.starts_with("{\"event\":\"bye\"") {
            return Ok(1);
        }
    }
    Err(bad("chat closed without a bye"))
}

/// Connect, send nothing, read to the end, and check the answer.
fn read_answer(addr: SocketAddr, good: impl Fn(&[u8]) -> bool) -> io::Result<u64> {
    let mut answer = Vec::new();
    connect(addr)?.take(4096).read_to_end(&mut answer)?;
    if !good(&answer) {
        return Err(bad(format!("unexpected answer {:?}", String::from_utf8_lossy(&answer))));
    }
    Ok(1)
}

fn chargen_reset(addr: SocketAddr) -> io::Result<u64> {
    let mut stream = connect(addr)?;
    let mut buf = [0u8; 8192];
    stream.read_exact(&mut buf)?;
    // Close with a reset rather than a FIN: the server finds out on its next send.
    socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
    Ok(1)
}

fn registry_lookups(addr: SocketAddr, end: Instant, pause: Duration) -> io::Result<u64> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let name = warren_registry::model::Name::new("echo").map_err(|e| bad(e.to_string()))?;
    runtime.block_on(async {
        let client = warren_registry::client::Client::connect(addr, T).await?;
        let mut done = 0;
        while done < 50 && Instant::now() < end {
            let (_, entry) = tokio::time::timeout(T, client.lookup(&name))
                .await
                .map_err(|_| bad("registry lookup timed out"))?
                .map_err(|e| bad(e.to_string()))?;
            if entry.endpoints.is_empty() {
                return Err(bad("registry: no endpoint for echo"));
            }
            done += 1;
            tokio::time::sleep(pause).await;
        }
        Ok(done)
    })
}

/// A DNS query for `echo.warren.` A with the given id.
fn dns_query(id: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(32);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in ["echo", "warren"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]); // root; type A; class IN
    q
}

fn dns_queries(addr: SocketAddr, end: Instant, pause: Duration) -> io::Result<u64> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.connect(addr)?;
    socket.set_read_timeout(Some(T))?;
    let mut answer = [0u8; 512];
    let mut done = 0;
    while done < 20 && Instant::now() < end {
        let id = fastrand::u16(..);
        socket.send(&dns_query(id))?;
        let n = socket.recv(&mut answer)?;
        let header = answer.get(..12).filter(|_| n >= 12).ok_or_else(|| bad("DNS answer shorter than a header"))?;
        let (flags, answers) = (u16::from_be_bytes([header[2], header[3]]), u16::from_be_bytes([header[6], header[7]]));
        if header[..2] != id.to_be_bytes() || flags & 0x8000 == 0 {
            return Err(bad("DNS answer with another id, or not an answer"));
        }
        if flags & 0x0200 != 0 {
            return Err(bad("DNS answer truncated (rate limited)"));
        }
        if flags & 0x000f != 0 || answers == 0 {
            return Err(bad(format!("DNS rcode {} with {answers} answers", flags & 0x000f)));
        }
        done += 1;
        std::thread::sleep(pause);
    }
    Ok(done)
}

/// Whether the server has closed `stream`, waiting up to `wait`: end of file or a reset, after
/// whatever it sent last (an HTTP 408) has been read.
fn closed_within(stream: &mut TcpStream, wait: Duration) -> io::Result<bool> {
    stream.set_read_timeout(Some(wait))?;
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(true),
            Err(e) => return Err(e),
        }
    }
}

/// A request head that never ends: one header line every 2 s, until the server gives up.
fn slow_http(addr: SocketAddr, end: Instant) -> io::Result<u64> {
    let mut stream = connect(addr)?;
    let limit = Instant::now() + READ_TIMEOUT + MARGIN;
    stream.write_all(b"GET /index.html HTTP/1.1\r\nHost: soak\r\n")?;
    while Instant::now() < end {
        if Instant::now() > limit {
            return Err(bad("a never-ending HTTP head was kept open past the read timeout"));
        }
        if closed_within(&mut stream, Duration::from_secs(2))? {
            return Ok(1);
        }
        if stream.write_all(b"X-Soak: still here\r\n").is_err() {
            return Ok(1); // the server closed between the read and the write
        }
    }
    Ok(0)
}

/// A connection that sends nothing, until the server's idle timeout closes it.
fn idle(addr: SocketAddr, end: Instant) -> io::Result<u64> {
    let mut stream = connect(addr)?;
    let limit = Instant::now() + IDLE_TIMEOUT + MARGIN;
    while Instant::now() < end {
        if Instant::now() > limit {
            return Err(bad("an idle connection was kept open past the idle timeout"));
        }
        if closed_within(&mut stream, Duration::from_secs(1))? {
            return Ok(1);
        }
    }
    Ok(0)
}

/// Send `request` (maybe nothing), never read, and after the write timeout check that the
/// server gave the connection up rather than still sending.
fn never_read(addr: SocketAddr, request: &[u8], end: Instant) -> io::Result<u64> {
    let mut stream = connect(addr)?;
    stream.write_all(request)?;
    let hold = Instant::now() + WRITE_TIMEOUT + Duration::from_secs(10);
    while Instant::now() < hold {
        if Instant::now() >= end {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // What the kernel buffered is read at once; a server still sending would keep this going.
    let mut buf = vec![0u8; 64 * 1024];
    let (start, mut read) = (Instant::now(), 0usize);
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    while start.elapsed() < T && read < 64 << 20 {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(1),
            Ok(n) => read += n,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(1),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(bad("a peer that never read was still open, and silent, after the write timeout"));
            }
            Err(e) => return Err(e),
        }
    }
    Err(bad(format!("a peer that never read was still being sent to after {WRITE_TIMEOUT:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_query_is_well_formed() {
        let q = dns_query(0x1234);
        assert_eq!(&q[..4], &[0x12, 0x34, 0x01, 0x00]);
        assert_eq!(&q[12..], b"\x04echo\x06warren\x00\x00\x01\x00\x01");
    }

    #[test]
    fn http_responses_are_read_to_their_length() {
        let text =
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        let mut reader = BufReader::new(&text[..]);
        assert_eq!(read_response(&mut reader).unwrap(), 5);
        assert_eq!(read_response(&mut reader).unwrap_err().to_string(), "HTTP 404");
    }
}
