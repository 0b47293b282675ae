//! The spawn paths, each checked for what the child sees.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;

use super::vfork::*;
use super::*;

fn exec(program: &str, args: &[&str]) -> Exec {
    Exec {
        program: PathBuf::from(program),
        argv: std::iter::once(program).chain(args.iter().copied()).map(String::from).collect(),
        wait: false,
        user: None,
        env: Vec::new(),
        passenv: Vec::new(),
        process: Default::default(),
        sandbox: None,
    }
}

/// A loopback connection: (the client's end, the end handed to the child).
fn pair() -> (TcpListener, TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (served, _) = listener.accept().unwrap();
    client.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    (listener, client, served)
}

/// Start `exec` on a fresh connection under the plain path, send `input`, return the output
/// and the child's exit status (reaped through the pidfd's pid).
fn run(exec: &Exec, env: Vec<(OsString, OsString)>, input: &[u8]) -> (String, i32) {
    let (listener, mut client, served) = pair();
    let (pid, pidfd) = spawn(exec, Handoff::Conn(served.as_fd()), env, None).unwrap();
    assert!(pidfd.as_raw_fd() >= 0);
    drop(served);
    drop(listener);
    client.write_all(input).unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    client.read_to_string(&mut out).unwrap();
    let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None).unwrap();
    let nix::sys::wait::WaitStatus::Exited(_, code) = status else { panic!("{status:?}") };
    (out, code)
}

#[test]
fn the_child_gets_exactly_the_environment_given() {
    let env: Vec<(OsString, OsString)> = [
        ("PROTO", "TCP"),
        ("TCPLOCALIP", "127.0.0.1"),
        ("TCPLOCALPORT", "4040"),
        ("TCPREMOTEIP", "127.0.0.1"),
        ("TCPREMOTEPORT", "50000"),
        ("WITH_SPACE", "a b=c"),
    ]
    .into_iter()
    .map(|(k, v)| (k.into(), v.into()))
    .collect();
    let (out, code) = run(&exec("/usr/bin/env", &[]), env, b"");
    assert_eq!(code, 0);
    let expected = "PROTO=TCP\nTCPLOCALIP=127.0.0.1\nTCPLOCALPORT=4040\nTCPREMOTEIP=127.0.0.1\n\
                    TCPREMOTEPORT=50000\nWITH_SPACE=a b=c\n";
    assert_eq!(out, expected, "nothing of the node's environment leaks in");
}

#[test]
fn the_connection_is_stdin_and_stdout_and_nothing_else_is_inherited() {
    let (listener, mut client, served) = pair();
    // No pipeline: the shell would hold its pipes' descriptors while `ls` lists them. Not the
    // last command either: the shell would exec it, and `ls` would list its own directory's.
    let script = "read line; echo \"got $line\"; ls /proc/$$/fd; exit 0";
    let (pid, _pidfd) =
        spawn(&exec("/bin/sh", &["-c", script]), Handoff::Conn(served.as_fd()), Vec::new(), None).unwrap();
    let node_fds = [listener.as_raw_fd(), served.as_raw_fd()];
    drop(served);
    client.write_all(b"ping\n").unwrap();
    let mut out = String::new();
    client.read_to_string(&mut out).unwrap();
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
    let (first, fds) = out.split_once('\n').unwrap();
    assert_eq!(first, "got ping");
    let mut fds: Vec<i32> = fds.split_whitespace().map(|f| f.parse().unwrap()).collect();
    fds.sort_unstable();
    assert!(fds.starts_with(&[0, 1, 2]), "{fds:?}");
    for fd in node_fds.into_iter().filter(|&fd| fd > 2) {
        assert!(!fds.contains(&fd), "the node's fd {fd} leaked into the child: {fds:?}");
    }
}

/// Make this thread's spawns take the `libc::clone` path (no clone3), as on kernels before
/// 5.5 and on other architectures, with its dispositions from `SigCgt` or, without procfs,
/// from asking about each signal.
fn without_clone3(procfs: bool) {
    let mut scratch = Scratch::new().unwrap();
    scratch.clone3 = false;
    if !procfs {
        scratch.status = None;
    }
    SCRATCH.with(|cell| *cell.borrow_mut() = Some(scratch));
}

#[test]
fn the_child_gets_the_callers_mask_and_default_sigpipe_but_keeps_ignored_signals() {
    signals_as_posix_spawn_leaves_them();
}

#[test]
fn without_clone3_the_child_still_gets_the_callers_mask_and_default_sigpipe() {
    without_clone3(true);
    signals_as_posix_spawn_leaves_them();
}

#[test]
fn without_clone3_nor_procfs_the_child_still_gets_the_callers_mask_and_default_sigpipe() {
    without_clone3(false);
    signals_as_posix_spawn_leaves_them();
    let (out, code) = run(&exec("/bin/echo", &["fallback"]), Vec::new(), b"");
    assert_eq!((out.as_str(), code), ("fallback\n", 0));
}

