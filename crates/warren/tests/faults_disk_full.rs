//! Fault: the file server's root fills up. The server runs in a mount namespace of its own
//! (`unshare --mount`) over a 1 MiB tmpfs, so that nothing the test does can touch the host's
//! mounts; the test reads the root through `/proc/PID/root`, which sees that namespace.
//!
//! Like every fault test, it runs in a network namespace it makes for itself (root only; otherwise
//! on the host's loopback, saying so): see `warren_testkit::netns`.

#[macro_use]
mod support;
mod files_support;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use files_support::conn;
use support::{BIN, Server};
use warren_fileserver::ClientError;

/// The tmpfs's size, and an upload four times as big.
const SPACE: &str = "1m";
const TOO_BIG: u64 = 4 << 20;

/// `warren files serve` over a fresh 1 MiB tmpfs mounted at `root` in a private mount
/// namespace; `None` (with a message) when this is not root or namespaces are not allowed.
fn serve_on_tmpfs(root: &Path) -> Option<Server> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return None;
    }
    let probe = Command::new("unshare").args(["--mount", "true"]).stderr(Stdio::null()).status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: unshare --mount is not allowed here");
        return None;
    }
    let mut cmd = Command::new("unshare");
    let root_arg = root.to_str().unwrap();
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(format!("mount -t tmpfs -o size={SPACE},mode=0755 tmpfs \"$0\" && exec \"$@\""))
        .arg(root_arg)
        .args([BIN, "files", "serve", "--root", root_arg, "--model", "thread", "-d", "0", "--anonymous", "write"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.process_group(0);
    Some(Server::start(cmd, "files serve on a 1 MiB tmpfs".into()))
}

/// Every file under `dir` (relative paths), the server's own state included.
fn files_under(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).unwrap().flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                found.push((entry.path().strip_prefix(dir).unwrap().to_path_buf(), meta.len()));
            }
        }
    }
    found.sort();
    found
}

#[test]
fn an_upload_bigger_than_the_disk_fails_clearly_leaves_nothing_and_the_server_serves_on() {
    // A loopback of the test's own: the servers it starts and its clients run in it.
    warren_testkit::netns::isolate_test();
    let root = std::env::temp_dir().join(format!("warren-faults-disk-full-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let Some(server) = serve_on_tmpfs(&root) else { return };
    // The root as the server sees it: the tmpfs, not the empty directory under it.
    let seen = PathBuf::from(format!("/proc/{}/root", server.pid())).join(root.strip_prefix("/").unwrap());
    conn(server.addr).put("/small", 5, &mut &b"small"[..]).unwrap();
    let before = files_under(&seen);

    let big = vec![0x5au8; TOO_BIG as usize];
    let err = conn(server.addr).put("/big", TOO_BIG, &mut &big[..]).expect_err("an upload bigger than the disk");
    let message = err.to_string();
    assert!(
        matches!(err, ClientError::Server { .. }) && message.contains("No space left on device"),
        "the client is told why: {err:?}"
    );

    // Nothing half-written: no /big, no partial upload; the server's state as it was.
    let after = files_under(&seen);
    assert!(!after.iter().any(|(p, _)| p == Path::new("big")), "no partial file: {after:?}");
    let temporaries: Vec<_> = after.iter().filter(|(p, _)| p.starts_with(".warren/tmp")).collect();
    assert!(temporaries.is_empty(), "no temporary file left: {temporaries:?}");
    assert_eq!(
        after.iter().filter(|(p, _)| !p.starts_with(".warren")).collect::<Vec<_>>(),
        before.iter().filter(|(p, _)| !p.starts_with(".warren")).collect::<Vec<_>>(),
        "the served files are untouched"
    );

    // And it serves on: a small upload and a download succeed. The partial upload's name is
    // gone at once, but its pages are freed when its descriptor closes, which the server leaves
    // to a reaper thread so as not to wait for it (crates/fileserver/src/disk.rs): until then
    // the disk may still be full, and says so.
    let mut last = None;
    let stored = support::eventually(support::T, || match conn(server.addr).put("/after", 5, &mut &b"after"[..]) {
        Ok(_) => true,
        Err(e) => {
            assert!(e.to_string().contains("No space left on device"), "only a full disk may refuse it: {e}");
            last = Some(e);
            false
        }
    });
    assert!(stored, "the space of the failed upload never came back: {last:?}");
    let mut c = conn(server.addr);
    assert_eq!(c.get("/after").unwrap().1, b"after");
    assert_eq!(c.get("/small").unwrap().1, b"small");
    assert!(c.get("/big").is_err(), "the failed upload is not visible");
    server.stop_clean();
    // The tmpfs went with the namespace; only the empty mount point is left.
    std::fs::remove_dir_all(&root).unwrap();
}
