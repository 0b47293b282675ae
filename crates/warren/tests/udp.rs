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
