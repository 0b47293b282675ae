//! `warren files put` and `get` draw a progress bar only on a terminal: with stderr piped, as in
//! a script or a log, their stderr holds the messages and no escape codes or carriage returns.

#[macro_use]
mod support;
mod files_support;

use files_support::{files_cli, root, serve};

#[test]
fn transfers_are_quiet_when_stderr_is_not_a_terminal() {
    let root = root("progress");
    let local = root.with_extension("local");
    let copy = root.with_extension("copy");
    let cache = root.with_extension("cache");
    let _ = std::fs::remove_dir_all(&cache);
    let body: Vec<u8> = (0..2 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&local, &body).unwrap();
    let server = serve(&root, "event", &[]);
    let addr = server.addr.to_string();
    let files = files_cli;
    let (_, put) = files(&["put", &addr, local.to_str().unwrap(), "/big.bin"]);
    assert!(put.contains("2097152 bytes stored"), "{put}");
    let (_, get) = files(&["get", &addr, "/big.bin", "-o", copy.to_str().unwrap(), "--cache", cache.to_str().unwrap()]);
    assert!(get.contains("fetched"), "{get}");
    assert!(std::fs::read(&copy).unwrap() == body, "the copy differs");
    for (what, err) in [("put", &put), ("get", &get)] {
        assert!(!err.contains('\u{1b}') && !err.contains('\r'), "{what} drew progress into a pipe: {err:?}");
    }
    for path in [&local, &copy] {
        std::fs::remove_file(path).unwrap();
    }
    for dir in [&root, &cache] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}
