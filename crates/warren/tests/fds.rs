//! Running out of file descriptors: a server started with a low RLIMIT_NOFILE is given more
//! connections than it can hold. It must keep running, not spin on the listener (its CPU time
//! grows by less than 30% of the wall time while the extra connections wait), and serve new
//! clients again once the others close.

mod support;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{BIN, Lines, Server, cpu_time};

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
