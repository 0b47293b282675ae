//! Helpers shared by the file-service tests: a server on a fresh root, its control endpoint,
//! raw uploads that stream until told to stop.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use warren_fileserver::Connection;
use warren_fileserver::wire::{Reply, Request};

use crate::support::{Server, T, command, run};

/// Runs `warren files ARGS`, which must succeed: its standard output and error.
pub fn files_cli(args: &[&str]) -> (String, String) {
    let mut all = vec!["files"];
    all.extend_from_slice(args);
    let (status, out, err) = run(command(&all), b"", T);
    assert!(status.success(), "{args:?}: {err}");
    (out, err)
}

/// A fresh root for `tag`.
pub fn root(tag: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("warren-files-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    root
}

/// A server anyone may write to without limit (the tests about rights and quotas use
/// [`serve_strict`]): `warren files serve --root ROOT --model MODEL -d 0 ... EXTRA`.
pub fn serve(root: &Path, model: &str, extra: &[&str]) -> Server {
    let open = ["--anonymous", "write", "--max-upload", "1099511627776", "--max-in-flight", "1152921504606846976"];
    let mut all = open.to_vec();
    all.extend_from_slice(extra);
    serve_strict(root, model, &all)
}

/// `warren files serve --root ROOT --model MODEL -d 0 EXTRA`, with the defaults of rights and
/// quotas.
pub fn serve_strict(root: &Path, model: &str, extra: &[&str]) -> Server {
    let mut args = vec!["files", "serve", "--root", root.to_str().unwrap(), "--model", model, "-d", "0"];
    args.extend_from_slice(extra);
    Server::spawn(&args)
}

/// The control endpoint's address, from the readiness line.
pub fn control(server: &Server) -> SocketAddr {
    let after = server.ready.split("control ").nth(1).expect("a control endpoint");
    after.split(')').next().unwrap().parse().unwrap()
}

pub fn conn(addr: SocketAddr) -> Connection {
    Connection::connect(addr, T).unwrap()
}

/// Partial uploads under `root`.
pub fn partials(root: &Path) -> usize {
    std::fs::read_dir(root.join(".warren/tmp")).map_or(0, |d| d.count())
}

/// Send one control `Cancel`; its reply.
pub fn cancel(control: SocketAddr, id: u64) -> Reply {
    let mut c = conn(control);
    c.send(&Request::Cancel { id }).unwrap();
    c.next_frame().unwrap()
}

/// An upload declared `size` bytes long, of which the client sends what it is told to.
pub struct Upload {
    pub stream: TcpStream,
    /// The id the server gave it.
    pub id: u64,
    pub sent: u64,
    buf: Vec<u8>,
}

impl Upload {
    /// Send `Put` and wait for the server's `Ready`.
    pub fn start(addr: SocketAddr, path: &str, size: u64) -> Upload {
        let mut up = Upload::request(addr, path, size);
        match up.reply() {
            Reply::Ready { id } => up.id = id,
            other => panic!("upload of {path} not ready: {other:?}"),
        }
        up
    }

    /// Send `Put` only: its answer is the caller's.
    pub fn request(addr: SocketAddr, path: &str, size: u64) -> Upload {
        let mut stream = crate::support::connect(addr);
        let mut head = Vec::new();
        Request::Put { size, path: path.into() }.encode(&mut head);
        stream.write_all(&head).unwrap();
        Upload::from_stream(stream)
    }

    /// An upload on a connection whose frames the caller wrote.
    pub fn from_stream(stream: TcpStream) -> Upload {
        Upload { stream, id: 0, sent: 0, buf: Vec::new() }
    }

    /// Send about `n` bytes.
    pub fn send(&mut self, n: usize) {
        let chunk = vec![0x5a; n];
        self.stream.write_all(&chunk).unwrap();
        self.sent += n as u64;
    }

    /// Send without blocking until the server's window is closed: `min_unsent` bytes sit unsent
    /// in this socket (bounded by `T`).
    pub fn stall(&mut self, min_unsent: usize) {
        socket2::SockRef::from(&self.stream).set_send_buffer_size(4 << 20).unwrap();
        self.stream.set_nonblocking(true).unwrap();
        let chunk = vec![0x5a; 64 * 1024];
        let end = Instant::now() + T;
        while unsent(&self.stream) < min_unsent {
            assert!(Instant::now() < end, "the upload never stalled");
            match self.stream.write(&chunk) {
                Ok(n) => self.sent += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("write: {e}"),
            }
        }
        self.stream.set_nonblocking(false).unwrap();
    }

    /// The urgent byte.
    pub fn urgent(&self) {
        assert_eq!(socket2::SockRef::from(&self.stream).send_out_of_band(&[0xff]).unwrap(), 1);
    }

    /// The next reply on the data connection.
    pub fn reply(&mut self) -> Reply {
        loop {
            if let Some((reply, used)) = Reply::decode(&self.buf).unwrap() {
                self.buf.drain(..used);
                return reply;
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("the server closed before a reply"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("no reply: {e}"),
            }
        }
    }

    /// Half-close and read to a clean end of file (no reset racing the answer).
    pub fn finish(mut self) {
        self.stream.shutdown(std::net::Shutdown::Write).unwrap();
        let (_, end) = crate::support::read_all(&mut self.stream, T);
        assert_eq!(end, crate::support::End::Eof, "the connection must end cleanly");
    }
}

/// Bytes queued in `stream` and not yet sent (`SIOCOUTQNSD`).
pub fn unsent(stream: &TcpStream) -> usize {
    let mut n: nix::libc::c_int = 0;
    // SAFETY: SIOCOUTQNSD writes one int through the pointer, which points to ours.
    let rc = unsafe { nix::libc::ioctl(stream.as_raw_fd(), nix::libc::SIOCOUTQNSD, &mut n) };
    assert!(rc >= 0);
    n as usize
}
