//! The file service through the binary: every operation under every model, the root's wall,
//! partial uploads never visible, callbacks to connected clients, and the CLI's cache.

#[macro_use]
mod support;
mod files_support;

use files_support::{Upload, conn, root, serve};
use support::{command, run};
use warren_filesvc::ClientError;
use warren_filesvc::wire::{ErrorCode, Reply};

fn big() -> Vec<u8> {
    (0..300 * 1024u32).map(|i| (i * 7 % 251) as u8).collect()
}

fn check(model: &str) {
    let root = root(&format!("ops-{model}"));
    std::fs::write(std::env::temp_dir().join(format!("warren-files-secret-{}", std::process::id())), b"s").unwrap();
    std::os::unix::fs::symlink(std::env::temp_dir(), root.join("out")).unwrap();
    let server = serve(&root, model, &[]);
    let mut c = conn(server.addr);
    let version = c.put(1, "/dir/big.bin", big().len() as u64, &mut &big()[..]).unwrap();
    let (got_version, data) = c.get("dir/big.bin").unwrap();
    assert_eq!(got_version, version, "{model}");
    assert!(data == big(), "{model}: the 300 KiB file differs");
    assert_eq!(std::fs::read(root.join("dir/big.bin")).unwrap(), big());
    let (entries, _) = c.list("/").unwrap();
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["dir", "out"], "{model}: the state directory is never listed");
    assert_eq!(c.stat("/dir/big.bin").unwrap().size, 300 * 1024);
    // The wall: no `..`, no state directory, no symlink out.
    for path in ["../etc/passwd", "/.warren/leases.journal", "dir/../../x"] {
        assert!(matches!(c.stat(path), Err(ClientError::Server { code: ErrorCode::BadPath, .. })), "{model}: {path}");
    }
    let secret = format!("/out/warren-files-secret-{}", std::process::id());
    assert!(matches!(c.get(&secret), Err(ClientError::Server { code: ErrorCode::BadPath, .. })), "{model}");
    c.delete("/dir/big.bin").unwrap();
    assert!(matches!(c.get("/dir/big.bin"), Err(ClientError::Server { code: ErrorCode::NotFound, .. })));
    drop(c);
    server.stop_clean();
    std::fs::remove_dir_all(&root).unwrap();
}

mod every_model {
    per_model!(super::check);
}

#[test]
fn a_partial_upload_is_never_visible() {
    let root = root("partial");
    let server = serve(&root, "thread", &[]);
    let mut up = Upload::start(server.addr, 7, "/p.bin", 4 << 20);
    up.send(1 << 20);
    let mut other = conn(server.addr);
    // Wait (bounded) until the server has written some of it, then look for it every way.
    assert!(support::eventually(support::T, || files_support::partials(&root) == 1));
    assert!(matches!(other.stat("/p.bin"), Err(ClientError::Server { code: ErrorCode::NotFound, .. })));
    assert!(other.list("/").unwrap().0.is_empty());
    assert!(!root.join("p.bin").exists());
    up.send(3 << 20);
    assert!(matches!(up.reply(), Reply::Done { .. }));
    assert_eq!(other.stat("/p.bin").unwrap().size, 4 << 20);
    assert_eq!(files_support::partials(&root), 0);
    up.finish();
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_change_calls_back_a_connected_client() {
    let root = root("callback");
    let server = serve(&root, "pool", &[]);
    let (mut a, mut b) = (conn(server.addr), conn(server.addr));
    b.put(1, "/f", 2, &mut &b"v1"[..]).unwrap();
    a.hello(0xa11ce).unwrap();
    assert_eq!(a.get("/f").unwrap().1, b"v1");
    b.put(2, "/f", 2, &mut &b"v2"[..]).unwrap();
    assert_eq!(a.next_frame().unwrap(), Reply::Callback { path: "/f".into() });
    std::fs::remove_dir_all(&root).unwrap();
}

/// `warren files get` serves its cached copy while the lease lasts, and a change made while it
/// was away reaches it as an owed callback.
#[test]
fn the_cli_cache_follows_leases_and_callbacks() {
    let root = root("cli");
    let cache = root.with_extension("cache");
    let _ = std::fs::remove_dir_all(&cache);
    let local = root.with_extension("local");
    let server = serve(&root, "event", &["--lease", "1h"]);
    let addr = server.addr.to_string();
    let files = |args: &[&str]| {
        let mut all = vec!["files"];
        all.extend_from_slice(args);
        let (status, out, err) = run(command(&all), b"", support::T);
        assert!(status.success(), "{args:?}: {err}");
        (out, err)
    };
    std::fs::write(&local, b"one\n").unwrap();
    files(&["put", &addr, local.to_str().unwrap(), "/doc.txt"]);
    let get = |files: &dyn Fn(&[&str]) -> (String, String)| {
        files(&["get", &addr, "/doc.txt", "--cache", cache.to_str().unwrap()])
    };
    let (out, err) = get(&files);
    assert_eq!((out.as_str(), err.contains("fetched")), ("one\n", true), "{err}");
    let (out, err) = get(&files);
    assert_eq!((out.as_str(), err.contains("from the cache (lease valid)")), ("one\n", true), "{err}");
    std::fs::write(&local, b"two\n").unwrap();
    files(&["put", &addr, local.to_str().unwrap(), "/doc.txt"]);
    let (out, err) = get(&files);
    assert_eq!((out.as_str(), err.contains("fetched")), ("two\n", true), "the owed callback dropped the copy: {err}");
    for dir in [&root, &cache] {
        std::fs::remove_dir_all(dir).unwrap();
    }
    std::fs::remove_file(&local).unwrap();
}
