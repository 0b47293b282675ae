//! UDP: echo, daytime and time under every model (`--udp`), one datagram answered per
//! datagram, to the sender, from several sockets.

#[macro_use]
mod support;

use std::net::{SocketAddr, UdpSocket};

use support::{Server, T, check_daytime, check_time};

fn socket() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    socket.set_read_timeout(Some(T)).unwrap();
    socket
}

/// Send `payload` and wait for the one answer, which must come from the server.
fn ask(socket: &UdpSocket, server: SocketAddr, payload: &[u8]) -> Vec<u8> {
    socket.send_to(payload, server).expect("send");
    let mut buf = vec![0u8; 65_536];
    let (n, from) = socket.recv_from(&mut buf).unwrap_or_else(|e| panic!("no answer from {server}: {e}"));
    assert_eq!(from, server, "the answer comes from the server's address");
    buf.truncate(n);
    buf
}

fn echo(model: &str) {
    let server = Server::serve("echo", model, &["--udp"]);
    assert!(server.ready.contains("(udp)"), "{}", server.ready);
    let (a, b) = (socket(), socket());
    let mut asked = 0;
    for i in 0..5 {
        for (name, s) in [("a", &a), ("b", &b)] {
            let payload = format!("datagram {i} from {name}\n");
            assert_eq!(ask(s, server.addr, payload.as_bytes()), payload.as_bytes(), "{model}");
            asked += 1;
        }
    }
    // A large datagram comes back whole.
    let big: Vec<u8> = (0..8000u32).map(|i| (i % 256) as u8).collect();
    assert!(ask(&a, server.addr, &big) == big, "{model}: an 8000-byte datagram");
    asked += 1;
    let stopped = server.stop_clean();
    assert_eq!(stopped.counts(), (asked, 0), "{model}: {}", stopped.stopped_line());
}

fn daytime(model: &str) {
    let server = Server::serve("daytime", model, &["--udp"]);
    let s = socket();
    for payload in [&b"\n"[..], b"anything at all", b""] {
        check_daytime(&ask(&s, server.addr, payload));
    }
    let stopped = server.stop_clean();
    assert_eq!(stopped.counts(), (3, 0), "{model}: {}", stopped.stopped_line());
}

fn time(model: &str) {
    let server = Server::serve("time", model, &["--udp"]);
    let s = socket();
    for payload in [&b"\n"[..], b"what time is it?"] {
        check_time(&ask(&s, server.addr, payload));
    }
    let stopped = server.stop_clean();
    assert_eq!(stopped.counts(), (2, 0), "{model}: {}", stopped.stopped_line());
}

mod echo {
    per_model!(super::echo);
}

mod daytime {
    per_model!(super::daytime);
}

mod time {
    per_model!(super::time);
}

/// A UDP socket on a privileged loopback port (the tests run as root), any free one: every port
/// below 1024 is refused alike.
fn privileged_socket() -> UdpSocket {
    let socket = (600..1024)
        .rev()
        .find_map(|port| UdpSocket::bind(("127.0.0.1", port)).ok())
        .expect("a free UDP port below 1024 (the tests run as root)");
    socket.set_read_timeout(Some(T)).unwrap();
    socket
}

/// Whether anything is waiting on `socket`, without waiting.
fn has_datagram(socket: &UdpSocket) -> bool {
    socket.set_nonblocking(true).unwrap();
    let waiting = socket.recv_from(&mut [0u8; 1024]).is_ok();
    socket.set_nonblocking(false).unwrap();
    waiting
}

/// A datagram from a privileged source port (another host's echo or chargen, say) is dropped,
/// as xinetd's `bad_port_check` drops it; others are answered as before.
fn privileged_source_is_dropped(model: &str) {
    let server = Server::serve("echo", model, &["--udp"]);
    let (bad, good) = (privileged_socket(), socket());
    bad.send_to(b"from a privileged port", server.addr).unwrap();
    // Answered after the first was taken off the socket (it was queued first).
    assert_eq!(ask(&good, server.addr, b"from an ephemeral port"), b"from an ephemeral port");
    let stopped = server.stop_clean();
    assert!(!has_datagram(&bad), "{model}: no answer to {:?}", bad.local_addr());
    assert_eq!(stopped.counts(), (1, 1), "{model}: one answered, one refused: {}", stopped.stopped_line());
}

mod privileged_source {
    per_model!(super::privileged_source_is_dropped);
}

/// The IPv4 and UDP headers and `payload`, from `from` to `to`. The kernel fills in the IP
/// checksum, length and id of a raw IPPROTO_RAW send; a UDP checksum of zero means none.
fn spoofed_datagram(from: SocketAddr, to: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let (SocketAddr::V4(from), SocketAddr::V4(to)) = (from, to) else { panic!("IPv4 only") };
    let udp_len = 8 + payload.len() as u16;
    let mut packet = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    packet.extend_from_slice(&from.ip().octets());
    packet.extend_from_slice(&to.ip().octets());
    packet[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
    packet.extend_from_slice(&from.port().to_be_bytes());
    packet.extend_from_slice(&to.port().to_be_bytes());
    packet.extend_from_slice(&udp_len.to_be_bytes());
    packet.extend_from_slice(&[0, 0]);
    packet.extend_from_slice(payload);
    packet
}

/// A datagram spoofed from the server's own address and port would have echo answer itself
/// forever; it is dropped. Sent through a raw socket, which needs root (CAP_NET_RAW).
#[test]
fn a_datagram_spoofed_from_the_server_itself_does_not_loop() {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let raw = match Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255))) {
        Ok(raw) => raw,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            eprintln!("skipped: a raw socket needs CAP_NET_RAW ({e})");
            return;
        }
        Err(e) => panic!("raw socket: {e}"),
    };
    let server = Server::serve("echo", "event", &["--udp"]);
    let packet = spoofed_datagram(server.addr, server.addr, b"loop");
    raw.send_to(&packet, &SockAddr::from(server.addr)).expect("send the spoofed datagram");
    // The event model takes datagrams in order: once this is answered, the spoofed one was seen.
    let s = socket();
    assert_eq!(ask(&s, server.addr, b"after"), b"after");
    let stopped = server.stop_clean();
    assert_eq!(stopped.counts(), (1, 1), "the spoofed datagram is refused once: {}", stopped.stopped_line());
}

/// One source flooding gets its burst, then the rate; another source address is answered.
#[test]
fn a_flood_from_one_source_is_rate_limited_while_another_is_answered() {
    let server = Server::serve("echo", "event", &["--udp", "--udp-rate", "1", "--udp-burst", "5"]);
    let flood = socket();
    for i in 0..50 {
        flood.send_to(format!("flood {i}").as_bytes(), server.addr).unwrap();
    }
    // 127.0.0.2 is another source address on loopback, with a bucket of its own.
    let other = UdpSocket::bind("127.0.0.2:0").unwrap();
    other.set_read_timeout(Some(T)).unwrap();
    assert_eq!(ask(&other, server.addr, b"another source"), b"another source");
    // Answered after the flood was taken off the socket: its answers are all in.
    let mut answered = 0;
    while has_datagram(&flood) {
        answered += 1;
    }
    // The burst, and at most one more if a second went by.
    assert!((5..=6).contains(&answered), "the flood got {answered} answers");
    let stopped = server.stop_clean();
    assert_eq!(stopped.counts(), (answered + 1, 50 - answered), "{}", stopped.stopped_line());
}
