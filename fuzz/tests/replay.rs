//! Replays every file of `corpus/<target>/` through the same checks as the fuzz target, on
//! stable Rust and without libFuzzer: `cd fuzz && cargo test`.
//!
//! A crash input that libFuzzer writes to `artifacts/<target>/` becomes a regression test by
//! copying it into `corpus/<target>/` once the bug is fixed.

use std::path::Path;

fn replay(target: &str) {
    let run = warren_fuzz::TARGETS.iter().find(|(name, _)| *name == target).expect("a known target").1;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no seed", dir.display());
    let mut failed = Vec::new();
    for path in &files {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if std::panic::catch_unwind(|| run(&data)).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target}: {} of {} inputs failed: {failed:#?}", failed.len(), files.len());
    println!("{target}: {} inputs replayed", files.len());
}

#[test]
fn lines() {
    replay("lines");
}

#[test]
fn chat_session() {
    replay("chat_session");
}

#[test]
fn chat_wire() {
    replay("chat_wire");
}

#[test]
fn pingpong_session() {
    replay("pingpong_session");
}

#[test]
fn pingpong_wire() {
    replay("pingpong_wire");
}

#[test]
fn hub_frame() {
    replay("hub_frame");
}

#[test]
fn http_head() {
    replay("http_head");
}

#[test]
fn http_path() {
    replay("http_path");
}

#[test]
fn dns_answer() {
    replay("dns_answer");
}

#[test]
fn files_wire() {
    replay("files_wire");
}

#[test]
fn every_target_has_a_test() {
    let names: Vec<&str> = warren_fuzz::TARGETS.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names,
        [
            "lines",
            "chat_session",
            "chat_wire",
            "pingpong_session",
            "pingpong_wire",
            "registry_wire",
            "hub_frame",
            "http_head",
            "http_path",
            "files_wire",
            "dns_answer",
            "xinetd_config",
            "proxy_head"
        ]
    );
}

#[test]
fn registry_wire() {
    replay("registry_wire");
}

#[test]
fn proxy_head() {
    replay("proxy_head");
}

#[test]
fn xinetd_config() {
    replay("xinetd_config");
}
