//! `warren registry` and its command-line clients, end to end over loopback.

mod support;

use std::process::Child;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{Data, Drained, Server, T, command, drain, run};
use warren_registry::client::Client;
use warren_registry::{Endpoint, Entry, EventKind, Name};

const ADMIN: &str = "admin-secret";

fn registry(data: &Data) -> Server {
    Server::spawn(&["registry", "--listen", "127.0.0.1:0", "--data", data.arg(), "--admin-token", ADMIN])
}

/// Runs a client command against `server` with `token`: (exit ok, stdout, stderr).
fn cli(server: &Server, token: &str, args: &[&str]) -> (bool, String, String) {
    let mut cmd = command(args);
    cmd.env("WARREN_REGISTRY", server.addr.to_string()).env("WARREN_TOKEN", token);
    let (status, out, err) = run(cmd, b"", T);
    (status.success(), out, err)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn the_rmi_verbs_work_from_the_command_line() {
    let data = Data::new("verbs");
    let server = registry(&data);
    let ok = |token, args: &[&str]| {
        let (ok, out, err) = cli(&server, token, args);
        assert!(ok, "{args:?} failed: {err}");
        out
    };
    assert_eq!(
        ok("alice", &["bind", "web", "127.0.0.1:8080", "127.0.0.1:8081", "--meta", "zone=a"]),
        "bound web at revision 1\n"
    );
    assert_eq!(
        ok("x", &["lookup", "web"]),
        "web tcp 127.0.0.1:8080 weight=1 zone=a\nweb tcp 127.0.0.1:8081 weight=1 zone=a\n"
    );
    let (ok_again, _, err) = cli(&server, "alice", &["bind", "web", "127.0.0.1:1"]);
    assert!(!ok_again && err.contains("web: already bound"), "{err}");
    let (forbidden, _, err) = cli(&server, "mallory", &["rebind", "web", "127.0.0.1:1"]);
    assert!(!forbidden && err.contains("forbidden"), "{err}");
    ok("alice", &["rebind", "web", "[::1]:8443", "--weight", "5", "--udp"]);
    ok("bob", &["bind", "web.eu", "127.0.0.2:80"]);
    assert_eq!(ok("x", &["list", "web"]), "web udp [::1]:8443 weight=5\nweb.eu tcp 127.0.0.2:80 weight=1\n");
    assert_eq!(ok(ADMIN, &["unbind", "web.eu"]), "unbound web.eu at revision 4\n", "the admin token removes any name");
    let (found, _, err) = cli(&server, "x", &["lookup", "web.eu"]);
    assert!(!found && err.contains("web.eu: not bound"), "{err}");
    let (bad, _, err) = cli(&server, "x", &["lookup", "web/eu"]);
    assert!(!bad && err.contains("'/' is not allowed"), "{err}");
    let (no_token, _, err) = run(command(&["unbind", "web", "--registry", &server.addr.to_string()]), b"", T);
    assert!(!no_token.success() && err.contains("needs a token"), "{err}");
    server.stop_clean();
}

#[test]
fn names_survive_a_restart_and_the_admin_token_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let data = Data::new("restart");
    let server = Server::spawn(&["registry", "--listen", "127.0.0.1:0", "--data", data.arg()]);
    let token_file = data.0.join("admin.token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let admin = std::fs::read_to_string(&token_file).unwrap().trim().to_owned();
    assert_eq!(admin.len(), 64);
    assert!(cli(&server, "alice", &["bind", "web", "127.0.0.1:8080"]).0);
    server.stop_clean();
    let server = Server::spawn(&["registry", "--listen", "127.0.0.1:0", "--data", data.arg()]);
    assert_eq!(cli(&server, "x", &["lookup", "web"]).1, "web tcp 127.0.0.1:8080 weight=1\n");
    assert!(cli(&server, &admin, &["unbind", "web"]).0, "the same admin token after the restart");
    server.stop_clean();
}

/// A running client command whose output is collected.
struct Running {
    child: Child,
    out: Drained,
    err: Drained,
}

impl Running {
    fn start(server: &Server, token: &str, args: &[&str]) -> Running {
        let mut cmd = command(args);
        cmd.env("WARREN_REGISTRY", server.addr.to_string()).env("WARREN_TOKEN", token);
        let mut child = cmd.spawn().unwrap();
        let (out, err) = (drain(child.stdout.take().unwrap()), drain(child.stderr.take().unwrap()));
        Running { child, out, err }
    }

    /// Waits (bounded) until stdout or stderr holds `text`.
    fn wait_for(&self, text: &str) {
        let end = Instant::now() + T;
        while !self.out.take().contains(text) && !self.err.take().contains(text) {
            assert!(Instant::now() < end, "no {text:?}; stdout {:?}; stderr {:?}", self.out.take(), self.err.take());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn stop(mut self) -> (bool, String) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).unwrap();
        let status = support::wait_bounded(&mut self.child, T).expect("exits after SIGTERM");
        (status.success(), self.out.take_after_eof())
    }
}

#[test]
fn register_renews_until_stopped_then_releases() {
    let data = Data::new("register");
    let server = registry(&data);
    let register = Running::start(&server, "svc", &["register", "api", "127.0.0.1:9000", "--ttl", "1"]);
    register.wait_for("registered api tcp 127.0.0.1:9000 weight=1 (lease ");
    // Three TTLs without the lease lapsing: it is being renewed.
    let rt = runtime();
    let client = rt.block_on(Client::connect(server.addr, T)).unwrap();
    let api = Name::new("api").unwrap();
    let (revision, Entry { endpoints, .. }) = rt.block_on(client.lookup(&api)).unwrap();
    assert_eq!(endpoints.len(), 1);
    let mut watch = rt.block_on(client.watch("api", revision)).unwrap();
    let quiet = rt.block_on(async { tokio::time::timeout(Duration::from_secs(3), watch.next()).await });
    assert!(quiet.is_err(), "a renewed endpoint changed: {quiet:?}");
    let (ok, out) = register.stop();
    assert!(ok, "{out}");
    assert!(out.contains("released api (lease "), "{out}");
    let gone = rt.block_on(async { tokio::time::timeout(T, watch.next()).await }).unwrap().unwrap();
    assert_eq!(gone[0].kind, EventKind::Delete);
    assert!(rt.block_on(client.lookup(&api)).is_err(), "released at once, not a TTL later");
    server.stop_clean();
}

#[test]
fn an_unrenewed_lease_lapses_within_ttl_plus_the_sweep() {
    let data = Data::new("lapse");
    let server = registry(&data);
    let rt = runtime();
    let client = rt.block_on(Client::connect(server.addr, T)).unwrap();
    let ttl = Duration::from_secs(1);
    let endpoint = Endpoint::tcp("127.0.0.1:9000".parse().unwrap());
    let started = Instant::now();
    let lease = rt.block_on(client.register(&Name::new("api").unwrap(), "svc", endpoint, ttl)).unwrap();
    let mut watch = rt.block_on(client.watch("", lease.revision)).unwrap();
    let events = rt.block_on(async { tokio::time::timeout(T, watch.next()).await }).unwrap().unwrap();
    let lapsed = started.elapsed();
    assert_eq!((events[0].kind, events[0].name.as_str()), (EventKind::Delete, "api"));
    // The server removes it in [TTL, TTL + 100 ms); allow for scheduling on a loaded machine.
    assert!(lapsed >= ttl && lapsed < ttl + Duration::from_millis(900), "lapsed after {lapsed:?}");
    server.stop_clean();
}

#[test]
fn watch_prints_changes_as_they_happen() {
    let data = Data::new("watch");
    let server = registry(&data);
    assert!(cli(&server, "t", &["bind", "old", "127.0.0.1:1"]).0);
    let watch = Running::start(&server, "t", &["watch", "we"]);
    watch.wait_for("warren: watching \"we\" after revision 1");
    assert!(cli(&server, "t", &["bind", "web", "127.0.0.1:8080"]).0);
    assert!(cli(&server, "t", &["bind", "other", "127.0.0.1:2"]).0);
    assert!(cli(&server, "t", &["unbind", "web"]).0);
    watch.wait_for("4 delete web");
    let (ok, out) = watch.stop();
    assert!(ok);
    assert_eq!(out, "2 put web tcp 127.0.0.1:8080 weight=1\n4 delete web tcp 127.0.0.1:8080 weight=1\n");
    // From an old revision, the history first.
    let replay = Running::start(&server, "t", &["watch", "", "--from", "0"]);
    replay.wait_for("4 delete web");
    let (ok, out) = replay.stop();
    assert!(ok);
    assert_eq!(out.lines().count(), 4, "{out}");
    server.stop_clean();
}

#[test]
fn dns_answers_from_the_registry() {
    let data = Data::new("dns");
    let mut server = Server::spawn(&[
        "registry",
        "--listen",
        "127.0.0.1:0",
        "--data",
        data.arg(),
        "--admin-token",
        ADMIN,
        "--dns",
        "127.0.0.1:0",
    ]);
    let line = server.wait_stdout(|l| l.starts_with("warren: serving dns (udp, tcp) on "), T).expect("a DNS line");
    let dns: std::net::SocketAddr = line.rsplit(" on ").next().unwrap().parse().unwrap();
    assert!(cli(&server, "t", &["bind", "web", "127.0.0.7:8080"]).0);
    // A query for web.warren. A, written from RFC 1035 §4.1: id 0x1234, RD, one question.
    let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    query.extend_from_slice(b"\x03web\x06warren\x00\x00\x01\x00\x01");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(T)).unwrap();
    socket.send_to(&query, dns).unwrap();
    let mut answer = [0u8; 512];
    let n = socket.recv(&mut answer).unwrap();
    let answer = &answer[..n];
    assert_eq!(answer[..2], [0x12, 0x34]);
    assert_eq!(answer[3] & 0x0f, 0, "NOERROR");
    assert_eq!(u16::from_be_bytes([answer[6], answer[7]]), 1, "one answer");
    assert_eq!(answer[n - 4..], [127, 0, 0, 7], "the A record's address ends the message");
    server.stop_clean();
}

