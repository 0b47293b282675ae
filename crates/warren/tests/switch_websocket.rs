//! WebSocket through `warren switch --mode http`, between Python's `websockets` client and
//! server (neither written here): the handshake is passed on, the `101` comes back, and frames
//! then go both ways, large ones too, until the closing handshake ends both connections. A
//! handshake the backend does not take is answered as HTTP on a connection that goes on.

#[macro_use]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

use support::who::{backend, switch};
use support::{T, connect, http_answer, wait_bounded};

/// An echo server of Python's websockets: it greets, then answers text in capitals and binary
/// reversed. It prints its port once it listens.
const SERVER: &str = r#"
import asyncio, websockets
async def handler(ws, path=None):
    await ws.send("hello from the server")
    async for msg in ws:
        await ws.send(msg[::-1] if isinstance(msg, bytes) else msg.upper())
async def main():
    async with websockets.serve(handler, "127.0.0.1", 0) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()
asyncio.run(main())
"#;

/// The client: what it receives, one line each, then the close code.
const CLIENT: &str = r#"
import asyncio, sys, websockets
async def main():
    uri = "ws://127.0.0.1:%s/chat" % sys.argv[1]
    async with websockets.connect(uri, open_timeout=10, close_timeout=10) as ws:
        print(await asyncio.wait_for(ws.recv(), 10))
        await ws.send("ping")
        print(await asyncio.wait_for(ws.recv(), 10))
        big = bytes(range(256)) * 1024
        await ws.send(big)
        back = await asyncio.wait_for(ws.recv(), 10)
        print(back == big[::-1], len(back))
    print("closed", ws.close_code)
asyncio.run(main())
"#;

/// Debian's interpreter, whose `python3-websockets` scripts/test installs (a `python3` earlier
/// in `PATH`, such as pyenv's, may lack the module).
const PYTHON: &str = "/usr/bin/python3";

/// The Python server, stopped on drop.
struct PyServer(Child);

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn py_server() -> (PyServer, u16) {
    let mut child = Command::new(PYTHON)
        .args(["-c", SERVER])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with websockets (scripts/test installs python3-websockets)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port = line.trim().parse().unwrap_or_else(|_| panic!("no port from the websockets server: {line:?}"));
    (PyServer(child), port)
}

#[test]
fn a_websocket_goes_through_the_http_switch_both_ways_until_closed() {
    let (_server, port) = py_server();
    let sw = switch(&["--mode", "http", "--backend", &format!("127.0.0.1:{port}")]);
    let mut client = Command::new(PYTHON)
        .args(["-c", CLIENT, &sw.addr.port().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_bounded(&mut client, T * 3).expect("the websockets client finishes");
    let out = client.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(status.success(), "client failed: {stdout}\n{stderr}");
    assert_eq!(stdout, "hello from the server\nPING\nTrue 262144\nclosed 1000\n");
    sw.stop_clean();
}

#[test]
fn a_handshake_the_backend_declines_is_answered_as_http_on_a_connection_that_goes_on() {
    let web = backend("web");
    let sw = switch(&["--mode", "http", "--backend", &web.addr.to_string()]);
    let mut stream = connect(sw.addr);
    stream
        .write_all(
            b"GET /who.txt HTTP/1.1\r\nHost: warren\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
    assert_eq!(http_answer(&mut stream, T).unwrap(), "HTTP/1.1 200 OK");
    stream.write_all(b"GET /who.txt HTTP/1.1\r\nHost: warren\r\n\r\n").unwrap();
    assert_eq!(http_answer(&mut stream, T).unwrap(), "HTTP/1.1 200 OK", "the connection went on as HTTP");
    drop(stream);
    sw.stop_clean();
}
