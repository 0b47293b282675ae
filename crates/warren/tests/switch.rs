//! `warren switch` through the real binary, in front of HTTP servers the tests start, each
//! serving a `who.txt` that names it: round-robin spreads, a dead backend is skipped, draining
//! keeps new connections off while an open one finishes, and hand-off mode passes connections
//! to server processes.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use nix::sys::signal::Signal;
use support::who::{backend, receiver, root, switch, wait_down};
use support::{T, connect, run};

/// Which backend answers a new connection: one `GET /who.txt`, `Connection: close`.
fn who(switch: SocketAddr) -> String {
    let mut stream = connect(switch);
    stream.write_all(b"GET /who.txt HTTP/1.1\r\nHost: warren\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap_or_else(|e| panic!("read through the switch: {e}"));
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
    answer.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()
}

/// `who.txt` again on a kept-alive connection.
fn who_on(stream: &mut std::net::TcpStream) -> String {
    stream.write_all(b"GET /who.txt HTTP/1.1\r\nHost: warren\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "the answer's head ends");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let len: usize = head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).unwrap().trim().parse().unwrap();
    let mut body = vec![0; len];
    stream.read_exact(&mut body).unwrap();
    String::from_utf8(body).unwrap()
}

fn answers(switch: SocketAddr, n: usize) -> Vec<String> {
    (0..n).map(|_| who(switch)).collect()
}

#[test]
fn round_robin_spreads_connections_over_the_backends_in_turn() {
    let backends = [backend("a"), backend("b"), backend("c")];
    let addrs: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
    let mut sw = switch(&["--backend", &addrs[0], "--backend", &addrs[1], "--backend", &addrs[2]]);
    assert_eq!(answers(sw.addr, 6), ["a", "b", "c", "a", "b", "c"]);
    // SIGHUP without a backends file reloads the flags' backends (and does not end the switch).
    sw.signal(Signal::SIGHUP);
    assert!(sw.wait_stdout(|l| l == "warren: switch: backends reloaded", T).is_some());
    assert_eq!(answers(sw.addr, 3), ["a", "b", "c"]);
    let stopped = sw.stop_clean();
    assert_eq!(stopped.counts(), (9, 0));
}

#[test]
fn a_killed_backend_is_out_of_rotation_once_its_checks_fail() {
    let (a, b) = (backend("a"), backend("b"));
    let (a_addr, b_addr) = (a.addr.to_string(), b.addr.to_string());
    let mut sw = switch(&["--backend", &a_addr, "--backend", &b_addr, "--inter", "100ms"]);
    assert_eq!(answers(sw.addr, 2), ["a", "b"]);
    b.stop_clean();
    wait_down(&mut sw, &b_addr, T);
    assert_eq!(answers(sw.addr, 4), ["a", "a", "a", "a"]);
    sw.stop_clean();
}

#[test]
fn with_every_backend_down_a_client_is_closed_at_once() {
    let gone = backend("gone");
    let gone_addr = gone.addr.to_string();
    gone.stop_clean();
    let mut sw = switch(&["--backend", &gone_addr, "--inter", "100ms"]);
    wait_down(&mut sw, &gone_addr, T);
    let mut stream = connect(sw.addr);
    let (bytes, end) = support::read_all(&mut stream, T);
    assert!(bytes.is_empty() && end == support::End::Eof, "{end:?} after {} bytes", bytes.len());
    assert!(sw.is_running());
    sw.stop_clean();
}

#[test]
fn a_refused_connect_is_retried_on_another_backend() {
    // No active checks: only the relay's retry stands between the client and the dead backend.
    let (a, b) = (backend("a"), backend("b"));
    let (a_addr, b_addr) = (a.addr.to_string(), b.addr.to_string());
    let sw = switch(&["--backend", &a_addr, "--backend", &b_addr, "--no-check"]);
    b.stop_clean();
    assert_eq!(answers(sw.addr, 4), ["a", "a", "a", "a"], "no failed request");
    sw.stop_clean();
}

#[test]
fn a_drained_backend_takes_no_new_connection_while_an_open_one_finishes() {
    let (a, b) = (backend("a"), backend("b"));
    let (a_addr, b_addr) = (a.addr.to_string(), b.addr.to_string());
    let file = std::env::temp_dir().join(format!("warren-switch-{}-backends", std::process::id()));
    std::fs::write(&file, format!("{a_addr}\n{b_addr} # the second\n")).unwrap();
    let mut sw = switch(&["--backends-file", file.to_str().unwrap(), "--policy", "least-connections"]);
    let mut open = connect(sw.addr);
    assert_eq!(who_on(&mut open), "a", "the first connection goes to the first backend");

    std::fs::write(&file, format!("{a_addr},drain\n{b_addr}\n")).unwrap();
    sw.signal(Signal::SIGHUP);
    assert!(sw.wait_stdout(|l| l == "warren: switch: backends reloaded", T).is_some());
    assert_eq!(answers(sw.addr, 3), ["b", "b", "b"]);
    assert_eq!(who_on(&mut open), "a", "the open connection goes on");

    // Removed altogether: the open connection still finishes; a bad file changes nothing.
    std::fs::write(&file, format!("{b_addr}\n")).unwrap();
    sw.signal(Signal::SIGHUP);
    assert!(sw.wait_stdout(|l| l == "warren: switch: backends reloaded", T).is_some());
    assert_eq!(who_on(&mut open), "a");
    std::fs::write(&file, format!("{a_addr},weight=lots\n")).unwrap();
    sw.signal(Signal::SIGHUP);
    let refused = sw.wait_stdout(|l| l.starts_with("warren: switch: reload refused"), T).expect("refused");
    assert!(refused.contains("not a number"), "{refused}");
    assert_eq!(answers(sw.addr, 2), ["b", "b"]);
    drop(open);
    sw.stop_clean();
    let _ = std::fs::remove_file(&file);
}

#[test]
fn handoff_mode_passes_connections_to_the_backends_in_turn() {
    let tag = format!("@warren-switch-{}-{}", std::process::id(), fastrand::u64(..));
    let (ta, tb) = (format!("{tag}-a"), format!("{tag}-b"));
    let (a, b) = (receiver("a", &ta), receiver("b", &tb));
    let sw = switch(&["--mode", "handoff", "--backend", &ta, "--backend", &tb]);
    assert_eq!(answers(sw.addr, 4), ["a", "b", "a", "b"]);
    sw.stop_clean();
    a.stop_clean();
    b.stop_clean();
}

#[test]
fn twenty_reloads_under_load_refuse_no_connection_and_lose_no_request() {
    let (a, b) = (backend("a"), backend("b"));
    let file = std::env::temp_dir().join(format!("warren-switch-reload-{}-{}", std::process::id(), fastrand::u64(..)));
    let sets = [format!("{}\n", a.addr), format!("{}\n{}\n", a.addr, b.addr), format!("{}\n", b.addr)];
    std::fs::write(&file, &sets[1]).unwrap();
    let mut sw = switch(&["--backends-file", file.to_str().unwrap()]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let addr = sw.addr;
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (stop, answered) = (stop.clone(), answered.clone());
            std::thread::spawn(move || {
                let (mut done, mut failed) = (0u32, Vec::new());
                // Bounded: the reloads below take far fewer than this many requests.
                for _ in 0..100_000 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    match std::panic::catch_unwind(|| who(addr)) {
                        Ok(name) if name == "a" || name == "b" => {
                            done += 1;
                            answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        other => failed.push(format!("{other:?}")),
                    }
                }
                (done, failed)
            })
        })
        .collect();
    for round in 0..20 {
        // Requests answered between every two reloads: the load runs through all of them.
        let seen = answered.load(std::sync::atomic::Ordering::Relaxed);
        let moving = support::eventually(T, || answered.load(std::sync::atomic::Ordering::Relaxed) >= seen + 10);
        assert!(moving, "requests are answered before reload {round}");
        std::fs::write(&file, &sets[round % sets.len()]).unwrap();
        sw.signal(Signal::SIGHUP);
        let reloaded = sw.wait_stdout(|l| l.contains("backends reloaded"), T);
        assert!(reloaded.is_some(), "reload {round} was announced");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut done, mut failed) = (0, Vec::new());
    for client in clients {
        let (d, f) = client.join().unwrap();
        done += d;
        failed.extend(f);
    }
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        done as usize + failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(done >= 200, "the load ran through the reloads: {done} requests");
    sw.stop_clean();
    a.stop_clean();
    b.stop_clean();
    let _ = std::fs::remove_file(&file);
}

/// A connection to `to` from `from` (a loopback address of the test's choosing, port 0).
fn connect_from(from: &str, to: SocketAddr) -> std::net::TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&format!("{from}:0").parse::<SocketAddr>().unwrap().into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let stream: std::net::TcpStream = socket.into();
    stream.set_read_timeout(Some(T)).unwrap();
    stream
}