/// `dig +short` for `name` A at `dns`: the addresses, sorted.
fn dig(dns: std::net::SocketAddr, name: &str) -> Vec<String> {
    let out = std::process::Command::new("dig")
        .args(["+short", "+time=5", "+tries=1", &format!("@{}", dns.ip()), "-p", &dns.port().to_string(), name, "A"])
        .output()
        .expect("dig (bind9-dnsutils) must be installed");
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

/// The body `curl` gets for `path` of the HTTP API at `http`.
fn curl(http: std::net::SocketAddr, path: &str) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", &format!("http://{http}{path}")])
        .output()
        .expect("curl must be installed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn names_are_case_insensitive_and_keep_the_spelling_they_were_bound_with() {
    let data = Data::new("case");
    let args = ["registry", "--listen", "127.0.0.1:0", "--data", data.arg(), "--admin-token", ADMIN];
    let mut server = Server::spawn(&[&args[..], &["--dns", "127.0.0.1:0", "--http", "127.0.0.1:0"]].concat());
    let line = server.wait_stdout(|l| l.starts_with("warren: serving dns (udp, tcp) on "), T).expect("a DNS line");
    let dns: std::net::SocketAddr = line.rsplit(" on ").next().unwrap().parse().unwrap();
    let line = server.wait_stdout(|l| l.starts_with("warren: serving registry-http (tcp) on "), T).expect("http");
    let http: std::net::SocketAddr = line.rsplit(" on ").next().unwrap().parse().unwrap();
    let watch = Running::start(&server, "t", &["watch", "hello"]);
    watch.wait_for("warren: watching \"hello\" after revision 0");

    let (bound, out, err) = cli(&server, "alice", &["bind", "HelloServer", "127.0.0.1:1099"]);
    assert!(bound, "{err}");
    assert_eq!(out, "bound HelloServer at revision 1\n");
    for asked in ["HelloServer", "helloserver", "HELLOSERVER"] {
        let (found, out, err) = cli(&server, "x", &["lookup", asked]);
        assert!(found, "{asked}: {err}");
        assert_eq!(out, "HelloServer tcp 127.0.0.1:1099 weight=1\n", "asked {asked}");
    }
    // Another spelling is the same name: taken, and its owner's (the first spelling stays).
    let (taken, _, err) = cli(&server, "bob", &["bind", "helloserver", "127.0.0.2:1099"]);
    assert!(!taken && err.contains("HelloServer: already bound"), "{err}");
    let (rebound, out, err) = cli(&server, "alice", &["rebind", "HELLOSERVER", "127.0.0.1:1099", "127.0.0.2:1099"]);
    assert!(rebound, "{err}");
    assert_eq!(out, "rebound HELLOSERVER at revision 2\n", "the CLI echoes what it was asked");
    assert_eq!(
        cli(&server, "x", &["list", "HELLO"]).1,
        "HelloServer tcp 127.0.0.1:1099 weight=1\nHelloServer tcp 127.0.0.2:1099 weight=1\n"
    );
    watch.wait_for("2 put HelloServer tcp 127.0.0.2:1099");
    let (ok, out) = watch.stop();
    assert!(ok);
    assert_eq!(out, "1 put HelloServer tcp 127.0.0.1:1099 weight=1\n2 put HelloServer tcp 127.0.0.2:1099 weight=1\n");

    let both = ["127.0.0.1", "127.0.0.2"];
    for asked in ["HelloServer.warren.", "helloserver.warren.", "HELLOSERVER.WARREN."] {
        assert_eq!(dig(dns, asked), both, "dig {asked}");
    }
    for asked in ["HelloServer", "helloserver", "HELLOSERVER"] {
        let body = curl(http, &format!("/v1/names/{asked}"));
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{asked}: {e}: {body}"));
        assert_eq!(json["name"], "HelloServer", "{body}");
        assert_eq!(json["endpoints"].as_array().map(Vec::len), Some(2), "{body}");
    }
    assert!(curl(http, "/v1/names?prefix=hElLo").contains(r#""name":"HelloServer""#));

    // The spelling survives a restart; unbound, the name takes the next spelling bound.
    server.stop_clean();
    let server = registry(&data);
    assert_eq!(
        cli(&server, "x", &["lookup", "helloSERVER"]).1.lines().next(),
        Some("HelloServer tcp 127.0.0.1:1099 weight=1")
    );
    assert!(cli(&server, "alice", &["unbind", "helloserver"]).0);
    assert!(cli(&server, "bob", &["bind", "HELLOserver", "127.0.0.3:1099"]).0);
    assert_eq!(cli(&server, "x", &["lookup", "HelloServer"]).1, "HELLOserver tcp 127.0.0.3:1099 weight=1\n");
    server.stop_clean();
}

#[test]
fn register_survives_a_registry_restart() {
    let data = Data::new("register-restart");
    let first = registry(&data);
    let addr = first.addr.to_string();
    let register = Running::start(&first, "svc", &["register", "api", "127.0.0.1:9000", "--ttl", "1"]);
    register.wait_for("registered api");
    first.stop_clean();
    // The same address and store: the lease was stored, and gets a full TTL from the restart.
    let second = Server::spawn(&["registry", "--listen", &addr, "--data", data.arg(), "--admin-token", ADMIN]);
    std::thread::sleep(Duration::from_secs(3));
    let (found, out, err) = cli(&second, "x", &["lookup", "api"]);
    assert!(found, "the endpoint lapsed after the restart: {err}; register said {:?}", register.err.take());
    assert_eq!(out, "api tcp 127.0.0.1:9000 weight=1\n");
    let (ok, out) = register.stop();
    assert!(ok && out.contains("released api"), "{out}");
    assert!(!cli(&second, "x", &["lookup", "api"]).0, "released");
    second.stop_clean();
}

#[test]
fn the_http_api_refuses_past_its_connection_cap_and_stops_cleanly() {
    let data = Data::new("http-cap");
    let args =
        ["registry", "--listen", "127.0.0.1:0", "--data", data.arg(), "--admin-token", ADMIN, "--http", "127.0.0.1:0"];
    let mut server = Server::spawn(&[&args[..], &["--http-max-conns", "2"]].concat());
    let ready = server.wait_stdout(|l| l.starts_with("warren: serving registry-http (tcp) on "), T).expect("http line");
    let http: std::net::SocketAddr = ready.rsplit(" on ").next().unwrap().parse().unwrap();
    let mut held: Vec<_> = (0..2)
        .map(|_| {
            let mut conn = support::connect(http);
            support::http_get(&mut conn, "/v1/names");
            assert_eq!(support::http_answer(&mut conn, T).unwrap(), "HTTP/1.1 200 OK");
            conn
        })
        .collect();
    // A third is told at once, and closed, while both stay open (kept alive, idle)...
    let mut third = support::connect(http);
    assert_eq!(support::http_answer(&mut third, T).unwrap(), "HTTP/1.1 503 Service Unavailable");
    assert_eq!(support::read_all(&mut third, T).1, support::End::Eof);
    // ...and the held ones keep working.
    for conn in &mut held {
        support::http_get(conn, "/v1/names");
        assert_eq!(support::http_answer(conn, T).unwrap(), "HTTP/1.1 200 OK");
    }
    // Idle HTTP connections do not hold up the shutdown.
    server.stop().assert_clean("registry --http");
    drop(held);
}
