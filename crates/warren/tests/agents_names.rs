//! Hops to a registry name, through the real binary: one `warren up` hosting a registry and two
//! agent hosts, `agents-a` and `agents-b`, each registered under its name. An agent that calls
//! `migrate("agents-b")` goes there and ends bit-identical to an unmoved run; `warren agents move
//! ID agents-a` finds its destination the same way; a name the registry does not hold is
//! refused with the name. Needs `wasm-opt` (Debian's binaryen).

#[macro_use]
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{Server, command, eventually_every, run};

/// How long a command that follows an agent may take.
const FOLLOW: Duration = Duration::from_secs(60);

/// `run(n)` folds a 32 KiB table n steps; at step n/2 it calls `migrate` with its input as the
/// destination (when it has one). `park(n)` waits at its safe point until it is moved, then
/// does the same n steps. Both return the fold's checksum.
const HOPPER: &str = r#"(module
  (import "warren" "migrate" (func $migrate (param i32 i32) (result i32)))
  (import "warren" "input_len" (func $input_len (result i32)))
  (import "warren" "input_read" (func $input_read (param i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $flag (export "migrate_requested") (mut i32) (i32.const 0))
  (func $fold (param $n i64) (param $dest i32) (result i64) (local $i i64) (local $x i64) (local $at i32)
    (local.set $x (i64.const 0xcbf29ce484222325))
    (block $done (loop $next
      (if (global.get $flag) (then (drop (call $migrate (i32.const 0) (i32.const 0)))))
      (br_if $done (i64.ge_u (local.get $i) (local.get $n)))
      (if (i32.and (i32.ne (local.get $dest) (i32.const 0)) (i64.eq (local.get $i) (i64.div_u (local.get $n) (i64.const 2))))
        (then (drop (call $migrate (i32.const 65536) (local.get $dest)))))
      (local.set $at (i32.add (i32.const 4096)
        (i32.shl (i32.wrap_i64 (i64.and (local.get $i) (i64.const 4095))) (i32.const 3))))
      (local.set $x (i64.mul (i64.xor (local.get $x) (i64.add (local.get $i) (i64.load (local.get $at))))
                             (i64.const 0x100000001b3)))
      (i64.store (local.get $at) (local.get $x))
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br $next)))
    (local.get $x))
  (func (export "run") (param $n i64) (result i64) (local $len i32)
    (local.set $len (call $input_len))
    (drop (call $input_read (i32.const 65536) (local.get $len)))
    (call $fold (local.get $n) (local.get $len)))
  (func (export "park") (param $n i64) (result i64)
    (block $moved (loop $wait
      (if (global.get $flag) (then (br_if $moved (i32.eqz (call $migrate (i32.const 0) (i32.const 0))))))
      (br $wait)))
    (call $fold (local.get $n) (i32.const 0))))"#;

const STEPS: &str = "300000";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warren-agents-names-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn warren(args: &[&str], within: Duration) -> (bool, String, String) {
    let (status, out, err) = run(command(args), b"", within);
    (status.success(), out, err)
}

