//! The tracker on real loopback sockets: SIGURG, the pointer, the bytes before the mark, the
//! byte itself, out of line and inline.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use super::*;

fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

/// Wait (bounded) until the watch has counted a SIGURG after `since`.
fn wait_signal(since: u64) {
    let end = Instant::now() + Duration::from_secs(10);
    while Watch::get().unwrap().generation() == since {
        assert!(Instant::now() < end, "no SIGURG");
        std::thread::yield_now();
    }
}

fn urgent_byte_is_reported_at_its_mark(mode: UrgentMode) {
    let watch = Watch::get().unwrap();
    let (mut client, mut server) = pair();
    arm(server.as_fd(), mode).unwrap();
    let mut tracker = Tracker::new(mode);
    assert_eq!(tracker.check(server.as_fd()), None, "nothing yet");
    let before = watch.generation();
    client.write_all(b"before").unwrap();
    assert_eq!(socket2::SockRef::from(&client).send_out_of_band(b"!").unwrap(), 1);
    client.write_all(b"after").unwrap();
    wait_signal(before);
    assert_eq!(tracker.check(server.as_fd()), Some(Urgent::Pointer), "{mode:?}");
    assert!(tracker.until_mark());
    // Reads stop at the mark; there the byte is taken, inline or not.
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while !tracker.at_mark(server.as_fd()).unwrap().is_some_and(|u| u == Urgent::Mark(b'!')) {
        let n = server.read(&mut buf).unwrap();
        tracker.taken(n);
        got.extend_from_slice(&buf[..n]);
        assert!(got.len() <= 6, "{mode:?}: read across the mark: {got:?}");
    }
    assert_eq!(got, b"before");
    assert!(!tracker.until_mark());
    let mut rest = [0u8; 5];
    server.read_exact(&mut rest).unwrap();
    tracker.taken(rest.len());
    assert_eq!(&rest, b"after", "{mode:?}: the urgent byte is not in the stream");
    // Checked again after another signal, the old byte is no news.
    tracker.seen = u64::MAX;
    assert_eq!(tracker.check(server.as_fd()), None);
}

#[test]
fn out_of_line() {
    urgent_byte_is_reported_at_its_mark(UrgentMode::OutOfLine);
}

#[test]
fn inline() {
    urgent_byte_is_reported_at_its_mark(UrgentMode::Inline);
}

/// The race a driver cannot close: the urgent byte arrives after `at_mark` said "no mark" and
/// before the read, which then starts at the mark and (out of line) skips the byte; the kernel
/// forgets it. The byte count still tells: `Pointer`, then `Mark`.
#[test]
fn an_urgent_byte_skipped_by_a_read_is_still_reported() {
    let (mut client, mut server) = pair();
    arm(server.as_fd(), UrgentMode::OutOfLine).unwrap();
    let mut tracker = Tracker::new(UrgentMode::OutOfLine);
    client.write_all(b"body").unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).unwrap();
    tracker.taken(buf.len());
    assert_eq!(tracker.at_mark(server.as_fd()).unwrap(), None, "no mark before the urgent byte is sent");
    let before = Watch::get().unwrap().generation();
    assert_eq!(socket2::SockRef::from(&client).send_out_of_band(b"!").unwrap(), 1);
    // The byte is in (out of line it raises POLLPRI); a read now starts at the mark.
    let mut fds = [nix::poll::PollFd::new(server.as_fd(), nix::poll::PollFlags::POLLPRI)];
    assert_eq!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(10_000u16)).unwrap(), 1);
    server.set_nonblocking(true).unwrap();
    let skipped = server.read(&mut [0u8; 16]).map_err(|e| e.kind());
    assert_eq!(skipped, Err(std::io::ErrorKind::WouldBlock), "the kernel skipped the byte and has nothing else");
    assert!(!pending(server.as_fd(), UrgentMode::OutOfLine).unwrap(), "and forgot it");
    wait_signal(before);
    assert_eq!(tracker.check(server.as_fd()), Some(Urgent::Pointer));
    assert_eq!(tracker.check(server.as_fd()), Some(Urgent::Mark(0)), "the mark is behind: reported at once");
    assert!(!tracker.until_mark());
    // What follows is ordinary data, and no further report comes of it.
    client.write_all(b"next").unwrap();
    server.set_nonblocking(false).unwrap();
    server.read_exact(&mut buf).unwrap();
    tracker.taken(buf.len());
    assert_eq!(&buf, b"next");
    tracker.seen = u64::MAX;
    assert_eq!(tracker.check(server.as_fd()), None);
}
