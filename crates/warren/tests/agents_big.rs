//! Snapshots larger than a frame, through the real binary: an agent with 40 MiB of dirty memory
//! moves between two `warren up` nodes in parts and ends bit-identical to an unmoved run; a
//! node whose `max_snapshot_mib` is smaller refuses it at its first part, and the agent stays
//! where it was, with the reason in `ls`, and can still go elsewhere. Needs `wasm-opt`.

#[macro_use]
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{Server, command, eventually_every, run};

/// How long a command that follows an agent may take.
const FOLLOW: Duration = Duration::from_secs(60);

/// 64 KiB pages of the agent's memory: 40 MiB, more than a 24 MiB frame.
const PAGES: u64 = 640;

/// `main()`: writes a word into every 4 KiB page of its memory, waits at its safe point until
/// it is moved (`migrate` returns 0), and returns the sum of those words.
fn big() -> String {
    format!(
        r#"(module
  (import "warren" "migrate" (func $migrate (param i32 i32) (result i32)))
  (memory (export "memory") {PAGES})
  (global $flag (export "migrate_requested") (mut i32) (i32.const 0))
  (func (export "main") (result i64) (local $at i32) (local $sum i64)
    (block $d (loop $l
      (br_if $d (i32.ge_u (local.get $at) (i32.const {end})))
      (i32.store (i32.add (local.get $at) (i32.const 64)) (i32.add (local.get $at) (i32.const 1)))
      (local.set $at (i32.add (local.get $at) (i32.const 4096)))
      (br $l)))
    (block $moved (loop $park
      (if (global.get $flag) (then (br_if $moved (i32.eqz (call $migrate (i32.const 0) (i32.const 0))))))
      (br $park)))
    (local.set $at (i32.const 0))
    (block $d (loop $l
      (br_if $d (i32.ge_u (local.get $at) (i32.const {end})))
      (local.set $sum (i64.add (local.get $sum) (i64.load32_u (i32.add (local.get $at) (i32.const 64)))))
      (local.set $at (i32.add (local.get $at) (i32.const 4096)))
      (br $l)))
    (local.get $sum)))"#,
        end = PAGES * 65536
    )
}

/// What `main` returns, moved or not.
fn checksum() -> u64 {
    (0..PAGES * 16).map(|page| page * 4096 + 1).sum()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warren-agents-big-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn warren(args: &[&str], within: Duration) -> (bool, String, String) {
    let (status, out, err) = run(command(args), b"", within);
    (status.success(), out, err)
}

/// A node with one agents service trusting `key`, with room for the agent, taking snapshots
/// up to `max_snapshot_mib`.
fn node(dir: &Path, name: &str, key: &str, max_snapshot_mib: u32) -> Server {
    let conf = dir.join(format!("{name}.toml"));
    std::fs::write(
        &conf,
        format!(
            "status = \"off\"\nregistry = \"off\"\n\n[[service]]\nname = \"agents\"\nbuiltin = \"agents\"\n\
             model = \"thread\"\nport = 0\ntrusted_keys = \"{key}.pub\"\nwall_ms = 10000\nfuel = 10000000000\n\
             memory_mib = 64\nmax_snapshot_mib = {max_snapshot_mib}\n"
        ),
    )
    .unwrap();
    let node = Server::spawn(&["up", "-c", conf.to_str().unwrap()]);
    assert!(node.ready.starts_with("warren: serving agents (tcp) under thread on "), "{}", node.ready);
    node
}

/// The state `warren agents ls NODE` prints for agent `id`.
fn state(node: &str, id: u64) -> String {
    let (ok, out, err) = warren(&["agents", "ls", node], support::T);
    assert!(ok, "{err}");
    let row =
        out.lines().skip(1).map(|line| line.split_whitespace().collect::<Vec<_>>()).find(|w| w[0] == id.to_string());
    row.map(|words| words[4..].join(" ")).unwrap_or_default()
}

#[test]
fn a_snapshot_over_a_frame_travels_in_parts_within_the_receivers_limit() {
    let dir = scratch("parts");
    let key = dir.join("operator.key").to_str().unwrap().to_owned();
    assert!(warren(&["agents", "keygen", "-o", &key], support::T).0);
    let module = dir.join("big.wat");
    std::fs::write(&module, big()).unwrap();
    let module = module.to_str().unwrap();
    let (a, b, small) = (node(&dir, "a", &key, 260), node(&dir, "b", &key, 260), node(&dir, "small", &key, 16));
    let (a_addr, b_addr, small_addr) = (a.addr.to_string(), b.addr.to_string(), small.addr.to_string());
    let start = || {
        let (ok, id, err) = warren(&["agents", "run", "--detach", &a_addr, module, "--key", &key], FOLLOW);
        assert!(ok, "{err}");
        id.trim().to_owned()
    };

    // 40 MiB dirty: in parts, and bit-identical on arrival.
    let id = start();
    let (ok, _, err) = warren(&["agents", "move", &id, &b_addr, "--key", &key], support::T);
    assert!(ok, "{err}");
    let (ok, moved, err) = warren(&["agents", "wait", &id], FOLLOW);
    assert!(ok, "{err}");
    assert_eq!(moved.trim(), checksum().to_string(), "bit-identical after a hop in parts");
    assert!(err.contains(&format!("moved to 1@{b_addr}")), "{err}");

    // Over the receiver's limit: refused at the first part, and the agent stays, then goes
    // where it is taken.
    let id = start();
    let (ok, _, err) = warren(&["agents", "move", &id, &small_addr, "--key", &key], support::T);
    assert!(ok, "{err}");
    let mut seen = String::new();
    let stayed = eventually_every(FOLLOW, Duration::from_millis(100), || {
        seen = state(&a_addr, 2);
        seen.contains("could not move")
    });
    assert!(stayed, "{seen}");
    assert!(
        seen.starts_with("running (could not move to") && seen.contains("over this host's limit of 16.0 MiB"),
        "{seen}"
    );
    let (ok, _, err) = warren(&["agents", "move", &id, &b_addr, "--key", &key], support::T);
    assert!(ok, "{err}");
    let (ok, moved, err) = warren(&["agents", "wait", &id], FOLLOW);
    assert!(ok, "{err}");
    assert_eq!(moved.trim(), checksum().to_string());
    assert_eq!(state(&small_addr, 1), "", "the small node took nothing");

    for node in [a, b, small] {
        node.stop_clean();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
