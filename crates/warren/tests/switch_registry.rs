//! `warren switch --registry ADDR --backend-name NAME`: the backends are the name's endpoints
//! in a real `warren registry`, followed without a reload as servers register and leave, and
//! kept while the registry is away.

#[macro_use]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Stdio};

use support::who::backend;
use support::{Data, Server, T, command, connect, eventually, run};

/// `warren register web ADDR` running (renewing its lease) until dropped, which releases it.
struct Registered(Child);

impl Registered {
    fn new(registry: SocketAddr, name: &str, endpoint: SocketAddr, meta: &[&str]) -> Registered {
        let (registry, endpoint) = (registry.to_string(), endpoint.to_string());
        let mut args = vec!["register", name, &endpoint, "--registry", &registry, "--token", "swreg-owner"];
        args.extend(["--ttl", "5s"]);
        for m in meta {
            args.extend(["--meta", m]);
        }
        let mut cmd = command(&args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        // `warren register` gives up after its own 5 s timeout, so this read ends.
        let mut first = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut first).unwrap();
        assert!(first.starts_with("registered "), "{first:?}");
        Registered(child)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        // SIGTERM: the lease is released before it exits.
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

/// A registry (and its data directory, kept while the test runs) and two backends, `a` and `b`.
fn cluster(tag: &str) -> (Data, Server, Server, Server) {
    let data = Data::new(tag);
    let registry = Server::spawn(&["registry", "--listen", "127.0.0.1:0", "--data", data.arg()]);
    (data, registry, backend("a"), backend("b"))
}

/// `warren switch` following the registry name `web` at `registry`, with no active checks.
fn following(registry: SocketAddr, extra: &[&str]) -> Server {
    let registry = registry.to_string();
    let mut args = vec!["--no-check", "--registry", &registry, "--backend-name", "web"];
    args.extend_from_slice(extra);
    support::who::switch(&args)
}

/// Which backend answers a new connection through the switch; `None` if it failed.
fn who(switch: SocketAddr) -> Option<String> {
    let mut stream = connect(switch);
    stream.write_all(b"GET /who.txt HTTP/1.1\r\nHost: warren\r\nConnection: close\r\n\r\n").ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    answer.starts_with("HTTP/1.1 200 ").then(|| answer.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned())
}

/// The backends that answer four connections in a row, sorted.
fn answering(switch: SocketAddr) -> Vec<String> {
    let mut seen: Vec<String> = (0..4).filter_map(|_| who(switch)).collect();
    seen.sort();
    seen.dedup();
    seen
}

#[test]
fn backends_follow_the_registry_as_servers_join_and_leave() {
    let (_data, registry, a, b) = cluster("swreg-follow");
    let joined_a = Registered::new(registry.addr, "web", a.addr, &[]);
    // Another name that `web` is a prefix of stays out.
    let _other = Registered::new(registry.addr, "web2", b.addr, &[]);
    let sw = following(registry.addr, &[]);
    assert_eq!(answering(sw.addr), ["a"], "only web's endpoint, from the first listing");

    let joined_b = Registered::new(registry.addr, "web", b.addr, &[]);
    assert!(eventually(T, || answering(sw.addr) == ["a", "b"]), "a server that registers is picked up, no reload");

    drop(joined_a);
    assert!(eventually(T, || answering(sw.addr) == ["b"]), "a server that leaves is dropped");

    // The registry goes away: the switch keeps what it knows.
    registry.stop_clean();
    assert_eq!(answering(sw.addr), ["b"]);
    drop(joined_b);
    sw.stop_clean();
    a.stop_clean();
    b.stop_clean();
}

#[test]
fn a_drain_in_the_metadata_takes_a_backend_out_of_rotation() {
    let (_data, registry, a, b) = cluster("swreg-drain");
    let _a = Registered::new(registry.addr, "web", a.addr, &[]);
    let _b = Registered::new(registry.addr, "web", b.addr, &["drain=true"]);
    let sw = following(registry.addr, &[]);
    assert_eq!(answering(sw.addr), ["a"], "the drained endpoint gets no new connection");
    sw.stop_clean();
    registry.stop_clean();
    a.stop_clean();
    b.stop_clean();
}

#[test]
fn the_load_policy_reads_the_load_each_endpoint_reports() {
    let (_data, registry, a, b) = cluster("swreg-load");
    // a reports itself full: weight × (1 − load) leaves it nothing while b has room.
    let _a = Registered::new(registry.addr, "web", a.addr, &["load=1"]);
    let _b = Registered::new(registry.addr, "web", b.addr, &["load=0.2"]);
    let sw = following(registry.addr, &["--policy", "load"]);
    assert_eq!(answering(sw.addr), ["b"]);
    sw.stop_clean();
    registry.stop_clean();
    a.stop_clean();
    b.stop_clean();
}

#[test]
fn registry_flags_are_checked_with_the_reason() {
    let refused = |args: &[&str], says: &str| {
        let (status, _, err) = run(command(args), b"", T);
        assert!(!status.success() && err.contains(says), "{args:?}: {err}");
    };
    refused(&["switch", "--listen", "127.0.0.1:0", "--backend-name", "web"], "needs --registry");
    refused(
        &["switch", "--listen", "127.0.0.1:0", "--backend-name", "we b", "--registry", "127.0.0.1:1"],
        "not allowed",
    );
    // Nothing listens on port 1: the switch does not start without its first listing.
    refused(
        &["switch", "--listen", "127.0.0.1:0", "--backend-name", "web", "--registry", "127.0.0.1:1"],
        "cannot follow the registry at 127.0.0.1:1",
    );
}
