//! Command-line clients for the classic protocols, each a few lines over a socket.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use warren_proto::time::decode_time;

use crate::cli::{ClientArgs, TimeclientArgs};
use crate::serve::resolve;

/// `warren echo`: standard input to the server, the echo to standard output.
pub fn echo(args: &ClientArgs) -> anyhow::Result<()> {
    if args.udp {
        let socket = udp_socket(args)?;
        let mut reply = vec![0u8; 65_536];
        let addr = resolve(&args.host, args.port)?;
        for line in io::stdin().lines() {
            let line = format!("{}\n", line?);
            socket.send(line.as_bytes())?;
            let n = socket.recv(&mut reply).map_err(|e| no_answer(e, addr, args.timeout, "the echo"))?;
            io::stdout().write_all(&reply[..n])?;
        }
        return Ok(());
    }
    let stream = connect(args)?;
    let mut writer = stream.try_clone()?;
    let timeout = args.timeout;
    let sender = std::thread::spawn(move || -> io::Result<()> {
        io::copy(&mut io::stdin().lock(), &mut writer)?;
        // Half-close: the server echoes what is in flight, then closes.
        writer.shutdown(Shutdown::Write)?;
        writer.set_read_timeout(Some(timeout))
    });
    let addr = stream.peer_addr()?;
    io::copy(&mut &stream, &mut io::stdout().lock()).map_err(|e| no_answer(e, addr, timeout, "the echo"))?;
    sender.join().map_err(|_| anyhow::anyhow!("stdin reader panicked"))??;
    Ok(())
}

/// `warren discard`: standard input to the server, nothing back.
pub fn discard(args: &ClientArgs) -> anyhow::Result<()> {
    const EXPECTED: &str = "a discard server (it reads everything, answers nothing and closes)";
    let mut stream = connect(args)?;
    let addr = stream.peer_addr()?;
    let sent =
        io::copy(&mut io::stdin().lock(), &mut stream).map_err(|e| no_answer(e, addr, args.timeout, EXPECTED))?;
    stream.shutdown(Shutdown::Write)?;
    let deadline = Instant::now() + args.timeout;
    match read_by(&mut stream, &mut [0u8; 512], deadline) {
        Ok(0) => {}
        Ok(_) => bail!("{addr} sent bytes back; expected {EXPECTED}"),
        Err(e) => return Err(no_answer(e, addr, args.timeout, EXPECTED)),
    }
    eprintln!("sent {sent} bytes");
    Ok(())
}

/// `warren daytime`: print the server's date line.
pub fn daytime(args: &ClientArgs) -> anyhow::Result<()> {
    let reply = ask(args, 128, "a daytime line (RFC 867)")?;
    io::stdout().write_all(&reply)?;
    Ok(())
}

/// `warren time`: print the server's RFC 868 time, decoded.
pub fn time(args: &ClientArgs) -> anyhow::Result<()> {
    const EXPECTED: &str = "the 4 bytes of an RFC 868 time";
    // One byte more than a time: a peer that sends more is not a time server.
    let reply = ask(args, 5, EXPECTED)?;
    let bytes: [u8; 4] = reply.as_slice().try_into().map_err(|_| {
        let sent = if reply.len() > 4 { "more than 4".to_owned() } else { format!("only {}", reply.len()) };
        anyhow::anyhow!("{}:{} sent {sent} bytes, not {EXPECTED}", args.host, args.port)
    })?;
    let unix = decode_time(bytes);
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64);
    println!("{} ({} seconds since 1900)", humantime::format_rfc3339_seconds(wall), u32::from_be_bytes(bytes));
    Ok(())
}

/// `warren timeclient`: the course's TimeClient. Returns as soon as it has the date, without
/// waiting for the server's blocking call to end.
pub fn timeclient(args: &TimeclientArgs) -> anyhow::Result<()> {
    let addr = resolve(&args.host, args.port)?;
    let mut stream =
        TcpStream::connect_timeout(&addr, args.timeout).with_context(|| format!("cannot connect to {addr}"))?;
    let date = read_date(&mut stream, addr, args.timeout)?;
    println!("Time on host {} is {date}", args.host);
    Ok(())
}

/// The longest date line a time server sends (ctime's is 26 bytes, daytime's under 50).
const MAX_DATE_LINE: usize = 256;

/// What the TimeClient expects, for its errors.
const EXPECTED_DATE: &str = "a serialized java.util.Date or a date line";

