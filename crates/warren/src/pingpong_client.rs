//! `warren pingpong client <host> <port>`: a blocking driver of the sans-IO pingpong client.
//!
//! One thread, one socket: the core's `poll_timeout` becomes the socket's read timeout, so a
//! delayed hit fires while the driver waits for the server, and nothing ever busy-polls.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use warren_proto::pingpong::{Client, Options};
use warren_proto::{Action, Level, Limits, Nothing, Output, Session};

/// How long to keep reading after our last bytes, so that closing does not reset the
/// connection before the server has read them (a close with unread input sends a RST).
const LINGER: Duration = Duration::from_secs(2);

/// What a pingpong server answers the hello with, for the errors.
const EXPECTED_ANSWER: &str = "PINGPONG 3 GAME <n>";

/// Play one game against the server at `host:port`, printing the course's console lines.
/// Fails if the server cannot be reached, does not answer the hello within `timeout`, refuses
/// the game, or the game ends in an error.
pub fn run(host: &str, port: u16, opts: &Options, timeout: Duration) -> anyhow::Result<()> {
    let addr = crate::serve::resolve(host, port)?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("cannot connect to {addr}"))?;
    let limits = Limits::default();
    // A stuck server must not hang a write forever.
    stream.set_write_timeout(Some(limits.read_timeout))?;
    let mut client = Client::new(opts, &limits, fastrand::u64(..), Instant::now());
    let mut out = Output::new();
    client.handle_open(Instant::now(), &mut out);
    let mut buf = [0u8; 4096];
    // A server answers the hello at once: until its first line is in, wait `timeout`, not the
    // game's idle timeout of minutes.
    let mut first_line_by = Some(Instant::now() + timeout);
    loop {
        flush(&mut stream, &mut out)?;
        if out.is_closed() {
            break;
        }
        let now = Instant::now();
        let mut wait = client.poll_timeout().map(|at| at.saturating_duration_since(now));
        if let Some(by) = first_line_by {
            let left = by.saturating_duration_since(now);
            if left.is_zero() {
                let waited = humantime::format_duration(timeout);
                bail!(
                    "pingpong: {addr} did not answer within {waited}; expected {EXPECTED_ANSWER} (is it the right server?)"
                );
            }
            wait = Some(wait.map_or(left, |w| w.min(left)));
        }
        if wait == Some(Duration::ZERO) {
            client.handle_timeout(now, &mut out);
            continue;
        }
        // `None` blocks until input; a zero timeout would be refused, hence the check above.
        stream.set_read_timeout(wait)?;
        match stream.read(&mut buf) {
            Ok(0) => client.handle_read_closed(Instant::now(), &mut out),
            Ok(n) => {
                if buf[..n].contains(&b'\n') {
                    first_line_by = None;
                }
                client.handle_input(Instant::now(), &buf[..n], &mut out);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                client.handle_timeout(Instant::now(), &mut out);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => client.handle_read_closed(Instant::now(), &mut out),
            Err(e) => return Err(e).context("reading from the server"),
        }
    }
    linger(&mut stream, &mut buf);
    match client.failure() {
        Some(reason) => bail!("pingpong: {addr}: {reason}"),
        None => Ok(()),
    }
}

/// Send everything pending and print the log lines, in the order the core produced them.
fn flush(stream: &mut TcpStream, out: &mut Output<Nothing>) -> anyhow::Result<()> {
    let mut actions = Vec::new();
    out.take_actions(&mut actions);
    for action in actions {
        match action {
            Action::Log(Level::Info, line) => writeln!(std::io::stdout(), "{line}")?,
            Action::Log(Level::Error, line) => eprintln!("{line}"),
            Action::Log(Level::Debug, _) => {}
            Action::Hub(never) => match never {},
            // The client core only logs; it starts no jobs, streams or hand-offs.
            _ => {}
        }
    }
    while !out.pending().is_empty() {
        match stream.write(out.pending()) {
            Ok(0) => bail!("the server stopped reading"),
            Ok(n) => out.consume(n),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // The server left first: what we wanted to say no longer matters.
            Err(e) if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) => {
                break;
            }
            Err(e) => return Err(e).context("writing to the server"),
        }
    }
    Ok(())
}

/// Half-close, then drain the server's last bytes until it closes too (or `LINGER` passes).
fn linger(stream: &mut TcpStream, buf: &mut [u8]) {
    let _ = stream.shutdown(Shutdown::Write);
    let until = Instant::now() + LINGER;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
