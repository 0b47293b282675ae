//! `warren switch --mode http` through the real binary: keep-alive with reused backend
//! connections, routing, the forwarding fields, the error answers, chunked bodies both ways,
//! the client timeouts and bounds, and a backend killed under load without a failed request.
//! Backends are `warren serve http` (each serving a `who.txt` that names it) or a small one
//! written here that answers as each test needs.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::who::{backend, root};
use support::{End, Server, T, connect, http_answer, read_all, run};

/// `warren switch --listen 127.0.0.1:0 --mode http <args>`.
fn switch(args: &[&str]) -> Server {
    let mut all = vec!["--mode", "http"];
    all.extend_from_slice(args);
    support::who::switch(&all)
}

/// A `curl` command with its output piped.
fn curl_command(args: &[&str]) -> Command {
    let mut cmd = Command::new("curl");
    cmd.args(["--max-time", "10"]).args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// `curl -s` with a bounded time: (status, body).
fn curl(args: &[&str]) -> (u16, String) {
    let mut cmd = curl_command(&["-s", "-w", "\n%{http_code}"]);
    cmd.args(args);
    let (status, out, err) = run(cmd, b"", T);
    assert!(status.success(), "curl {args:?}: {err}");
    let (body, code) = out.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_owned())
}

/// Which backend answers `who.txt` on a kept-alive connection.
fn who_on(stream: &mut TcpStream) -> String {
    stream.write_all(b"GET /who.txt HTTP/1.1\r\nHost: warren\r\n\r\n").unwrap();
    let (head, body) = answer_on(stream);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    body
}

/// One answer with a `Content-Length` body: its head and body.
fn answer_on(stream: &mut TcpStream) -> (String, String) {
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "the answer's head ends: {:?}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0);
    let mut body = vec![0; len];
    stream.read_exact(&mut body).unwrap();
    (head, String::from_utf8(body).unwrap())
}

/// How the small backend answers one request (its head and decoded body).
enum Reply {
    Bytes(Vec<u8>),
    /// Close without answering.
    Close,
    /// Never answer; wait for the peer to close.
    Silent,
}

/// A backend written here: answers each request with `answer`, and counts the connections it
/// accepted. Its threads end with the test process.
struct Mini {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

fn mini(answer: impl Fn(&str, &[u8]) -> Reply + Send + Sync + 'static) -> Mini {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let (count, answer) = (accepted.clone(), Arc::new(answer));
    std::thread::spawn(move || {
        for stream in listener.incoming().take(1000).flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            let answer = answer.clone();
            std::thread::spawn(move || serve_mini(stream, &*answer));
        }
    });
    Mini { addr, accepted }
}

fn serve_mini(mut stream: TcpStream, answer: &dyn Fn(&str, &[u8]) -> Reply) {
    stream.set_read_timeout(Some(T)).unwrap();
    let mut buf = Vec::new();
    for _ in 0..10_000 {
        let Some((head, body)) = read_request(&mut stream, &mut buf) else { return };
        match answer(&head, &body) {
            Reply::Bytes(bytes) => {
                if stream.write_all(&bytes).is_err() {
                    return;
                }
            }
            Reply::Close => return,
            Reply::Silent => {
                let _ = read_all(&mut stream, T);
                return;
            }
        }
    }
}

/// One request from `stream` (bytes already read in `buf`): its head and its body, decoded.
fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let mut chunk = [0u8; 64 * 1024];
    let mut fill = |buf: &mut Vec<u8>| -> Option<()> {
        let n = stream.read(&mut chunk).ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
        Some(())
    };
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        fill(buf)?;
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if lower.contains("transfer-encoding: chunked") {
        loop {
            let line_end = loop {
                if let Some(at) = buf.windows(2).position(|w| w == b"\r\n") {
                    break at;
                }
                fill(buf)?;
            };
            let size = usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).ok()?.trim(), 16).ok()?;
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                fill(buf)?;
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
            if size == 0 {
                break;
            }
        }
    } else if let Some(len) = lower.lines().find_map(|l| l.strip_prefix("content-length:")) {
        let len: usize = len.trim().parse().ok()?;
        while buf.len() < len {
            fill(buf)?;
        }
        body = buf.drain(..len).collect();
    }
    Some((head, body))
}

fn ok(body: &[u8]) -> Reply {
    let mut answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    answer.extend_from_slice(body);
    Reply::Bytes(answer)
}

