//! The registry's `/metrics` page, scraped over TCP and read by Python's OpenMetrics parser:
//! every family is there with its type, and the counters move with the traffic.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_registry::backend::Backend;
use warren_registry::model::{Endpoint, Name, Revision, Transport};
use warren_registry_server::api::{self, Limits};
use warren_registry_server::embedded::Embedded;
use warren_registry_server::health::Checked;
use warren_registry_server::metrics::{self, Metered, RegistryMetrics};
use warren_registry_server::state::Config;
use warren_testkit::metrics::Page;

/// One HTTP/1.1 request with `Connection: close`; the answer's status and body.
async fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

async fn scrape(addr: SocketAddr) -> Page {
    let (status, body) = http(addr, "GET", "/metrics", None, "").await;
    assert_eq!(status, 200, "{body}");
    // Chunked or not, the page ends with `# EOF`; cut any chunk framing around it.
    let start = body.find("# HELP").expect("a page of metrics");
    let end = body.find("# EOF").expect("the page's end") + "# EOF\n".len();
    Page::parse(&body[start..end])
}

fn endpoint(port: u16) -> Endpoint {
    Endpoint { addr: [127, 0, 0, 1].into(), port, transport: Transport::Tcp, weight: 1, meta: Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_metrics_count_requests_leases_and_watches() {
    let dir = std::env::temp_dir().join(format!("warren-registry-metrics-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store: Arc<dyn Backend> = Arc::new(Embedded::open(&dir, Config::default(), None).unwrap());
    let registry_metrics = RegistryMetrics::new(store.clone());
    let metered: Arc<dyn Backend> = Arc::new(Metered::new(store, registry_metrics.clone()));
    let backend = Arc::new(Checked::new(metered).await.unwrap());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let routes = metrics::route(api::router(backend.clone(), &Limits::default()), registry_metrics);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(api::serve_router(listener, routes, Limits::default(), async move {
        let _ = stopped.await;
    }));

    let before = scrape(addr).await;
    for (family, kind) in [
        ("warren_registry_requests", "counter"),
        ("warren_registry_request_duration_seconds", "histogram"),
        ("warren_registry_watchers", "gauge"),
        ("warren_registry_watch_events", "counter"),
        ("warren_registry_watch_lag_seconds", "histogram"),
        ("warren_registry_names", "gauge"),
        ("warren_registry_leases", "gauge"),
    ] {
        assert_eq!(before.kind(family), Some(kind), "{family} in {:?}", before.types);
    }
    assert_eq!(before.sum("warren_registry_names", &[]), 0.0);
    assert_eq!(before.sum("warren_registry_watchers", &[]), 1.0, "the health checker's own watch");

    // A watcher of our own, from the start, through the same store.
    let mut watch = backend.watch("", Revision(0)).await.unwrap();
    let eps = r#"{"endpoints":[{"addr":"127.0.0.1","port":8080,"transport":"Tcp","weight":1,"meta":{}}]}"#;
    assert_eq!(http(addr, "POST", "/v1/names/web", Some("t1"), eps).await.0, 200);
    assert_eq!(http(addr, "POST", "/v1/names/web", Some("t1"), eps).await.0, 409);
    assert_eq!(http(addr, "GET", "/v1/names/web", None, "").await.0, 200);
    assert_eq!(http(addr, "GET", "/v1/names/nobody", None, "").await.0, 404);
    let lease = backend.register(&Name::new("api").unwrap(), "t2", endpoint(9000), Duration::from_secs(30)).await;
    lease.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = 0;
    while seen < 2 {
        assert!(Instant::now() < deadline, "the watch did not see both writes");
        seen += tokio::time::timeout(Duration::from_secs(10), watch.next()).await.unwrap().unwrap().len();
    }

    let after = scrape(addr).await;
    // A family with no series yet is left out of a page: the errors appear with the first one.
    assert_eq!(after.kind("warren_registry_errors"), Some("counter"));
    let requests = |page: &Page, op: &str| page.sum("warren_registry_requests_total", &[("operation", op)]);
    assert_eq!(requests(&after, "bind") - requests(&before, "bind"), 2.0);
    assert_eq!(requests(&after, "lookup") - requests(&before, "lookup"), 2.0);
    assert_eq!(requests(&after, "register"), 1.0);
    assert_eq!(after.sum("warren_registry_errors_total", &[("operation", "bind"), ("kind", "AlreadyBound")]), 1.0);
    assert_eq!(after.sum("warren_registry_errors_total", &[("operation", "lookup"), ("kind", "NotBound")]), 1.0);
    let timed = after.sum("warren_registry_request_duration_seconds_count", &[("operation", "bind")]);
    assert_eq!(timed, 2.0, "each bind timed");
    assert!(after.has("warren_registry_request_duration_seconds_bucket", &[("operation", "bind"), ("le", "+Inf")]));
    assert_eq!(after.sum("warren_registry_names", &[]), 2.0);
    assert_eq!(after.sum("warren_registry_leases", &[]), 1.0);
    assert_eq!(after.sum("warren_registry_watchers", &[]), 2.0);
    // Both watches (the checker's and ours) handed on both events.
    assert!(after.sum("warren_registry_watch_events_total", &[]) >= 4.0);
    assert!(after.sum("warren_registry_watch_lag_seconds_count", &[]) >= 4.0);

    drop(watch);
    let dropped = scrape(addr).await;
    assert_eq!(dropped.sum("warren_registry_watchers", &[]), 1.0, "a closed watch is no longer counted");

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), served).await.unwrap().unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
