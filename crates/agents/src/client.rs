//! The client side of the agent protocol, blocking: one request on a new connection, one
//! answer. Nodes use it to send a frozen agent on; `warren agents` uses it to follow one.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::wire::{FRAMING, Request, Response, try_encode};

/// How long a connection may take to open.
const CONNECT_WITHIN: Duration = Duration::from_secs(5);

/// Sends `request` to the agent host at `addr` and reads its one answer, waiting at most
/// `within` for each read.
pub fn ask(addr: SocketAddr, request: &Request, within: Duration) -> Result<Response, String> {
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_WITHIN)
        .map_err(|error| format!("cannot reach the agent host at {addr}: {error}"))?;
    stream.set_read_timeout(Some(within)).map_err(|error| error.to_string())?;
    let frame = try_encode(request)
        .map_err(|len| format!("the request is {len} bytes, more than a frame carries ({} MiB)", FRAMING.max >> 20))?;
    stream.write_all(&frame).map_err(|error| format!("sending to {addr}: {error}"))?;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match FRAMING.split(&buf) {
            Ok(Some((body, _))) => {
                return postcard::from_bytes(body)
                    .map_err(|error| format!("{addr} answered something unreadable: {error}"));
            }
            Ok(None) => {}
            Err(error) => return Err(format!("{addr} is not a warren agent host: {error}")),
        }
        let n = stream.read(&mut chunk).map_err(|error| format!("no answer from {addr} within {within:?}: {error}"))?;
        if n == 0 {
            return Err(format!("{addr} closed the connection without answering"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