fn signals_as_posix_spawn_leaves_them() {
    // SIGUSR1 ignored and SIGUSR2 blocked in this (per-test) process, SIGPIPE ignored by
    // Rust's runtime, SIGTERM caught: the program must see SIGUSR2 blocked (the caller's
    // mask, not the all-blocked one of the clone), SIGUSR1 still ignored (as posix_spawn
    // keeps it) and SIGPIPE back to its default.
    // SAFETY: setting dispositions in this test's own process, before any spawn.
    unsafe {
        libc::signal(libc::SIGUSR1, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let mut usr2 = nix::sys::signal::SigSet::empty();
    usr2.add(nix::sys::signal::Signal::SIGUSR2);
    usr2.thread_block().unwrap();
    let (out, code) = run(&exec("/bin/grep", &["-E", "^Sig(Blk|Ign)", "/proc/self/status"]), Vec::new(), b"");
    usr2.thread_unblock().unwrap();
    assert_eq!(code, 0);
    let field = |name: &str| {
        let line = out.lines().find(|l| l.starts_with(name)).unwrap();
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    assert_eq!(field("SigBlk:"), bit(libc::SIGUSR2), "{out}");
    let ignored = field("SigIgn:");
    assert_ne!(ignored & bit(libc::SIGUSR1), 0, "{out}");
    assert_eq!(ignored & bit(libc::SIGPIPE), 0, "{out}");
}

extern "C" fn on_signal(_: libc::c_int) {}

#[test]
fn a_missing_program_is_an_error_and_leaves_no_child() {
    a_missing_program_is_an_error();
}

#[test]
fn without_clone3_a_missing_program_is_an_error_and_leaves_no_child() {
    without_clone3(true);
    a_missing_program_is_an_error();
}

fn a_missing_program_is_an_error() {
    let (_listener, _client, served) = pair();
    let err = spawn(&exec("/nonexistent/ghost", &[]), Handoff::Conn(served.as_fd()), Vec::new(), None)
        .expect_err("no such program");
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    // The failed child was reaped by spawn itself: this process has no child left.
    assert_eq!(nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)), Err(nix::Error::ECHILD));
    let err = spawn(&exec("/proc/self/status", &[]), Handoff::Conn(served.as_fd()), Vec::new(), None)
        .expect_err("not executable");
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
}

#[test]
fn repeated_spawns_reuse_the_scratch_and_each_child_gets_its_own_arguments() {
    for n in 0..20 {
        let arg = "x".repeat(n * 50);
        let (out, code) = run(&exec("/bin/echo", &[&arg, "end"]), vec![("N".into(), n.to_string().into())], b"");
        assert_eq!((out, code), (format!("{arg} end\n"), 0));
    }
}

#[test]
fn caught_signals_come_from_sigcgt_all_64_of_them() {
    let text = b"Name:\tx\nSigIgn:\t0000000000001000\nSigCgt:\t0000000100004a02\nCapInh:\t0\n";
    assert_eq!(parse_sigcgt(text), Some(0x1_0000_4a02));
    assert_eq!(parse_sigcgt(b"garbage"), None);
    // SAFETY: handlers that do nothing, in this test's own process.
    unsafe {
        libc::signal(libc::SIGUSR1, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGRTMIN() + 3, on_signal as *const () as libc::sighandler_t);
    }
    let own = caught_signals(&std::fs::File::open("/proc/self/status").unwrap()).unwrap();
    assert_ne!(own & bit(libc::SIGUSR1), 0, "{own:x}");
    assert_ne!(own & bit(libc::SIGRTMIN() + 3), 0, "a real-time signal's handler is seen too: {own:x}");
    assert_eq!(own & bit(libc::SIGPIPE), 0, "ignored, not caught: {own:x}");
}

#[test]
fn decimal() {
    let mut buf = [0xffu8; 12];
    super::write_decimal(&mut buf, 40213);
    assert_eq!(&buf[..6], b"40213\0");
    super::write_decimal(&mut buf, 0);
    assert_eq!(&buf[..2], b"0\0");
}

#[test]
fn the_child_runs_as_the_configured_user_with_only_its_groups() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: switching users needs root");
        return;
    }
    let mut as_nobody = exec("/bin/sh", &["-c", "echo $(id -u) $(id -g) $(id -G); grep ^Uid: /proc/self/status"]);
    as_nobody.user = Some(Credentials { name: "nobody".into(), uid: 65534, gid: 65534, supplementary: false });
    let (out, code) = run(&as_nobody, Vec::new(), b"");
    assert_eq!(code, 0, "{out}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("65534 65534 65534"), "real ids and no supplementary group but the primary");
    let uids: Vec<&str> = lines.next().unwrap().split_whitespace().skip(1).collect();
    assert_eq!(uids, ["65534"; 4], "real, effective, saved and file-system uid all switched");
}
