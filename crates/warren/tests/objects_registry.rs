//! `warren objects serve --registry`: every object's name is in the registry, spelled as the
//! course spells it, and `warren call NAME METHOD` finds the object through it; a removed
//! object leaves the registry.

#[macro_use]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::{Data, Server, T, command, run};

/// `warren call` (or another client command) against `registry`: (exit ok, stdout, stderr).
fn cli(registry: SocketAddr, args: &[&str]) -> (bool, String, String) {
    let mut cmd = command(args);
    cmd.env("WARREN_REGISTRY", registry.to_string());
    let (status, out, err) = run(cmd, b"", T);
    (status.success(), out, err)
}

/// Run `args` until `done` holds for its outcome, for at most `T`.
fn until(
    registry: SocketAddr,
    args: &[&str],
    done: impl Fn(&(bool, String, String)) -> bool,
) -> (bool, String, String) {
    let end = Instant::now() + T;
    loop {
        let outcome = cli(registry, args);
        if done(&outcome) || Instant::now() >= end {
            return outcome;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn warren_call_finds_an_object_by_its_registry_name() {
    let (registry_data, objects_data) = (Data::new("objects-reg-registry"), Data::new("objects-reg-objects"));
    let registry = Server::spawn(&["registry", "--listen", "127.0.0.1:0", "--data", registry_data.arg()]);
    let objects = Server::spawn(&[
        "objects",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--store",
        "none",
        "--data",
        objects_data.arg(),
        "--registry",
        &registry.addr.to_string(),
        "--registry-token",
        "objects-owner",
        "--ttl",
        "5s",
    ]);
    // Registration runs beside the server: wait (bounded) for the name to appear.
    let (ok, out, err) = until(registry.addr, &["call", "HelloServer", "sayHello"], |(ok, ..)| *ok);
    assert!(ok, "warren call through the registry: {err}");
    assert_eq!(out.trim(), "\"Hello World!\"");
    let (ok, out, _) = cli(registry.addr, &["lookup", "helloserver"]);
    assert!(ok && out.starts_with("HelloServer "), "the course's spelling is kept: {out}");
    assert!(out.contains(&objects.addr.to_string()), "{out}");

    let token = objects_data.0.join("admin.token");
    let server = objects.addr.to_string();
    let (status, _, err) = run(
        command(&["objects", "rm", "NiftyObjectServer", "--server", &server, "--token-file", token.to_str().unwrap()]),
        b"",
        T,
    );
    assert!(status.success(), "rm: {err}");
    let (ok, ..) = until(registry.addr, &["lookup", "NiftyObjectServer"], |(ok, ..)| !*ok);
    assert!(!ok, "a removed object leaves the registry at once, not a TTL later");

    objects.stop_clean();
    // Stopping releases every lease.
    let (ok, ..) = until(registry.addr, &["lookup", "HelloServer"], |(ok, ..)| !*ok);
    assert!(!ok, "the names go with the server");
    registry.stop_clean();
}

/// `builtin = "objects"` under a node that hosts the registry: each object is registered under
/// its own name, even though the registry listens after the object server (it comes later in
/// the configuration), and a stopped node releases them.
#[test]
fn a_node_registers_each_object_it_hosts() {
    let dir = Data::new("objects-node-registry");
    let conf = dir.0.join("warren.toml");
    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::write(
        &conf,
        format!(
            "[[service]]\nname = \"objects\"\nbuiltin = \"objects\"\nport = 0\nregister = \"no\"\n\
             data = \"{0}/objects\"\n\
             [[service]]\nname = \"registry\"\nbuiltin = \"registry\"\nport = 0\ndata = \"{0}/registry\"\n",
            dir.0.display()
        ),
    )
    .unwrap();
    let mut cmd = command(&["up", "-c", conf.to_str().unwrap(), "--status", "off"]);
    cmd.env_remove("WARREN_TOKEN").env("XDG_STATE_HOME", dir.0.join("state"));
    let mut node = Server::start(cmd, "warren up (objects, registry)".into());
    let objects = node.addr;
    assert!(node.ready.starts_with("warren: serving objects "), "{}", node.ready);
    let line = node.wait_stdout(|l| l.starts_with("warren: serving registry "), T).expect("the registry listens");
    let registry: SocketAddr = line.rsplit(" on ").next().unwrap().parse().unwrap();

    let (ok, out, err) = until(registry, &["lookup", "HelloServer"], |(ok, ..)| *ok);
    assert!(ok, "HelloServer was never registered: {err}");
    assert!(out.starts_with("HelloServer ") && out.contains(&format!("127.0.0.1:{}", objects.port())), "{out}");
    assert!(out.contains("interface=Hello/1"), "{out}");
    let (ok, out, err) = cli(registry, &["call", "RMIThreadServer", "read"]);
    assert!(ok && out.trim() == "0", "{out} {err}");
    assert!(!cli(registry, &["lookup", "objects"]).0, "register = no keeps the service's own name out");

    node.stop_clean();
}
