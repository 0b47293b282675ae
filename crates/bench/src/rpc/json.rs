//! The JSON path's caller: `POST /v1/objects/HelloServer/sayHello` with `[]`, on a keep-alive
//! HTTP/1.1 connection of its own (HTTP/1.1 answers one request at a time per connection, so
//! N calls in flight take N connections), the answer checked to be `"Hello World!"`.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::load::Caller;

/// The request, whole: what curl would send.
const REQUEST: &[u8] = b"POST /v1/objects/HelloServer/sayHello HTTP/1.1\r\nHost: bench\r\n\
Content-Type: application/json\r\nContent-Length: 2\r\n\r\n[]";
const ANSWER: &[u8] = b"\"Hello World!\"";
/// The largest response head read.
const MAX_HEAD: usize = 8 * 1024;

/// One keep-alive connection; after a failure the next call opens another.
#[derive(Debug)]
pub struct JsonCaller {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl JsonCaller {
    pub fn new(addr: SocketAddr) -> JsonCaller {
        JsonCaller { addr, stream: None, buf: Vec::with_capacity(1024) }
    }

    async fn exchange(&mut self) -> Result<(), String> {
        let stream = match &mut self.stream {
            Some(stream) => stream,
            None => {
                let stream = TcpStream::connect(self.addr).await.map_err(|e| format!("connect: {e}"))?;
                stream.set_nodelay(true).map_err(|e| e.to_string())?;
                self.buf.clear();
                self.stream.insert(stream)
            }
        };
        stream.write_all(REQUEST).await.map_err(|e| format!("send: {e}"))?;
        loop {
            if let Some(response) = parse_response(&self.buf)? {
                let ok = response.status == 200 && response.body == ANSWER;
                let answer =
                    (!ok).then(|| format!("HTTP {}: {}", response.status, String::from_utf8_lossy(response.body)));
                let used = response.len;
                self.buf.drain(..used);
                return answer.map_or(Ok(()), Err);
            }
            if self.buf.len() > MAX_HEAD + ANSWER.len() {
                return Err("the response is too large".into());
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("receive: {e}")),
            }
        }
    }
}

impl Caller for JsonCaller {
    async fn call(&mut self) -> Result<(), String> {
        let result = self.exchange().await;
        if result.is_err() {
            // Whatever state the connection is in, the next call starts afresh.
            self.stream = None;
        }
        result
    }
}

/// A whole response.
#[derive(Debug, PartialEq, Eq)]
pub struct Response<'a> {
    pub status: u16,
    pub body: &'a [u8],
    /// The bytes it took, head and body.
    pub len: usize,
}

/// The whole response at the front of `buf`; `None` while incomplete. Bodies need a
/// `Content-Length`, as the object server always sends.
pub fn parse_response(buf: &[u8]) -> Result<Option<Response<'_>>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(buf) {
        Ok(httparse::Status::Complete(head)) => head,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("a malformed response: {e}")),
    };
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .ok_or("a response without Content-Length")?;
    let length: usize = std::str::from_utf8(length.value)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or("a malformed Content-Length")?;
    let status = response.code.unwrap_or(0);
    Ok(buf.get(head..head + length).map(|body| Response { status, body, len: head + length }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ncontent-length: 14\r\n\r\n\"Hello World!\"";

    #[test]
    fn a_whole_response_and_only_a_whole_one() {
        for cut in 0..OK.len() {
            assert_eq!(parse_response(&OK[..cut]).unwrap(), None, "cut at {cut}");
        }
        let mut two = OK.to_vec();
        two.extend_from_slice(OK);
        assert_eq!(parse_response(&two).unwrap(), Some(Response { status: 200, body: ANSWER, len: OK.len() }));
    }

    #[test]
    fn errors_and_bad_responses_are_said() {
        let error = b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_response(error).unwrap(), Some(Response { status: 404, body: b"{}", len: error.len() }));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\n").unwrap_err().contains("Content-Length"));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").unwrap_err().contains("malformed"));
        assert!(parse_response(b"\x00\x01 nonsense\r\n\r\n").is_err());
    }
}
