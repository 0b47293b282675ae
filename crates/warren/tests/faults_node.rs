//! Fault: kill -9 of `warren up` around a SIGHUP reload (before the node reads the new file,
//! while it binds the new listeners, just after it finished), with an exec service holding
//! connections. Started again on the same configuration, the node comes up cleanly and every
//! service listens on its configured port: nothing the killed node left (its exec children
//! still hold their connections) keeps a port from being bound.
//!
//! Like every fault test, it runs in a network namespace it makes for itself (root only; otherwise
//! on the host's loopback, saying so): see `warren_testkit::netns`.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;

use nix::sys::signal::Signal;
use support::{Server, T, connect, eventually, read_all};

/// Where the kill lands.
#[derive(Clone, Copy, Debug)]
enum KillPoint {
    /// Right after the SIGHUP, before the node has done anything with it.
    AtTheSignal,
    /// Once the reload has bound a new listener, before it reports the reload done.
    MidReload,
    /// Once the reload is done.
    AfterReload,
}

/// Fixed ports (a restart must bind the same ones again): found free, then released.
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    held.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

struct Ports {
    echo: u16,
    daytime: u16,
    cat: u16,
    chargen: u16,
    discard: u16,
}

/// The configuration, first version: two builtins and an exec service. The second adds two
/// builtins and changes the exec service's arguments.
fn config(p: &Ports, second: bool) -> String {
    let service =
        |name: &str, port: u16, body: &str| format!("[[service]]\nname = \"{name}\"\nport = {port}\n{body}\n");
    let mut text = String::new();
    text += &service("echo", p.echo, "builtin = \"echo\"");
    text += &service("daytime", p.daytime, "builtin = \"daytime\"");
    let cat_args = if second { "[\"-u\"]" } else { "[]" };
    text += &service("cat", p.cat, &format!("server = \"/bin/cat\"\nserver_args = {cat_args}"));
    if second {
        text += &service("chargen", p.chargen, "builtin = \"chargen\"");
        text += &service("discard", p.discard, "builtin = \"discard\"");
    }
    text
}

fn start(conf: &Path) -> Server {
    let mut node = Server::spawn(&["up", "-c", conf.to_str().unwrap(), "--status", "off", "--registry", "off"]);
    node.wait_stdout(|l| l.starts_with("warren: up: "), T)
        .unwrap_or_else(|| panic!("the node did not come up: {:?}", node.ready));
    node
}

fn at(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

/// Send `input`, half-close, read to the end.
fn exchange(port: u16, input: &[u8]) -> Vec<u8> {
    let mut stream = connect(at(port));
    stream.write_all(input).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let (out, _) = read_all(&mut stream, T);
    out
}

/// A connection the exec service's child holds open: the child answered, so it runs.
fn held_cat(port: u16) -> TcpStream {
    let mut stream = connect(at(port));
    stream.write_all(b"x").unwrap();
    let mut one = [0u8; 1];
    stream.read_exact(&mut one).unwrap();
    assert_eq!(&one, b"x");
    stream
}

/// Every service of the configuration answers on its port.
fn all_serve(p: &Ports, second: bool, when: &str) {
    assert_eq!(exchange(p.echo, b"ping"), b"ping", "{when}: echo");
    assert_eq!(exchange(p.cat, b"meow"), b"meow", "{when}: cat");
    assert!(exchange(p.daytime, b"").ends_with(b"\r\n"), "{when}: daytime");
    if second {
        let mut chargen = connect(at(p.chargen));
        let mut some = [0u8; 1024];
        chargen.read_exact(&mut some).unwrap_or_else(|e| panic!("{when}: chargen: {e}"));
        assert!(exchange(p.discard, b"into the void").is_empty(), "{when}: discard");
    }
}

#[test]
fn a_node_killed_around_a_reload_starts_again_with_every_service() {
    // A loopback of the test's own: the servers it starts and its clients run in it.
    warren_testkit::netns::isolate_test();
    let dir = std::env::temp_dir().join(format!("warren-faults-node-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("warren.toml");
    let ports = free_ports(5);
    let p = Ports { echo: ports[0], daytime: ports[1], cat: ports[2], chargen: ports[3], discard: ports[4] };
    let mut second = false;
    std::fs::write(&conf, config(&p, second)).unwrap();
    let mut node = start(&conf);
    all_serve(&p, second, "first start");

    // Each kill lands on a reload that adds services (the first and last) or removes them.
    for point in [KillPoint::AtTheSignal, KillPoint::AfterReload, KillPoint::MidReload] {
        let held: Vec<TcpStream> = (0..3).map(|_| held_cat(p.cat)).collect();
        second = !second;
        std::fs::write(&conf, config(&p, second)).unwrap();
        node.signal(Signal::SIGHUP);
        match point {
            KillPoint::AtTheSignal => {}
            // A reload that adds services prints their readiness lines before it is done.
            KillPoint::MidReload => {
                let bound = node.wait_stdout(|l| l.starts_with("warren: serving "), T);
                assert!(bound.is_some(), "{point:?}: the reload binds the new services");
            }
            KillPoint::AfterReload => {
                assert!(node.wait_stdout(|l| l == "warren: reloaded", T).is_some(), "{point:?}: reloaded");
            }
        }
        // Only the node: its exec children live on, holding their connections (and whatever
        // they inherited), while the new node starts.
        node.signal(Signal::SIGKILL);
        assert!(eventually(T, || !node.is_running()), "{point:?}: the node died");

        let restarted = start(&conf);
        all_serve(&p, second, &format!("restart after a kill {point:?}"));
        // The killed node's guard takes its leftover children with it.
        drop((held, node));
        node = restarted;
    }
    node.stop_clean();
    std::fs::remove_dir_all(&dir).unwrap();
}
