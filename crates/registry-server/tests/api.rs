//! The HTTP/JSON API through curl, as an operator would use it.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;

use serde_json::Value;
use warren_registry::backend::Backend;
use warren_registry_server::embedded::Embedded;
use warren_registry_server::health::Checked;
use warren_registry_server::state::Config;

struct Api {
    addr: SocketAddr,
    dir: std::path::PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn api(tag: &str) -> Api {
    let dir = std::env::temp_dir().join(format!("warren-api-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let inner: Arc<dyn Backend> = Arc::new(Embedded::open(&dir, Config::default(), None).unwrap());
    let backend = Arc::new(Checked::new(inner).await.unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(warren_registry_server::api::serve(listener, backend, async move {
        let _ = stopped.await;
    }));
    Api { addr, dir, stop: Some(stop) }
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
    assert_eq!(curl(a.addr, "PUT", &format!("/v1/leases/{lease}"), None, None).await.1["ttl_ms"], 30000);
    assert_eq!(curl(a.addr, "DELETE", &format!("/v1/leases/{lease}"), Some("t2"), None).await.0, 200);
    assert_eq!(curl(a.addr, "PUT", &format!("/v1/leases/{lease}"), None, None).await.1["kind"], "LeaseNotFound");

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
