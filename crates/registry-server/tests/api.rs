//! The HTTP/JSON API through curl, as an operator would use it.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_registry::backend::Backend;
use warren_registry_server::api::Limits;
use warren_registry_server::embedded::Embedded;
use warren_registry_server::health::Checked;
use warren_registry_server::state::Config;

struct Api {
    addr: SocketAddr,
    dir: std::path::PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Api {
    /// Shut the API down; it must return within 10 s.
    async fn shut_down(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        let served = self.served.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), served).await.expect("shut down in time").unwrap().unwrap();
    }
}

async fn api(tag: &str) -> Api {
    api_with(tag, Limits::default()).await
}

async fn api_with(tag: &str, limits: Limits) -> Api {
    let dir = std::env::temp_dir().join(format!("warren-api-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let inner: Arc<dyn Backend> = Arc::new(Embedded::open(&dir, Config::default(), None).unwrap());
    let backend = Arc::new(Checked::new(inner).await.unwrap());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(warren_registry_server::api::serve(listener, backend, limits, async move {
        let _ = stopped.await;
    }));
    Api { addr, dir, stop: Some(stop), served: Some(served) }
}

/// One curl call: the status and the body parsed as JSON (Null if empty).
async fn curl(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, Value) {
    let mut args: Vec<String> = vec!["-sS".into(), "--max-time".into(), "10".into(), "-X".into(), method.into()];
    args.extend(["-w".into(), "\n%{http_code}".into()]);
    if let Some(t) = token {
        args.extend(["-H".into(), format!("Authorization: Bearer {t}")]);
    }
    if body.is_some() {
        args.extend(["-H".into(), "Content-Type: application/json".into(), "--data-binary".into(), "@-".into()]);
    }
    args.push(format!("http://{addr}{path}"));
    let stdin = body.unwrap_or("").to_owned();
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new("curl")
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("curl");
        // The body goes through stdin: a large one would not fit on the command line.
        let _ = child.stdin.take().expect("stdin").write_all(stdin.as_bytes());
        child.wait_with_output().expect("curl")
    })
    .await
    .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), serde_json::from_str(body).unwrap_or(Value::Null))
}

const EP: &str = r#"{"addr":"127.0.0.1","port":8080,"transport":"Tcp","weight":1,"meta":{}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_leases_over_http() {
    let a = api("verbs").await;
    let eps = format!(r#"{{"endpoints":[{EP}]}}"#);
    assert_eq!(curl(a.addr, "POST", "/v1/names/web", None, Some(&eps)).await.0, 401, "a write without a token");
    let (code, body) = curl(a.addr, "POST", "/v1/names/web", Some("t1"), Some(&eps)).await;
    assert_eq!(code, 200, "{body}");
    assert!(body["revision"].as_u64().unwrap() >= 1);
    let (code, body) = curl(a.addr, "POST", "/v1/names/web", Some("t1"), Some(&eps)).await;
    assert_eq!((code, body["kind"].as_str()), (409, Some("AlreadyBound")));
    let (code, body) = curl(a.addr, "GET", "/v1/names/web", None, None).await;
    assert_eq!(code, 200);
    assert_eq!(body["endpoints"][0]["port"], 8080);
    assert_eq!(curl(a.addr, "DELETE", "/v1/names/web", Some("thief"), None).await.0, 403);
    assert_eq!(curl(a.addr, "GET", "/v1/names?prefix=we", None, None).await.1["names"][0]["name"], "web");

    let reg = format!(r#"{{"endpoint":{EP},"ttl_ms":30000}}"#);
    let (code, body) = curl(a.addr, "POST", "/v1/names/api/leases", Some("t2"), Some(&reg)).await;
    assert_eq!(code, 201, "{body}");
    let lease = body["lease"].as_str().unwrap().to_owned();
    let path = format!("/v1/leases/{lease}");
    assert_eq!(curl(a.addr, "PUT", &path, None, None).await.1["kind"], "NoToken", "a renewal needs the token");
    assert_eq!(curl(a.addr, "PUT", &path, Some("thief"), None).await.0, 403);
    assert_eq!(curl(a.addr, "PUT", &path, Some("t2"), None).await.1["ttl_ms"], 30000);
    assert_eq!(curl(a.addr, "DELETE", &path, Some("t2"), None).await.0, 200);
    assert_eq!(curl(a.addr, "PUT", &path, Some("t2"), None).await.1["kind"], "LeaseNotFound");
    assert_eq!(curl(a.addr, "PUT", "/v1/leases/xyz", Some("t2"), None).await.0, 400);

    assert_eq!(curl(a.addr, "DELETE", "/v1/names/web", Some("t1"), None).await.0, 200);
    assert_eq!(curl(a.addr, "GET", "/v1/names/web", None, None).await.0, 404);
    assert_eq!(curl(a.addr, "GET", "/v1/names/Not%20A%20Name", None, None).await.0, 400);
    assert_eq!(curl(a.addr, "POST", "/v1/names/x", Some("t"), Some("{not json")).await.0, 400);
    let huge = format!(r#"{{"endpoints":[{EP}],"pad":"{}"}}"#, "x".repeat(300 * 1024));
    assert_eq!(curl(a.addr, "POST", "/v1/names/x", Some("t"), Some(&huge)).await.0, 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_events_as_json_lines() {
    let a = api("watch").await;
    let eps = format!(r#"{{"endpoints":[{EP}]}}"#);
    curl(a.addr, "POST", "/v1/names/one", Some("t"), Some(&eps)).await;
    curl(a.addr, "DELETE", "/v1/names/one", Some("t"), None).await;
    // curl stops after the time given; the two events are already in the history.
    let url = format!("http://{}/v1/watch?prefix=on&from=0", a.addr);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl").args(["-sS", "-N", "--max-time", "1", &url]).output().expect("curl")
    })
    .await
    .unwrap();
    let lines: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!((lines[0]["kind"].as_str(), lines[1]["kind"].as_str()), (Some("Put"), Some("Delete")));
    assert!(lines[0]["revision"].as_u64() < lines[1]["revision"].as_u64());
}

/// Send one `GET` on a kept-alive connection.
async fn send_get(conn: &mut TcpStream, path: &str) {
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: registry\r\n\r\n").as_bytes()).await.unwrap();
}

/// Read one answer (head and a `Content-Length` body) within 10 s; its status.
async fn read_answer(conn: &mut TcpStream) -> u16 {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(buf[..end].to_vec()).unwrap();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())
                    })
                    .expect("a Content-Length");
                if buf.len() >= end + 4 + length {
                    assert_eq!(buf.len(), end + 4 + length, "one answer at a time");
                    return head[9..12].parse().unwrap();
                }
            }
            let n = conn.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before a whole answer: {:?}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("an answer within 10 s")
}

