//! `warren objects serve --registry`: every object's name is in the registry, spelled as the
//! course spells it, and `warren call NAME METHOD` finds the object through it; a removed
//! object leaves the registry.

#[macro_use]
mod support;

use std::time::{Duration, Instant};

use support::{Data, Server, T, command, run};

/// `warren call` (or another client command) against `registry`: (exit ok, stdout, stderr).
fn cli(registry: &Server, args: &[&str]) -> (bool, String, String) {
    let mut cmd = command(args);
    cmd.env("WARREN_REGISTRY", registry.addr.to_string());
    let (status, out, err) = run(cmd, b"", T);
    (status.success(), out, err)
}

/// Run `args` until `done` holds for its outcome, for at most `T`.
fn until(registry: &Server, args: &[&str], done: impl Fn(&(bool, String, String)) -> bool) -> (bool, String, String) {
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
    let (ok, out, err) = until(&registry, &["call", "HelloServer", "sayHello"], |(ok, ..)| *ok);
    assert!(ok, "warren call through the registry: {err}");
    assert_eq!(out.trim(), "\"Hello World!\"");
    let (ok, out, _) = cli(&registry, &["lookup", "helloserver"]);
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
    let (ok, ..) = until(&registry, &["lookup", "NiftyObjectServer"], |(ok, ..)| !*ok);
    assert!(!ok, "a removed object leaves the registry at once, not a TTL later");

    objects.stop_clean();
    // Stopping releases every lease.
    let (ok, ..) = until(&registry, &["lookup", "HelloServer"], |(ok, ..)| !*ok);
    assert!(!ok, "the names go with the server");
    registry.stop_clean();
}
