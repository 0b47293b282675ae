//! A blocking client of the file service, and the fetch that goes through a [`Cache`].

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::cache::{Cache, Lookup};
use crate::wire::{ClientKey, Entry, ErrorCode, Meta, Reply, Request, Right, WireError};

/// Why a request failed, as the client sees it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("bad frame from the server: {0}")]
    Wire(#[from] WireError),
    #[error("server: {code}: {message}")]
    Server { code: ErrorCode, message: String },
    #[error("upload cancelled after {received} bytes")]
    Cancelled { received: u64 },
    #[error("unexpected answer {0:?}")]
    Unexpected(Box<Reply>),
    /// The peer's first answer never came, or was not a file server's frame.
    #[error("{addr} {what}; expected a warren file server (is it the right server?)")]
    NotAFileServer { addr: SocketAddr, what: String },
}

/// What `Welcome` says: the lease length, and the identity this connection speaks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Welcome {
    pub lease: Duration,
    pub client: u64,
    pub key: ClientKey,
}

/// The most pages [`Connection::list`] asks for: 65,536 pages of at least one entry each is
/// more than any directory a client should list in one go, and a server that never stops
/// cannot hold the client.
const MAX_PAGES: usize = 1 << 16;

/// One connection to a file server.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
    callbacks: Vec<String>,
    peer: SocketAddr,
    /// Until the first frame arrives: when it must have arrived by, and how long that was. Then
    /// the read timeout becomes `io_timeout`.
    first_answer: Option<(Instant, Duration)>,
    io_timeout: Duration,
}

