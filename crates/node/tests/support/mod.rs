//! Starting a node in the test process and talking to its services over loopback.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use warren_node::config::Service;
use warren_node::{Hooks, NodeHandle, Status};

/// Addresses by service name, as the node reported them.
pub type Addrs = Arc<Mutex<HashMap<String, SocketAddr>>>;

struct Record(Addrs);

impl Hooks for Record {
    fn listening(&mut self, service: &Service, addr: SocketAddr) {
        self.0.lock().unwrap().insert(service.name.clone(), addr);
    }
    fn closed(&mut self, name: &str) {
        self.0.lock().unwrap().remove(name);
    }
}

/// A node running `toml` (with the status endpoint off), stopped when dropped.
pub struct TestNode {
    pub handle: Option<NodeHandle>,
    pub addrs: Addrs,
}

impl TestNode {
    pub fn start(toml: &str) -> TestNode {
        let config = warren_node::toml_config::parse(&format!("status = \"off\"\n{toml}"), "test").expect("config");
        Self::with(config)
    }

    pub fn with(config: warren_node::Config) -> TestNode {
        let addrs = Addrs::default();
        let handle = warren_node::start(config, Box::new(Record(addrs.clone()))).expect("node starts");
        TestNode { handle: Some(handle), addrs }
    }

    pub fn addr(&self, name: &str) -> SocketAddr {
        *self.addrs.lock().unwrap().get(name).unwrap_or_else(|| panic!("no service {name}"))
    }

    pub fn status(&self) -> Status {
        self.handle.as_ref().unwrap().status().unwrap()
    }

    /// Wait (bounded) until `check` holds for the node's status.
    pub fn until(&self, what: &str, check: impl Fn(&Status) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = self.status();
            if check(&status) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; status:\n{status}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.drain(Duration::from_millis(100), Duration::from_millis(100));
        }
    }
}

/// The responder program built with this crate.
pub const RESPONDER: &str = env!("CARGO_BIN_EXE_warren-responder");

/// Connect, send `input`, half-close, and read everything until the peer closes.
pub fn exchange(addr: SocketAddr, input: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(input).unwrap();
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Connect and read one line (the child's greeting), keeping the connection open.
pub fn open(addr: SocketAddr) -> (TcpStream, String) {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let line = read_line(&stream);
    (stream, line)
}

/// Read up to and including a newline (empty if the peer closed first).
pub fn read_line(mut stream: &TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0];
    while let Ok(1) = stream.read(&mut byte) {
        line.push(byte[0]);
        if byte[0] == b'\n' {
            break;
        }
    }
    String::from_utf8_lossy(&line).into_owned()
}
