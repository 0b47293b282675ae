//! Every server's Prometheus page, scraped over TCP and read by Python's OpenMetrics parser
//! (`warren_testkit::metrics`): the families are there with their types, and the counters move
//! with the traffic.

mod objects_support;
#[macro_use]
mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use objects_support::Objects;
use support::{Server, T, connect, eventually, read_all};
use warren_testkit::metrics::Page;

/// One request with `Connection: close`; the status and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let mut stream = connect(addr);
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let answer = read_all(&mut stream, T).0;
    let at = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete head");
    let status = String::from_utf8_lossy(&answer[9..12]).parse().expect("a status");
    (status, answer[at + 4..].to_vec())
}

fn scrape(addr: SocketAddr, path: &str) -> Page {
    let (status, body) = get(addr, path);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    Page::parse(std::str::from_utf8(&body).expect("a UTF-8 page"))
}

fn docroot(tag: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("warren-metrics-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), b"<h1>warren</h1>\n").unwrap();
    std::fs::write(root.join("metrics"), b"a file the page hides\n").unwrap();
    root
}

/// The HTTP server's page under `model`: every family with its type; two files and a miss move
/// the 2xx and 4xx counters, the bytes and the latency count.
fn http_metrics_move(model: &str) {
    let root = docroot(model);
    let server = Server::serve("http", model, &["--root", root.to_str().unwrap()]);
    let before = scrape(server.addr, "/metrics");
    for (family, kind) in [
        ("warren_http_connections_accepted", "counter"),
        ("warren_http_connections_open", "gauge"),
        ("warren_http_requests", "counter"),
        ("warren_http_received_bytes", "counter"),
        ("warren_http_sent_body_bytes", "counter"),
        ("warren_http_request_duration_seconds", "histogram"),
    ] {
        assert_eq!(before.kind(family), Some(kind), "{family} in {:?}", before.types);
    }
    assert_eq!(before.sum("warren_http_connections_open", &[]), 1.0, "the scrape's own connection");

    for _ in 0..2 {
        assert_eq!(get(server.addr, "/index.html").0, 200);
    }
    assert_eq!(get(server.addr, "/nothing-here").0, 404);
    let after = scrape(server.addr, "/metrics?scrape=2");

    let moved = |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);
    // The first scrape is a 2xx request too, answered after its page was made.
    assert_eq!(moved("warren_http_requests_total", &[("code", "2xx")]), 3.0);
    assert_eq!(moved("warren_http_requests_total", &[("code", "4xx")]), 1.0);
    assert_eq!(moved("warren_http_connections_accepted_total", &[]), 4.0);
    assert!(moved("warren_http_received_bytes_total", &[]) >= 3.0 * 40.0);
    assert!(moved("warren_http_sent_body_bytes_total", &[]) >= 2.0 * 16.0);
    assert_eq!(moved("warren_http_request_duration_seconds_count", &[]), 4.0);
    assert!(after.has("warren_http_request_duration_seconds_bucket", &[("le", "+Inf")]));
    drop(server);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn http_metrics_under_event() {
    http_metrics_move("event");
}

/// Under prefork each connection may land in another process: the counters are in memory they
/// share, so any one of them answers for all.
#[test]
fn http_metrics_under_prefork_count_every_process() {
    http_metrics_move("prefork");
}

/// `--metrics` moves the page; at `off` the path is the root's file again.
#[test]
fn http_metrics_path_moves_and_turns_off() {
    let root = docroot("path");
    let server = Server::serve("http", "event", &["--root", root.to_str().unwrap(), "--metrics", "/_stats"]);
    assert!(scrape(server.addr, "/_stats").kind("warren_http_requests").is_some());
    assert_eq!(get(server.addr, "/metrics"), (200, b"a file the page hides\n".to_vec()));
    drop(server);
    let server = Server::serve("http", "event", &["--root", root.to_str().unwrap(), "--metrics", "off"]);
    assert_eq!(get(server.addr, "/metrics"), (200, b"a file the page hides\n".to_vec()));
    drop(server);
    let _ = std::fs::remove_dir_all(&root);
}

/// The object server's page on its HTTP front: calls, errors by kind, latency and activations
/// per object, moved by calls over HTTP; an on-demand object's deactivation is counted.
#[test]
fn object_metrics_count_calls_errors_and_activations() {
    let objects = Objects::start("metrics", &[]);
    objects.add("Lazy", "counter", "on-demand:200ms", false);
    let before = scrape(objects.http, "/metrics");
    for (family, kind) in [
        ("warren_objects_calls", "counter"),
        ("warren_objects_errors", "counter"),
        ("warren_objects_calls_in_flight", "gauge"),
        ("warren_objects_call_duration_seconds", "histogram"),
        ("warren_objects_activations", "counter"),
        ("warren_objects_deactivations", "counter"),
    ] {
        assert_eq!(before.kind(family), Some(kind), "{family} in {:?}", before.types);
    }
    let hello = [("object", "HelloServer")];
    assert_eq!(before.sum("warren_objects_activations_total", &hello), 1.0, "active from the start");
    assert_eq!(before.sum("warren_objects_activations_total", &[("object", "Lazy")]), 0.0, "not before a call");

    for _ in 0..2 {
        assert_eq!(objects.post("HelloServer", "sayHello", "[]").0, 200);
    }
    assert_eq!(objects.post("NiftyObjectServer", "execute", r#"[{"Squares":{"n":1000001}}]"#).0, 422);
    assert_eq!(objects.post("Lazy", "add", "[3]").0, 200);
    let after = scrape(objects.http, "/metrics");
    let moved = |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);
    assert_eq!(moved("warren_objects_calls_total", &hello), 2.0);
    assert_eq!(moved("warren_objects_call_duration_seconds_count", &hello), 2.0);
    assert_eq!(after.sum("warren_objects_calls_in_flight", &hello), 0.0);
    let nifty_app = [("object", "NiftyObjectServer"), ("kind", "application")];
    assert_eq!(moved("warren_objects_errors_total", &nifty_app), 1.0);
    assert_eq!(moved("warren_objects_errors_total", &[("object", "HelloServer")]), 0.0);
    assert_eq!(after.sum("warren_objects_activations_total", &[("object", "Lazy")]), 1.0);

    // Idle for its 200 ms, the on-demand object's servant goes, and the page says so.
    let deactivated =
        || scrape(objects.http, "/metrics").sum("warren_objects_deactivations_total", &[("object", "Lazy")]) == 1.0;
    assert!(eventually(T, deactivated), "Lazy never counted as deactivated");
}
