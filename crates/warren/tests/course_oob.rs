//! `warren oob send` and `warren oob recv` against Stevens' `tcpsend01`/`tcprecv01` (the
//! course's oobsend/oobrecv), written in C for the tests and compiled with gcc: each warren side
//! talks to the C original, and both print the same lines.

mod course;
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use course::{Peer, c_program};
use support::{Server, T, command, run, wait_bounded};

/// What the sender prints, in order.
const SENDER_LINES: [&str; 5] = [
    "wrote 3 bytes of normal data",
    "wrote 1 byte of OOB data",
    "wrote 2 bytes of normal data",
    "wrote 1 byte of OOB data",
    "wrote 2 bytes of normal data",
];

/// A receiver's lines: the normal bytes `1235689` in reads, each urgent byte (`4`, then `7`)
/// announced by `SIGURG received`, and `received EOF` last.
fn check_receiver(lines: &[String], who: &str) {
    let (mut normal, mut urgent, mut signals) = (String::new(), String::new(), 0);
    let mut expect_oob = false;
    for line in lines {
        if expect_oob {
            let byte = line.strip_prefix("read 1 OOB byte: ").unwrap_or_else(|| panic!("{who}: {line:?} after SIGURG"));
            urgent.push_str(byte);
            expect_oob = false;
        } else if line == "SIGURG received" {
            signals += 1;
            expect_oob = true;
        } else if let Some(rest) = line.strip_prefix("read ") {
            let (n, bytes) = rest.split_once(" bytes: ").unwrap_or_else(|| panic!("{who}: {line:?}"));
            assert_eq!(n.parse::<usize>().unwrap(), bytes.len(), "{who}: {line:?}");
            normal.push_str(bytes);
        } else {
            assert_eq!(line, "received EOF", "{who}: unexpected line in {lines:?}");
        }
    }
    assert_eq!((normal.as_str(), urgent.as_str(), signals), ("1235689", "47", 2), "{who}: {lines:?}");
    assert_eq!(lines.last().map(String::as_str), Some("received EOF"), "{who}: {lines:?}");
}

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