#[test]
fn keep_alive_requests_go_round_robin_over_reused_backend_connections() {
    let (a, b) = (backend("a"), backend("b"));
    // No active checks: they would be connections to the backends too.
    let sw = switch(&["--backend", &a.addr.to_string(), "--backend", &b.addr.to_string(), "--no-check"]);
    let mut client = connect(sw.addr);
    let answers: Vec<String> = (0..6).map(|_| who_on(&mut client)).collect();
    assert_eq!(answers, ["a", "b", "a", "b", "a", "b"]);
    // curl's requests on one connection, too.
    let url = format!("http://{}/who.txt", sw.addr);
    let (status, out, err) = run(curl_command(&["-sv", &url, &url, &url]), b"", T);
    assert!(status.success() && out == "aba", "{out:?} {err}");
    assert!(err.contains("Re-using existing connection") || err.contains("Reusing existing"), "{err}");
    drop(client);
    let stopped = sw.stop_clean();
    assert_eq!(stopped.counts().0, 2, "two client connections");
    // Nine requests reached each backend over one connection per client connection.
    assert_eq!(a.stop_clean().counts(), (2, 0));
    assert_eq!(b.stop_clean().counts(), (2, 0));
}

#[test]
fn requests_are_routed_by_host_path_and_header() {
    let (web, stat, api) = (backend("web"), backend("static"), backend("api"));
    let web_b = web.addr.to_string();
    let stat_b = format!("{},group=static", stat.addr);
    let api_b = format!("{},group=api", api.addr);
    let sw = switch(&[
        "--backend",
        &web_b,
        "--backend",
        &stat_b,
        "--backend",
        &api_b,
        "--route",
        "host=img.example:static",
        "--route",
        "path=/api/:api",
        "--route",
        "header=X-Tier=gold:api",
    ]);
    let url = |path: &str| format!("http://{}{path}", sw.addr);
    assert_eq!(curl(&[&url("/who.txt")]), (200, "web".into()), "no route matches: the default group");
    assert_eq!(curl(&["-H", "Host: img.example:8080", &url("/who.txt")]), (200, "static".into()));
    assert_eq!(curl(&[&url("/api/who.txt")]), (200, "api".into()));
    assert_eq!(curl(&["-H", "X-Tier: gold", &url("/who.txt")]), (200, "api".into()));
    assert_eq!(
        curl(&["-H", "Host: img.example", &url("/api/who.txt")]),
        (200, "static".into()),
        "the first match wins"
    );
    sw.stop_clean();

    // The same from the backends file.
    let file = std::env::temp_dir().join(format!("warren-switch-http-{}-routes", std::process::id()));
    std::fs::write(&file, format!("{web_b}\n{api_b}\nroute path=/api/:api  # the API\n")).unwrap();
    let sw = switch(&["--backends-file", file.to_str().unwrap()]);
    assert_eq!(curl(&[&format!("http://{}/api/who.txt", sw.addr)]), (200, "api".into()));
    assert_eq!(curl(&[&format!("http://{}/who.txt", sw.addr)]), (200, "web".into()));
    sw.stop_clean();
    let _ = std::fs::remove_file(&file);
}

#[test]
fn the_backend_sees_x_forwarded_for_and_no_hop_by_hop_fields() {
    let echo = mini(|head, _| ok(head.as_bytes()));
    let sw = switch(&["--backend", &echo.addr.to_string(), "--no-check"]);
    let (status, seen) = curl(&[
        "-H",
        "X-Forwarded-For: 203.0.113.9",
        "-H",
        "Connection: keep-alive, X-Private",
        "-H",
        "X-Private: secret",
        "-H",
        "Keep-Alive: timeout=5",
        "-H",
        "X-Kept: yes",
        &format!("http://{}/echo", sw.addr),
    ]);
    assert_eq!(status, 200);
    assert!(seen.starts_with("GET /echo HTTP/1.1\r\n"), "{seen}");
    assert!(seen.contains("\r\nX-Forwarded-For: 203.0.113.9, 127.0.0.1\r\n"), "{seen}");
    assert!(seen.contains("\r\nX-Forwarded-Proto: http\r\n") && seen.contains("\r\nX-Kept: yes\r\n"), "{seen}");
    for gone in ["X-Private", "Keep-Alive", "Connection"] {
        assert!(!seen.contains(gone), "{gone} passed: {seen}");
    }
    sw.stop_clean();
}

