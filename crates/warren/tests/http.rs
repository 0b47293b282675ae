//! HTTP under every model, through real sockets: GET and HEAD, file bodies sent with sendfile,
//! ranges, conditional requests, pipelining, the course's one-line requests, and the document
//! root's wall (no `..` in any encoding, no symlink out of the root).

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use support::{Server, T, connect, read_all};

/// A document root with an index, a 300 KiB file, a subdirectory and a symlink out of the root.
fn docroot(tag: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("warren-http-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("index.html"), b"<h1>warren</h1>\n").unwrap();
    std::fs::write(root.join("big.bin"), big()).unwrap();
    std::fs::write(root.join("sub/a.txt"), b"a\n").unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("escape")).unwrap();
    root
}

fn big() -> Vec<u8> {
    (0..300 * 1024u32).map(|i| (i * 7 % 251) as u8).collect()
}

/// One request on a fresh connection; the whole answer, the server closing after it.
fn ask(addr: SocketAddr, request: &str) -> Vec<u8> {
    let mut stream = connect(addr);
    stream.write_all(request.as_bytes()).unwrap();
    read_all(&mut stream, T).0
}

/// Split an answer into its head (as text) and body.
fn split(answer: &[u8]) -> (String, Vec<u8>) {
    let at = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete head");
    (String::from_utf8_lossy(&answer[..at]).into_owned(), answer[at + 4..].to_vec())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| l.split_once(": ").filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

fn check(model: &str) {
    let root = docroot(model);
    // The visit counter's signing key: beside the root (never inside, where it would be served),
    // not in $HOME.
    let key = root.with_extension("key");
    let server =
        Server::serve("http", model, &["--root", root.to_str().unwrap(), "--cookie-key-file", key.to_str().unwrap()]);
    let addr = server.addr;

    let (head, body) = split(&ask(addr, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{model}: {head}");
    assert_eq!(header(&head, "content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(body, b"<h1>warren</h1>\n");

    // A body far larger than one socket buffer arrives whole (sendfile, partial sends).
    let (head, body) = split(&ask(addr, "GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    assert_eq!(header(&head, "content-length"), Some("307200"), "{model}");
    assert!(body == big(), "{model}: the 300 KiB body differs");
    let etag = header(&head, "etag").expect("an ETag").to_owned();

    let (head, body) = split(&ask(addr, "HEAD /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    assert!(head.starts_with("HTTP/1.1 200") && body.is_empty(), "{model}: HEAD sends no body");

    let req = "GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=100-199\r\nConnection: close\r\n\r\n";
    let (head, body) = split(&ask(addr, req));
    assert!(head.starts_with("HTTP/1.1 206"), "{model}: {head}");
    assert_eq!(header(&head, "content-range"), Some("bytes 100-199/307200"));
    assert_eq!(body, &big()[100..200]);
    let req = "GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=400000-\r\nConnection: close\r\n\r\n";
    assert!(split(&ask(addr, req)).0.starts_with("HTTP/1.1 416"), "{model}");

    let req = format!("GET /big.bin HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\nConnection: close\r\n\r\n");
    assert!(split(&ask(addr, &req)).0.starts_with("HTTP/1.1 304"), "{model}");

    // Three pipelined requests on one keep-alive connection, answered in order.
    let mut stream = connect(addr);
    stream
        .write_all(b"GET /sub/a.txt HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\nGET /sub/a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (all, _) = read_all(&mut stream, T);
    let text = String::from_utf8_lossy(&all);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 3, "{model}: {text}");
    let a = text.find("\r\n\r\na\n").expect("first body");
    let index = text.find("<h1>warren</h1>").expect("second body");
    assert!(a < index && text[index..].contains("\r\n\r\na\n"), "{model}: answers out of order: {text}");

    // The course's LargerHttpd: a one-line request gets the raw file, errors are bare.
    assert_eq!(ask(addr, "GET /sub/a.txt\n"), b"a\n", "{model}");
    assert_eq!(ask(addr, "GET /missing\n"), b"404 Object Not Found", "{model}");

    // The wall: no escape in any encoding, no symlink out of the root.
    for target in
        ["/../etc/hostname", "/%2e%2e/etc/hostname", "/%2E%2E%2Fetc%2Fhostname", "/sub/..%5c..%5cetc", "/escape"]
    {
        let answer = ask(addr, &format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
        let status = String::from_utf8_lossy(&answer[..12.min(answer.len())]).into_owned();
        assert!(
            status == "HTTP/1.1 403" || status == "HTTP/1.1 404" || status == "HTTP/1.1 400",
            "{model} {target}: {status}"
        );
    }

    // A keep-alive connection stays open between requests.
    let mut stream = connect(addr);
    for _ in 0..3 {
        stream.write_all(b"GET /sub/a.txt HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        while !answer.ends_with(b"\r\n\r\na\n") {
            let n = stream.read(&mut buf).expect("the answer on the same connection");
            assert!(n > 0, "{model}: closed a keep-alive connection");
            answer.extend_from_slice(&buf[..n]);
        }
    }
    drop(stream);
    server.stop_clean();
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_file(key);
}

per_model!(check);

/// The request-size limits on the command line: a long request line gets `414`, too many or too
/// large header fields `431`, and a request within them still `200`.
#[test]
fn request_limits_from_the_command_line() {
    let root = docroot("limits");
    let key = root.with_extension("key");
    let server = Server::serve(
        "http",
        "event",
        &[
            "--root",
            root.to_str().unwrap(),
            "--cookie-key-file",
            key.to_str().unwrap(),
            "--max-request",
            "40",
            "--max-headers",
            "3",
            "--max-header-bytes",
            "100",
        ],
    );
    let status = |request: &str| String::from_utf8_lossy(&ask(server.addr, request)[..12]).into_owned();
    assert_eq!(status("GET /sub/a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), "HTTP/1.1 200");
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(40));
    assert_eq!(status(&long), "HTTP/1.1 414");
    assert_eq!(status("GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"), "HTTP/1.1 431");
    let fat = format!("GET / HTTP/1.1\r\nHost: x\r\nA: {}\r\n\r\n", "v".repeat(100));
    assert_eq!(status(&fat), "HTTP/1.1 431");
    server.stop_clean();
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_file(key);
}
