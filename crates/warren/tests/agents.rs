//! `builtin = "agents"` and `warren agents`: a node hosts the agent host; `warren agents run`
//! ships a signed module to it and prints the result (remote evaluation); unsigned, foreign and
//! forged code is refused with a clear message; a looping agent is stopped by its limit while
//! other agents run on; `warren agents fetch` takes a module by its hash and checks it, and
//! `run --local` runs it here (code on demand).

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{Server, T, command, run};
use warren_agents::wire::{FRAMING, Request, Response, encode};

const SUM: &str = r#"(module (func (export "sum") (param i64) (result i64) (local i64)
    (block $done (loop $next
        (br_if $done (i64.eqz (local.get 0)))
        (local.set 1 (i64.add (local.get 1) (local.get 0)))
        (local.set 0 (i64.sub (local.get 0) (i64.const 1)))
        (br $next)))
    (local.get 1)))"#;

const SPIN: &str = r#"(module (func (export "main") (loop $forever (br $forever))))"#;

const DOUBLE: &str = r#"(module (func (export "double") (param i32) (result i32)
    (i32.mul (local.get 0) (i32.const 2))))"#;

const WASI: &str = r#"(module (import "wasi_snapshot_preview1" "fd_write"
    (func (param i32 i32 i32 i32) (result i32))) (func (export "main")))"#;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warren-agents-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Runs `warren ARGS`: whether it succeeded, its stdout and its stderr.
fn warren(args: &[&str]) -> (bool, String, String) {
    let (status, out, err) = run(command(args), b"", T);
    (status.success(), out, err)
}

/// `warren agents keygen` into `dir`: the secret key's path.
fn keygen(dir: &Path, name: &str) -> String {
    let key = dir.join(name).to_str().unwrap().to_owned();
    let (ok, public, err) = warren(&["agents", "keygen", "-o", &key]);
    assert!(ok, "{err}");
    assert_eq!(public.trim().len(), 64, "the public key, in hex: {public:?}");
    key
}

/// A node with one agents service on a free port, with these extra keys.
fn node(dir: &Path, keys: &str) -> Server {
    let conf = write(
        dir,
        "warren.toml",
        &format!(
            "status = \"off\"\nregistry = \"off\"\n\n[[service]]\nname = \"agents\"\nbuiltin = \"agents\"\n\
             model = \"thread\"\nport = 0\n{keys}"
        ),
    );
    let node = Server::spawn(&["up", "-c", &conf]);
    assert!(node.ready.starts_with("warren: serving agents (tcp) under thread on "), "{}", node.ready);
    node
}

/// A node that trusts the operator's key only; the operator's secret key.
fn trusting_node(dir: &Path, keys: &str) -> (Server, String) {
    let operator = keygen(dir, "operator.key");
    let node = node(dir, &format!("trusted_keys = \"{operator}.pub\"\n{keys}"));
    (node, operator)
}