#[test]
fn a_backend_that_fails_or_sends_garbage_is_502() {
    let garbage = mini(|_, _| Reply::Bytes(b"NOT HTTP AT ALL\r\n\r\n".to_vec()));
    let sw = switch(&["--backend", &garbage.addr.to_string(), "--no-check"]);
    let (status, body) = curl(&[&format!("http://{}/", sw.addr)]);
    assert_eq!((status, body.as_str()), (502, "the backend failed or sent an invalid answer\n"));
    sw.stop_clean();

    let closes = mini(|_, _| Reply::Close);
    let sw = switch(&["--backend", &closes.addr.to_string(), "--no-check", "--retries", "2"]);
    assert_eq!(curl(&[&format!("http://{}/", sw.addr)]).0, 502);
    assert_eq!(closes.accepted.load(Ordering::SeqCst), 3, "tried once and retried twice");
    sw.stop_clean();
}

#[test]
fn with_every_backend_down_the_answer_is_503_with_retry_after() {
    let gone = backend("gone");
    let gone_addr = gone.addr.to_string();
    gone.stop_clean();
    let mut sw = switch(&["--backend", &gone_addr, "--inter", "100ms"]);
    support::who::wait_down(&mut sw, &gone_addr, T);
    let mut client = connect(sw.addr);
    client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (head, body) = answer_on(&mut client);
    assert!(
        head.starts_with("HTTP/1.1 503 Service Unavailable\r\n") && head.contains("\r\nRetry-After: 1\r\n"),
        "{head}"
    );
    assert_eq!(body, "no backend available\n");
    // The client's connection goes on: nothing of it was lost.
    client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(answer_on(&mut client).0.starts_with("HTTP/1.1 503 "));
    sw.stop_clean();
}

#[test]
fn a_backend_silent_past_the_server_timeout_is_504() {
    let silent = mini(|_, _| Reply::Silent);
    let sw = switch(&["--backend", &silent.addr.to_string(), "--no-check", "--server-timeout", "300ms"]);
    let started = Instant::now();
    let (status, body) = curl(&[&format!("http://{}/", sw.addr)]);
    assert_eq!((status, body.as_str()), (504, "the backend did not answer in time\n"));
    assert!(started.elapsed() >= Duration::from_millis(300), "answered before the timeout");
    sw.stop_clean();
}

/// Bytes 0, 1, 2, … 250, 0, 1, …: a body whose every byte is checkable.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[test]
fn chunked_bodies_pass_both_ways() {
    // The backend answers with the request body it decoded, in chunks: one long, then short ones.
    let chunker = mini(|_, body| {
        let mut answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let (long, rest) = body.split_at(body.len() / 2);
        for part in std::iter::once(long).chain(rest.chunks(1000)) {
            answer.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            answer.extend_from_slice(part);
            answer.extend_from_slice(b"\r\n");
        }
        answer.extend_from_slice(b"0\r\n\r\n");
        Reply::Bytes(answer)
    });
    let sw = switch(&["--backend", &chunker.addr.to_string(), "--no-check"]);
    let sent = pattern(300_000);
    let file = std::env::temp_dir().join(format!("warren-switch-http-{}-body", std::process::id()));
    std::fs::write(&file, &sent).unwrap();
    let out = std::env::temp_dir().join(format!("warren-switch-http-{}-answer", std::process::id()));
    let url = format!("http://{}/upload", sw.addr);
    let body_arg = format!("@{}", file.display());
    for _ in 0..2 {
        let (status, _) = curl(&[
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &body_arg,
            "-o",
            out.to_str().unwrap(),
            &url,
            "-o",
            out.to_str().unwrap(),
            &url,
        ]);
        assert_eq!(status, 200);
        assert!(std::fs::read(&out).unwrap() == sent, "the answer is the body sent");
    }
    assert_eq!(chunker.accepted.load(Ordering::SeqCst), 2, "one backend connection per client connection");
    sw.stop_clean();
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(&out);
}

#[test]
fn a_slow_request_head_is_answered_408_and_closed() {
    let a = backend("a");
    let sw = switch(&["--backend", &a.addr.to_string(), "--client-timeout", "300ms"]);
    let started = Instant::now();
    let mut client = connect(sw.addr);
    client.write_all(b"GET /who.txt HTTP/1.1\r\nHost: warren\r\n").unwrap();
    let (bytes, end) = read_all(&mut client, T);
    let answer = String::from_utf8_lossy(&bytes);
    assert!(answer.starts_with("HTTP/1.1 408 Request Timeout\r\n") && answer.contains("Connection: close"), "{answer}");
    assert_eq!(end, End::Eof);
    assert!(started.elapsed() >= Duration::from_millis(300));
    sw.stop_clean();
}

/// The resident set of `pid`, in bytes.
fn rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap();
    kb.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap() * 1024
}