impl Connection {
    /// Connect, with `timeout` for the connect and for every read and write after it.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Self> {
        Self::connect_expecting(addr, timeout, timeout)
    }

    /// Connect within `first_answer`, and give up on a peer whose first answer does not come
    /// within `first_answer` or is not a file server's frame ([`ClientError::NotAFileServer`]);
    /// every read and write after it has `io_timeout`. As OpenSSH's `ConnectTimeout`: a peer
    /// that is not a file server is told quickly, a slow transfer later is not cut short.
    pub fn connect_expecting(addr: SocketAddr, first_answer: Duration, io_timeout: Duration) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, first_answer)?;
        stream.set_read_timeout(Some(first_answer))?;
        stream.set_write_timeout(Some(io_timeout))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::new(),
            callbacks: Vec::new(),
            peer: addr,
            first_answer: Some((Instant::now() + first_answer, first_answer)),
            io_timeout,
        })
    }

    /// The socket, for what this type does not do (urgent data, half-closes).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn send(&mut self, request: &Request) -> io::Result<()> {
        let mut bytes = Vec::new();
        request.encode(&mut bytes);
        self.stream.write_all(&bytes)
    }

    /// The next frame, callbacks included.
    pub fn next_frame(&mut self) -> Result<Reply, ClientError> {
        let Some((_, waited)) = self.first_answer else { return self.read_frame() };
        let frame = self.read_frame().map_err(|e| self.not_a_file_server(e, waited))?;
        self.first_answer = None;
        self.stream.set_read_timeout(Some(self.io_timeout))?;
        Ok(frame)
    }

    /// A failure before the peer's first frame, told as what it means: whatever the peer is, it
    /// is not a file server. Never a raw OS error.
    fn not_a_file_server(&self, e: ClientError, waited: Duration) -> ClientError {
        let what = match &e {
            ClientError::Io(io) => match io.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut if self.buf.is_empty() => {
                    format!("did not answer within {waited:?}")
                }
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    format!("sent {} bytes but no whole frame within {waited:?}", self.buf.len())
                }
                io::ErrorKind::UnexpectedEof => "closed the connection without answering".to_owned(),
                io::ErrorKind::ConnectionReset => "reset the connection".to_owned(),
                kind => format!("could not be read from ({kind})"),
            },
            ClientError::Wire(wire) => format!("answered with bytes that are not a frame ({wire})"),
            _ => return e,
        };
        ClientError::NotAFileServer { addr: self.peer, what }
    }

    fn read_frame(&mut self) -> Result<Reply, ClientError> {
        loop {
            if let Some((reply, used)) = Reply::decode(&self.buf)? {
                self.buf.drain(..used);
                return Ok(reply);
            }
            if let Some((by, _)) = self.first_answer {
                // A deadline, not a timeout per read: a peer trickling bytes cannot stretch it.
                let left = by.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::from(io::ErrorKind::TimedOut).into());
                }
                self.stream.set_read_timeout(Some(left))?;
            }
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk)? {
                0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
                n => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next answer; callbacks that come first are kept for [`Connection::take_callbacks`].
    /// An `Error` frame becomes [`ClientError::Server`].
    pub fn reply(&mut self) -> Result<Reply, ClientError> {
        loop {
            match self.next_frame()? {
                Reply::Callback { path } => self.callbacks.push(path),
                Reply::Error { code, message } => return Err(ClientError::Server { code, message }),
                reply => return Ok(reply),
            }
        }
    }

    /// The paths called back so far.
    pub fn take_callbacks(&mut self) -> Vec<String> {
        std::mem::take(&mut self.callbacks)
    }

    /// Read a body of `size` bytes into `into`.
    pub fn read_body(&mut self, size: u64, into: &mut impl Write) -> Result<(), ClientError> {
        let buffered = (size.min(self.buf.len() as u64)) as usize;
        into.write_all(&self.buf[..buffered])?;
        self.buf.drain(..buffered);
        let mut left = size - buffered as u64;
        let mut chunk = vec![0u8; 64 * 1024];
        while left > 0 {
            let want = left.min(chunk.len() as u64) as usize;
            let n = self.stream.read(&mut chunk[..want])?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
            into.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        Ok(())
    }

    /// Present a credential; the right it gives.
    pub fn auth(&mut self, token: &str) -> Result<Right, ClientError> {
        self.send(&Request::Auth { token: token.into() })?;
        match self.reply()? {
            Reply::Authorized { right } => Ok(right),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Speak for client identity `client` (0: ask for a new one) proven by `key`: the callbacks
    /// it missed arrive first (kept), then the welcome with the identity to keep.
    pub fn hello(&mut self, client: u64, key: ClientKey) -> Result<Welcome, ClientError> {
        self.send(&Request::Hello { client, key })?;
        match self.reply()? {
            Reply::Welcome { lease_ms, client, key } => {
                Ok(Welcome { lease: Duration::from_millis(lease_ms.into()), client, key })
            }
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    pub fn stat(&mut self, path: &str) -> Result<Meta, ClientError> {
        self.send(&Request::Stat { path: path.into() })?;
        match self.reply()? {
            Reply::Stat(meta) => Ok(meta),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// One page of a directory: the entries after `after`, and whether more follow.
    pub fn list_page(&mut self, path: &str, after: &str) -> Result<(Vec<Entry>, bool), ClientError> {
        self.send(&Request::List { path: path.into(), after: after.into() })?;
        match self.reply()? {
            Reply::List { truncated, entries } => Ok((entries, truncated)),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// A whole directory, page after page; `true` if it was cut at [`MAX_PAGES`].
    pub fn list(&mut self, path: &str) -> Result<(Vec<Entry>, bool), ClientError> {
        let mut all: Vec<Entry> = Vec::new();
        for _ in 0..MAX_PAGES {
            let after = all.last().map_or("", |e| e.name.as_str()).to_owned();
            let (page, more) = self.list_page(path, &after)?;
            if page.first().is_some_and(|e| e.name <= after) && !after.is_empty() {
                return Err(io::Error::other("the server listed names out of order").into());
            }
            let empty = page.is_empty();
            all.extend(page);
            if !more || empty {
                return Ok((all, false));
            }
        }
        Ok((all, true))
    }

    pub fn delete(&mut self, path: &str) -> Result<(), ClientError> {
        self.send(&Request::Delete { path: path.into() })?;
        match self.reply()? {
            Reply::Deleted => Ok(()),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Fetch `path` without a cache: its version and bytes.
    pub fn get(&mut self, path: &str) -> Result<(u64, Vec<u8>), ClientError> {
        self.send(&Request::Get { path: path.into(), have: 0 })?;
        match self.reply()? {
            Reply::File { version, size, .. } => {
                let mut data = Vec::new();
                self.read_body(size, &mut data)?;
                Ok((version, data))
            }
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Upload `size` bytes from `data` to `path`; the new version.
    pub fn put(&mut self, path: &str, size: u64, data: &mut impl Read) -> Result<u64, ClientError> {
        self.put_announced(path, size, data, |_| {})
    }

    /// [`Connection::put`], telling `ready` the upload's id (what a cancel names) before the
    /// body is sent: the body waits for the server's `Ready`, so a refused upload costs no
    /// bandwidth.
    pub fn put_announced(
        &mut self,
        path: &str,
        size: u64,
        data: &mut impl Read,
        ready: impl FnOnce(u64),
    ) -> Result<u64, ClientError> {
        self.send(&Request::Put { size, path: path.into() })?;
        match self.reply()? {
            Reply::Ready { id } => ready(id),
            Reply::Cancelled { received, .. } => return Err(ClientError::Cancelled { received }),
            other => return Err(ClientError::Unexpected(Box::new(other))),
        }
        // Keep the unsent queue short while the body streams, so that an urgent byte sent to
        // cancel it (see [`crate::net`]) is not stuck behind megabytes the server must drop.
        crate::net::limit_unsent(&self.stream, crate::net::UPLOAD_UNSENT)?;
        let copied = io::copy(&mut data.take(size), &mut self.stream);
        // Lifted again for the frames that may follow (best effort: they are small).
        let _ = crate::net::limit_unsent(&self.stream, u32::MAX);
        match (copied, self.reply()) {
            (_, Ok(Reply::Done { version })) => Ok(version),
            (_, Ok(Reply::Cancelled { received, .. })) => Err(ClientError::Cancelled { received }),
            (Ok(n), Ok(_)) if n < size => Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            (_, Ok(other)) => Err(ClientError::Unexpected(Box::new(other))),
            (_, Err(e)) => Err(e),
        }
    }
}

/// Where a fetched file came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The cached copy, under a live lease: the server was not asked for it.
    Cache,
    /// The cached copy, after the server said it is current (lease renewed).
    Revalidated,
    /// A fresh copy from the server.
    Fetched,
}

/// Fetch `path` through `cache`: say hello as the cache's identity (asking for one the first
/// time, or when the server no longer knows it), drop what was called back, serve the cached
/// copy while its lease lasts, else revalidate or fetch. `now_ms` is the wall clock in Unix ms; a
/// lease is counted from before the request was sent, so the client's lease ends no later than
/// the server's.
pub fn fetch(
    conn: &mut Connection,
    cache: &mut Cache,
    path: &str,
    now_ms: impl Fn() -> u64,
) -> Result<(PathBuf, Source), ClientError> {
    let (client, key) = cache.identity().unwrap_or((0, [0; 16]));
    let welcome = match conn.hello(client, key) {
        // Another server, or one with a new secret: start afresh (set_identity drops the leases).
        Err(ClientError::Server { code: ErrorCode::Denied, .. }) if client != 0 => conn.hello(0, [0; 16])?,
        other => other?,
    };
    if (welcome.client, welcome.key) != (client, key) {
        cache.set_identity(welcome.client, welcome.key)?;
    }
    for called_back in conn.take_callbacks() {
        cache.invalidate(&called_back)?;
    }
    let have = match cache.lookup(path, now_ms()) {
        Lookup::Fresh(file) => return Ok((file, Source::Cache)),
        Lookup::Stale { version } => version,
        Lookup::Missing => 0,
    };
    let sent_at = now_ms();
    conn.send(&Request::Get { path: path.into(), have })?;
    let result = match conn.reply()? {
        Reply::NotModified { lease_ms, .. } => {
            let file = cache.renew(path, sent_at + u64::from(lease_ms))?;
            (file, Source::Revalidated)
        }
        Reply::File { version, size, lease_ms } => {
            let mut data = Vec::with_capacity(size.min(1 << 24) as usize);
            conn.read_body(size, &mut data)?;
            let file = cache.store(path, version, sent_at + u64::from(lease_ms), &data)?;
            (file, Source::Fetched)
        }
        other => return Err(ClientError::Unexpected(Box::new(other))),
    };
    // A callback behind the answer means the file changed since: the copy is served once, no
    // longer leased.
    for called_back in conn.take_callbacks() {
        cache.invalidate(&called_back)?;
    }
    Ok(result)
}
