//! The client side of the agent protocol, blocking: requests on a connection, one answer each.
//! Nodes use it to send a frozen agent on; `warren agents` uses it to follow one.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::wire::{FRAMING, Request, Response, try_encode};

/// How long a connection may take to open.
const CONNECT_WITHIN: Duration = Duration::from_secs(5);

/// Sends `request` to the agent host at `addr` on a new connection and reads its one answer,
/// waiting at most `within` for each read.
pub fn ask(addr: SocketAddr, request: &Request, within: Duration) -> Result<Response, String> {
    Connection::open(addr, within)?.ask(request)
}

/// A connection to an agent host, for requests one after another (a snapshot's parts).
#[derive(Debug)]
pub struct Connection {
    addr: SocketAddr,
    stream: TcpStream,
    within: Duration,
    buf: Vec<u8>,
}

impl Connection {
    /// Connects to `addr`; each answer may take `within`.
    pub fn open(addr: SocketAddr, within: Duration) -> Result<Connection, String> {
        let stream = TcpStream::connect_timeout(&addr, CONNECT_WITHIN)
            .map_err(|error| format!("cannot reach the agent host at {addr}: {error}"))?;
        stream.set_read_timeout(Some(within)).map_err(|error| error.to_string())?;
        Ok(Connection { addr, stream, within, buf: Vec::new() })
    }

    /// Sends `request` and reads its answer.
    pub fn ask(&mut self, request: &Request) -> Result<Response, String> {
        let addr = self.addr;
        let frame = try_encode(request).map_err(|len| {
            format!("the request is {len} bytes, more than a frame carries ({} MiB)", FRAMING.max >> 20)
        })?;
        self.stream.write_all(&frame).map_err(|error| format!("sending to {addr}: {error}"))?;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match FRAMING.split(&self.buf) {
                Ok(Some((body, len))) => {
                    let answer = postcard::from_bytes(body)
                        .map_err(|error| format!("{addr} answered something unreadable: {error}"));
                    self.buf.drain(..len);
                    return answer;
                }
                Ok(None) => {}
                Err(error) => return Err(format!("{addr} is not a warren agent host: {error}")),
            }
            let within = self.within;
            let n = self
                .stream
                .read(&mut chunk)
                .map_err(|error| format!("no answer from {addr} within {within:?}: {error}"))?;
            if n == 0 {
                return Err(format!("{addr} closed the connection without answering"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}
