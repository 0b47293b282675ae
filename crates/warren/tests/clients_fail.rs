//! Every classic client against a peer that does not speak its protocol: it gives up within its
//! timeout, naming the address and what it expected, never with a raw OS error.

mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use support::{Server, T, command, run};

/// A peer that accepts, says `say`, and then holds each connection without reading.
fn foreign_peer(say: &'static [u8]) -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepting = listener.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut stream in accepting.incoming().flatten().take(8) {
            let _ = stream.write_all(say);
            held.push(stream);
        }
        std::thread::sleep(Duration::from_secs(20));
    });
    (listener, addr)
}

/// `warren <client> 127.0.0.1 <port> --timeout 1s` must fail within a few seconds with `want`.
fn fails_clearly(client: &str, addr: SocketAddr, stdin: &[u8], want: &str) {
    let started = Instant::now();
    let (status, _, err) = run(command(&[client, "127.0.0.1", &addr.port().to_string(), "--timeout", "1s"]), stdin, T);
    let took = started.elapsed();
    assert!(!status.success(), "{client}: succeeded against a foreign peer");
    assert!(took < Duration::from_secs(4), "{client}: took {took:?}");
    assert!(err.contains(&addr.to_string()) && err.contains(want), "{client}: {err}");
    assert!(!err.contains("os error"), "{client}: a raw OS error: {err}");
}

#[test]
fn classic_clients_give_up_on_a_silent_peer() {
    let (_peer, addr) = foreign_peer(b"");
    fails_clearly("daytime", addr, b"", "did not answer within 1s; expected a daytime line (RFC 867)");
    fails_clearly("time", addr, b"", "did not answer within 1s; expected the 4 bytes of an RFC 868 time");
    fails_clearly("echo", addr, b"hello\n", "did not answer within 1s; expected the echo");
    fails_clearly("discard", addr, b"hello\n", "expected a discard server");
}

#[test]
fn the_time_client_refuses_a_daytime_answer() {
    let daytime = Server::serve("daytime", "thread", &[]);
    fails_clearly("time", daytime.addr, b"", "sent more than 4 bytes, not the 4 bytes of an RFC 868 time");
    daytime.stop_clean();
}

#[test]
fn the_discard_client_refuses_a_peer_that_answers() {
    let chargen = Server::serve("chargen", "thread", &[]);
    fails_clearly("discard", chargen.addr, b"x\n", "sent bytes back; expected a discard server");
    chargen.stop();
}