#[test]
fn a_client_that_does_not_read_holds_bounded_memory() {
    let dir = root("big");
    let size = 64 << 20;
    std::fs::write(dir.join("big.bin"), vec![7u8; size]).unwrap();
    let big = Server::serve("http", "event", &["--root", dir.to_str().unwrap()]);
    let sw = switch(&["--backend", &big.addr.to_string(), "--no-check"]);
    let before = rss(sw.pid());
    let mut client = connect(sw.addr);
    client.write_all(b"GET /big.bin HTTP/1.1\r\nHost: warren\r\n\r\n").unwrap();
    // Watch the switch for a while as the answer meets a client that reads nothing.
    let peak = (0..20)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            rss(sw.pid())
        })
        .max()
        .unwrap();
    let grew = peak.saturating_sub(before);
    assert!(grew < 8 << 20, "the switch grew by {grew} bytes for one client that does not read");
    // Then it reads: every byte arrives.
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut received = 0;
    let mut buf = vec![0u8; 1 << 20];
    let mut head = None;
    loop {
        match client.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if head.is_none() {
                    head = Some(String::from_utf8_lossy(&buf[..n.min(200)]).into_owned());
                }
                received += n;
            }
            Err(e) => panic!("reading the answer: {e}"),
        }
        if received >= size {
            break;
        }
    }
    assert!(head.unwrap().starts_with("HTTP/1.1 200 "));
    assert!(received > size, "the whole answer: {received} bytes");
    sw.stop_clean();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_backend_killed_under_load_costs_no_idempotent_request() {
    let (a, b) = (backend("a"), backend("b"));
    let b_addr = b.addr.to_string();
    let (inter, fall) = (Duration::from_millis(100), 3);
    let mut sw = switch(&["--backend", &a.addr.to_string(), "--backend", &b_addr, "--inter", "100ms", "--fall", "3"]);
    let (threads, per_thread) = (4, 400);
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(threads + 1));
    let addr = sw.addr;
    let clients: Vec<_> = (0..threads)
        .map(|_| {
            let (done, failed, start) = (done.clone(), failed.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let mut client = connect(addr);
                let mut answers = Vec::new();
                for _ in 0..per_thread {
                    client.write_all(b"GET /who.txt HTTP/1.1\r\nHost: warren\r\n\r\n").unwrap();
                    match http_answer(&mut client, T) {
                        Ok(status) if status.starts_with("HTTP/1.1 200 ") => answers.push(()),
                        other => {
                            failed.fetch_add(1, Ordering::SeqCst);
                            eprintln!("a failed request: {other:?}");
                            client = connect(addr);
                        }
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
                answers.len()
            })
        })
        .collect();
    start.wait();
    assert!(support::eventually(T, || done.load(Ordering::SeqCst) >= threads * per_thread / 4), "the load runs");
    let b_guard = b;
    let killed_at = Instant::now();
    b_guard.stop_with(Signal::SIGKILL);
    let done_at_kill = done.load(Ordering::SeqCst);
    let out = sw.wait_stdout(
        |l| l == format!("warren: switch: backend {b_addr} is down") || l.contains(&format!("{b_addr} ejected")),
        T,
    );
    let out_after = killed_at.elapsed();
    let served: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert_eq!(failed.load(Ordering::SeqCst), 0, "failed requests");
    assert_eq!(served, threads * per_thread);
    assert!(done_at_kill < served, "the load went on after the kill");
    assert!(out.is_some(), "the killed backend never left the rotation");
    let bound = inter * (fall + 1) + Duration::from_millis(500);
    assert!(out_after <= bound, "out of rotation after {out_after:?}, past {bound:?}");
    // Out of rotation: every answer now comes from a.
    let mut client = connect(sw.addr);
    let now: Vec<String> = (0..4).map(|_| who_on(&mut client)).collect();
    assert_eq!(now, ["a", "a", "a", "a"]);
    sw.stop_clean();
}

#[test]
fn bad_routes_and_http_options_elsewhere_are_refused() {
    let refused = |args: &[&str], says: &str| {
        let (status, _, err) = run(support::command(args), b"", T);
        assert!(!status.success() && err.contains(says), "{args:?}: {err}");
    };
    let base = ["switch", "--listen", "127.0.0.1:0", "--backend", "127.0.0.1:1"];
    let with = |more: &[&'static str]| -> Vec<&'static str> { base.iter().chain(more).copied().collect() };
    refused(&with(&["--mode", "http", "--route", "path=/a:nowhere"]), "has no backend");
    refused(&with(&["--mode", "http", "--route", "path=a:default"]), "want host=NAME:GROUP");
    refused(&with(&["--route", "path=/a:default"]), "--route is for --mode http");
    refused(&["switch", "--listen", "127.0.0.1:0", "--backend", "127.0.0.1:1,group=x"], "group= is for --mode http");
}
