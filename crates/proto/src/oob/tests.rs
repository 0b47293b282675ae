use std::time::{Duration, SystemTime};

use super::*;
use crate::{Action, SessionId};

fn session(limits: Limits, t0: Instant) -> (OobSession, Output<Nothing>) {
    let info = ConnInfo { id: SessionId(1), peer: None, wall: SystemTime::UNIX_EPOCH, seed: 0 };
    let mut s = Oob { limits }.new_session(&info, t0);
    let mut out = Output::new();
    s.handle_open(t0, &mut out);
    (s, out)
}

/// The lines logged so far, in order.
fn lines(out: &mut Output<Nothing>) -> Vec<String> {
    let mut actions = Vec::new();
    out.take_actions(&mut actions);
    actions
        .into_iter()
        .filter_map(|a| match a {
            Action::Log(Level::Info, line) => Some(line),
            _ => None,
        })
        .collect()
}

#[test]
fn reports_what_oobrecv_prints_for_oobsend() {
    let t0 = Instant::now();
    let (mut s, mut out) = session(Limits::default(), t0);
    s.handle_input(t0, b"123", &mut out);
    s.handle_urgent(t0, Urgent::Pointer, &mut out);
    s.handle_urgent(t0, Urgent::Mark(b'4'), &mut out);
    s.handle_input(t0, b"56", &mut out);
    s.handle_urgent(t0, Urgent::Pointer, &mut out);
    s.handle_urgent(t0, Urgent::Mark(b'7'), &mut out);
    s.handle_input(t0, b"89", &mut out);
    s.handle_read_closed(t0, &mut out);
    assert_eq!(
        lines(&mut out),
        [
            "read 3 bytes: 123",
            "SIGURG received",
            "read 1 OOB byte: 4",
            "read 2 bytes: 56",
            "SIGURG received",
            "read 1 OOB byte: 7",
            "read 2 bytes: 89",
            "received EOF",
        ]
    );
    assert!(out.is_closed());
    assert!(out.pending().is_empty(), "a receiver sends nothing");
}

#[test]
fn a_pointer_that_moves_is_one_signal_and_bytes_before_the_mark_come_between() {
    let t0 = Instant::now();
    let (mut s, mut out) = session(Limits::default(), t0);
    s.handle_urgent(t0, Urgent::Pointer, &mut out);
    s.handle_input(t0, b"ab", &mut out);
    s.handle_urgent(t0, Urgent::Pointer, &mut out);
    s.handle_urgent(t0, Urgent::Mark(b'!'), &mut out);
    assert_eq!(lines(&mut out), ["SIGURG received", "read 2 bytes: ab", "read 1 OOB byte: !"]);
}

#[test]
fn a_mark_without_its_pointer_is_still_announced() {
    let t0 = Instant::now();
    let (mut s, mut out) = session(Limits::default(), t0);
    s.handle_urgent(t0, Urgent::Mark(b'x'), &mut out);
    assert_eq!(lines(&mut out), ["SIGURG received", "read 1 OOB byte: x"]);
}

#[test]
fn an_idle_sender_is_closed() {
    let t0 = Instant::now();
    let limits = Limits { idle_timeout: Duration::from_secs(5), ..Limits::default() };
    let (mut s, mut out) = session(limits, t0);
    s.handle_urgent(t0 + Duration::from_secs(3), Urgent::Pointer, &mut out);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(8)), "urgent data is activity");
    s.handle_timeout(t0 + Duration::from_secs(8), &mut out);
    assert!(out.is_closed());
}
