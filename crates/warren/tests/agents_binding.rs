//! The resource-binding table through the real binary: two `warren up` nodes on loopback offer
//! the buckets `cache` (unattached) and `ledger` (fastened) and the file `motd`; an agent started
//! with `warren agents run --mobile --kv …` or `--file …` hops from A to B by its own `migrate`,
//! and what it sees on B is checked in every cell: the bucket moved (and gone from A), its copy,
//! the origin's live bucket or file through a global reference, or B's own. Needs `wasm-opt`.

#[macro_use]
mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::{Server, command, run};

/// How long a command that follows an agent may take, preparing the module on each node
/// included.
const FOLLOW: Duration = Duration::from_secs(60);

/// Shows its bucket's `k` (the value, `absent`, or `error:` and why), hops to the destination
/// its input names, shows `k` again there, writes `from-b` to it, and returns what `migrate`
/// said (0 moved, -1 stayed). `seed` sets `k` to its input; `peek` shows it.
const KV_AGENT: &str = include_str!("../../agents/tests/guests/kv_agent.wat");

/// Shows the first bytes of its file (or `error:` and why), hops to the destination its input
/// names, shows them again there, and returns what `migrate` said.
const FILE_AGENT: &str = include_str!("../../agents/tests/guests/file_agent.wat");

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warren-agents-binding-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `warren ARGS`: whether it succeeded, its stdout and its stderr.
fn warren(args: &[&str]) -> (bool, String, String) {
    let (status, out, err) = run(command(args), b"", FOLLOW);
    (status.success(), out, err)
}

/// A node named `name` offering `cache`, `ledger` and `motd` (which says `motd of NAME`).
fn node(dir: &Path, name: &str, key: &str) -> Server {
    let files = dir.join(format!("{name}-files"));
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("motd"), format!("motd of {name}")).unwrap();
    let conf = dir.join(format!("{name}.toml"));
    std::fs::write(
        &conf,
        format!(
            "status = \"off\"\nregistry = \"off\"\n\n[[service]]\nname = \"agents\"\nbuiltin = \"agents\"\n\
             model = \"thread\"\nport = 0\ntrusted_keys = \"{key}.pub\"\n\
             kv_buckets = \"cache:unattached ledger:fastened\"\nfiles = \"motd\"\nfiles_dir = \"{}\"\n",
            files.display()
        ),
    )
    .unwrap();
    let node = Server::spawn(&["up", "-c", conf.to_str().unwrap()]);
    assert!(node.ready.starts_with("warren: serving agents (tcp) under thread on "), "{}", node.ready);
    node
}

struct Rig {
    dir: PathBuf,
    key: String,
    kv: String,
    file: String,
    a: Server,
    b: Server,
}

impl Rig {
    fn new() -> Rig {
        let dir = scratch();
        let key = dir.join("operator.key").to_str().unwrap().to_owned();
        let (ok, _, err) = warren(&["agents", "keygen", "-o", &key]);
        assert!(ok, "{err}");
        let kv = dir.join("kv.wat");
        std::fs::write(&kv, KV_AGENT).unwrap();
        let file = dir.join("file.wat");
        std::fs::write(&file, FILE_AGENT).unwrap();
        let (a, b) = (node(&dir, "a", &key), node(&dir, "b", &key));
        let (kv, file) = (kv.to_str().unwrap().to_owned(), file.to_str().unwrap().to_owned());
        Rig { dir, key, kv, file, a, b }
    }

    fn a(&self) -> String {
        self.a.addr.to_string()
    }

    fn b(&self) -> String {
        self.b.addr.to_string()
    }

