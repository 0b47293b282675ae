//! Sandboxed exec services: a child over its cgroup memory limit is killed while the others
//! carry on; namespaces leave the child only the socket it was handed.

mod support;

use std::io::Write;

use support::{TestNode, exchange, open, read_line};
use warren_node::sandbox::Cgroups;

fn can_sandbox() -> bool {
    let ok = nix::unistd::geteuid().is_root() && Cgroups::detect() != Cgroups::Unavailable;
    if !ok {
        eprintln!("skipped: sandboxing needs root and a cgroup hierarchy with memory and pids");
    }
    ok
}

#[test]
fn a_child_over_its_memory_limit_is_killed_and_the_others_carry_on() {
    if !can_sandbox() {
        return;
    }
    let node = TestNode::start(
        r#"
[[service]]
name = "boxed"
port = 0
server = "/bin/sh"
server_args = ["-c", "echo up; read what; if [ \"$what\" = big ]; then head -c 512M /dev/zero | tail -n 1 >/dev/null; echo \"big $?\"; else echo \"small $what\"; fi"]
sandbox_memory_max = "32M"
sandbox_pids_max = 16
"#,
    );
    let addr = node.addr("boxed");
    let small: Vec<_> = (0..3).map(|_| open(addr)).collect();
    let (mut big, up) = open(addr);
    assert_eq!(up, "up\n");
    big.write_all(b"big\n").unwrap();
    assert_eq!(read_line(&big), "big 137\n", "tail is killed (SIGKILL) at 32 MiB");
    for (i, (mut conn, up)) in small.into_iter().enumerate() {
        assert_eq!(up, "up\n");
        conn.write_all(format!("{i}\n").as_bytes()).unwrap();
        assert_eq!(read_line(&conn), format!("small {i}\n"), "the other children were untouched");
    }
    node.until("every child reaped", |s| s.service("boxed").unwrap().running == 0);
}

#[test]
fn namespaces_isolate_pids_and_network() {
    if !can_sandbox() {
        return;
    }
    let node = TestNode::start(
        r#"
[[service]]
name = "ns"
port = 0
server = "/bin/sh"
server_args = ["-c", "echo pid=$$ uid=$(id -u) interfaces=$(grep -c : /proc/net/dev)"]
sandbox_namespaces = ["mount", "pid", "net", "user"]
"#,
    );
    assert_eq!(exchange(node.addr("ns"), b""), "pid=1 uid=0 interfaces=1\n");
}

#[test]
fn a_sandboxed_child_that_cannot_start_leaves_no_cgroup_behind() {
    if !can_sandbox() {
        return;
    }
    let node = TestNode::start(
        r#"
[[service]]
name = "sandbox-missing-program"
port = 0
server = "/nonexistent/program"
sandbox_memory_max = "32M"
"#,
    );
    let addr = node.addr("sandbox-missing-program");
    for _ in 0..3 {
        assert_eq!(exchange(addr, b""), "", "refused: the program does not exist");
    }
    node.until("three refusals", |s| s.service("sandbox-missing-program").unwrap().refused == 3);
    // This process's leaves (`<pid>-<n>`) under the service's cgroup, in either hierarchy.
    let ours = format!("{}-", std::process::id());
    let leftovers: Vec<_> = ["/sys/fs/cgroup/warren", "/sys/fs/cgroup/memory/warren"]
        .iter()
        .flat_map(|base| std::fs::read_dir(format!("{base}/sandbox-missing-program")).into_iter().flatten())
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&ours))
        .collect();
    assert!(leftovers.is_empty(), "cgroups of failed spawns left behind: {leftovers:?}");
}
