//! `warren registry` as an attacker meets it, over loopback: leases and checks that only their
//! holder may keep, tokens kept keyed in a private directory, answers bounded in bytes per
//! connection, and the HTTP API's timeouts and caps.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};
use support::{Data, Server, T, command, drain, run};
use warren_registry::client::Client;
use warren_registry::wire::{self, Request};
use warren_registry::{Endpoint, Entry, Error, LeaseId, Name, TokenKey};

/// A registry on loopback with its HTTP API, with `extra` flags; the API's address. The admin
/// token stays in its file, as the documentation tells operators to keep it.
fn registry(data: &Data, extra: &[&str]) -> (Server, SocketAddr) {
    let args = ["registry", "--listen", "127.0.0.1:0", "--data", data.arg(), "--http", "127.0.0.1:0"];
    let mut server = Server::spawn(&[&args[..], extra].concat());
    let line = server.wait_stdout(|l| l.starts_with("warren: serving registry-http (tcp) on "), T).expect("http line");
    let http = line.rsplit(" on ").next().unwrap().parse().unwrap();
    (server, http)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// One HTTP request with `Connection: close`: the status and the body.
fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    http_from(support::connect(addr), method, path, token, body)
}

fn http_from(mut conn: TcpStream, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: registry\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(body.as_bytes()).unwrap();
    let (bytes, _) = support::read_all(&mut conn, T);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no answer: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// A connection from the loopback address `source` (127.0.0.0/8 is all this machine's).
fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&format!("{source}:0").parse::<SocketAddr>().unwrap().into()).unwrap();
    socket.connect_timeout(&to.into(), T).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(T)).unwrap();
    stream.set_write_timeout(Some(T)).unwrap();
    stream
}

