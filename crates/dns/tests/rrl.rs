//! Response-rate limiting over UDP, on loopback: a flood from one /24 gets its burst of full
//! answers, then every second refused answer as an empty truncated one (TC=1) and the rest
//! nothing; another /24 is answered in full; TCP is not limited.
//!
//! Loopback is all of 127.0.0.0/8, so sources in different /24s are at hand: 127.0.0.1 and
//! 127.0.0.2 share 127.0.0.0/24, while 127.0.1.1 is in 127.0.1.0/24.

#[allow(dead_code)]
mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use warren_dns::{Config, RateLimit, Server};

const T: Duration = Duration::from_secs(10);

fn query(id: u16) -> Vec<u8> {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.add_query(Query::query(Name::from_ascii("web.warren.").unwrap(), RecordType::A));
    message.to_vec().unwrap()
}

fn client(ip: &str) -> UdpSocket {
    let socket = UdpSocket::bind((ip, 0)).unwrap();
    socket.set_read_timeout(Some(T)).unwrap();
    socket
}

/// Every response waiting on `socket`, without waiting for more.
fn waiting(socket: &UdpSocket) -> Vec<Message> {
    socket.set_nonblocking(true).unwrap();
    let mut responses = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match socket.recv(&mut buf) {
            Ok(n) => responses.push(Message::from_vec(&buf[..n]).unwrap()),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    socket.set_nonblocking(false).unwrap();
    responses
}

/// Ask once and wait for the answer.
fn ask(socket: &UdpSocket, server: &Server, id: u16) -> Message {
    socket.send_to(&query(id), server.local_addr()).unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("an answer");
    Message::from_vec(&buf[..n]).unwrap()
}

fn limited(responses_per_second: u32) -> Server {
    let rate_limit = RateLimit { responses_per_second, ..RateLimit::default() };
    common::start(Config { rate_limit, ..Config::default() })
}

#[test]
fn a_flood_from_one_prefix_gets_its_burst_then_truncated_slips() {
    let server = limited(5);
    let flood = client("127.0.0.1");
    for id in 0..40 {
        flood.send_to(&query(id), server.local_addr()).unwrap();
    }
    // Another /24 is answered in full. The server takes datagrams in order, so once this answer
    // is in, every answer to the flood has been sent.
    let other = client("127.0.1.1");
    let answer = ask(&other, &server, 1000);
    assert!(!answer.metadata.truncation && answer.answers.len() == 10, "{answer:?}");

    let got = waiting(&flood);
    let (slips, full): (Vec<_>, Vec<_>) = got.iter().partition(|m| m.metadata.truncation);
    // The one-second burst, and at most one more answer if a second went by.
    assert!((5..=6).contains(&full.len()), "{} full answers", full.len());
    assert!(full.iter().all(|m| m.answers.len() == 10));
    // Every second one of the 34 or 35 refused answers, as an empty answer with TC set.
    assert_eq!(slips.len(), (40 - full.len()) / 2, "{} slips of {} refused", slips.len(), 40 - full.len());
    for slip in &slips {
        assert!(slip.answers.is_empty() && slip.additionals.is_empty(), "{slip:?}");
        assert_eq!(slip.queries.len(), 1, "the question stays, so the client can match it");
    }

    // 127.0.0.2 is in the flooding /24: it shares its limit, and gets a slip or nothing.
    let neighbour = client("127.0.0.2");
    for id in 2000..2002 {
        neighbour.send_to(&query(id), server.local_addr()).unwrap();
    }
    ask(&other, &server, 1001);
    let neighbour_got = waiting(&neighbour);
    assert!(neighbour_got.iter().all(|m| m.metadata.truncation), "{neighbour_got:?}");

    // Over TCP, where the source cannot be spoofed, the same client is answered in full.
    let mut stream = TcpStream::connect(server.local_addr()).unwrap();
    stream.set_read_timeout(Some(T)).unwrap();
    let bytes = query(3000);
    stream.write_all(&[(bytes.len() as u16).to_be_bytes().as_slice(), &bytes].concat()).unwrap();
    let mut len = [0; 2];
    stream.read_exact(&mut len).unwrap();
    let mut bytes = vec![0; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut bytes).unwrap();
    let over_tcp = Message::from_vec(&bytes).unwrap();
    assert!(!over_tcp.metadata.truncation && over_tcp.answers.len() == 10, "{over_tcp:?}");
}

#[test]
fn a_rate_of_zero_answers_every_query() {
    let server = limited(0);
    let flood = client("127.0.0.1");
    for id in 0..40 {
        flood.send_to(&query(id), server.local_addr()).unwrap();
    }
    ask(&client("127.0.1.1"), &server, 1000);
    let got = waiting(&flood);
    assert_eq!(got.len(), 40);
    assert!(got.iter().all(|m| !m.metadata.truncation));
}
