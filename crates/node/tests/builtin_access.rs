//! The xinetd access rules on builtin services, under the models a builtin may use: the same
//! `only_from`, `no_access`, `access_times`, `per_source`, `cps`, `instances` and `max_load` that
//! exec services get (tests/access.rs and tests/limits.rs), and on a redirect.
//!
//! An echo connection is admitted when a line sent comes back; a refused one is closed unread.

mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::{TestNode, read_line};

const MODELS: [&str; 3] = ["event", "thread", "green"];

/// An echo builtin named `name` under `model`, on every loopback address, with `rules`.
fn echo(name: &str, model: &str, rules: &str) -> String {
    format!(
        "[[service]]\nname = \"{name}\"\nbuiltin = \"echo\"\nmodel = \"{model}\"\nbind = \"0.0.0.0\"\nport = 0\n{rules}\n"
    )
}

/// A connection from `ip` to `port` that has been echoed once (`Some`), or was refused (`None`).
fn echoed_from(ip: [u8; 4], port: u16) -> Option<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((ip, 0)).into()).unwrap();
    socket.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // A refused connection may be reset before the write; that is a refusal too.
    if stream.write_all(b"ping\n").is_err() {
        return None;
    }
    (read_line(&stream) == "ping\n").then_some(stream)
}

fn echoed(port: u16) -> Option<TcpStream> {
    echoed_from([127, 0, 0, 1], port)
}

#[test]
fn only_from_and_no_access_apply_to_builtins() {
    for model in MODELS {
        let node =
            TestNode::start(&echo("guarded", model, "only_from = [\"127.0.0.0/8\"]\nno_access = [\"127.0.0.2\"]"));
        let port = node.addr("guarded").port();
        assert!(echoed_from([127, 0, 0, 1], port).is_some(), "{model}: 127.0.0.1 is in only_from");
        assert!(echoed_from([127, 0, 0, 2], port).is_none(), "{model}: 127.0.0.2 is in no_access");
        assert!(echoed_from([127, 0, 0, 3], port).is_some(), "{model}");
        assert_eq!(node.status().service("guarded").unwrap().refused, 1, "{model}: the refusal is counted");

        let node = TestNode::start(&echo("elsewhere", model, "only_from = [\"10.0.0.0/8\"]"));
        assert!(echoed(node.addr("elsewhere").port()).is_none(), "{model}: loopback is not in 10.0.0.0/8");
    }
}

#[test]
fn access_times_apply_to_builtins() {
    let now = warren_node::access::local_minute();
    let hm = |m: u16| format!("{:02}:{:02}", (m / 60) % 24, m % 60);
    let closed = format!("access_times = [\"{}-{}\"]", hm((now + 120) % 1440), hm((now + 180) % 1440));
    let open = format!("access_times = [\"{}-{}\"]", hm((now + 1380) % 1440), hm((now + 60) % 1440));
    for model in MODELS {
        let node = TestNode::start(&(echo("closed", model, &closed) + &echo("open", model, &open)));
        assert!(echoed(node.addr("closed").port()).is_none(), "{model}: outside access_times");
        assert!(echoed(node.addr("open").port()).is_some(), "{model}: inside access_times");
    }
}

#[test]
fn instances_and_per_source_apply_to_builtins_and_are_freed() {
    for model in MODELS {
        let node = TestNode::start(&echo("held", model, "instances = 2"));
        let port = node.addr("held").port();
        let a = echoed(port).expect("first");
        let _b = echoed(port).expect("second");
        assert!(echoed(port).is_none(), "{model}: a third connection is refused while two are served");
        drop(a);
        node.until("the first connection to end", |s| s.service("held").unwrap().running == 1);
        assert!(echoed(port).is_some(), "{model}: the freed place is used again");

        let node = TestNode::start(&echo("ps", model, "per_source = 1"));
        let port = node.addr("ps").port();
        let _one = echoed_from([127, 0, 0, 1], port).expect("first from 127.0.0.1");
        assert!(echoed_from([127, 0, 0, 1], port).is_none(), "{model}: a second from the same source");
        assert!(echoed_from([127, 0, 0, 2], port).is_some(), "{model}: another source is let in");
    }
}

