//! Nodes report their services' load into the registry (`load=` metadata: connections in flight
//! over `instances`), and `warren switch --policy load` following the name sends new
//! connections to the less loaded server once its node has reported, and back when the load
//! is gone; the endpoint never leaves the registry on the way.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use support::who::root;
use support::{Data, Server, T, command, connect, eventually};

/// A node serving `who.txt` as `name` (a service of 4 `instances`, registered as `web` at
/// `registry`), its registrations owned by one token shared with the other node.
fn node(dir: &std::path::Path, name: &str, registry: SocketAddr) -> Server {
    let conf = dir.join(format!("{name}.toml"));
    let root = root(name);
    let text = format!(
        "status = \"off\"\nregistry = \"{registry}\"\n\n[[service]]\nname = \"web-{name}\"\nbuiltin = \"http\"\n\
         root = \"{}\"\nport = 0\ninstances = 4\nidle_timeout = 60\nregister = \"web\"\n",
        root.display()
    );
    std::fs::write(&conf, text).unwrap();
    let mut cmd = command(&["up", "-c", conf.to_str().unwrap()]);
    cmd.env("WARREN_TOKEN", "swload-owner");
    let mut node = Server::start(cmd, format!("node {name}"));
    node.wait_stdout(|l| l.starts_with("registered web "), T).expect("the node registers web");
    node
}

/// Which backend answers a new connection through the switch.
fn who(switch: SocketAddr) -> String {
    let mut stream = connect(switch);
    stream.write_all(b"GET /who.txt HTTP/1.1\r\nHost: warren\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
    answer.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()
}

/// How many of ten new connections `name` answers.
fn share(switch: SocketAddr, name: &str) -> usize {
    (0..10).filter(|_| who(switch) == name).count()
}

#[test]
fn a_switch_on_load_sends_new_connections_to_the_server_whose_node_reports_less() {
    let data = Data::new("swload");
    let registry = Server::spawn(&["registry", "--listen", "127.0.0.1:0", "--data", data.arg()]);
    let dir = std::env::temp_dir().join(format!("warren-switch-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut a = node(&dir, "a", registry.addr);
    let _b = node(&dir, "b", registry.addr);
    let reg = registry.addr.to_string();
    let sw = support::who::switch(&["--no-check", "--registry", &reg, "--backend-name", "web", "--policy", "load"]);
    assert!(eventually(T, || share(sw.addr, "a") == 5), "two idle servers share evenly");

    // Three connections in flight on a's server (each has sent part of a request, so it is
    // accepted and open): a's node reports 3 of 4 instances, load 0.75.
    let held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = connect(a.addr);
            s.write_all(b"GET /who.txt HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    a.wait_stdout(|l| l.starts_with("registered web ") && l.contains(" load=0.75 "), T).expect("a reports its load");
    // weight × (1 − load): a 0.25 to b's 1, so a gets 2 of 10 in the smooth rotation.
    assert!(eventually(T, || share(sw.addr, "a") == 2), "the switch favours b once a reported");

    drop(held);
    a.wait_stdout(|l| l.starts_with("registered web ") && l.contains(" load=0.00 "), T).expect("a reports no load");
    assert!(eventually(T, || share(sw.addr, "a") == 5), "even again once a's load is gone");
    sw.stop_clean();
    let _ = std::fs::remove_dir_all(&dir);
}
