//! Agents that move between nodes, through the real binary: three `warren up` nodes on
//! loopback; an agent that hops twice by its own `migrate` ends with the bit-identical result of
//! an unmoved run, and the client that started it follows it to the end; `warren agents move`
//! moves a running agent from outside, and `move --clone` restores its snapshot twice; `ls`
//! shows where each agent is, its hops and its fuel; orders need a trusted signature.
//! Needs `wasm-opt` (Debian's binaryen).

#[macro_use]
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{Server, command, eventually, run};

/// How long a command that follows an agent may take: the agent's wall time (10 s at most,
/// across hops) and the hops.
const FOLLOW: Duration = Duration::from_secs(60);

/// `run(n)` folds a 32 KiB table into a checksum, n steps; when its input names destinations
/// (32-byte slots, space-padded), it `migrate`s to the k-th at step n·k/(slots+1). `park(n)`
/// first waits at its safe point until it is moved or cloned (`migrate` returns 0 or 1), then
/// does the same n steps. The result carries what the last safe-point `migrate` returned in its
/// top byte, so a clone's differs from the original's by exactly that.
const HOPPER: &str = r#"(module
  (import "warren" "migrate" (func $migrate (param i32 i32) (result i32)))
  (import "warren" "input_len" (func $input_len (result i32)))
  (import "warren" "input_read" (func $input_read (param i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $flag (export "migrate_requested") (mut i32) (i32.const 0))
  (global $role (export "role") (mut i32) (i32.const 0))
  (global $hop (export "hop") (mut i32) (i32.const 0))
  (func $fold (param $n i64) (param $slots i32) (result i64) (local $i i64) (local $x i64) (local $at i32)
    (local.set $x (i64.const 0xcbf29ce484222325))
    (block $done (loop $next
      (if (global.get $flag) (then (global.set $role (call $migrate (i32.const 0) (i32.const 0)))))
      (br_if $done (i64.ge_u (local.get $i) (local.get $n)))
      (if (i32.lt_u (global.get $hop) (local.get $slots)) (then
        (if (i64.eq (local.get $i)
              (i64.div_u (i64.mul (local.get $n) (i64.extend_i32_u (i32.add (global.get $hop) (i32.const 1))))
                         (i64.extend_i32_u (i32.add (local.get $slots) (i32.const 1)))))
          (then
            (global.set $hop (i32.add (global.get $hop) (i32.const 1)))
            (drop (call $migrate
              (i32.add (i32.const 65536) (i32.mul (i32.sub (global.get $hop) (i32.const 1)) (i32.const 32)))
              (i32.const 32)))))))
      (local.set $at (i32.add (i32.const 4096)
        (i32.shl (i32.wrap_i64 (i64.and (local.get $i) (i64.const 4095))) (i32.const 3))))
      (local.set $x (i64.mul (i64.xor (local.get $x) (i64.add (local.get $i) (i64.load (local.get $at))))
                             (i64.const 0x100000001b3)))
      (i64.store (local.get $at) (local.get $x))
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br $next)))
    (i64.xor (local.get $x) (i64.shl (i64.extend_i32_s (global.get $role)) (i64.const 56))))
  (func (export "run") (param $n i64) (result i64) (local $slots i32)
    (local.set $slots (i32.div_u (call $input_len) (i32.const 32)))
    (drop (call $input_read (i32.const 65536) (i32.mul (local.get $slots) (i32.const 32))))
    (call $fold (local.get $n) (local.get $slots)))
  (func (export "park") (param $n i64) (result i64)
    (block $moved (loop $wait
      (if (global.get $flag) (then
        (global.set $role (call $migrate (i32.const 0) (i32.const 0)))
        (br_if $moved (i32.ge_s (global.get $role) (i32.const 0)))))
      (br $wait)))
    (call $fold (local.get $n) (i32.const 0))))"#;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warren-agents-move-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `warren ARGS` within `within`: whether it succeeded, its stdout and its stderr.
fn warren_within(within: Duration, args: &[&str]) -> (bool, String, String) {
    let (status, out, err) = run(command(args), b"", within);
    (status.success(), out, err)
}

fn warren(args: &[&str]) -> (bool, String, String) {
    warren_within(support::T, args)
}

