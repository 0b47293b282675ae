//! The course's peers for the tests: small Java and C programs written for the tests from the
//! course's wire formats, compiled into a scratch directory with the real JDK and gcc, and run
//! as processes. A missing compiler fails the test with the way to install it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// Where this directory's sources are.
fn sources() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/course")
}

/// A scratch directory for one test binary's compiled peers.
fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warren-course-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

fn need(tool: &str, package: &str) {
    let found = Command::new(tool).arg("-version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
        || Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    assert!(found, "`{tool}` is missing: install {package} (scripts/test installs what the tests need)");
}

/// The directory holding the compiled Java peers (`TimeClient`, `TimeServer`), built once.
pub fn java_classes() -> &'static Path {
    static CLASSES: OnceLock<PathBuf> = OnceLock::new();
    CLASSES.get_or_init(|| {
        need("javac", "Debian's default-jdk-headless");
        need("java", "Debian's default-jdk-headless");
        let dir = scratch("java");
        let files = ["TimeClient.java", "TimeServer.java"].map(|f| sources().join(f));
        let out = Command::new("javac").arg("-d").arg(&dir).args(&files).output().expect("run javac");
        assert!(out.status.success(), "javac failed: {}", String::from_utf8_lossy(&out.stderr));
        dir
    })
}

/// `java -cp <classes> <class> <args>` in the time zone `tz`, output piped.
pub fn java(class: &str, args: &[&str], tz: &str) -> Command {
    let mut cmd = Command::new("java");
    cmd.arg("-cp").arg(java_classes()).arg(class).args(args).env("TZ", tz);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// The C program `name.c` of this directory, compiled once per test binary; its path.
pub fn c_program(name: &str) -> PathBuf {
    need("gcc", "gcc");
    let binary = scratch("c").join(name);
    if !binary.exists() {
        let source = sources().join(format!("{name}.c"));
        let out = Command::new("gcc").arg("-O1").arg("-o").arg(&binary).arg(&source).output().expect("run gcc");
        assert!(out.status.success(), "gcc {name}.c failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    binary
}

/// A child that is killed when dropped.
pub struct Peer(pub Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the sender prints, in order.
pub const SENDER_LINES: [&str; 5] = [
    "wrote 3 bytes of normal data",
    "wrote 1 byte of OOB data",
    "wrote 2 bytes of normal data",
    "wrote 1 byte of OOB data",
    "wrote 2 bytes of normal data",
];

/// A receiver's lines: the normal bytes `1235689` in reads, each urgent byte (`4`, then `7`)
/// announced by `SIGURG received`, and `received EOF` last.
pub fn check_receiver(lines: &[String], who: &str) {
    let (mut normal, mut urgent, mut signals) = (String::new(), String::new(), 0);
    let mut expect_oob = false;
    for line in lines {
        if expect_oob {
            let byte = line.strip_prefix("read 1 OOB byte: ").unwrap_or_else(|| panic!("{who}: {line:?} after SIGURG"));
            urgent.push_str(byte);
            expect_oob = false;
        } else if line == "SIGURG received" {
            signals += 1;
            expect_oob = true;
        } else if let Some(rest) = line.strip_prefix("read ") {
            let (n, bytes) = rest.split_once(" bytes: ").unwrap_or_else(|| panic!("{who}: {line:?}"));
            assert_eq!(n.parse::<usize>().unwrap(), bytes.len(), "{who}: {line:?}");
            normal.push_str(bytes);
        } else {
            assert_eq!(line, "received EOF", "{who}: unexpected line in {lines:?}");
        }
    }
    assert_eq!((normal.as_str(), urgent.as_str(), signals), ("1235689", "47", 2), "{who}: {lines:?}");
    assert_eq!(lines.last().map(String::as_str), Some("received EOF"), "{who}: {lines:?}");
}
