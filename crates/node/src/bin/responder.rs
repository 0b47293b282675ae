//! `warren-responder`: the tiny program the node's tests and `warren bench superd` start, and a
//! reference for writing inetd and socket-activated servers.
//!
//! - no argument (inetd `nowait`, tcpserver): write one line to standard output and exit;
//! - `wait-tcp N` (inetd `wait`, systemd `Accept=no`): take the listener from fd 3 as
//!   `LISTEN_FDS`/`LISTEN_PID` say, answer N connections with a line naming this process, exit;
//! - `wait-udp N`: the same for N datagrams on standard input.

use std::io::Write;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::FromRawFd;

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next();
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1);
    let line = format!(
        "pid={} listen_pid={} listen_fds={} names={} remote={}\n",
        std::process::id(),
        var("LISTEN_PID"),
        var("LISTEN_FDS"),
        var("LISTEN_FDNAMES"),
        var("TCPREMOTEIP")
    );
    match mode.as_deref() {
        None => {
            let _ = std::io::stdout().write_all(line.as_bytes());
        }
        Some("wait-tcp") => {
            assert_eq!(var("LISTEN_PID"), std::process::id().to_string(), "LISTEN_PID names this process");
            // SAFETY: the systemd protocol hands this process the listener as fd 3, owned by it.
            let listener = unsafe { TcpListener::from_raw_fd(3) };
            for _ in 0..count {
                if let Ok((mut conn, _)) = listener.accept() {
                    let _ = conn.write_all(line.as_bytes());
                }
            }
        }
        Some("wait-udp") => {
            // SAFETY: inetd hands a dgram `wait` server its socket as standard input.
            let socket = unsafe { UdpSocket::from_raw_fd(0) };
            let mut buf = [0; 512];
            for _ in 0..count {
                if let Ok((_, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(line.as_bytes(), from);
                }
            }
        }
        Some(other) => {
            eprintln!("warren-responder: unknown mode {other:?}; want wait-tcp N or wait-udp N");
            std::process::exit(2);
        }
    }
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| "-".into())
}
