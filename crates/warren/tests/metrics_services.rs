//! The metrics of the switch (`warren switch --metrics ADDR`) and of the registry's DNS front
//! end (on the registry's `/metrics`), each page read by Python's OpenMetrics parser
//! (`warren_testkit::metrics`) after traffic, its counts checked against what the test sent and
//! received: per backend, requests, connections, bytes each way, refused connects to a backend
//! that is gone, the 503s when no backend is in rotation; for DNS, queries by type, answers by
//! code, and what could not be answered.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};

use support::who::{backend, switch};
use support::{Server, T, connect, eventually, read_all};
use warren_testkit::metrics::Page;

/// One `GET path` with `Connection: close` through `addr`: the request's length, the whole
/// answer.
fn get(addr: SocketAddr, path: &str) -> (usize, Vec<u8>) {
    let mut stream = connect(addr);
    let request = format!("GET {path} HTTP/1.1\r\nHost: warren\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    (request.len(), read_all(&mut stream, T).0)
}

/// The switch's page, from the address it printed.
fn scrape(metrics: SocketAddr) -> Page {
    let (_, answer) = get(metrics, "/metrics");
    let at = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete head");
    assert!(answer.starts_with(b"HTTP/1.1 200 "), "{}", String::from_utf8_lossy(&answer));
    Page::parse(std::str::from_utf8(&answer[at + 4..]).expect("a UTF-8 page"))
}

/// The address of `--metrics 127.0.0.1:0`, as the switch says it after its readiness line.
fn metrics_addr(sw: &mut Server) -> SocketAddr {
    let line = sw.wait_stdout(|l| l.starts_with("warren: switch: metrics on "), T).expect("the metrics line");
    let url = line.trim_start_matches("warren: switch: metrics on http://");
    url.trim_end_matches("/metrics").parse().unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

#[test]
fn relay_metrics_count_requests_bytes_and_refused_connects_per_backend() {
    let (a, b, gone) = (backend("a"), backend("b"), backend("gone"));
    let addrs = [a.addr.to_string(), b.addr.to_string(), gone.addr.to_string()];
    gone.stop_clean();
    // No checks and no ejection: the gone backend stays in rotation, so it is tried and refuses.
    let mut sw = switch(&[
        "--backend",
        &addrs[0],
        "--backend",
        &addrs[1],
        "--backend",
        &addrs[2],
        "--no-check",
        "--eject-after",
        "0",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let metrics = metrics_addr(&mut sw);
    let page = scrape(metrics);
    for (family, kind) in [
        ("warren_switch_backend_requests", "counter"),
        ("warren_switch_backend_connections", "counter"),
        ("warren_switch_backend_sent_bytes", "counter"),
        ("warren_switch_backend_received_bytes", "counter"),
        ("warren_switch_backend_errors", "counter"),
        ("warren_switch_backend_in_flight", "gauge"),
        ("warren_switch_backend_weight", "gauge"),
        ("warren_switch_backend_load", "gauge"),
        ("warren_switch_backend_up", "gauge"),
        ("warren_switch_backend_state", "gauge"),
        ("warren_switch_backend_request_duration_seconds", "histogram"),
        ("warren_switch_unavailable", "counter"),
    ] {
        assert_eq!(page.kind(family), Some(kind), "{family} in {:?}", page.types);
    }
    assert_eq!(page.sum("warren_switch_backend_requests_total", &[]), 0.0);

    let (mut sent, mut received) = (0, 0);
    for _ in 0..6 {
        let (request, answer) = get(sw.addr, "/who.txt");
        assert!(answer.starts_with(b"HTTP/1.1 200 "), "{}", String::from_utf8_lossy(&answer));
        sent += request;
        received += answer.len();
    }
    // The last splice's count may land just after the client read its end: wait for every lease
    // to be released.
    let mut page = scrape(metrics);
    assert!(
        eventually(T, || {
            page = scrape(metrics);
            page.sum("warren_switch_backend_in_flight", &[]) == 0.0
        }),
        "connections still held: {:?}",
        page.samples
    );
    let of = |name: &str, backend: &str| page.sum(name, &[("backend", backend)]);
    let live = |name: &str| of(name, &addrs[0]) + of(name, &addrs[1]);
    assert_eq!(live("warren_switch_backend_connections_total"), 6.0, "each answered connection made one");
    assert_eq!(of("warren_switch_backend_connections_total", &addrs[2]), 0.0);
    assert_eq!(live("warren_switch_backend_sent_bytes_total"), sent as f64, "the requests' bytes");
    assert_eq!(live("warren_switch_backend_received_bytes_total"), received as f64, "the answers' bytes");
    let refused =
        page.sum("warren_switch_backend_errors_total", &[("backend", &addrs[2]), ("kind", "connect_refused")]);
    assert!(refused >= 1.0, "round-robin tried the gone backend: {:?}", page.samples);
    assert_eq!(of("warren_switch_backend_requests_total", &addrs[2]), refused, "every try of it was refused");
    assert_eq!(live("warren_switch_backend_requests_total"), 6.0);
    assert_eq!(live("warren_switch_backend_errors_total"), 0.0);
    assert_eq!(page.sum("warren_switch_backend_request_duration_seconds_count", &[]), 6.0 + refused);
    assert_eq!(page.sum("warren_switch_backend_weight", &[("backend", &addrs[0])]), 1.0);
    assert_eq!(page.sum("warren_switch_backend_up", &[]), 3.0, "unchecked backends stay up");
    assert_eq!(page.sum("warren_switch_backend_state", &[("state", "up")]), 3.0);
    assert_eq!(page.sum("warren_switch_unavailable_total", &[]), 0.0);
    sw.stop_clean();
    drop((a, b));
}

#[test]
fn http_metrics_count_requests_per_backend_and_a_503_without_one() {
    let (a, gone) = (backend("a"), backend("gone"));
    let (a_addr, gone_addr) = (a.addr.to_string(), gone.addr.to_string());
    gone.stop_clean();
    let mut sw = switch(&[
        "--mode",
        "http",
        "--backend",
        &a_addr,
        "--backend",
        &format!("{gone_addr},drain"),
        "--inter",
        "100ms",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let metrics = metrics_addr(&mut sw);
    for _ in 0..3 {
        let (_, answer) = get(sw.addr, "/who.txt");
        assert!(answer.starts_with(b"HTTP/1.1 200 "), "{}", String::from_utf8_lossy(&answer));
    }
    let mut page = scrape(metrics);
    assert!(
        eventually(T, || {
            page = scrape(metrics);
            page.sum("warren_switch_backend_in_flight", &[]) == 0.0
        }),
        "requests still held"
    );
    assert_eq!(page.sum("warren_switch_backend_requests_total", &[("backend", &a_addr), ("group", "default")]), 3.0);
    assert_eq!(page.sum("warren_switch_backend_requests_total", &[("backend", &gone_addr)]), 0.0, "drained");
    assert_eq!(page.sum("warren_switch_backend_state", &[("backend", &gone_addr), ("state", "draining")]), 1.0);
    assert!(page.sum("warren_switch_backend_received_bytes_total", &[("backend", &a_addr)]) > 0.0);

    // Once a is gone and its checks fail, no backend is in rotation: 503, counted.
    a.stop_clean();
    support::who::wait_down(&mut sw, &a_addr, T);
    let (_, answer) = get(sw.addr, "/who.txt");
    assert!(answer.starts_with(b"HTTP/1.1 503 "), "{}", String::from_utf8_lossy(&answer));
    let page = scrape(metrics);
    assert_eq!(page.sum("warren_switch_unavailable_total", &[]), 1.0);
    assert_eq!(page.sum("warren_switch_backend_up", &[("backend", &a_addr)]), 0.0);
    assert_eq!(page.sum("warren_switch_backend_state", &[("backend", &a_addr), ("state", "down")]), 1.0);
    sw.stop_clean();
}

/// A DNS query for `name` of type `kind` (1 A, 33 SRV…), class IN, with id `id`.
fn query(id: u16, name: &str, kind: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0]);
    q.extend_from_slice(&kind.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    q
}

/// The response code of a DNS answer.
fn rcode(answer: &[u8]) -> u8 {
    answer[3] & 0x0f
}

#[test]
fn dns_metrics_on_the_registry_page_count_queries_by_type_and_answers_by_code() {
    let data = std::env::temp_dir().join(format!("warren-metrics-dns-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let args = ["registry", "--listen", "127.0.0.1:0", "--data", data.to_str().unwrap()];
    let mut server = Server::spawn(&[&args[..], &["--dns", "127.0.0.1:0", "--http", "127.0.0.1:0"]].concat());
    let line = server.wait_stdout(|l| l.starts_with("warren: serving dns (udp, tcp) on "), T).expect("a DNS line");
    let dns: SocketAddr = line.rsplit(" on ").next().unwrap().parse().unwrap();
    let line = server.wait_stdout(|l| l.starts_with("warren: serving registry-http (tcp) on "), T).expect("http");
    let http: SocketAddr = line.rsplit(" on ").next().unwrap().parse().unwrap();

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(T)).unwrap();
    // Too short to hold a header: nothing to answer to.
    udp.send_to(b"\x01\x02\x03", dns).unwrap();
    let mut buf = [0u8; 1500];
    for (id, name, kind, code) in
        [(1, "nosuch.warren.", 1, 3), (2, "other.warren.", 1, 3), (3, "api.warren.", 33, 3), (4, "x.example.", 1, 5)]
    {
        udp.send_to(&query(id, name, kind), dns).unwrap();
        let (n, _) = udp.recv_from(&mut buf).expect("an answer");
        assert_eq!(u16::from_be_bytes([buf[0], buf[1]]), id);
        assert_eq!(rcode(&buf[..n]), code, "{name}");
    }
    let mut tcp = TcpStream::connect(dns).unwrap();
    tcp.set_read_timeout(Some(T)).unwrap();
    let q = query(5, "nosuch.warren.", 28);
    tcp.write_all(&[&(q.len() as u16).to_be_bytes()[..], &q].concat()).unwrap();
    let mut len = [0u8; 2];
    tcp.read_exact(&mut len).unwrap();
    let mut answer = vec![0; usize::from(u16::from_be_bytes(len))];
    tcp.read_exact(&mut answer).unwrap();
    assert_eq!(rcode(&answer), 3);

    let page = scrape(http);
    for (family, kind) in [
        ("warren_dns_queries", "counter"),
        ("warren_dns_answers", "counter"),
        ("warren_dns_dropped", "counter"),
        ("warren_dns_slipped", "counter"),
        ("warren_dns_answer_duration_seconds", "histogram"),
        ("warren_registry_requests", "counter"),
    ] {
        assert_eq!(page.kind(family), Some(kind), "{family} in {:?}", page.types);
    }
    let count = |name: &str, labels: &[(&str, &str)]| page.sum(name, labels);
    assert_eq!(count("warren_dns_queries_total", &[("transport", "udp"), ("type", "A")]), 3.0);
    assert_eq!(count("warren_dns_queries_total", &[("transport", "udp"), ("type", "SRV")]), 1.0);
    assert_eq!(count("warren_dns_queries_total", &[("transport", "udp"), ("type", "other")]), 1.0, "the cut one");
    assert_eq!(count("warren_dns_queries_total", &[("transport", "tcp"), ("type", "AAAA")]), 1.0);
    assert_eq!(count("warren_dns_queries_total", &[]), 6.0);
    assert_eq!(count("warren_dns_answers_total", &[("transport", "udp"), ("code", "NXDOMAIN")]), 3.0);
    assert_eq!(count("warren_dns_answers_total", &[("transport", "udp"), ("code", "REFUSED")]), 1.0);
    assert_eq!(count("warren_dns_answers_total", &[("transport", "tcp"), ("code", "NXDOMAIN")]), 1.0);
    assert_eq!(count("warren_dns_answers_total", &[]), 5.0);
    assert_eq!(count("warren_dns_dropped_total", &[("reason", "unanswerable")]), 1.0);
    assert_eq!(count("warren_dns_dropped_total", &[("reason", "rate_limited")]), 0.0);
    assert_eq!(count("warren_dns_answer_duration_seconds_count", &[("transport", "udp")]), 4.0);
    assert_eq!(count("warren_dns_answer_duration_seconds_count", &[("transport", "tcp")]), 1.0);
    server.stop_clean();
    let _ = std::fs::remove_dir_all(&data);
}