/// Read the date a time server sends, in any of its forms, within `timeout`: a serialized
/// `java.util.Date` (printed as Java's `Date.toString()` would, in the local zone), or a line
/// (printed as it is).
fn read_date(stream: &mut TcpStream, addr: SocketAddr, timeout: Duration) -> anyhow::Result<String> {
    use warren_proto::timeserver::java_date::{JavaDate, STREAM_MAGIC, decode_java_date, from_unix_millis};
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let ended = match read_by(stream, &mut buf, deadline) {
            Ok(0) => true,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                false
            }
            Err(e) => return Err(no_answer(e, addr, timeout, EXPECTED_DATE)),
        };
        if got.starts_with(&STREAM_MAGIC) {
            match decode_java_date(&got) {
                JavaDate::Millis(millis) => {
                    let wall = from_unix_millis(millis);
                    let (offset, zone) = crate::local_zone::local_zone(wall);
                    return Ok(warren_proto::timeserver::format_java_date(wall, offset, &zone));
                }
                JavaDate::Mismatch(_) => bail!("{addr} sent a Java object that is not a java.util.Date"),
                JavaDate::Incomplete if ended => bail!("{addr} closed the connection in the middle of its date"),
                JavaDate::Incomplete => continue,
            }
        }
        let line_end = got.iter().position(|&b| b == b'\n');
        if line_end.is_none() && !ended {
            if got.len() > MAX_DATE_LINE {
                bail!("{addr} sent {} bytes without a line end, not {EXPECTED_DATE}", got.len());
            }
            continue;
        }
        let line = &got[..line_end.unwrap_or(got.len())];
        if line.is_empty() && ended {
            bail!("{addr} closed the connection without sending {EXPECTED_DATE}");
        }
        let text = std::str::from_utf8(line)
            .ok()
            .filter(|t| !t.chars().any(|c| c.is_control() && c != '\r'))
            .with_context(|| format!("{addr} sent binary data, not {EXPECTED_DATE}"))?;
        return Ok(text.trim_end().to_owned());
    }
}

/// One read that gives up at `deadline`.
fn read_by(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// A failed read or write, told as what it means: a peer that is silent (or takes no bytes) past
/// the timeout does not speak the protocol; a reset says the peer hung up. Never a raw OS error.
fn no_answer(e: io::Error, addr: SocketAddr, timeout: Duration, expected: &str) -> anyhow::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => anyhow::anyhow!(
            "{addr} did not answer within {}; expected {expected} (is it the right server?)",
            humantime::format_duration(timeout)
        ),
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
            anyhow::anyhow!("{addr} reset the connection; expected {expected}")
        }
        _ => anyhow::anyhow!("talking to {addr} failed ({}); expected {expected}", e.kind()),
    }
}

/// `warren chat`.
pub fn chat(host: Option<String>, port: Option<u16>, timeout: Duration) -> anyhow::Result<()> {
    let server = match (host, port) {
        (Some(host), port) => Some((host, port.unwrap_or(warren_proto::chat::DEFAULT_PORT))),
        (None, Some(_)) => bail!("a port needs a host"),
        (None, None) => None,
    };
    crate::chat_client::run(server, timeout)
}

/// `warren pingpong client`.
pub fn pingpong(
    host: &str,
    port: u16,
    options: &warren_proto::pingpong::Options,
    timeout: Duration,
) -> anyhow::Result<()> {
    crate::pingpong_client::run(host, port, options, timeout)
}

/// Read a whole short answer, at most `max` bytes, within the timeout: over TCP until the server
/// closes, over UDP one datagram. `expected` names the answer for the errors.
fn ask(args: &ClientArgs, max: usize, expected: &str) -> anyhow::Result<Vec<u8>> {
    let addr = resolve(&args.host, args.port)?;
    if args.udp {
        let socket = udp_socket(args)?;
        socket.send(b"\n").with_context(|| format!("cannot send to {addr}"))?;
        let mut reply = vec![0u8; 65_536];
        let n = socket.recv(&mut reply).map_err(|e| no_answer(e, addr, args.timeout, expected))?;
        reply.truncate(n.min(max));
        return Ok(reply);
    }
    let mut stream = connect(args)?;
    let deadline = Instant::now() + args.timeout;
    let mut reply = Vec::new();
    let mut buf = [0u8; 512];
    while reply.len() < max {
        match read_by(&mut stream, &mut buf, deadline) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) => return Err(no_answer(e, addr, args.timeout, expected)),
        }
    }
    reply.truncate(max);
    Ok(reply)
}

fn connect(args: &ClientArgs) -> anyhow::Result<TcpStream> {
    let addr = resolve(&args.host, args.port)?;
    let stream =
        TcpStream::connect_timeout(&addr, args.timeout).with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(args.timeout))?;
    // A peer that takes no bytes must not hang the client either.
    stream.set_write_timeout(Some(args.timeout))?;
    Ok(stream)
}

fn udp_socket(args: &ClientArgs) -> anyhow::Result<UdpSocket> {
    let addr = resolve(&args.host, args.port)?;
    let local: std::net::SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let socket = UdpSocket::bind(local)?;
    socket.connect(addr)?;
    socket.set_read_timeout(Some(args.timeout))?;
    Ok(socket)
}
