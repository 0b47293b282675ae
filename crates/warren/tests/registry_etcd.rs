//! Two `warren registry --store etcd://…` instances on one etcd serve the same names: a name
//! bound through one is found through the other, by the CLI and by its DNS, and the HTTP API
//! (`--http`) answers for the same state, for names in any case.

mod support;

use std::time::{Duration, Instant};

use support::{Server, T, command, run};
use warren_testkit::LocalEtcd;

const ADMIN: &str = "admin-secret";

fn instance(store: &str, data: &std::path::Path) -> Server {
    Server::spawn(&[
        "registry",
        "--listen",
        "127.0.0.1:0",
        "--data",
        data.to_str().unwrap(),
        "--admin-token",
        ADMIN,
        "--store",
        store,
        "--dns",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
    ])
}

fn cli(server: &Server, args: &[&str]) -> String {
    let mut cmd = command(args);
    cmd.env("WARREN_REGISTRY", server.addr.to_string()).env("WARREN_TOKEN", "tok");
    let (status, out, err) = run(cmd, b"", T);
    assert!(status.success(), "{args:?}: {err}");
    out
}

/// The address a `warren: serving <what> … on ADDR` line of the server's output gives.
fn serving(server: &mut Server, what: &str) -> String {
    let prefix = format!("warren: serving {what} ");
    let out = server.wait_stdout(|o| o.lines().any(|l| l.starts_with(&prefix)), T).expect("the serving line");
    let line = out.lines().find(|l| l.starts_with(&prefix)).unwrap();
    line.rsplit(' ').next().unwrap().to_owned()
}

#[test]
fn two_instances_on_one_etcd_serve_the_same_names() {
    let etcd = LocalEtcd::start("cli").expect("etcd (Debian's etcd-server) must be installed");
    let store = etcd.store_url("/cli/");
    let data = std::env::temp_dir().join(format!("warren-registry-etcd-{}", std::process::id()));
    // etcd elects itself within a second or two; the registry waits for it.
    let mut a = instance(&store, &data.join("a"));
    let mut b = instance(&store, &data.join("b"));

    cli(&a, &["bind", "db", "127.0.0.1:5432", "127.0.0.2:5432"]);
    let found = cli(&b, &["lookup", "db"]);
    assert!(found.contains("127.0.0.1:5432") && found.contains("127.0.0.2:5432"), "{found}");

    // b's DNS answers from b's own copy, which follows etcd: both addresses, soon.
    let dns = serving(&mut b, "dns");
    let (host, port) = dns.rsplit_once(':').unwrap();
    let deadline = Instant::now() + T;
    loop {
        let out = std::process::Command::new("dig")
            .args(["+short", "+time=2", "+tries=1", &format!("@{host}"), "-p", port, "db.warren.", "A"])
            .output()
            .expect("dig (bind9-dnsutils) must be installed");
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("127.0.0.1") && text.contains("127.0.0.2") {
            break;
        }
        assert!(Instant::now() < deadline, "b's DNS never answered both addresses: {text}");
        std::thread::sleep(Duration::from_millis(20));
    }

    // The HTTP API of a sees what b changes.
    cli(&b, &["rebind", "db", "127.0.0.3:5432"]);
    let http = serving(&mut a, "registry-http");
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", &format!("http://{http}/v1/names/db")])
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("127.0.0.3") && !body.contains("127.0.0.1"), "{body}");

    // Names in any case: bound spelt one way through a, found spelt any way through b, and a
    // write through b spelt otherwise reaches the same keys and keeps the first spelling.
    cli(&a, &["bind", "HelloServer", "127.0.0.4:1099"]);
    cli(&b, &["rebind", "helloserver", "127.0.0.4:1099", "127.0.0.5:1099"]);
    for asked in ["helloserver", "HELLOSERVER"] {
        let found = cli(&b, &["lookup", asked]);
        assert_eq!(found, "HelloServer tcp 127.0.0.4:1099 weight=1\nHelloServer tcp 127.0.0.5:1099 weight=1\n");
    }
    assert_eq!(cli(&a, &["list", "hello"]).lines().count(), 2);

    a.stop_clean();
    b.stop_clean();
    let _ = std::fs::remove_dir_all(&data);
}