/// Wait (at most 10 s) for the server to close `conn`, skipping anything it says first.
async fn closed(conn: &mut TcpStream) {
    let drain = async {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = conn.read(&mut chunk).await {
            let _ = n;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), drain).await.expect("closed within 10 s");
}

/// The whole of what the server says before it closes `conn` (at most 10 s).
async fn all_until_closed(conn: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let drain = async {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = conn.read(&mut chunk).await {
            seen.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), drain).await.expect("closed within 10 s");
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_cap_new_connections_are_refused_with_503() {
    const CAP: usize = 3;
    let limits = Limits { max_conns: CAP, header_timeout: Duration::from_secs(60), ..Limits::default() };
    let a = api_with("cap", limits).await;
    // CAP connections, each answered once and then kept alive, idle: every slot is taken.
    let mut held = Vec::new();
    for _ in 0..CAP {
        let mut conn = TcpStream::connect(a.addr).await.unwrap();
        send_get(&mut conn, "/v1/names").await;
        assert_eq!(read_answer(&mut conn).await, 200);
        held.push(conn);
    }
    // One more is told why and closed at once, not left waiting.
    let mut extra = TcpStream::connect(a.addr).await.unwrap();
    let said = all_until_closed(&mut extra).await;
    assert!(said.starts_with("HTTP/1.1 503") && said.contains(r#""kind":"Unavailable""#), "{said}");
    // The held ones are still served.
    send_get(&mut held[0], "/v1/names").await;
    assert_eq!(read_answer(&mut held[0]).await, 200);
    // One closes: its slot is free for the next.
    drop(held.pop());
    // (The server hears of the close a moment later; until then a new one may still be refused.)
    let served = async {
        loop {
            let mut next = TcpStream::connect(a.addr).await.unwrap();
            send_get(&mut next, "/v1/names").await;
            let mut head = [0u8; 12];
            if next.read_exact(&mut head).await.is_ok() && &head == b"HTTP/1.1 200" {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), served).await.expect("a freed slot serves again");
    a.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_silent_peers_lose_their_slot() {
    let limits = Limits { max_conns: 2, header_timeout: Duration::from_millis(300), ..Limits::default() };
    let a = api_with("idle", limits).await;
    // Answered once, then idle on a kept-alive connection; and a peer that never sends.
    let mut idle = TcpStream::connect(a.addr).await.unwrap();
    send_get(&mut idle, "/v1/names").await;
    assert_eq!(read_answer(&mut idle).await, 200);
    let mut silent_peer = TcpStream::connect(a.addr).await.unwrap();
    // Both are closed after the timeout, and their slots serve others.
    closed(&mut idle).await;
    closed(&mut silent_peer).await;
    for _ in 0..2 {
        let mut asking = TcpStream::connect(a.addr).await.unwrap();
        send_get(&mut asking, "/v1/names").await;
        assert_eq!(read_answer(&mut asking).await, 200);
    }
    a.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_with_connections_open() {
    let a = api("shutdown").await;
    let mut idle = TcpStream::connect(a.addr).await.unwrap();
    send_get(&mut idle, "/v1/names").await;
    assert_eq!(read_answer(&mut idle).await, 200);
    // The shutdown closes the idle connection and returns.
    a.shut_down().await;
    closed(&mut idle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_watch_outlives_the_header_timeout() {
    let limits = Limits { max_conns: 4, header_timeout: Duration::from_millis(300), ..Limits::default() };
    let a = api_with("watch-idle", limits).await;
    let mut watch = TcpStream::connect(a.addr).await.unwrap();
    send_get(&mut watch, "/v1/watch?prefix=&from=0").await;
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    let head = async {
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = watch.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the watch closed");
            seen.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), head).await.expect("the watch's head");
    assert!(seen.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&seen));
    // An idle connection opened after the watch is closed by the timeout: the watch has been
    // quiet at least that long too.
    let mut idle = TcpStream::connect(a.addr).await.unwrap();
    send_get(&mut idle, "/v1/names").await;
    assert_eq!(read_answer(&mut idle).await, 200);
    closed(&mut idle).await;
    // Still open: the next event comes through.
    let eps = format!(r#"{{"endpoints":[{EP}]}}"#);
    assert_eq!(curl(a.addr, "POST", "/v1/names/late", Some("t"), Some(&eps)).await.0, 200);
    let event = async {
        while !String::from_utf8_lossy(&seen).contains("\"Put\"") {
            let n = watch.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the watch closed: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), event).await.expect("the event");
    drop(watch);
    a.shut_down().await;
}