/// HAProxy (a PROXY protocol receiver the tests did not write) in `mode http`, accepting the
/// header on two ports and answering every request with the client address it was told of.
struct HaproxyPeer {
    child: std::process::Child,
    ports: [u16; 2],
    dir: PathBuf,
}

impl HaproxyPeer {
    fn start() -> HaproxyPeer {
        let dir = root("haproxy");
        // The ports are picked free, then bound by HAProxy: it cannot report a port 0's choice.
        let ports = [warren_testkit::free_port().unwrap(), warren_testkit::free_port().unwrap()];
        let config = format!(
            "global\n    nbthread 1\n    maxconn 100\n\ndefaults\n    mode http\n    timeout connect 5s\n    \
             timeout client 10s\n    timeout server 10s\n\nfrontend told\n    bind 127.0.0.1:{} accept-proxy\n    \
             bind 127.0.0.1:{} accept-proxy\n    \
             http-request return status 200 content-type text/plain lf-string \"%[src] %[src_port] %[dst] %[dst_port]\"\n",
            ports[0], ports[1]
        );
        std::fs::write(dir.join("haproxy.cfg"), config).unwrap();
        let child = std::process::Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(dir.join("haproxy.cfg"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("haproxy (Debian's package; scripts/test installs it)");
        let peer = HaproxyPeer { child, ports, dir };
        for port in ports {
            let up = support::eventually(T, || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
            assert!(up, "haproxy listens on {port}");
        }
        peer
    }
}

impl Drop for HaproxyPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn relay_backends_that_ask_for_it_are_told_the_clients_address_in_a_proxy_header() {
    let haproxy = HaproxyPeer::start();
    let v1 = format!("127.0.0.1:{},proxy=v1", haproxy.ports[0]);
    let v2 = format!("127.0.0.1:{},proxy=v2", haproxy.ports[1]);
    let sw = switch(&["--mode", "relay", "--no-check", "--backend", &v1, "--backend", &v2]);
    // Round-robin: the first connection goes to the v1 port, the second to the v2 one. Each
    // comes from a loopback address of its own, which only the header can tell HAProxy.
    for from in ["127.0.0.5", "127.0.0.6"] {
        let mut stream = connect_from(from, sw.addr);
        let port = stream.local_addr().unwrap().port();
        stream.write_all(b"GET / HTTP/1.1\r\nHost: warren\r\nConnection: close\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        assert_eq!(body, format!("{from} {port} 127.0.0.1 {}", sw.addr.port()), "{answer:?}");
    }
    sw.stop_clean();
}

#[test]
fn bad_flags_are_refused_with_the_reason() {
    let refused = |args: &[&str], says: &str| {
        let (status, _, err) = run(support::command(args), b"", T);
        assert!(!status.success() && err.contains(says), "{args:?}: {err}");
    };
    refused(&["switch", "--backend", "127.0.0.1:1", "--policy", "fastest"], "unknown policy \"fastest\"");
    refused(&["switch", "--listen", "127.0.0.1:0"], "no backend");
    refused(&["switch", "--listen", "127.0.0.1:0", "--backend", "localhost"], "want an address");
    refused(&["switch", "--listen", "127.0.0.1:0", "--backend", "127.0.0.1:1", "--rise", "0"], "rise and fall");
    refused(&["switch", "--listen", "127.0.0.1:0", "--backend", "127.0.0.1:1", "--backend", "127.0.0.1:1"], "twice");
}
