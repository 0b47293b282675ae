//! The metrics of the registry's DNS front end (on the registry's `/metrics`), the page read by
//! Python's OpenMetrics parser (`warren_testkit::metrics`) after traffic, its counts checked
//! against what the test sent and received: queries by type, answers by code, and what could not
//! be answered.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};

use support::{Server, T, connect, read_all};
use warren_testkit::metrics::Page;

/// One `GET path` with `Connection: close` through `addr`: the request's length, the whole
/// answer.
fn get(addr: SocketAddr, path: &str) -> (usize, Vec<u8>) {
    let mut stream = connect(addr);
    let request = format!("GET {path} HTTP/1.1\r\nHost: warren\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    (request.len(), read_all(&mut stream, T).0)
}

/// The page at `addr`'s `/metrics`.
fn scrape(addr: SocketAddr) -> Page {
    let (_, answer) = get(addr, "/metrics");
    let at = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete head");
    assert!(answer.starts_with(b"HTTP/1.1 200 "), "{}", String::from_utf8_lossy(&answer));
    Page::parse(std::str::from_utf8(&answer[at + 4..]).expect("a UTF-8 page"))
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