fn endpoint_json(addr: &str, meta: &str) -> String {
    let (ip, port) = addr.rsplit_once(':').unwrap();
    format!(r#"{{"addr":"{ip}","port":{port},"transport":"Tcp","weight":1,"meta":{{{meta}}}}}"#)
}

#[test]
fn a_killed_holders_lease_cannot_be_kept_alive_without_its_token() {
    let data = Data::new("lease");
    let (server, http_addr) = registry(&data, &[]);
    let mut holder = command(&["register", "api", "127.0.0.1:9000", "--ttl", "2"]);
    holder.env("WARREN_REGISTRY", server.addr.to_string()).env("WARREN_TOKEN", "svc-token");
    let mut holder = holder.spawn().unwrap();
    let out = drain(holder.stdout.take().unwrap());
    let _err = drain(holder.stderr.take().unwrap());
    assert!(support::eventually(T, || out.take().contains("(lease ")), "never registered: {:?}", out.take());
    let said = out.take();
    let lease = said.split("(lease ").nth(1).unwrap().split(',').next().unwrap().to_owned();
    kill(Pid::from_raw(holder.id() as i32), Signal::SIGKILL).unwrap();
    holder.wait().unwrap();

    // Someone without the token tries to keep the dead endpoint in the registry.
    let path = format!("/v1/leases/{lease}");
    let (status, body) = http(http_addr, "PUT", &path, None, "");
    assert_eq!(status, 401, "a renewal without a token: {body}");
    assert!(body.contains("NoToken") && body.contains("token"), "{body}");
    let rt = runtime();
    let client = rt.block_on(Client::connect(server.addr, T)).unwrap();
    let id = LeaseId::parse(&lease).unwrap();
    let api = Name::new("api").unwrap();
    let started = Instant::now();
    loop {
        let (status, body) = http(http_addr, "PUT", &path, Some("mallory"), "");
        match rt.block_on(client.lookup(&api)) {
            Err(Error::NotBound(_)) => break,
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
        if status != 404 {
            assert_eq!(status, 403, "a renewal with another's token: {body}");
            assert!(body.contains("Forbidden"), "{body}");
            let renewed = rt.block_on(client.renew(id, "mallory"));
            assert!(matches!(renewed, Err(Error::Forbidden(_)) | Err(Error::LeaseNotFound(_))), "{renewed:?}");
        }
        assert!(started.elapsed() < Duration::from_secs(8), "the dead holder's endpoint was kept alive");
        std::thread::sleep(Duration::from_millis(100));
    }
    server.stop_clean();
}

#[test]
fn lease_ids_registered_in_a_row_are_not_sequential() {
    let data = Data::new("ids");
    let (server, _) = registry(&data, &[]);
    let rt = runtime();
    let client = rt.block_on(Client::connect(server.addr, T)).unwrap();
    let name = Name::new("api").unwrap();
    let ttl = Duration::from_secs(30);
    let first = rt.block_on(client.register(&name, "t", Endpoint::tcp("127.0.0.1:1".parse().unwrap()), ttl)).unwrap();
    let second = rt.block_on(client.register(&name, "t", Endpoint::tcp("127.0.0.1:2".parse().unwrap()), ttl)).unwrap();
    // 128 random bits each: two in a row are nowhere near each other (the odds of this failing
    // are 2^-63).
    assert!(first.id.0.abs_diff(second.id.0) > u128::from(u64::MAX), "{} then {}", first.id, second.id);
    assert_eq!(first.id.to_string().len(), 32);
    server.stop_clean();
}

#[test]
fn a_ttl_check_passes_only_with_the_names_token() {
    let data = Data::new("pass");
    let (server, http_addr) = registry(&data, &[]);
    let body = format!(r#"{{"endpoints":[{}]}}"#, endpoint_json("127.0.0.1:7", r#""check":"ttl:10s""#));
    assert_eq!(http(http_addr, "POST", "/v1/names/beat", Some("owner"), &body).0, 200);
    let pass = "/v1/health/beat/127.0.0.1:7/pass";
    let (status, body) = http(http_addr, "PUT", pass, None, "");
    assert_eq!(status, 401, "{body}");
    let (status, body) = http(http_addr, "PUT", pass, Some("mallory"), "");
    assert_eq!(status, 403, "{body}");
    assert_eq!(http(http_addr, "PUT", pass, Some("owner"), "").0, 204);
    server.stop_clean();
}

#[test]
fn health_checks_are_bounded_and_probe_only_their_endpoint() {
    let data = Data::new("checks");
    let (server, http_addr) = registry(&data, &[]);
    let bind = |name: &str, endpoints: &[String]| {
        let body = format!(r#"{{"endpoints":[{}]}}"#, endpoints.join(","));
        http(http_addr, "POST", &format!("/v1/names/{name}"), Some("t"), &body)
    };
    // A flood: a check every 10 ms.
    let (status, body) = bind("fast", &[endpoint_json("127.0.0.1:1", r#""check":"tcp","check_interval":"10ms""#)]);
    assert_eq!(status, 400, "{body}");
    // A scanner: more checks under one name than the bound (16).
    let many: Vec<String> = (1..=17).map(|p| endpoint_json(&format!("127.0.0.1:{p}"), r#""check":"tcp""#)).collect();
    let (status, body) = bind("many", &many);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("16"), "{body}");
    assert_eq!(bind("many", &many[..16]).0, 200, "16 are fine");
    // A target other than the endpoint's own address cannot be named, nor a wildcard probed.
    for meta in [r#""check":"tcp:10.0.0.1:22""#, r#""check":"http://10.0.0.1/""#] {
        assert_eq!(bind("elsewhere", &[endpoint_json("127.0.0.1:1", meta)]).0, 400, "{meta}");
    }
    assert_eq!(bind("wild", &[endpoint_json("0.0.0.0:22", r#""check":"tcp""#)]).0, 400);
    // What is probed is the endpoint itself.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let own = listener.local_addr().unwrap().to_string();
    assert_eq!(bind("probed", &[endpoint_json(&own, r#""check":"tcp""#)]).0, 200);
    listener.set_nonblocking(true).unwrap();
    assert!(support::eventually(T, || listener.accept().is_ok()), "the endpoint was never probed");
    server.stop_clean();
}

#[test]
fn the_data_directory_and_token_key_are_private_and_hashes_are_keyed() {
    let data = Data::new("at-rest");
    let (server, _) = registry(&data, &[]);
    let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(data.0.clone()), 0o700);
    assert_eq!(mode(data.0.join("token.key")), 0o600);
    assert_eq!(mode(data.0.join("admin.token")), 0o600);
    let token = "alice-has-a-weak-token";
    let mut bind = command(&["bind", "web", "127.0.0.1:8080"]);
    bind.env("WARREN_REGISTRY", server.addr.to_string()).env("WARREN_TOKEN", token);
    let (status, _, err) = run(bind, b"", T);
    assert!(status.success(), "{err}");
    server.stop_clean();
    // The store holds the token's HMAC under the registry's key, not its plain SHA-256 (which
    // anyone could test guesses against).
    let store = std::fs::read(data.0.join("registry.redb")).unwrap();
    let contains = |needle: &[u8]| store.windows(needle.len()).any(|w| w == needle);
    let plain: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    assert!(!contains(&plain), "the plain SHA-256 of the token is stored");
    let key: [u8; 32] = std::fs::read(data.0.join("token.key")).unwrap().try_into().unwrap();
    assert!(contains(&TokenKey::new(key).hash(token).unwrap()), "the keyed hash is what is stored");
    // A data directory others may enter is refused, with the fix.
    std::fs::set_permissions(&data.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (status, _, err) = run(command(&["registry", "--listen", "127.0.0.1:0", "--data", data.arg()]), b"", T);
    assert!(!status.success() && err.contains("chmod 700"), "{err}");
}

/// The resident set of process `pid`, in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_client_that_never_reads_its_lists_does_not_grow_the_server() {
    let data = Data::new("outbox");
    let (server, _) = registry(&data, &[]);
    let rt = runtime();
    let client = rt.block_on(Client::connect(server.addr, T)).unwrap();
    // 100 names whose endpoints carry full metadata: every List answer is about 400 KiB.
    for i in 0..100u16 {
        let mut e = Endpoint::tcp(SocketAddr::from(([127, 0, 0, 1], 1000 + i)));
        e.meta = (0..16).map(|k| (format!("key{k}"), "v".repeat(250))).collect();
        rt.block_on(client.bind(&Name::new(format!("fat{i}")).unwrap(), "t", vec![e])).unwrap();
    }
    let before = rss_kib(server.pid());
    // 20,000 List requests of 12 bytes, sent and never read.
    let mut frames = Vec::new();
    for id in 1..=20_000u32 {
        wire::encode(id, &Request::List { prefix: String::new() }, wire::MAX_REQUEST, &mut frames).unwrap();
    }
    let mut greedy = support::connect(server.addr);
    greedy.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let sender = std::thread::spawn(move || {
        // The server stops reading once its bound is reached: the rest may never be taken.
        let _ = greedy.write_all(&frames);
        greedy
    });
    // Meanwhile, and after, other clients are served; the server's memory stays put.
    let other = rt.block_on(Client::connect(server.addr, T)).unwrap();
    let mut peak = before;
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        let (_, Entry { endpoints, .. }) = rt.block_on(other.lookup(&Name::new("fat7").unwrap())).unwrap();
        assert_eq!(endpoints.len(), 1);
        peak = peak.max(rss_kib(server.pid()));
        std::thread::sleep(Duration::from_millis(20));
    }
    let greedy = sender.join().unwrap();
    let grown_mib = peak.saturating_sub(before) / 1024;
    // 4 MiB of answers at most per connection, plus the allocator's slack; unbounded, 256
    // answers of 400 KiB in flight would be 100 MiB.
    assert!(grown_mib < 40, "the server grew by {grown_mib} MiB for one client that does not read");
    drop(greedy);
    server.stop_clean();
}

#[test]
fn a_slowloris_is_closed_after_the_header_timeout() {
    let data = Data::new("slowloris");
    let (server, http_addr) = registry(&data, &["--http-header-timeout", "1s"]);
    let mut slow = support::connect(http_addr);
    slow.write_all(b"GET /v1/names HTTP/1.1\r\nHost: registry\r\n").unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let started = Instant::now();
    // One header byte every 100 ms, never the blank line that ends the head.
    let closed_after = loop {
        if slow.write_all(b"X").is_err() {
            break started.elapsed();
        }
        match slow.read(&mut [0u8; 512]) {
            Ok(0) => break started.elapsed(),
            Err(e) if !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                break started.elapsed();
            }
            _ => {} // still open (or it said something): trickle on
        }
        assert!(started.elapsed() < Duration::from_secs(5), "a trickling head is kept open");
    };
    assert!(closed_after >= Duration::from_millis(800), "closed after only {closed_after:?}");
    server.stop_clean();
}

#[test]
fn a_stalled_body_is_answered_408() {
    let data = Data::new("body");
    let (server, http_addr) = registry(&data, &["--http-body-timeout", "1s"]);
    let mut conn = support::connect(http_addr);
    let head = "POST /v1/names/web HTTP/1.1\r\nHost: registry\r\nAuthorization: Bearer t\r\n\
                Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"endpoints\":";
    conn.write_all(head.as_bytes()).unwrap();
    let started = Instant::now();
    let answer = support::http_answer(&mut conn, Duration::from_secs(5));
    assert_eq!(answer.as_deref(), Ok("HTTP/1.1 408 Request Timeout"), "after {:?}", started.elapsed());
    server.stop_clean();
}

#[test]
fn watch_streams_past_the_caps_get_a_clear_error() {
    let data = Data::new("watches");
    let caps = ["--http-max-watches", "3", "--http-max-watches-per-source", "2"];
    let (server, http_addr) = registry(&data, &caps);
    // Opens a watch from `source`: its status line, the connection kept open while it lasts.
    let open = |source: &str| {
        let mut conn = connect_from(source, http_addr);
        support::http_get(&mut conn, "/v1/watch?prefix=&from=0");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(conn.read(&mut byte).unwrap(), 1, "closed: {:?}", String::from_utf8_lossy(&head));
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        (head.lines().next().unwrap().to_owned(), conn)
    };
    let (first, _a) = open("127.0.0.1");
    let (second, _b) = open("127.0.0.1");
    assert_eq!((first.as_str(), second.as_str()), ("HTTP/1.1 200 OK", "HTTP/1.1 200 OK"));
    let (third, _) = open("127.0.0.1");
    assert_eq!(third, "HTTP/1.1 429 Too Many Requests", "per source");
    let (status, body) = http_from(connect_from("127.0.0.1", http_addr), "GET", "/v1/watch?from=0", None, "");
    assert_eq!(status, 429);
    assert!(body.contains("TooManyWatches") && body.contains("127.0.0.1"), "{body}");
    let (other, _c) = open("127.0.0.2");
    assert_eq!(other, "HTTP/1.1 200 OK", "another source has its own share");
    let (over, _) = open("127.0.0.3");
    assert_eq!(over, "HTTP/1.1 503 Service Unavailable", "in total");
    // Other requests are still served.
    assert_eq!(http(http_addr, "GET", "/v1/names", None, "").0, 200);
    server.stop_clean();
}
