//! `warren files put` and `get` draw a progress bar only on a terminal: with stderr piped, as in
//! a script or a log, their stderr holds the messages and no escape codes or carriage returns;
//! on a terminal (a pseudo-terminal from util-linux's `script`) the bar is drawn and cleared.

#[macro_use]
mod support;
mod files_support;

use std::process::{Command, Stdio};

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

#[test]
fn a_terminal_sees_the_upload_bar_drawn_and_cleared() {
    if Command::new("script").arg("--version").stdout(Stdio::null()).status().is_err() {
        eprintln!("skipped: util-linux's `script` is not installed");
        return;
    }
    let root = root("progress-tty");
    let local = root.with_extension("tty-local");
    // 8 MiB at 16 MiB/s: half a second, so the bar is drawn several times whatever the machine.
    std::fs::write(&local, vec![7u8; 8 << 20]).unwrap();
    let server = serve(&root, "event", &["--upload-rate", &(16u64 << 20).to_string()]);
    let put = format!("{} files put {} {} /tty.bin", support::BIN, server.addr, local.display());
    // `script` runs the command on a pseudo-terminal and copies what it writes to our pipe.
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &put, "/dev/null"])
        .env("COLUMNS", "120")
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .output()
        .expect("run script");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "put on a terminal failed: {screen}");
    assert!(screen.contains("8388608 bytes stored"), "{screen}");
    // The template: "PATH [=====>    ] SENT/TOTAL RATE, ETA left", redrawn in place.
    assert!(screen.contains("/tty.bin ["), "no bar was drawn: {screen:?}");
    assert!(screen.contains("MiB/s") && screen.contains(" left"), "the bar has no rate or time left: {screen:?}");
    assert!(screen.contains('\r') || screen.contains("\u{1b}["), "the bar was not redrawn in place: {screen:?}");
    assert!(std::fs::metadata(root.join("tty.bin")).unwrap().len() == 8 << 20, "the upload is incomplete");
    std::fs::remove_file(&local).unwrap();
    std::fs::remove_dir_all(&root).unwrap();
}