/// The node: a registry and two agent hosts trusting `key`; its registry's address and each
/// agent host's, once both are registered.
fn node(dir: &Path, key: &str) -> (Server, String, String, String) {
    let agents = |name: &str| {
        format!(
            "[[service]]\nname = \"{name}\"\nbuiltin = \"agents\"\nmodel = \"thread\"\nport = 0\n\
             trusted_keys = \"{key}.pub\"\nwall_ms = 10000\nfuel = 10000000000\n"
        )
    };
    let conf = dir.join("warren.toml");
    std::fs::write(
        &conf,
        format!(
            "status = \"off\"\n{}{}[[service]]\nname = \"registry\"\nbuiltin = \"registry\"\nport = 0\n\
             data = \"{}/registry\"\n",
            agents("agents-a"),
            agents("agents-b"),
            dir.display()
        ),
    )
    .unwrap();
    let mut cmd = command(&["up", "-c", conf.to_str().unwrap()]);
    cmd.env_remove("WARREN_TOKEN").env("XDG_STATE_HOME", dir.join("state"));
    let mut node = Server::start(cmd, "warren up (two agent hosts, registry)".into());
    // The first readiness line is the one `start` waited for; the others follow it.
    let first = node.ready.clone();
    let mut addr_of = |service: &str| {
        let prefix = format!("warren: serving {service} ");
        let line = if first.starts_with(&prefix) {
            first.clone()
        } else {
            node.wait_stdout(|l| l.starts_with(&prefix), support::T).unwrap_or_else(|| panic!("{service}"))
        };
        line.rsplit(" on ").next().unwrap().to_owned()
    };
    let (a, b, registry) = (addr_of("agents-a"), addr_of("agents-b"), addr_of("registry"));
    // The node registers its services once they listen: wait until both names are there.
    for name in ["agents-a", "agents-b"] {
        let found = eventually_every(support::T, Duration::from_millis(100), || {
            warren(&["lookup", name, "--registry", &registry], support::T).0
        });
        assert!(found, "{name} was never registered");
    }
    (node, registry, a, b)
}

/// `warren agents ls NODE`'s states by id.
fn states(node: &str) -> Vec<(u64, String)> {
    let (ok, out, err) = warren(&["agents", "ls", node], support::T);
    assert!(ok, "{err}");
    out.lines()
        .skip(1)
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            (words[0].parse().unwrap(), words[4..].join(" "))
        })
        .collect()
}

#[test]
fn hops_find_their_destination_by_registry_name() {
    let dir = scratch("hops");
    let key = dir.join("operator.key").to_str().unwrap().to_owned();
    assert!(warren(&["agents", "keygen", "-o", &key], support::T).0);
    let module = dir.join("hopper.wat");
    std::fs::write(&module, HOPPER).unwrap();
    let module = module.to_str().unwrap();
    let (node, _registry, a, b) = node(&dir, &key);

    let (ok, unmoved, err) = warren(&["agents", "run", "--local", module, STEPS, "--entry", "run"], support::T);
    assert!(ok, "{err}");

    // migrate("agents-b") from inside the agent.
    let input = dir.join("dest");
    std::fs::write(&input, "agents-b").unwrap();
    let args = [
        "agents",
        "run",
        "--mobile",
        &a,
        module,
        STEPS,
        "--entry",
        "run",
        "--input",
        input.to_str().unwrap(),
        "--key",
        &key,
    ];
    let (ok, moved, err) = warren(&args, FOLLOW);
    assert!(ok, "{err}");
    assert_eq!(moved, unmoved, "bit-identical after a hop by name");
    assert!(err.contains(&format!("moved to 1@{b}")), "{err}");
    assert_eq!(states(&a), [(1, format!("moved to 1@{b}"))]);

    // `warren agents move ID NAME`: the node looks the name up.
    let (ok, id, err) =
        warren(&["agents", "run", "--detach", &b, module, STEPS, "--entry", "park", "--key", &key], support::T);
    assert!(ok, "{err}");
    let id = id.trim().to_owned();
    let (ok, _, err) = warren(&["agents", "move", &id, "nobody", "--key", &key], support::T);
    assert!(!ok && err.contains("\"nobody\"") && err.contains("registry"), "{err}");
    let (ok, _, err) = warren(&["agents", "move", &id, "agents-a", "--key", &key], support::T);
    assert!(ok, "{err}");
    let (ok, moved, err) = warren(&["agents", "wait", &id], FOLLOW);
    assert!(ok, "{err}");
    assert_eq!(moved, unmoved, "moved by name from outside, it ends as an unmoved run does");
    assert!(err.contains(&format!("moved to 2@{a}")), "{err}");

    node.stop_clean();
    let _ = std::fs::remove_dir_all(&dir);
}