/// The operator's secret key in `dir`, and the module file.
fn setup(dir: &Path) -> (String, String) {
    let key = dir.join("operator.key").to_str().unwrap().to_owned();
    let (ok, _, err) = warren(&["agents", "keygen", "-o", &key]);
    assert!(ok, "{err}");
    let module = dir.join("hopper.wat");
    std::fs::write(&module, HOPPER).unwrap();
    (key, module.to_str().unwrap().to_owned())
}

/// A node named `name` with one agents service on a free port, trusting `key`.
fn node(dir: &Path, name: &str, key: &str) -> Server {
    let conf = dir.join(format!("{name}.toml"));
    std::fs::write(
        &conf,
        format!(
            "status = \"off\"\nregistry = \"off\"\n\n[[service]]\nname = \"agents\"\nbuiltin = \"agents\"\n\
             model = \"thread\"\nport = 0\ntrusted_keys = \"{key}.pub\"\nwall_ms = 10000\nfuel = 10000000000\n"
        ),
    )
    .unwrap();
    let node = Server::spawn(&["up", "-c", conf.to_str().unwrap()]);
    assert!(node.ready.starts_with("warren: serving agents (tcp) under thread on "), "{}", node.ready);
    node
}

/// Destinations as HOPPER's input: 32-byte slots, space-padded.
fn slots(dests: &[&str]) -> Vec<u8> {
    dests.iter().flat_map(|dest| format!("{dest:<32}").into_bytes()).collect()
}

/// `warren agents ls NODE`'s rows: (id, module prefix, hops, fuel used, state).
fn ls(node: &str) -> Vec<(u64, String, u32, u64, String)> {
    let (ok, out, err) = warren(&["agents", "ls", node]);
    assert!(ok, "{err}");
    out.lines()
        .skip(1)
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let state = words[4..].join(" ");
            (
                words[0].parse().unwrap(),
                words[1].to_owned(),
                words[2].parse().unwrap(),
                words[3].parse().unwrap(),
                state,
            )
        })
        .collect()
}

/// The result an unmoved run of `entry` prints, as a number.
fn result(out: &str) -> i64 {
    out.trim().parse().unwrap_or_else(|_| panic!("a result, not {out:?}"))
}

const STEPS: &str = "300000";

