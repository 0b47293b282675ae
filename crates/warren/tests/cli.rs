//! The command line: help texts, errors, `demo --once`, and the classic clients against real
//! servers.

mod support;

use std::time::Duration;

use support::{MODELS, Server, check_daytime, check_time, command, run};

/// Run `warren <args>` with `stdin`; (status, stdout, stderr).
fn warren(args: &[&str], stdin: &[u8]) -> (std::process::ExitStatus, String, String) {
    run(command(args), stdin, Duration::from_secs(30))
}

#[test]
fn help_names_every_model() {
    for args in [&["--help"][..], &["serve", "--help"], &["serve", "-h"]] {
        let (status, out, err) = warren(args, b"");
        assert!(status.success(), "warren {args:?}: {status:?} {err}");
        for model in MODELS {
            assert!(out.contains(model), "warren {args:?} does not mention {model}:\n{out}");
        }
    }
}

#[test]
fn an_unknown_model_is_a_clear_error() {
    let (status, out, err) = warren(&["serve", "echo", "--model", "threads", "--listen", "127.0.0.1:0"], b"");
    assert!(!status.success(), "exit {status:?}");
    assert!(!out.contains("warren: serving"), "nothing is served: {out}");
    assert!(err.contains("unknown model \"threads\""), "{err}");
    for model in MODELS {
        assert!(err.contains(model), "the error lists {model}: {err}");
    }
}

#[test]
fn a_protocol_without_udp_is_refused() {
    let (status, out, err) = warren(&["serve", "pingpong", "--udp", "--listen", "127.0.0.1:0"], b"");
    assert!(!status.success(), "exit {status:?}");
    assert!(!out.contains("warren: serving"), "{out}");
    assert!(err.contains("UDP serves echo, discard, daytime, time and chargen"), "{err}");
}

#[test]
fn an_address_in_use_is_a_clear_error() {
    let server = Server::serve("echo", "thread", &[]);
    let addr = server.addr.to_string();
    let (status, _, err) = warren(&["serve", "echo", "--listen", &addr], b"");
    assert!(!status.success(), "a second server on {addr}: {status:?}");
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    server.stop_clean();
}

#[test]
fn demo_once_checks_every_server() {
    let (status, out, err) = run(command(&["demo", "--once"]), b"", Duration::from_secs(60));
    assert!(status.success(), "demo --once: {status:?}\n{out}\n{err}");
    let ok = out.lines().filter(|l| l.trim_start().starts_with("ok ")).count();
    assert_eq!(ok, 10, "one ok per server:\n{out}");
    assert!(!out.contains("FAIL"), "{out}");
    for model in MODELS {
        assert!(out.contains(&format!(" under {model}: ")), "the demo runs a server under {model}:\n{out}");
    }
}

#[test]
fn echo_client_over_tcp_and_udp() {
    for (udp, extra) in [(false, &[][..]), (true, &["--udp"][..])] {
        let server = Server::serve("echo", "event", extra);
        let port = server.addr.port().to_string();
        let mut args = vec!["echo", "127.0.0.1", &port];
        args.extend_from_slice(extra);
        let (status, out, err) = warren(&args, b"hello\nworld\n");
        assert!(status.success(), "udp {udp}: {status:?} {err}");
        assert_eq!(out, "hello\nworld\n", "udp {udp}");
        server.stop_clean();
    }
}

#[test]
fn discard_client() {
    let server = Server::serve("discard", "thread", &[]);
    let port = server.addr.port().to_string();
    let (status, out, err) = warren(&["discard", "127.0.0.1", &port], &[b'x'; 1000]);
    assert!(status.success(), "{status:?} {err}");
    assert_eq!(out, "");
    assert!(err.contains("sent 1000 bytes"), "{err}");
    server.stop_clean();
}

#[test]
fn daytime_and_time_clients_over_tcp_and_udp() {
    for extra in [&[][..], &["--udp"][..]] {
        let daytime = Server::serve("daytime", "pool", extra);
        let port = daytime.addr.port().to_string();
        let mut args = vec!["daytime", "127.0.0.1", &port];
        args.extend_from_slice(extra);
        let (status, out, err) = warren(&args, b"");
        assert!(status.success(), "{args:?}: {status:?} {err}");
        check_daytime(out.as_bytes());
        daytime.stop_clean();

        let time = Server::serve("time", "green", extra);
        let port = time.addr.port().to_string();
        let mut args = vec!["time", "127.0.0.1", &port];
        args.extend_from_slice(extra);
        let (status, out, err) = warren(&args, b"");
        assert!(status.success(), "{args:?}: {status:?} {err}");
        // `2026-11-29T15:16:34Z (3973504594 seconds since 1900)`
        let seconds = out.split(" (").nth(1).and_then(|r| r.strip_suffix(" seconds since 1900)\n"));
        let seconds: u32 = seconds.and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{args:?}: {out:?}"));
        check_time(&seconds.to_be_bytes());
        assert!(out.contains('T') && out.split(' ').next().unwrap().ends_with('Z'), "RFC 3339: {out:?}");
        time.stop_clean();
    }
}

#[test]
fn timeserver_and_timeclient() {
    let server = Server::spawn(&["timeserver", "0", "--delay", "100ms", "--model", "thread", "--format", "text"]);
    assert!(
        server.ready.starts_with("warren: serving timeserver (tcp) under thread on 127.0.0.1:"),
        "{}",
        server.ready
    );
    let port = server.addr.port().to_string();
    let (status, out, err) = warren(&["timeclient", "127.0.0.1", &port], b"");
    assert!(status.success(), "{status:?} {err}");
    let line = out.strip_prefix("Time on host 127.0.0.1 is ").unwrap_or_else(|| panic!("{out:?}"));
    check_daytime(line.replace('\n', "\r\n").as_bytes());
    server.stop_clean();
}

#[test]
fn a_client_without_a_server_fails_clearly() {
    // A port that was just free: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let (status, _, err) = warren(&["echo", "127.0.0.1", &port, "--timeout", "2s"], b"hi\n");
    assert!(!status.success(), "{status:?}");
    assert!(err.contains("cannot connect"), "{err}");
}