#[test]
fn a_signed_module_runs_on_the_node_and_unsigned_foreign_or_forged_code_is_refused() {
    let dir = scratch("signed");
    let (node, operator) = trusting_node(&dir, "");
    let addr = node.addr.to_string();
    let sum = write(&dir, "sum.wat", SUM);

    let (ok, out, err) = warren(&["agents", "run", &addr, &sum, "100", "--entry", "sum", "--key", &operator]);
    assert!(ok, "{err}");
    assert_eq!(out, "5050\n");

    let (ok, _, err) = warren(&["agents", "run", &addr, &sum, "100", "--entry", "sum"]);
    assert!(!ok);
    assert!(err.contains("is not signed, and this host runs only signed modules"), "{err}");

    let stranger = keygen(&dir, "stranger.key");
    let (ok, _, err) = warren(&["agents", "run", &addr, &sum, "100", "--entry", "sum", "--key", &stranger]);
    assert!(!ok);
    assert!(err.contains("is signed by a key this host does not trust"), "{err}");

    // A signature made for another module, sent with this one: forged.
    let double = write(&dir, "double.wat", DOUBLE);
    let (ok, _, err) = warren(&["agents", "sign", &double, "--key", &operator]);
    assert!(ok, "{err}");
    let forged = format!("{double}.sig");
    let (ok, _, err) = warren(&["agents", "run", &addr, &sum, "100", "--entry", "sum", "--sig", &forged]);
    assert!(!ok);
    assert!(err.contains("signature does not verify"), "{err}");
    let (ok, out, err) = warren(&["agents", "run", &addr, &double, "21", "--entry", "double", "--sig", &forged]);
    assert!(ok && out == "42\n", "its own module runs with it: {out:?} {err}");

    // Signed, but asking for what the host does not offer: refused before any of it runs.
    let wasi = write(&dir, "wasi.wat", WASI);
    let (ok, _, err) = warren(&["agents", "run", &addr, &wasi, "--key", &operator]);
    assert!(!ok);
    assert!(err.contains("imports wasi_snapshot_preview1.fd_write, which this host does not offer"), "{err}");
    let (ok, _, err) = warren(&["agents", "run", &addr, &sum, "ten", "--entry", "sum", "--key", &operator]);
    assert!(!ok);
    assert!(err.contains(r#"argument 1 ("ten") is not an i64"#), "{err}");

    node.stop_clean();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_looping_agent_is_stopped_by_its_limit_while_another_runs_to_its_end() {
    let dir = scratch("loop");
    let (node, operator) = trusting_node(&dir, "wall_ms = 2000\nfuel = 10000000000\n");
    let addr = node.addr.to_string();
    let (spin, sum) = (write(&dir, "spin.wat", SPIN), write(&dir, "sum.wat", SUM));

    let looping = command(&["agents", "run", &addr, &spin, "--key", &operator]).spawn().unwrap();
    let (ok, out, err) = warren(&["agents", "run", &addr, &sum, "1000", "--entry", "sum", "--key", &operator]);
    assert!(ok && out == "500500\n", "{out:?} {err}");

    let mut looping = looping.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&std::mem::take(&mut looping.stderr)).into_owned();
    assert!(!looping.status.success());
    assert!(err.contains("the agent ran past its wall-time limit"), "{err}");

    // The node carries on.
    let (ok, out, err) = warren(&["agents", "run", &addr, &sum, "3", "--entry", "sum", "--key", &operator]);
    assert!(ok && out == "6\n", "{out:?} {err}");
    node.stop_clean();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn code_on_demand_fetches_a_module_by_its_hash_and_runs_it_here() {
    let dir = scratch("fetch");
    let offered = dir.join("offered");
    std::fs::create_dir_all(&offered).unwrap();
    let double = write(&offered, "double.wat", DOUBLE);
    let node = node(&dir, &format!("modules = \"{}\"\n", offered.display()));
    let addr = node.addr.to_string();

    let (ok, hash, err) = warren(&["agents", "id", &double]);
    assert!(ok, "{err}");
    let hash = hash.trim();
    let fetched = dir.join("fetched.wasm").to_str().unwrap().to_owned();
    let (ok, out, err) = warren(&["agents", "fetch", &addr, hash, "-o", &fetched]);
    assert!(ok, "{err}");
    assert!(out.starts_with(&format!("fetched {hash} (")), "{out}");
    let (ok, same, _) = warren(&["agents", "id", &fetched]);
    assert!(ok && same.trim() == hash, "{same}");
    let (ok, out, err) = warren(&["agents", "run", "--local", &fetched, "7", "--entry", "double"]);
    assert!(ok && out == "14\n", "{out:?} {err}");

    let unknown = "ab".repeat(32);
    let (ok, _, err) = warren(&["agents", "fetch", &addr, &unknown, "-o", &fetched]);
    assert!(!ok);
    assert!(err.contains(&format!("no module {unknown} is held on this host")), "{err}");
    let (ok, _, err) = warren(&["agents", "fetch", &addr, "abc", "-o", &fetched]);
    assert!(!ok && err.contains("a module id is 64 hex digits"), "{err}");
    node.stop_clean();

    // A node that answers with other bytes than the hash names: refused, nothing written.
    let liar = TcpListener::bind("127.0.0.1:0").unwrap();
    let liar_addr = liar.local_addr().unwrap().to_string();
    let answering = std::thread::spawn(move || {
        let (mut stream, _) = liar.accept().unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 256];
        while FRAMING.split(&buf).unwrap().is_none() {
            let n = stream.read(&mut chunk).unwrap();
            assert!(n > 0, "the request comes whole");
            buf.extend_from_slice(&chunk[..n]);
        }
        let (body, _) = FRAMING.split(&buf).unwrap().unwrap();
        assert!(matches!(postcard::from_bytes(body), Ok(Request::Fetch(_))));
        stream.write_all(&encode(&Response::Module(b"(module)".to_vec()))).unwrap();
    });
    let elsewhere = dir.join("elsewhere.wasm");
    let (ok, _, err) = warren(&["agents", "fetch", &liar_addr, hash, "-o", elsewhere.to_str().unwrap()]);
    answering.join().unwrap();
    assert!(!ok);
    assert!(err.contains("sent a module whose hash is") && err.contains(hash), "{err}");
    assert!(!elsewhere.exists(), "nothing written");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_node_is_found_by_its_agent_hosts_registry_name() {
    let dir = scratch("named");
    let operator = keygen(&dir, "operator.key");
    let conf = write(
        &dir,
        "warren.toml",
        &format!(
            "status = \"off\"\n[[service]]\nname = \"agents\"\nbuiltin = \"agents\"\nmodel = \"thread\"\nport = 0\n\
             trusted_keys = \"{operator}.pub\"\n\
             [[service]]\nname = \"registry\"\nbuiltin = \"registry\"\nport = 0\ndata = \"{}/registry\"\n",
            dir.display()
        ),
    );
    let mut cmd = command(&["up", "-c", &conf]);
    cmd.env_remove("WARREN_TOKEN").env("XDG_STATE_HOME", dir.join("state"));
    let mut node = Server::start(cmd, "warren up (agents, registry)".into());
    let line = node.wait_stdout(|l| l.starts_with("warren: serving registry "), T).expect("the registry listens");
    let registry = line.rsplit(" on ").next().unwrap().to_owned();
    let sum = write(&dir, "sum.wat", SUM);
    let args = ["agents", "run", "agents", &sum, "4", "--entry", "sum", "--key", &operator, "--registry", &registry];
    // The node registers its services once they listen: ask until the name is there.
    let mut last = (false, String::new(), String::new());
    let found = support::eventually_every(T, Duration::from_millis(100), || {
        last = warren(&args);
        last.0
    });
    assert!(found && last.1 == "10\n", "{last:?}");
    let (ok, _, err) = warren(&["agents", "run", "nobody", &sum, "--registry", &registry]);
    assert!(!ok && err.contains("nobody"), "{err}");
    node.stop_clean();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_agents_keys_are_refused_naming_the_key() {
    let dir = scratch("bad");
    let conf = dir.join("warren.toml");
    let agents = "status = \"off\"\nregistry = \"off\"\n[[service]]\nname = \"a\"\nbuiltin = \"agents\"\nport = 0\n";
    let cases = [
        (format!("{agents}allow_unsigned = \"maybe\"\n"), "allow_unsigned: want true or false"),
        (format!("{agents}fuel = 0\n"), "fuel: want a whole number from 1 to 10000000000"),
        (format!("{agents}wall_ms = 60000\n"), "wall_ms: want a whole number from 1 to 10000"),
        (format!("{agents}trusted_keys = \"{}/absent\"\n", dir.display()), "trusted_keys"),
        (format!("{agents}modules = \"{}/absent\"\n", dir.display()), "modules"),
        (
            "status = \"off\"\n[[service]]\nname = \"e\"\nbuiltin = \"echo\"\nport = 0\nfuel = 5\n".to_owned(),
            "fuel: only the agents builtin has it",
        ),
    ];
    for (text, said) in cases {
        std::fs::write(&conf, &text).unwrap();
        let (ok, _, err) = warren(&["up", "-c", conf.to_str().unwrap()]);
        assert!(!ok, "{text:?} was taken");
        assert!(err.contains(said), "{text:?}: {err}");
    }
    let bad_key = write(&dir, "keys", "# operator\nnot-a-key\n");
    std::fs::write(&conf, format!("{agents}trusted_keys = \"{bad_key}\"\n")).unwrap();
    let (ok, _, err) = warren(&["up", "-c", conf.to_str().unwrap()]);
    assert!(!ok && err.contains("line 2: a public key is 64 hex digits"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
