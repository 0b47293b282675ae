//! `builtin = "switch"` in warren.toml: `warren up` hosts the cluster switch with `warren
//! switch`'s options, reconfigures it on SIGHUP on the same listening socket (twenty times under
//! load in relay and http mode without a connection refused, reset or left unanswered), and refuses a bad
//! switch service naming the key.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use nix::sys::signal::Signal;
use support::who::backend;
use support::{Server, T, command, connect, run};

/// Which backend answers a new connection through the switch.
fn who(switch: SocketAddr) -> String {
    let mut stream = connect(switch);
    stream.write_all(b"GET /who.txt HTTP/1.1\r\nHost: warren\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap_or_else(|e| panic!("read through the switch: {e}"));
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
    answer.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warren-switch-node-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A node config with one switch service, `front`, on a free port, with these extra keys.
fn front(keys: &str) -> String {
    format!(
        "status = \"off\"\nregistry = \"off\"\n\n[[service]]\nname = \"front\"\nbuiltin = \"switch\"\nport = 0\n{keys}"
    )
}

#[test]
fn a_node_switch_spreads_over_its_backends_and_a_reload_reconfigures_it_on_the_same_socket() {
    let (a, b) = (backend("a"), backend("b"));
    let dir = scratch("reload");
    let conf = dir.join("warren.toml");
    std::fs::write(&conf, front(&format!("backend = [\"{}\", \"{}\"]\ninter = \"100ms\"\n", a.addr, b.addr))).unwrap();
    let mut node = Server::spawn(&["up", "-c", conf.to_str().unwrap()]);
    assert!(
        node.ready.starts_with("warren: serving front (tcp) under switch (relay, round-robin) on "),
        "{}",
        node.ready
    );
    node.wait_stdout(|l| l.starts_with("warren: up: "), T).expect("the node comes up");
    let answers: Vec<String> = (0..4).map(|_| who(node.addr)).collect();
    assert_eq!(answers, ["a", "b", "a", "b"]);

    // The reload changes the policy's input (b is weighted 3 to a's 1) and the mode's settings;
    // the switch restarts on the listening socket the node keeps, at the same address.
    let keys = format!("backend = [\"{},weight=1\", \"{},weight=3\"]\npolicy = \"weighted\"\n", a.addr, b.addr);
    std::fs::write(&conf, front(&keys)).unwrap();
    node.signal(Signal::SIGHUP);
    let ready = node.wait_stdout(|l| l.starts_with("warren: serving front "), T).expect("served again");
    assert!(ready.ends_with(&format!(" on {}", node.addr)), "{ready}");
    assert!(node.wait_stdout(|l| l == "warren: reloaded", T).is_some());
    let mut answers: Vec<String> = (0..8).map(|_| who(node.addr)).collect();
    answers.sort();
    assert_eq!(answers.iter().filter(|w| *w == "a").count(), 2, "{answers:?}");
    assert_eq!(answers.iter().filter(|w| *w == "b").count(), 6, "{answers:?}");
    node.stop_clean();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Twenty reloads of a node whose switch keys change each time (backends and policy), while
/// three clients open connection after connection through it: every connection is answered by
/// a backend, none is refused, reset or closed without an answer.
fn reloads_under_load_leave_no_connection_unanswered(mode: &str) {
    let (a, b) = (backend("a"), backend("b"));
    let dir = scratch(&format!("reload-load-{mode}"));
    let conf = dir.join("warren.toml");
    let keys = |round: usize| {
        let backends = match round % 3 {
            0 => format!("\"{}\", \"{}\"", a.addr, b.addr),
            1 => format!("\"{}\"", a.addr),
            _ => format!("\"{}\", \"{},weight=3\"", a.addr, b.addr),
        };
        let policy = ["round-robin", "least-connections", "weighted"][round % 3];
        front(&format!("mode = \"{mode}\"\nbackend = [{backends}]\npolicy = \"{policy}\"\ninter = \"100ms\"\n"))
    };
    std::fs::write(&conf, keys(0)).unwrap();
    let mut node = Server::spawn(&["up", "-c", conf.to_str().unwrap()]);
    node.wait_stdout(|l| l.starts_with("warren: up: "), T).expect("the node comes up");
    let (stop, answered) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU32::new(0)));
    let addr = node.addr;
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (stop, answered) = (stop.clone(), answered.clone());
            std::thread::spawn(move || {
                let (mut done, mut failed) = (0u32, Vec::new());
                // Bounded: the reloads below take far fewer than this many connections.
                for _ in 0..100_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match std::panic::catch_unwind(|| who(addr)) {
                        Ok(name) if name == "a" || name == "b" => {
                            done += 1;
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        other => failed.push(format!("{other:?}")),
                    }
                }
                (done, failed)
            })
        })
        .collect();
    for round in 1..=20 {
        // Connections answered between every two reloads: the load runs through all of them.
        let seen = answered.load(Ordering::Relaxed);
        let moving = support::eventually(T, || answered.load(Ordering::Relaxed) >= seen + 10);
        assert!(moving, "connections are answered before reload {round}");
        std::fs::write(&conf, keys(round)).unwrap();
        node.signal(Signal::SIGHUP);
        assert!(node.wait_stdout(|l| l == "warren: reloaded", T).is_some(), "reload {round} was announced");
    }
    let seen = answered.load(Ordering::Relaxed);
    assert!(support::eventually(T, || answered.load(Ordering::Relaxed) >= seen + 10), "answered after the last reload");
    stop.store(true, Ordering::Relaxed);
    let (mut done, mut failed) = (0, Vec::new());
    for client in clients {
        let (d, f) = client.join().unwrap();
        done += d;
        failed.extend(f);
    }
    assert!(
        failed.is_empty(),
        "{} of {} connections failed: {:?}",
        failed.len(),
        done as usize + failed.len(),
        &failed[..failed.len().min(3)]
    );
    node.stop_clean();
    a.stop_clean();
    b.stop_clean();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn twenty_node_reloads_under_load_leave_no_relayed_connection_unanswered() {
    reloads_under_load_leave_no_connection_unanswered("relay");
}

#[test]
fn twenty_node_reloads_under_load_leave_no_http_request_unanswered() {
    reloads_under_load_leave_no_connection_unanswered("http");
}

#[test]
fn a_bad_switch_service_is_refused_naming_the_key() {
    let dir = scratch("bad");
    let conf = dir.join("warren.toml");
    let cases = [
        ("backend = [\"127.0.0.1:1\"]\npolicy = \"fastest\"\n", "policy: invalid value 'fastest'"),
        ("backend = [\"127.0.0.1:1\"]\nrise = \"many\"\n", "rise: invalid value 'many'"),
        ("backend = [\"127.0.0.1:1\"]\nno_check = \"maybe\"\n", "no_check: want true or false"),
        ("backend = [\"localhost\"]\n", "backend \"localhost\": want an address"),
        ("backend = [\"127.0.0.1:1,colour=red\"]\n", "unknown option \"colour=red\""),
        ("backend = [\"127.0.0.1:1\"]\nroute = [\"path=/api/:api\"]\n", "--route is for --mode http"),
        ("policy = \"load\"\n", "builtin switch: needs backend, backends_file or backend_name"),
        ("backend = [\"127.0.0.1:1\"]\nmodel = \"thread\"\n", "the switch runs under event"),
    ];
    for (keys, said) in cases {
        std::fs::write(&conf, front(keys)).unwrap();
        let (status, _, err) = run(command(&["up", "-c", conf.to_str().unwrap()]), b"", T);
        assert!(!status.success(), "{keys:?} was taken");
        assert!(err.contains("front") && err.contains(said), "{keys:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
