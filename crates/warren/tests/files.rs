//! The file service through the binary: every operation under every model, the root's wall,
//! partial uploads never visible, callbacks to connected clients, and the CLI's cache.

#[macro_use]
mod support;
mod files_support;

use files_support::{Upload, conn, files_cli, root, serve};

use warren_fileserver::ClientError;
use warren_fileserver::wire::{ErrorCode, Reply};

fn big() -> Vec<u8> {
    (0..300 * 1024u32).map(|i| (i * 7 % 251) as u8).collect()
}

fn check(model: &str) {
    let root = root(&format!("ops-{model}"));
    std::fs::write(std::env::temp_dir().join(format!("warren-files-secret-{}", std::process::id())), b"s").unwrap();
    std::os::unix::fs::symlink(std::env::temp_dir(), root.join("out")).unwrap();
    let server = serve(&root, model, &[]);
    let mut c = conn(server.addr);
    let version = c.put("/dir/big.bin", big().len() as u64, &mut &big()[..]).unwrap();
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
    let mut up = Upload::start(server.addr, "/p.bin", 4 << 20);
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
    b.put("/f", 2, &mut &b"v1"[..]).unwrap();
    a.hello(0, [0; 16]).unwrap();
    assert_eq!(a.get("/f").unwrap().1, b"v1");
    b.put("/f", 2, &mut &b"v2"[..]).unwrap();
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
    let files = files_cli;
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

/// Bytes in `stream`'s send queue, sent or not (`SIOCOUTQ`): what the server has not
/// acknowledged yet.
fn queued(stream: &std::net::TcpStream) -> u64 {
    use std::os::fd::AsRawFd;
    let mut n: nix::libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one int through the pointer, which points to ours.
    let rc = unsafe { nix::libc::ioctl(stream.as_raw_fd(), nix::libc::TIOCOUTQ, &mut n) };
    assert!(rc >= 0);
    n as u64
}

/// How much of an upload the server's kernel takes in while the server reads (almost) nothing:
/// what it read before its rate held it back, plus its receive buffer. The client queues
/// `unsent` bytes the server's window has no room for; with `at_least`, it waits (bounded) for
/// the window to grow to that.
fn taken_while_stalled(recv_buffer: u64, unsent: usize, at_least: Option<u64>) -> u64 {
    let root = root(&format!("rcvbuf-{recv_buffer}"));
    let server = serve(&root, "thread", &["--upload-rate", "1", "--recv-buffer", &recv_buffer.to_string()]);
    let mut up = Upload::start(server.addr, "/slow.bin", 64 << 30);
    up.stall(unsent);
    let taken = || up.sent - queued(&up.stream);
    if let Some(at_least) = at_least {
        support::eventually(support::T, || taken() >= at_least);
    }
    let taken = taken();
    drop(up);
    drop(server);
    std::fs::remove_dir_all(&root).unwrap();
    taken
}

/// `--recv-buffer` is applied to data connections: a server that stops reading takes in about
/// that much, and no more.
#[test]
fn the_receive_buffer_bounds_what_a_stalled_server_takes_in() {
    let small = taken_while_stalled(64 * 1024, 1 << 20, None);
    // Read before the rate stopped it (64 KiB and a read), plus the buffer (doubled by the
    // kernel): far below the megabyte the client has queued.
    assert!(small <= 512 * 1024, "{small} bytes taken in with a 64 KiB receive buffer");
    // A large one, as far as net.core.rmem_max allows (SO_RCVBUF is capped there): the kernel's
    // default for a connection that reads nothing stays at tcp_rmem's 128 KiB.
    let rmem_max: u64 = std::fs::read_to_string("/proc/sys/net/core/rmem_max").unwrap().trim().parse().unwrap();
    let large = rmem_max.min(4 << 20);
    if large >= 2 << 20 {
        let taken = taken_while_stalled(large, large as usize, Some(large / 2));
        assert!(taken >= large / 2, "{taken} bytes taken in with a receive buffer of {large}");
    }
}
