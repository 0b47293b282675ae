//! HTTP conformance through real clients under every model: curl (ranges, HEAD, conditional
//! requests, connection reuse) and Python's `http.client` (one keep-alive connection through a
//! dozen exchanges). `scripts/test` installs both when the machine lacks them.

#[macro_use]
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::Server;

const BIG: usize = 1 << 20;

fn big() -> Vec<u8> {
    (0..BIG as u32).map(|i| (i * 13 % 253) as u8).collect()
}

fn docroot(model: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("warren-http-clients-{model}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), b"<h1>warren</h1>\n").unwrap();
    std::fs::write(root.join("big.bin"), big()).unwrap();
    std::fs::write(root.join("a.txt"), b"a\n").unwrap();
    root
}

/// Run a client to completion; its output, failing the test with its stderr if it failed.
fn client(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    out
}

/// curl with a bound on the whole transfer, quiet but for errors.
fn curl(args: &[&str]) -> Output {
    let mut all = vec!["--silent", "--show-error", "--max-time", "10"];
    all.extend_from_slice(args);
    client("curl", &all)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of a header in curl's `--dump-header` text.
fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

fn curl_checks(model: &str, addr: SocketAddr, scratch: &Path) {
    let url = |path: &str| format!("http://{addr}{path}");
    let body = scratch.join("body");
    let body_arg = body.to_str().unwrap();

    // A full GET: status, headers, the body byte for byte.
    let head = stdout(&curl(&["--dump-header", "-", "--output", body_arg, &url("/big.bin")]));
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{model}: {head}");
    assert_eq!(header(&head, "content-length").as_deref(), Some("1048576"), "{model}");
    assert_eq!(header(&head, "content-type").as_deref(), Some("application/octet-stream"), "{model}");
    assert!(std::fs::read(&body).unwrap() == big(), "{model}: body differs");
    let etag = header(&head, "etag").expect("ETag");
    let modified = header(&head, "last-modified").expect("Last-Modified");

    // HEAD: the same headers, no body.
    let head = stdout(&curl(&["--head", &url("/big.bin")]));
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{model}: {head}");
    assert_eq!(header(&head, "content-length").as_deref(), Some("1048576"), "{model}: HEAD");
    assert_eq!(header(&head, "etag").as_deref(), Some(etag.as_str()), "{model}: HEAD's ETag");

    // Ranges: an inner range, a suffix, one past the end.
    let out = curl(&["--range", "1000-1999", "--write-out", "%{http_code}", "--output", body_arg, &url("/big.bin")]);
    assert_eq!(stdout(&out), "206", "{model}");
    assert!(std::fs::read(&body).unwrap() == big()[1000..2000], "{model}: range body");
    let out = curl(&["--range", "-100", "--dump-header", "-", "--output", body_arg, &url("/big.bin")]);
    assert_eq!(header(&stdout(&out), "content-range").as_deref(), Some("bytes 1048476-1048575/1048576"), "{model}");
    assert!(std::fs::read(&body).unwrap() == big()[BIG - 100..], "{model}: suffix body");
    let out = curl(&["--range", "2000000-", "--write-out", "%{http_code}", "--output", "/dev/null", &url("/big.bin")]);
    assert_eq!(stdout(&out), "416", "{model}");

    // Conditional requests: a matching ETag, a date not older than the file, a stale ETag.
    let code = |extra: &[&str]| {
        let mut args = vec!["--write-out", "%{http_code}", "--output", "/dev/null"];
        args.extend_from_slice(extra);
        let target = url("/big.bin");
        args.push(&target);
        stdout(&curl(&args))
    };
    assert_eq!(code(&["--header", &format!("If-None-Match: {etag}")]), "304", "{model}");
    assert_eq!(code(&["--header", "If-None-Match: \"other\""]), "200", "{model}");
    assert_eq!(code(&["--time-cond", &modified]), "304", "{model}: If-Modified-Since");
    assert_eq!(code(&["--time-cond", "Thu, 01 Jan 1970 00:00:01 GMT"]), "200", "{model}: older date");

    // Connection reuse: one curl, three URLs, one connection (the later transfers connect 0 times).
    let out = curl(&[
        "--output",
        "/dev/null",
        "--output",
        "/dev/null",
        "--output",
        "/dev/null",
        "--write-out",
        "%{num_connects} %{http_code}\n",
        &url("/a.txt"),
        &url("/big.bin"),
        &url("/"),
    ]);
    assert_eq!(stdout(&out), "1 200\n0 200\n0 200\n", "{model}: the connection was not reused");
}

fn check(model: &str) {
    let root = docroot(model);
    let scratch = root.with_extension("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let key = root.with_extension("key");
    let server =
        Server::serve("http", model, &["--root", root.to_str().unwrap(), "--cookie-key-file", key.to_str().unwrap()]);

    curl_checks(model, server.addr, &scratch);

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/http_conformance.py");
    let (host, port) = (server.addr.ip().to_string(), server.addr.port().to_string());
    let out = client("python3", &[script, &host, &port, &BIG.to_string()]);
    assert!(stdout(&out).starts_with("ok "), "{model}: {}", stdout(&out));

    server.stop_clean();
    for dir in [&root, &scratch] {
        let _ = std::fs::remove_dir_all(dir);
    }
    let _ = std::fs::remove_file(key);
}

per_model!(check);
