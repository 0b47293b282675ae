//! The `/visits` demo through real sockets: the cookie counter (stateless) and the session table
//! (soft state, in the hub: under `fork` each connection is another process, so counting across
//! connections proves the table lives in the hub process), and which survives a restart.

#[macro_use]
mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use support::{Server, T, connect, read_all};

/// One GET on a fresh connection: the count in the body and the `name=value` cookie set.
fn visit(addr: SocketAddr, path: &str, cookie: Option<&str>) -> (u64, String) {
    let cookie = cookie.map_or(String::new(), |c| format!("Cookie: {c}\r\n"));
    let mut stream = connect(addr);
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{cookie}\r\n").unwrap();
    let answer = String::from_utf8(read_all(&mut stream, T).0).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    let set = answer.lines().find_map(|l| l.strip_prefix("Set-Cookie: ")).expect("a cookie").to_owned();
    let body = answer.split("\r\n\r\n").nth(1).unwrap();
    let count = body.strip_prefix("visits: ").unwrap().split(' ').next().unwrap().parse().unwrap();
    (count, set.split(';').next().unwrap().to_owned())
}

fn start(model: &str, root: &Path, key: &Path) -> Server {
    Server::serve("http", model, &["--root", root.to_str().unwrap(), "--cookie-key-file", key.to_str().unwrap()])
}

fn check(model: &str) {
    let dir = std::env::temp_dir().join(format!("warren-http-state-{model}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let key = dir.join("cookie.key");

    let server = start(model, &root, &key);
    let mut session = None;
    let mut cookie = None;
    for n in 1..=3 {
        let (count, set) = visit(server.addr, "/visits/session", session.as_deref());
        assert_eq!(count, n, "{model}: session");
        session = Some(set);
        let (count, set) = visit(server.addr, "/visits/cookie", cookie.as_deref());
        assert_eq!(count, n, "{model}: cookie");
        cookie = Some(set);
    }
    server.stop_clean();
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{model}: the key file is private");
    assert_eq!(std::fs::metadata(&key).unwrap().len(), 32);

    let server = start(model, &root, &key);
    assert_eq!(visit(server.addr, "/visits/cookie", cookie.as_deref()).0, 4, "{model}: the key persisted");
    assert_eq!(visit(server.addr, "/visits/session", session.as_deref()).0, 1, "{model}: soft state is gone");
    server.stop_clean();

    // A key file that is no key is a clear error, not a new key.
    std::fs::write(&key, b"short").unwrap();
    let out = std::process::Command::new(support::BIN)
        .args(["serve", "http", "--root", root.to_str().unwrap(), "--cookie-key-file", key.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("want 32 bytes or 64 hex digits"), "{out:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn visits_under_thread() {
    check("thread");
}

#[test]
fn visits_under_fork() {
    check("fork");
}
