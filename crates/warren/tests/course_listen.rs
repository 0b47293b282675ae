//! `--listen`: the course-shaped servers bind where they are told (loopback by default), so
//! that clients on another machine can reach them; a bad address is a clear error.

mod support;

use std::net::IpAddr;

use support::{Server, T, command, connect, run};

/// Each course-shaped server, told to listen on 127.0.0.2, listens there (and not on the
/// default 127.0.0.1).
#[test]
fn course_servers_listen_where_told() {
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    let commands: [&[&str]; 4] = [
        &["timeserver", "0", "--listen", "127.0.0.2", "--delay", "10ms"],
        &["largerhttpd", "0", "2", "--listen", "127.0.0.2"],
        &["chatserver", "-p", "0", "--listen", "127.0.0.2"],
        &["pingpong", "server", "127.0.0.1", "0", "--listen", "127.0.0.2"],
    ];
    let state = std::env::temp_dir().join(format!("warren-listen-{}", std::process::id()));
    for args in commands {
        let mut cmd = command(args);
        cmd.env("XDG_STATE_HOME", &state);
        let server = Server::start(cmd, args.join(" "));
        assert_eq!(server.addr.ip(), other, "{args:?}: {}", server.ready);
        drop(connect(server.addr));
        let default = std::net::SocketAddr::new([127, 0, 0, 1].into(), server.addr.port());
        assert!(std::net::TcpStream::connect_timeout(&default, T).is_err(), "{args:?} also listens on {default}");
        server.stop();
    }
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn default_is_loopback_and_a_bad_address_is_refused() {
    let server = Server::spawn(&["timeserver", "0", "--delay", "10ms"]);
    assert!(server.addr.ip().is_loopback(), "{}", server.ready);
    server.stop();
    for args in [&["timeserver", "0", "--listen", "nowhere"][..], &["chatserver", "-p", "0", "--listen", "1.2.3"]] {
        let (status, out, err) = run(command(args), b"", T);
        assert!(!status.success(), "{args:?}: {out}");
        assert!(err.contains("invalid value") && err.contains("--listen"), "{args:?}: {err}");
    }
}