#[test]
fn cps_refuses_for_its_wait_then_admits_again() {
    for model in MODELS {
        let node = TestNode::start(&echo("fast", model, "cps = [2, 1]"));
        let port = node.addr("fast").port();
        let admitted: Vec<bool> = (0..3).map(|_| echoed(port).is_some()).collect();
        assert_eq!(admitted, [true, true, false], "{model}: the third within a second trips cps");
        // Refused for the wait (1 s), then served again: poll, bounded.
        let deadline = Instant::now() + Duration::from_secs(10);
        while echoed(port).is_none() {
            assert!(Instant::now() < deadline, "{model}: never admitted again after the cps wait");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn max_load_applies_to_builtins() {
    let load = warren_node::exec::load_average();
    for model in MODELS {
        let node =
            TestNode::start(&(echo("light", model, "max_load = 1000") + &echo("heavy", model, "max_load = 0.001")));
        assert!(echoed(node.addr("light").port()).is_some(), "{model}");
        if load >= 0.001 {
            assert!(echoed(node.addr("heavy").port()).is_none(), "{model}: load {load} is above max_load 0.001");
        }
    }
}

#[test]
fn only_from_applies_to_a_redirect() {
    let backend = TestNode::start(&echo("backend", "event", ""));
    let to = backend.addr("backend");
    let node = TestNode::start(&format!(
        "[[service]]\nname = \"fwd\"\nbind = \"0.0.0.0\"\nport = 0\nredirect = \"{} {}\"\nonly_from = [\"127.0.0.2\"]\n",
        to.ip(),
        to.port()
    ));
    let port = node.addr("fwd").port();
    assert!(echoed_from([127, 0, 0, 2], port).is_some(), "relayed to the echo backend");
    assert!(echoed_from([127, 0, 0, 1], port).is_none(), "127.0.0.1 is not in only_from");
}

#[test]
fn only_from_applies_to_each_datagram_of_a_udp_builtin() {
    use std::net::UdpSocket;
    let node = TestNode::start(
        "[[service]]\nname = \"echo-udp\"\nbuiltin = \"echo\"\nprotocol = \"udp\"\nbind = \"0.0.0.0\"\nport = 0\nonly_from = [\"127.0.0.2\"]\n",
    );
    let to = SocketAddr::from(([127, 0, 0, 1], node.addr("echo-udp").port()));
    let denied = UdpSocket::bind("127.0.0.1:0").unwrap();
    let allowed = UdpSocket::bind("127.0.0.2:0").unwrap();
    allowed.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    denied.send_to(b"from 127.0.0.1", to).unwrap();
    allowed.send_to(b"from 127.0.0.2", to).unwrap();
    let mut buf = [0u8; 64];
    let n = allowed.recv(&mut buf).expect("an answer to the allowed source");
    assert_eq!(&buf[..n], b"from 127.0.0.2");
    // The one socket's datagrams are answered in order: the denied one's turn has passed.
    denied.set_nonblocking(true).unwrap();
    let unanswered = denied.recv(&mut buf).map(|n| buf[..n].to_vec());
    assert_eq!(unanswered.map_err(|e| e.kind()), Err(std::io::ErrorKind::WouldBlock), "127.0.0.1 got no answer");
}

#[test]
fn a_builtin_without_rules_still_counts_its_connections() {
    for model in MODELS {
        let node = TestNode::start(&echo("plain", model, ""));
        let port = node.addr("plain").port();
        let a = echoed(port).expect("first");
        let _b = echoed(port).expect("second");
        node.until("two connections counted as running", |s| s.service("plain").unwrap().running == 2);
        drop(a);
        node.until("the first connection to end", |s| s.service("plain").unwrap().running == 1);
        let status = node.status();
        let plain = status.service("plain").unwrap();
        assert_eq!((plain.spawned, plain.refused), (2, 0), "{model}: started and refused since the start");
    }
}
