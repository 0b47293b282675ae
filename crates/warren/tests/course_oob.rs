//! `warren oob send` and `warren oob recv` against Stevens' `tcpsend01`/`tcprecv01` (the
//! course's oobsend/oobrecv), written in C for the tests and compiled with gcc: each warren side
//! talks to the C original, and both print the same lines.

mod course;
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use course::{Peer, SENDER_LINES, c_program, check_receiver};
use support::{Server, T, command, run, wait_bounded};

#[test]
fn warren_oob_send_to_the_c_oobrecv() {
    let mut receiver = Command::new(c_program("oobrecv"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("oobrecv");
    let mut lines = BufReader::new(receiver.stdout.take().unwrap()).lines();
    let mut receiver = Peer(receiver);
    let port = lines.next().expect("oobrecv's port").unwrap();
    let port = port.strip_prefix("port ").unwrap_or_else(|| panic!("{port:?}"));
    let (status, out, err) = run(command(&["oob", "send", "127.0.0.1", port, "--pause", "200ms"]), b"", T);
    assert!(status.success(), "{status:?}: {err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), SENDER_LINES, "the sender's lines");
    assert!(wait_bounded(&mut receiver.0, T).is_some(), "oobrecv did not see the end");
    let received: Vec<String> = lines.map(|l| l.unwrap()).collect();
    check_receiver(&received, "the C oobrecv");
}

#[test]
fn the_c_oobsend_to_warren_oob_recv() {
    let server = Server::spawn(&["oob", "recv", "0"]);
    let sender = Command::new(c_program("oobsend"))
        .args(["127.0.0.1", &server.addr.port().to_string(), "200"])
        .stdin(Stdio::null())
        .output()
        .expect("oobsend");
    assert!(sender.status.success(), "oobsend: {}", String::from_utf8_lossy(&sender.stderr));
    assert_eq!(String::from_utf8_lossy(&sender.stdout).lines().collect::<Vec<_>>(), SENDER_LINES);
    let stopped = server.wait_exit(T);
    assert!(stopped.status.success(), "{stopped:?}");
    check_receiver(&stopped.stdout, "warren oob recv");
}

#[test]
fn warren_oob_send_names_a_receiver_that_is_not_there() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let (status, _, err) =
        run(command(&["oob", "send", "127.0.0.1", &port, "--pause", "1ms"]), b"", Duration::from_secs(10));
    assert!(!status.success());
    assert!(err.contains(&format!("cannot connect to 127.0.0.1:{port}")), "{err}");
}
