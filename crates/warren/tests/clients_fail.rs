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
    fails_clearly_as(&[client, "127.0.0.1", &addr.port().to_string(), "--timeout", "1s"], addr, stdin, want);
}

/// `warren <args>` must fail within a few seconds, naming `addr`, with `want`.
fn fails_clearly_as(args: &[&str], addr: SocketAddr, stdin: &[u8], want: &str) {
    let client = args.join(" ");
    let started = Instant::now();
    let (status, _, err) = run(command(args), stdin, T);
    let took = started.elapsed();
    assert!(!status.success(), "{client}: succeeded against a foreign peer");
    assert!(took < Duration::from_secs(4), "{client}: took {took:?}");
    assert!(err.contains(&addr.to_string()) && err.contains(want), "{client}: {err}");
    assert!(!err.contains("os error"), "{client}: a raw OS error: {err}");
}

/// `warren files put` of a small file to `addr`, giving up after 1 s.
fn files_put_fails_clearly(addr: SocketAddr, want: &str) {
    let local = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let server = addr.to_string();
    fails_clearly_as(&["files", "put", &server, local, "/x.toml", "--timeout", "1s"], addr, b"", want);
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

#[test]
fn files_put_gives_up_on_a_silent_peer() {
    let (_peer, addr) = foreign_peer(b"");
    files_put_fails_clearly(addr, "did not answer within 1s; expected a warren file server");
}

#[test]
fn files_put_refuses_a_peer_that_answers_nonsense() {
    let (_banner, addr) = foreign_peer(b"220 ftp.example.com ready\r\n");
    files_put_fails_clearly(addr, "answered with bytes that are not a frame");
    let (_short, addr) = foreign_peer(b"ok");
    files_put_fails_clearly(addr, "sent 2 bytes but no whole frame within 1s; expected a warren file server");
}

#[test]
fn the_pingpong_client_gives_up_on_a_silent_peer() {
    let (_peer, addr) = foreign_peer(b"");
    let port = addr.port().to_string();
    fails_clearly_as(
        &["pingpong", "client", "127.0.0.1", &port, "--timeout", "1s"],
        addr,
        b"",
        "did not answer within 1s; expected PINGPONG 3 GAME <n>",
    );
}

#[test]
fn the_pingpong_client_refuses_a_peer_that_answers_nonsense() {
    let (_peer, addr) = foreign_peer(b"220 ftp.example.com ready\r\n");
    let port = addr.port().to_string();
    fails_clearly_as(
        &["pingpong", "client", "127.0.0.1", &port, "--timeout", "1s"],
        addr,
        b"",
        "expected PINGPONG 3 GAME",
    );
}

/// `warren chat` with `script` on standard input; its output, within `bound`.
fn chat_session(args: &[&str], script: &str, bound: Duration) -> String {
    let started = Instant::now();
    let (status, out, err) = run(command(args), script.as_bytes(), T);
    let took = started.elapsed();
    assert!(status.success(), "warren chat: {status:?}: {err}");
    assert!(took < bound, "warren chat took {took:?}; output: {out}");
    assert!(!out.contains("os error") && !err.contains("os error"), "a raw OS error: {out}{err}");
    out
}

#[test]
fn chat_connect_gives_up_clearly_and_the_prompt_stays_usable() {
    let (_silent, silent) = foreign_peer(b"");
    let (_ftp, ftp) = foreign_peer(b"220 ftp.example.com ready\r\n");
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let script = format!(
        "/connect 127.0.0.1 {}\n/connect 127.0.0.1 {}\n/connect 127.0.0.1 {}\n/help\n/quit\n",
        silent.port(),
        ftp.port(),
        closed.port()
    );
    let out = chat_session(&["chat", "--timeout", "1s"], &script, Duration::from_secs(5));
    let lines: Vec<&str> = out.lines().collect();
    let expected = "expected a warren chat server";
    let failures = [
        format!("! {silent} did not answer within 1s; {expected}"),
        format!("! {ftp} answered \"220 ftp.example.com ready\", which is not a chat event; {expected}"),
        format!("! cannot connect to {closed}: connection refused (nothing listens there); {expected}"),
    ];
    let mut at = 0;
    for failure in &failures {
        let found = lines[at..].iter().position(|l| l == failure);
        at += found.unwrap_or_else(|| panic!("no {failure:?} in order in:\n{out}")) + 1;
    }
    // The prompt is still there: the next command is answered.
    assert!(lines[at..].iter().any(|l| l.starts_with("* /nick <name>")), "no help after the failures:\n{out}");
}

#[test]
fn chat_connect_gives_up_within_a_few_seconds_by_default() {
    let (_silent, silent) = foreign_peer(b"");
    let script = format!("/connect 127.0.0.1 {}\n/quit\n", silent.port());
    let out = chat_session(&["chat"], &script, Duration::from_secs(8));
    assert!(out.contains(&format!("! {silent} did not answer within 5s; expected a warren chat server")), "{out}");
}

#[test]
fn chat_on_the_command_line_names_a_server_that_answers_nonsense() {
    let (_peer, addr) = foreign_peer(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    let port = addr.port().to_string();
    let out = chat_session(&["chat", "127.0.0.1", &port, "--timeout", "1s"], "/quit\n", Duration::from_secs(4));
    let want = format!("! {addr} answered \"HTTP/1.1 400 Bad Request\", which is not a chat event");
    assert!(out.contains(&want), "{out}");
}

#[test]
fn registry_clients_name_a_peer_that_is_not_a_registry() {
    let (_silent, quiet) = foreign_peer(b"");
    let (_talker, ftp) = foreign_peer(b"220 ftp.example.com ready\r\n");
    for (addr, want) in
        [(quiet, "did not answer within 1s; expected a warren registry"), (ftp, "expected a warren registry")]
    {
        let registry = addr.to_string();
        for verb in [&["lookup", "web"][..], &["list", ""][..], &["call", "HelloServer", "sayHello"][..]] {
            let mut args = verb.to_vec();
            args.extend(["--registry", &registry, "--timeout", "1s"]);
            fails_clearly_as(&args, addr, b"", want);
        }
    }
}