#[test]
fn an_agent_hops_twice_by_itself_and_ends_bit_identical_to_an_unmoved_run() {
    let dir = scratch("hops");
    let (key, module) = setup(&dir);
    let (a, b, c) = (node(&dir, "a", &key), node(&dir, "b", &key), node(&dir, "c", &key));
    let (a_addr, b_addr, c_addr) = (a.addr.to_string(), b.addr.to_string(), c.addr.to_string());

    let (ok, unmoved, err) = warren(&["agents", "run", "--local", &module, STEPS, "--entry", "run"]);
    assert!(ok, "{err}");

    let input = dir.join("dests");
    std::fs::write(&input, slots(&[&b_addr, &c_addr])).unwrap();
    let input = input.to_str().unwrap();
    let (ok, moved, err) = warren_within(
        FOLLOW,
        &["agents", "run", "--mobile", &a_addr, &module, STEPS, "--entry", "run", "--input", input, "--key", &key],
    );
    assert!(ok, "{err}");
    assert_eq!(result(&moved), result(&unmoved), "bit-identical after two hops");
    // The client followed it: A to B, B to C.
    assert!(err.contains(&format!("moved to 1@{b_addr}")) && err.contains(&format!("moved to 1@{c_addr}")), "{err}");

    let (ok, id, err) = warren(&["agents", "id", &module]);
    assert!(ok, "{err}");
    let prefix = &id.trim()[..16];
    let (on_a, on_b, on_c) = (ls(&a_addr), ls(&b_addr), ls(&c_addr));
    assert_eq!((on_a.len(), on_b.len(), on_c.len()), (1, 1, 1));
    assert_eq!((on_a[0].2, on_a[0].4.as_str()), (1, format!("moved to 1@{b_addr}").as_str()));
    assert_eq!((on_b[0].2, on_b[0].4.as_str()), (2, format!("moved to 1@{c_addr}").as_str()));
    assert_eq!((on_c[0].1.as_str(), on_c[0].2, on_c[0].4.as_str()), (prefix, 2, "finished"));
    // Fuel carries across hops: the last node counts it all.
    assert!(on_c[0].3 > on_b[0].3 && on_b[0].3 > on_a[0].3 && on_a[0].3 > 0, "{on_a:?} {on_b:?} {on_c:?}");

    // The plain run on a node, which cannot move, declines each `migrate` and agrees too.
    let (ok, plain, err) =
        warren(&["agents", "run", &a_addr, &module, STEPS, "--entry", "run", "--input", input, "--key", &key]);
    assert!(ok, "{err}");
    assert_eq!(result(&plain), result(&unmoved));

    for node in [a, b, c] {
        node.stop_clean();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts `park` on `at`, detached: its ID.
fn park(at: &str, module: &str, key: &str) -> String {
    let (ok, id, err) = warren(&["agents", "run", "--detach", at, module, STEPS, "--entry", "park", "--key", key]);
    assert!(ok, "{err}");
    let id = id.trim().to_owned();
    assert_eq!(id.split_once('@').map(|(_, node)| node), Some(at), "{id}");
    id
}

#[test]
fn move_moves_a_running_agent_from_outside_and_a_clone_is_restored_twice() {
    let dir = scratch("move");
    let (key, module) = setup(&dir);
    let (a, b) = (node(&dir, "a", &key), node(&dir, "b", &key));
    let (a_addr, b_addr) = (a.addr.to_string(), b.addr.to_string());
    let (ok, unmoved, err) = warren(&["agents", "run", "--local", &module, STEPS, "--entry", "run"]);
    assert!(ok, "{err}");
    let unmoved = result(&unmoved);

    // An order must be signed by a key the node trusts.
    let id = park(&a_addr, &module, &key);
    let (ok, _, err) = warren(&["agents", "move", &id, &b_addr]);
    assert!(!ok && err.contains("the order is not signed"), "{err}");
    let stranger = dir.join("stranger.key").to_str().unwrap().to_owned();
    assert!(warren(&["agents", "keygen", "-o", &stranger]).0);
    let (ok, _, err) = warren(&["agents", "move", &id, &b_addr, "--key", &stranger]);
    assert!(!ok && err.contains("does not trust"), "{err}");
    assert_eq!(ls(&a_addr)[0].4, "running", "a refused order leaves it where it was");

    let (ok, out, err) = warren(&["agents", "move", &id, &b_addr, "--key", &key]);
    assert!(ok, "{err}");
    assert!(out.contains("will be moved to"), "{out}");
    let (ok, moved, err) = warren_within(FOLLOW, &["agents", "wait", &id]);
    assert!(ok, "{err}");
    assert_eq!(result(&moved), unmoved, "moved mid-loop, it ends as an unmoved run does");
    assert!(err.contains(&format!("moved to 1@{b_addr}")), "{err}");
    let on_b = ls(&b_addr);
    assert_eq!((on_b[0].2, on_b[0].4.as_str()), (1, "finished"));
    let (ok, _, err) = warren(&["agents", "move", &id, &b_addr, "--key", &key]);
    assert!(!ok && err.contains("only a running agent can be moved"), "{err}");

    // A clone: the snapshot is restored twice, here as the agent (migrate returns 0) and on B
    // as its clone (1), and each runs to its end.
    let id = park(&a_addr, &module, &key);
    let (ok, _, err) = warren(&["agents", "move", "--clone", &id, &b_addr, "--key", &key]);
    assert!(ok, "{err}");
    let (ok, original, err) = warren_within(FOLLOW, &["agents", "wait", &id]);
    assert!(ok, "{err}");
    assert_eq!(result(&original), unmoved);
    assert!(!err.contains("moved to"), "the original stayed: {err}");
    let clone = format!("2@{b_addr}");
    let (ok, copy, err) = warren_within(FOLLOW, &["agents", "wait", &clone]);
    assert!(ok, "{err}");
    assert_eq!(result(&copy), unmoved ^ (1 << 56), "the clone differs only by what migrate told it");
    assert!(eventually(support::T, || ls(&b_addr).iter().any(|row| row.0 == 2 && row.4 == "finished")));

    a.stop_clean();
    b.stop_clean();
    let _ = std::fs::remove_dir_all(&dir);
}