    /// A file holding `text`, for `--input`.
    fn input(&self, text: &str) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = self.dir.join(format!("input-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }

    /// A plain run of KV_AGENT's `entry` on `node` over `bucket`: its output and result.
    fn plain(&self, node: &str, entry: &str, bucket: &str, input: &str) -> String {
        let input = self.input(input);
        let args = ["agents", "run", node, &self.kv, "--entry", entry, "--kv", bucket, "--input", &input];
        let (ok, out, err) = warren(&[&args[..], &["--key", &self.key]].concat());
        assert!(ok, "{err}");
        out
    }

    fn seed(&self, node: &str, bucket: &str, value: &str) {
        assert_eq!(self.plain(node, "seed", bucket, value), "0\n");
    }

    /// What `bucket`'s `k` holds on `node`.
    fn peek(&self, node: &str, bucket: &str) -> String {
        let out = self.plain(node, "peek", bucket, "");
        out.strip_suffix("|0\n").unwrap_or_else(|| panic!("{out:?}")).to_owned()
    }

    /// Starts `module`'s `hop` on A with `flags`, hopping to B, and follows it: its output and
    /// result, and what the client printed on standard error.
    fn hop(&self, module: &str, flags: &[&str]) -> (String, String) {
        let dest = self.input(&self.b());
        let a = self.a();
        let args = ["agents", "run", "--mobile", &a, module, "--entry", "hop", "--input", &dest, "--key", &self.key];
        let (ok, out, err) = warren(&[&args[..], flags].concat());
        assert!(ok, "{flags:?}: {err}");
        (out, err)
    }
}

#[test]
fn each_bucket_cell_moves_copies_references_or_rebinds_between_nodes() {
    let rig = Rig::new();
    let (a, b) = (rig.a(), rig.b());

    // By identifier × unattached: the bucket moves with the agent, and leaves A.
    rig.seed(&a, "cache", "a-cache");
    let (out, err) = rig.hop(&rig.kv, &["--kv", "cache"]);
    assert_eq!(out, "a-cache|a-cache|0\n", "{err}");
    assert!(err.contains(&format!("moved to 1@{b}")), "{err}");
    assert_eq!((rig.peek(&a, "cache"), rig.peek(&b, "cache")), ("absent".into(), "from-b".into()));

    // By type × unattached: rebound to B's own bucket of that name.
    rig.seed(&a, "cache", "a-cache");
    let (out, _) = rig.hop(&rig.kv, &["--kv", "cache", "--kv-bind", "type"]);
    assert_eq!(out, "a-cache|from-b|0\n");

    // By value × unattached: a copy travels; A's and B's buckets keep what they held.
    rig.seed(&b, "cache", "b-cache");
    let (out, _) = rig.hop(&rig.kv, &["--kv", "cache", "--kv-bind", "value"]);
    assert_eq!(out, "a-cache|a-cache|0\n");
    assert_eq!((rig.peek(&a, "cache"), rig.peek(&b, "cache")), ("a-cache".into(), "b-cache".into()));

    // By identifier × fastened: a global reference; the agent's write on B lands on A.
    rig.seed(&a, "ledger", "a-ledger");
    rig.seed(&b, "ledger", "b-ledger");
    let (out, _) = rig.hop(&rig.kv, &["--kv", "ledger"]);
    assert_eq!(out, "a-ledger|a-ledger|0\n");
    assert_eq!((rig.peek(&a, "ledger"), rig.peek(&b, "ledger")), ("from-b".into(), "b-ledger".into()));

    // By value × fastened: a reference too, or the copy its agent asks for.
    rig.seed(&a, "ledger", "a-ledger");
    let (out, _) = rig.hop(&rig.kv, &["--kv", "ledger", "--kv-bind", "value"]);
    assert_eq!(out, "a-ledger|a-ledger|0\n");
    assert_eq!(rig.peek(&a, "ledger"), "from-b");
    rig.seed(&a, "ledger", "a-ledger");
    let (out, _) = rig.hop(&rig.kv, &["--kv", "ledger", "--kv-bind", "value", "--bind", "kv=copy"]);
    assert_eq!(out, "a-ledger|a-ledger|0\n");
    assert_eq!((rig.peek(&a, "ledger"), rig.peek(&b, "ledger")), ("a-ledger".into(), "b-ledger".into()));

    // By type × fastened: rebound to B's.
    let (out, _) = rig.hop(&rig.kv, &["--kv", "ledger", "--kv-bind", "type"]);
    assert_eq!(out, "a-ledger|b-ledger|0\n");
    assert_eq!(rig.peek(&b, "ledger"), "from-b");

    // What a node does not offer is refused before anything runs.
    let dest = rig.input(&b);
    let (ok, _, err) = warren(&[
        "agents", "run", "--mobile", &a, &rig.kv, "--entry", "hop", "--kv", "nope", "--input", &dest, "--key", &rig.key,
    ]);
    assert!(!ok && err.contains(r#"this host offers no kv bucket "nope" (it offers: cache, ledger)"#), "{err}");

    let _ = std::fs::remove_dir_all(&rig.dir);
}

#[test]
fn a_file_is_reached_through_its_origin_or_rebound_and_never_copied() {
    let rig = Rig::new();
    for binding in ["identifier", "value"] {
        let (out, _) = rig.hop(&rig.file, &["--file", "motd", "--file-bind", binding]);
        assert_eq!(out, "motd of a|motd of a|0\n", "{binding}");
    }
    let (out, _) = rig.hop(&rig.file, &["--file", "motd", "--file-bind", "type"]);
    assert_eq!(out, "motd of a|motd of b|0\n");
    let (out, _) = rig.hop(&rig.file, &["--file", "motd", "--file-bind", "type", "--bind", "file=ref"]);
    assert_eq!(out, "motd of a|motd of a|0\n");

    // A fixed file cannot be copied: the hop is refused and the agent stays on A (-1).
    let (out, _) = rig.hop(&rig.file, &["--file", "motd", "--bind", "file=copy"]);
    assert_eq!(out, "motd of a|motd of a|-1\n");
    let (ok, _, err) =
        warren(&["agents", "run", &rig.a(), &rig.file, "--entry", "hop", "--file", "secrets", "--key", &rig.key]);
    assert!(!ok && err.contains(r#"this host offers no file "secrets" (it offers: motd)"#), "{err}");
    let _ = std::fs::remove_dir_all(&rig.dir);
}
