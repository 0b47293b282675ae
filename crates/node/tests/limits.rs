//! instances, per_source, cps (pause, then recover: never disabled for good) and max_load.
//! The children greet (`echo up`) and then hold the connection (`cat`) until the client closes,
//! so that a greeting proves a child runs and a close without one proves a refusal.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use support::{TestNode, open, read_line};

const HOLD: &str = r#"server = "/bin/sh"
server_args = ["-c", "echo up; exec cat"]"#;

#[test]
fn instances_are_exact_and_freed_on_exit() {
    let node = TestNode::start(&format!("[[service]]\nname = \"held\"\nport = 0\ninstances = 2\n{HOLD}\n"));
    let addr = node.addr("held");
    let (a, line_a) = open(addr);
    let (_b, line_b) = open(addr);
    assert_eq!((line_a.as_str(), line_b.as_str()), ("up\n", "up\n"));
    let (_c, line_c) = open(addr);
    assert_eq!(line_c, "", "a third connection is refused while two children run");
    assert_eq!(node.status().service("held").unwrap().running, 2);
    drop(a);
    node.until("the first child to exit", |s| s.service("held").unwrap().running == 1);
    let (_d, line_d) = open(addr);
    assert_eq!(line_d, "up\n", "the freed slot is used again");
    let held = node.status();
    let held = held.service("held").unwrap();
    assert_eq!((held.running, held.spawned, held.refused), (2, 3, 1));
}

#[test]
fn per_source_limits_each_address() {
    let node =
        TestNode::start(&format!("[[service]]\nname = \"ps\"\nbind = \"0.0.0.0\"\nport = 0\nper_source = 1\n{HOLD}\n"));
    let port = node.addr("ps").port();
    let from = |ip: [u8; 4]| {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&SocketAddr::from((ip, 0)).into()).unwrap();
        socket.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into()).unwrap();
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let line = read_line(&stream);
        (stream, line)
    };
    let (_one, first) = from([127, 0, 0, 1]);
    let (_two, second) = from([127, 0, 0, 1]);
    let (_three, other) = from([127, 0, 0, 2]);
    assert_eq!((first.as_str(), second.as_str(), other.as_str()), ("up\n", "", "up\n"));
}

#[test]
fn cps_pauses_then_recovers_without_losing_waiting_clients() {
    let node = TestNode::start(
        "[[service]]\nname = \"fast\"\nport = 0\ncps = [2, 1]\nserver = \"/bin/echo\"\nserver_args = [\"ok\"]\n",
    );
    let addr = node.addr("fast");
    let replies: Vec<String> = (0..3).map(|_| support::exchange(addr, b"")).collect();
    assert_eq!(replies, ["ok\n", "ok\n", ""], "the third connection within a second trips cps and is refused");
    assert!(node.status().service("fast").unwrap().state.starts_with("paused"));
    // Connections made during the pause wait in the backlog and are served once it ends.
    assert_eq!(support::exchange(addr, b""), "ok\n");
    assert_eq!(node.status().service("fast").unwrap().state, "listening");
}

#[test]
fn max_load_refuses_while_the_machine_is_loaded() {
    let load = warren_node::exec::load_average();
    let node = TestNode::start(&format!(
        "[[service]]\nname = \"light\"\nport = 0\nmax_load = 1000\n{HOLD}\n[[service]]\nname = \"heavy\"\nport = 0\nmax_load = 0.001\n{HOLD}\n"
    ));
    assert_eq!(open(node.addr("light")).1, "up\n");
    if load >= 0.001 {
        assert_eq!(open(node.addr("heavy")).1, "", "load {load} is above max_load 0.001");
    }
}
