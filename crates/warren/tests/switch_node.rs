//! `builtin = "switch"` in warren.toml: `warren up` hosts the cluster switch with `warren
//! switch`'s options, reconfigures it on SIGHUP on the same listening socket, and refuses a bad
//! switch service naming the key.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

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
