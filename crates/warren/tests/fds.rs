//! Running out of file descriptors: a server started with a low RLIMIT_NOFILE is given more
//! connections than it can hold. It must keep running, not spin on the listener (its CPU time
//! grows by less than 30% of the wall time while the extra connections wait), and serve new
//! clients again once the others close.

mod support;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{BIN, Lines, Server, T, cpu_time};

/// The descriptor limit the server runs with.
const NOFILE: u32 = 64;

fn start_with_nofile(model: &str) -> Server {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -n {NOFILE} && exec \"$0\" \"$@\""))
        .arg(BIN)
        .args(["serve", "echo", "--model", model, "--listen", "127.0.0.1:0", "-d", "0"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    Server::start(cmd, format!("echo under {model} with ulimit -n {NOFILE}"))
}

/// What became of one more connection.
enum Fate {
    Served(Lines),
    /// Closed or reset without an echo: refused for lack of descriptors.
    Refused,
    /// No answer yet: waiting in the backlog.
    Waiting(Lines),
}

fn try_one(server: &Server, n: usize, patience: Duration) -> Fate {
    let mut conn = Lines::connect(server.addr);
    let ping = format!("ping {n}");
    conn.send(&ping);
    match conn.next_line(patience) {
        Ok(Some(line)) if line == ping => Fate::Served(conn),
        Ok(Some(line)) => panic!("{}: echo of {ping:?} was {line:?}", server.label),
        Ok(None) => Fate::Refused,
        Err(e) if matches!(support::end_of(&e), support::End::Timeout) => Fate::Waiting(conn),
        Err(_) => Fate::Refused,
    }
}

fn exhaust(model: &str) {
    let mut server = start_with_nofile(model);
    let mut held = Vec::new();
    let mut extra = Vec::new();
    for n in 0..4 * NOFILE as usize {
        match try_one(&server, n, Duration::from_secs(2)) {
            Fate::Served(conn) => held.push(conn),
            Fate::Refused => break,
            Fate::Waiting(conn) => {
                extra.push(conn);
                break;
            }
        }
    }
    assert!(held.len() < NOFILE as usize, "{model}: served {} connections with {NOFILE} descriptors", held.len());
    assert!(server.is_running(), "{model}: the server died when it ran out of descriptors");

    // More clients than it can take, all waiting (or being refused one by one).
    for n in 0..20 {
        let mut conn = Lines::connect(server.addr);
        conn.send(&format!("extra {n}"));
        extra.push(conn);
    }
    let (cpu_before, wall) = (cpu_time(server.pid()), Instant::now());
    // A measuring window, not synchronisation: how busy the server is while clients wait.
    std::thread::sleep(Duration::from_secs(1));
    let (cpu, wall) = (cpu_time(server.pid()) - cpu_before, wall.elapsed());
    assert!(cpu < wall * 3 / 10, "{model}: the server spins while out of descriptors: {cpu:?} of CPU in {wall:?}");
    assert!(server.is_running(), "{model}: the server died while clients waited");

    // Once the others go, new clients are served again.
    let held_count = held.len();
    drop(held);
    drop(extra);
    let end = Instant::now() + Duration::from_secs(10);
    let mut n = 1000;
    loop {
        n += 1;
        if let Fate::Served(mut conn) = try_one(&server, n, Duration::from_secs(2)) {
            conn.send("and again");
            assert_eq!(conn.line(), "and again");
            break;
        }
        assert!(Instant::now() < end, "{model}: not serving again after the {held_count} held connections closed");
    }
    // And as many as before, at once.
    let again: Vec<Fate> = (0..held_count / 2).map(|i| try_one(&server, 2000 + i, Duration::from_secs(2))).collect();
    let served = again.iter().filter(|f| matches!(f, Fate::Served(_))).count();
    assert_eq!(served, held_count / 2, "{model}: capacity came back");
    drop(again);
    let stopped = server.stop();
    stopped.assert_clean(model);
}

#[test]
fn thread() {
    exhaust("thread");
}

#[test]
fn pool() {
    exhaust("pool");
}

#[test]
fn event() {
    exhaust("event");
}

#[test]
fn green() {
    exhaust("green");
}

#[test]
fn hybrid() {
    exhaust("hybrid");
}

/// What became of one more HTTP connection to the registry's API.
enum HttpFate {
    Served(std::net::TcpStream),
    /// A 503, or closed or reset without an answer.
    Refused,
    /// No answer yet: waiting in the backlog.
    Waiting(std::net::TcpStream),
}

fn try_http(addr: std::net::SocketAddr, patience: Duration) -> HttpFate {
    let mut conn = support::connect(addr);
    support::http_get(&mut conn, "/v1/names");
    match support::http_answer(&mut conn, patience) {
        Ok(status) if status.starts_with("HTTP/1.1 200") => HttpFate::Served(conn),
        Ok(status) if status.starts_with("HTTP/1.1 503") => HttpFate::Refused,
        Ok(status) => panic!("registry-http: {status:?}"),
        Err(support::End::Timeout) => HttpFate::Waiting(conn),
        Err(_) => HttpFate::Refused,
    }
}

/// The registry's HTTP API, its connection cap above the descriptors it has, accepts with the
/// same policy as the models: it keeps running, does not spin, and serves again.
#[test]
fn registry_http() {
    let data = std::env::temp_dir().join(format!("warren-fds-registry-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -n {NOFILE} && exec \"$0\" \"$@\""))
        .arg(BIN)
        .args(["registry", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--http-max-conns", "1000"])
        .args(["--admin-token", "admin", "--data"])
        .arg(&data)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut server = Server::start(cmd, format!("registry --http with ulimit -n {NOFILE}"));
    let ready = server.wait_stdout(|l| l.starts_with("warren: serving registry-http (tcp) on "), T).expect("http line");
    let addr: std::net::SocketAddr = ready.rsplit(" on ").next().unwrap().parse().unwrap();
    let mut held = Vec::new();
    let mut extra = Vec::new();
    for _ in 0..4 * NOFILE as usize {
        match try_http(addr, Duration::from_secs(2)) {
            HttpFate::Served(conn) => held.push(conn),
            HttpFate::Refused => break,
            HttpFate::Waiting(conn) => {
                extra.push(conn);
                break;
            }
        }
    }
    assert!(held.len() < NOFILE as usize, "served {} connections with {NOFILE} descriptors", held.len());
    assert!(server.is_running(), "the registry died when it ran out of descriptors");

    for _ in 0..20 {
        let mut conn = support::connect(addr);
        support::http_get(&mut conn, "/v1/names");
        extra.push(conn);
    }
    let (cpu_before, wall) = (cpu_time(server.pid()), Instant::now());
    // A measuring window, not synchronisation: how busy the server is while clients wait.
    std::thread::sleep(Duration::from_secs(1));
    let (cpu, wall) = (cpu_time(server.pid()) - cpu_before, wall.elapsed());
    assert!(cpu < wall * 3 / 10, "the registry spins while out of descriptors: {cpu:?} of CPU in {wall:?}");
    assert!(server.is_running(), "the registry died while clients waited");

    let held_count = held.len();
    drop(held);
    drop(extra);
    let end = Instant::now() + Duration::from_secs(10);
    while !matches!(try_http(addr, Duration::from_secs(2)), HttpFate::Served(_)) {
        assert!(Instant::now() < end, "not serving again after the {held_count} held connections closed");
    }
    server.stop().assert_clean("registry --http");
    let _ = std::fs::remove_dir_all(&data);
}
