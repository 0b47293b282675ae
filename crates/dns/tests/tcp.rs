//! The TCP side's framing and limits, with raw sockets: pipelined queries, the idle timeout, the
//! connection limit and oversized frames.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use warren_dns::{Config, Server};

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let bytes = message.to_vec().unwrap();
    [(bytes.len() as u16).to_be_bytes().as_slice(), &bytes].concat()
}

fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(server.local_addr()).unwrap();
    // An upper bound for every read below, never reached when the server behaves.
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

fn read_response(stream: &mut TcpStream) -> Message {
    let mut len = [0; 2];
    stream.read_exact(&mut len).unwrap();
    let mut bytes = vec![0; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut bytes).unwrap();
    Message::from_vec(&bytes).unwrap()
}

/// The server closed the connection: a read ends the stream (or is reset) before the timeout.
fn assert_closed(stream: &mut TcpStream) {
    let mut byte = [0; 1];
    match stream.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected the server to close the connection, got {other:?}"),
    }
}

#[test]
fn pipelined_queries_are_answered_in_order() {
    let server = common::start(Config::default());
    let mut stream = connect(&server);
    let queries = [query(1, "web.warren."), query(2, "nobody.warren."), query(3, "big.warren.")].concat();
    // Byte by byte: frames split anywhere still parse.
    for byte in &queries[..20] {
        stream.write_all(&[*byte]).unwrap();
    }
    stream.write_all(&queries[20..]).unwrap();
    let responses: Vec<Message> = (0..3).map(|_| read_response(&mut stream)).collect();
    let answers: Vec<(u16, usize)> = responses.iter().map(|m| (m.metadata.id, m.answers.len())).collect();
    assert_eq!(answers, [(1, 10), (2, 0), (3, 100)]);
    let mut web: Vec<IpAddr> = responses[0].answers.iter().map(|r| r.data.ip_addr().unwrap()).collect();
    web.sort();
    assert_eq!(web, common::web_addresses());
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_closed(&mut stream);
}

#[test]
fn idle_connections_are_closed() {
    let config = Config { tcp_idle_timeout: Duration::from_millis(200), ..Config::default() };
    let server = common::start(config);
    let mut silent = connect(&server);
    assert_closed(&mut silent);
    // A query started but never finished is cut off the same way.
    let mut slow = connect(&server);
    slow.write_all(&query(1, "web.warren.")[..5]).unwrap();
    assert_closed(&mut slow);
}

#[test]
fn connections_over_the_limit_are_closed_at_once() {
    let server = common::start(Config { max_tcp_connections: 2, ..Config::default() });
    let mut first = connect(&server);
    let mut second = connect(&server);
    for stream in [&mut first, &mut second] {
        stream.write_all(&query(7, "web.warren.")).unwrap();
        assert_eq!(read_response(stream).metadata.id, 7);
    }
    let mut third = connect(&server);
    assert_closed(&mut third);
    // Once one closes its slot is free again; the server notices the close asynchronously, so
    // a bounded number of fresh connections may still be refused before one is served.
    drop(first);
    let served = (0..100).any(|_| {
        let mut next = connect(&server);
        next.write_all(&query(8, "web.warren.")).is_ok() && {
            let mut len = [0; 2];
            next.read_exact(&mut len).is_ok()
        }
    });
    assert!(served, "a connection was served after one closed");
    // The one still open keeps working.
    second.write_all(&query(9, "web.warren.")).unwrap();
    assert_eq!(read_response(&mut second).metadata.id, 9);
}

#[test]
fn oversized_and_empty_frames_close_the_connection() {
    let server = common::start(Config::default());
    let mut oversized = connect(&server);
    oversized.write_all(&5000u16.to_be_bytes()).unwrap();
    assert_closed(&mut oversized);
    let mut empty = connect(&server);
    empty.write_all(&[0, 0]).unwrap();
    assert_closed(&mut empty);
}

#[test]
fn shutdown_closes_open_connections() {
    let server = common::start(Config::default());
    let mut stream = connect(&server);
    stream.write_all(&query(1, "web.warren.")).unwrap();
    read_response(&mut stream);
    server.shutdown();
    assert_closed(&mut stream);
}
