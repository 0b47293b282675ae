//! `warren largerhttpd` against the one-line requests of the course's LargerHttpd clients
//! (`tinyhttpd.Client`, `nc`): what each request line gets back, byte for byte.

mod support;

use std::io::Write;
use std::net::Shutdown;

use support::{Data, End, Server, T, command, connect, read_all};

const INDEX: &[u8] = b"<html><body>index</body></html>\n";
const PAGE: &[u8] = b"a page\n";

/// `warren largerhttpd 0 2` serving a scratch directory (its working directory).
fn largerhttpd(root: &Data) -> Server {
    std::fs::create_dir_all(root.0.join("sub")).unwrap();
    std::fs::write(root.0.join("index.html"), INDEX).unwrap();
    std::fs::write(root.0.join("page.txt"), PAGE).unwrap();
    std::fs::write(root.0.join("sub/index.html"), INDEX).unwrap();
    let mut cmd = command(&["largerhttpd", "0", "2"]);
    // The cookie key of /visits goes to the scratch state directory, not the user's.
    cmd.current_dir(&root.0).env("XDG_STATE_HOME", root.0.join(".state"));
    Server::start(cmd, "largerhttpd 0 2".into())
}

/// Send `request` (then half-close if `half_close`) and read the answer to the server's close.
fn exchange(server: &Server, request: &[u8], half_close: bool) -> Vec<u8> {
    let mut stream = connect(server.addr);
    stream.write_all(request).unwrap();
    if half_close {
        stream.shutdown(Shutdown::Write).unwrap();
    }
    let (answer, end) = read_all(&mut stream, T);
    assert_eq!(end, End::Eof, "{:?}: the server closes after its answer", String::from_utf8_lossy(request));
    answer
}

#[test]
fn one_line_requests_get_the_course_servers_answers() {
    let root = Data::new("largerhttpd-oneliners");
    let server = largerhttpd(&root);
    let table: [(&[u8], bool, &[u8]); 14] = [
        // A one-line request: the raw file, then the close.
        (b"GET /page.txt\n", false, PAGE),
        (b"GET /page.txt\r\n", false, PAGE),
        (b"GET /\n", false, INDEX),
        (b"GET /sub\n", false, INDEX),
        // A request line ended by the end of the stream instead of a newline.
        (b"GET /page.txt", true, PAGE),
        // A path without its leading slash.
        (b"GET page.txt\n", false, PAGE),
        // Errors are the course's bare strings, without a line end.
        (b"GET /missing.txt\n", false, b"404 Object Not Found"),
        (b"FOO\n", false, b"400 Bad Request"),
        (b"GET  /page.txt\n", false, b"400 Bad Request"),
        (b"GET /page.txt extra\n", false, b"400 Bad Request"),
        (b"POST /page.txt\n", false, b"400 Bad Request"),
        (b"\n", false, b"400 Bad Request"),
        // Deliberately not the course's: `..` never leaves the root (TinyHttpd's answer).
        (b"GET /../etc/passwd\n", false, b"403 Forbidden"),
        (b"GET ../etc/passwd\n", false, b"403 Forbidden"),
    ];
    for (request, half_close, want) in table {
        let got = exchange(&server, request, half_close);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want),
            "request {:?} (half-close: {half_close})",
            String::from_utf8_lossy(request)
        );
    }
    server.stop_clean();
}

#[test]
fn http_1_requests_keep_their_status_lines() {
    let root = Data::new("largerhttpd-http1");
    let server = largerhttpd(&root);
    let table: [(&[u8], bool, &str); 4] = [
        (b"GET /page.txt HTTP/1.0\r\n\r\n", false, "HTTP/1.1 200 OK\r\n"),
        (b"GET /page.txt HTTP/2.0\r\n\r\n", false, "HTTP/1.1 505 "),
        (b"BREW /pot HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", false, "HTTP/1.1 501 "),
        // A CRLF before the request line is skipped (RFC 9112 §2.2), not a one-line request.
        (b"\r\nGET /page.txt HTTP/1.0\r\n\r\n", false, "HTTP/1.1 200 OK\r\n"),
    ];
    for (request, half_close, want) in table {
        let got = String::from_utf8_lossy(&exchange(&server, request, half_close)).into_owned();
        assert!(got.starts_with(want), "request {:?}: {got:?}", String::from_utf8_lossy(request));
    }
    // An HTTP/1.1 head cut short by the end of the stream is no request: no answer.
    assert_eq!(exchange(&server, b"GET /page.txt HTTP/1.1", true), b"");
    assert_eq!(exchange(&server, b"GET /page.txt HTTP/1.1\r\nHost: x\r\n", true), b"");
    server.stop_clean();
}
