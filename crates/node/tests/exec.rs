//! inetd's two contracts: `nowait` (a child per connection, with tcpserver's environment) and
//! `wait` (the listener handed over, with systemd's variables), over TCP and UDP.

mod support;

use std::net::UdpSocket;
use std::time::Duration;

use support::{RESPONDER, TestNode, exchange, open};

#[test]
fn nowait_child_gets_the_connection_and_tcpservers_environment() {
    let node = TestNode::start(&format!(
        r#"
[[service]]
name = "hello"
port = 0
server = "{RESPONDER}"
env = {{ GREETING = "hi" }}
[[service]]
name = "env"
port = 0
server = "/bin/sh"
server_args = ["-c", "echo $PROTO $TCPLOCALIP $TCPLOCALPORT $TCPREMOTEIP $TCPREMOTEPORT $TCPCONNNUM $GREETING ${{TCPREMOTEHOST-unset}}"]
env = ["GREETING=hi"]
"#
    ));
    let reply = exchange(node.addr("hello"), b"");
    assert!(reply.starts_with("pid=") && reply.contains("remote=127.0.0.1"), "{reply}");
    let addr = node.addr("env");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let local = stream.local_addr().unwrap();
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut stream, &mut reply).unwrap();
    let expected = format!("TCP 127.0.0.1 {} 127.0.0.1 {} 1 hi unset\n", addr.port(), local.port());
    assert_eq!(reply, expected);
}

#[test]
fn nowait_input_reaches_the_child() {
    let node = TestNode::start(
        r#"
[[service]]
name = "upper"
port = 0
server = "/usr/bin/tr"
server_args = ["a-z", "A-Z"]
"#,
    );
    assert_eq!(exchange(node.addr("upper"), b"shout\n"), "SHOUT\n");
    node.until("the child to be reaped", |s| s.service("upper").unwrap().running == 0);
}

#[test]
fn wait_tcp_hands_over_the_listener_until_the_child_exits() {
    let node = TestNode::start(&format!(
        r#"
[[service]]
name = "waiter"
port = 0
wait = true
server = "{RESPONDER}"
server_args = ["wait-tcp", "2"]
"#
    ));
    let addr = node.addr("waiter");
    let first = exchange(addr, b"");
    let second = exchange(addr, b"");
    let pid = |line: &str| line.split_whitespace().next().unwrap().to_string();
    assert_eq!(pid(&first), pid(&second), "one child accepts both connections: {first} {second}");
    let listen_pid = first.split_whitespace().nth(1).unwrap().trim_start_matches("listen_pid=");
    assert_eq!(format!("pid={listen_pid}"), pid(&first), "LISTEN_PID is the child's pid");
    assert!(first.contains("listen_fds=1 names=waiter"), "{first}");
    let third = exchange(addr, b"");
    assert_ne!(pid(&third), pid(&first), "after the child exits the node watches again and starts another");
}

#[test]
fn wait_udp_hands_over_the_socket() {
    let node = TestNode::start(&format!(
        r#"
[[service]]
name = "dgram"
protocol = "udp"
port = 0
wait = true
server = "{RESPONDER}"
server_args = ["wait-udp", "2"]
"#
    ));
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut replies = Vec::new();
    for _ in 0..3 {
        client.send_to(b"x", node.addr("dgram")).unwrap();
        let mut buf = [0; 512];
        let n = client.recv(&mut buf).unwrap();
        replies.push(String::from_utf8_lossy(&buf[..n]).split_whitespace().next().unwrap().to_string());
    }
    assert_eq!(replies[0], replies[1], "one child answers both datagrams");
    assert_ne!(replies[1], replies[2], "a new child once the first exits");
}

#[test]
fn udp_nowait_exec_is_refused_at_load() {
    let err = warren_node::toml_config::parse(
        "[[service]]\nname = \"u\"\nprotocol = \"udp\"\nport = 0\nserver = \"/bin/true\"\n",
        "t",
    )
    .unwrap_err();
    assert!(err.to_string().contains("wait = yes"), "{err}");
}

#[test]
fn process_settings_apply_before_exec() {
    let node = TestNode::start(
        r#"
[[service]]
name = "settings"
port = 0
server = "/bin/sh"
server_args = ["-c", "ulimit -n; umask; cut -d' ' -f19 /proc/self/stat; id -u; id -G"]
rlimit_files = 64
umask = "027"
nice = 5
user = "nobody"
"#,
    );
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let reply = exchange(node.addr("settings"), b"");
    let expected = format!("64\n0027\n5\n{}\n{}\n", nobody.uid, nobody.gid);
    if nix::unistd::geteuid().is_root() {
        assert_eq!(reply, expected);
    } else {
        assert!(reply.is_empty(), "without root the switch to nobody fails and the child never runs: {reply}");
    }
}

#[test]
fn a_missing_program_is_a_failed_start_not_a_dead_node() {
    let node = TestNode::start("[[service]]\nname = \"ghost\"\nport = 0\nserver = \"/nonexistent/ghost\"\n");
    assert_eq!(exchange(node.addr("ghost"), b""), "");
    let (_, line) = open(node.addr("ghost"));
    assert_eq!(line, "");
    assert_eq!(node.status().service("ghost").unwrap().running, 0);
}

#[test]
fn a_burst_larger_than_one_accept_batch_is_served_in_full() {
    let node =
        TestNode::start("[[service]]\nname = \"burst\"\nport = 0\nserver = \"/bin/echo\"\nserver_args = [\"ok\"]\n");
    let addr = node.addr("burst");
    // All connect before any is read: the node sees one edge for the whole backlog.
    let streams: Vec<std::net::TcpStream> = (0..150).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
    for mut stream in streams {
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut reply = String::new();
        std::io::Read::read_to_string(&mut stream, &mut reply).unwrap();
        assert_eq!(reply, "ok\n");
    }
}
