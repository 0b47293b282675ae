//! The file service's wire format: length-prefixed binary frames (docs/files.md, byte by byte).
//!
//! ```text
//! frame   = length:u32be kind:u8 payload      (length = 1 + payload length, at most MAX_FRAME)
//! string  = length:u16be UTF-8 bytes
//! numbers = big-endian
//! ```
//!
//! The length is [`Framing`]'s, with no prefix bytes; the kind and payload are its body.
//!
//! A `Put` frame is followed by exactly `size` raw bytes (the file), and a `File` reply by
//! `size` raw bytes: bodies are not framed, so a download leaves the server with `sendfile` and
//! an upload goes to disk without being cut into frames. Decoding is strict: an unknown kind,
//! a short or over-long payload, or a string that is not UTF-8 is an error, never a guess.

use std::fmt;

use warren_proto::frame::{FrameError, Framing};

/// The largest frame, header excluded: bounds what a peer can make the other side buffer.
pub const MAX_FRAME: usize = 64 * 1024;
/// The longest path, in bytes.
pub const MAX_PATH: usize = 1024;
/// The largest `List` answer, header included: a short request gets a short answer, and a
/// directory of any size is read page by page (`after`).
pub const LIST_PAGE: usize = 16 * 1024;

/// The secret that proves a client identity (see [`Request::Hello`]).
pub type ClientKey = [u8; 16];

/// Every frame of both endpoints: no prefix bytes, then the length.
const FRAMING: Framing = Framing { prefix: &[], max: MAX_FRAME };

/// What a client asks (on the data endpoint; `Cancel` on the control endpoint).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Speak for client identity `client`, proven by `key`: its leases and callbacks are kept
    /// under it, across reconnections and server restarts. Client 0 (with any key) asks for a
    /// new identity, which `Welcome` hands out; the client keeps both with its cache.
    Hello {
        client: u64,
        key: ClientKey,
    },
    /// Present a credential: the connection gets its right (see `--tokens`).
    Auth {
        token: String,
    },
    Stat {
        path: String,
    },
    /// A directory's entries whose names sort after `after` (empty: from the first), as many
    /// as fit in [`LIST_PAGE`].
    List {
        path: String,
        after: String,
    },
    /// Fetch a file; `have` is the version of the cached copy (0: none), answered with
    /// `NotModified` if it is still current.
    Get {
        path: String,
        have: u64,
    },
    /// Upload `size` bytes (they follow the frame) to `path`. The server names the upload in
    /// `Ready` (the id a cancel names); a client may wait for it before sending the body.
    Put {
        size: u64,
        path: String,
    },
    Delete {
        path: String,
    },
    /// Control endpoint: stop upload `id`.
    Cancel {
        id: u64,
    },
}

/// What a server answers or pushes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Answer to `Hello`, after any callbacks the client missed: leases last `lease_ms`; the
    /// connection speaks for `client`, whose proof is `key` (new ones when the client asked).
    Welcome {
        lease_ms: u32,
        client: u64,
        key: ClientKey,
    },
    /// Answer to `Auth`: what the credential allows.
    Authorized {
        right: Right,
    },
    /// The upload has begun under `id` (its partial file exists): the body may come.
    Ready {
        id: u64,
    },
    Stat(Meta),
    /// A directory's entries, sorted by name; `truncated` when more follow (ask again with
    /// `after` set to the last name).
    List {
        truncated: bool,
        entries: Vec<Entry>,
    },
    /// A file: `size` raw bytes follow. `lease_ms` is 0 without a lease (no `Hello`).
    File {
        version: u64,
        size: u64,
        lease_ms: u32,
    },
    /// The cached copy is current; its lease is renewed.
    NotModified {
        version: u64,
        lease_ms: u32,
    },
    /// An upload is durable under `path` with this version.
    Done {
        version: u64,
    },
    Deleted,
    /// Upload `id` was cancelled after `received` bytes; nothing of it is on disk.
    Cancelled {
        id: u64,
        received: u64,
    },
    /// Pushed: the copy of `path` this client caches changed; drop it.
    Callback {
        path: String,
    },
    /// Control endpoint: what became of upload `id`.
    CancelResult {
        id: u64,
        outcome: Outcome,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
}

/// What a `Cancel` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The upload was running: it is stopped and its partial file removed.
    Stopped = 0,
    /// No upload with this id is running or ended lately (ids are the server's: see `Ready`).
    Unknown = 1,
    /// Too late: the upload completed.
    Completed = 2,
}

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    NotFound = 1,
    /// A path that leaves the root, names the server's own state, or is malformed.
    BadPath = 2,
    TooLarge = 3,
    /// A frame that does not decode, or one not allowed here: the connection closes.
    Protocol = 4,
    Io = 5,
    /// The server is at its connection limit (`--max-conns`): the connection is closed.
    Busy = 6,
    /// A directory where a file was wanted, or the other way round.
    WrongKind = 7,
    /// No right to do this (anonymous and read-only clients cannot change files), a
    /// credential that is not known, or a client key that does not prove the client.
    Denied = 8,
    /// Over a quota: the bytes this client may have in flight (`--max-in-flight`).
    Quota = 9,
}

/// What a connection may do. Ordered: each right includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Right {
    None = 0,
    /// Stat, List, Get, Hello.
    Read = 1,
    /// Read, and Put and Delete.
    Write = 2,
}

/// A file's or directory's description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    pub is_dir: bool,
    pub size: u64,
    /// Changes whenever the file does; never 0 for a file (0 means "none").
    pub version: u64,
    /// Modification time, Unix milliseconds.
    pub modified_ms: u64,
}

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub is_dir: bool,
    pub size: u64,
}

/// Why bytes did not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("frame of {0} bytes is over the limit of {MAX_FRAME}")]
    TooLarge(usize),
    #[error("empty frame")]
    Empty,
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
}

impl From<FrameError> for WireError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::TooLarge { len, .. } => WireError::TooLarge(len),
            // Cannot happen: these frames have no prefix to mismatch.
            FrameError::BadPrefix { .. } => WireError::Malformed("frame prefix"),
        }
    }
}

/// A frame's kind, payload and total length.
type Split<'a> = (u8, &'a [u8], usize);

/// Split the first complete frame off `buf`. `Ok(None)` while incomplete; an over-long length
/// is refused before its bytes arrive, a zero one as soon as it does.
fn split(buf: &[u8]) -> Result<Option<Split<'_>>, WireError> {
    let Some((body, used)) = FRAMING.split(buf)? else { return Ok(None) };
    let (&kind, payload) = body.split_first().ok_or(WireError::Empty)?;
    Ok(Some((kind, payload, used)))
}

/// Reads a payload front to back; every read checks the length.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Malformed("payload too short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn key(&mut self) -> Result<ClientKey, WireError> {
        Ok(self.take(16)?.try_into().expect("16 bytes"))
    }
    fn right(&mut self) -> Result<Right, WireError> {
        match self.u8()? {
            0 => Ok(Right::None),
            1 => Ok(Right::Read),
            2 => Ok(Right::Write),
            _ => Err(WireError::Malformed("unknown right")),
        }
    }
    fn bool(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError::Malformed("a flag is neither 0 nor 1")),
        }
    }
    fn string(&mut self) -> Result<String, WireError> {
        let len = self.u16()? as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| WireError::Malformed("string is not UTF-8"))
    }
    /// The payload must be used up exactly.
    fn end<T>(self, value: T) -> Result<T, WireError> {
        if self.0.is_empty() { Ok(value) } else { Err(WireError::Malformed("trailing bytes")) }
    }
}

/// Builds one frame in place; the length is filled in by `finish`.
struct Writer<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
}

impl<'a> Writer<'a> {
    fn new(out: &'a mut Vec<u8>, kind: u8) -> Self {
        let start = FRAMING.begin(out);
        out.push(kind);
        Self { out, start }
    }
    fn u8(self, v: u8) -> Self {
        self.out.push(v);
        self
    }
    fn u32(self, v: u32) -> Self {
        self.out.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn bytes(self, v: &[u8]) -> Self {
        self.out.extend_from_slice(v);
        self
    }
    fn u64(self, v: u64) -> Self {
        self.out.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// A string longer than a u16 can say, or than the frame has room for, is cut at a
    /// character boundary: encoders never produce a frame the decoder refuses. (Only the last
    /// field of a frame can meet the frame's limit: a listing's entries are fitted before.)
    fn string(self, s: &str) -> Self {
        let body = self.out.len() - self.start - FRAMING.header();
        let room = MAX_FRAME.saturating_sub(body + 2);
        let mut end = s.len().min(u16::MAX as usize).min(room);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.out.extend_from_slice(&(end as u16).to_be_bytes());
        self.out.extend_from_slice(&s.as_bytes()[..end]);
        self
    }
    fn finish(self) {
        FRAMING.finish(self.out, self.start).expect("every field is fitted to the frame");
    }
}

impl Request {
    /// Append this request's frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Request::Hello { client, key } => Writer::new(out, 0x01).u64(*client).bytes(key).finish(),
            Request::Stat { path } => Writer::new(out, 0x02).string(path).finish(),
            Request::List { path, after } => Writer::new(out, 0x03).string(path).string(after).finish(),
            Request::Get { path, have } => Writer::new(out, 0x04).u64(*have).string(path).finish(),
            Request::Put { size, path } => Writer::new(out, 0x05).u64(*size).string(path).finish(),
            Request::Delete { path } => Writer::new(out, 0x06).string(path).finish(),
            Request::Auth { token } => Writer::new(out, 0x07).string(token).finish(),
            Request::Cancel { id } => Writer::new(out, 0x10).u64(*id).finish(),
        }
    }

    /// The first request in `buf` and the bytes it took, or `Ok(None)` while incomplete.
    pub fn decode(buf: &[u8]) -> Result<Option<(Request, usize)>, WireError> {
        let Some((kind, payload, used)) = split(buf)? else { return Ok(None) };
        let mut r = Reader(payload);
        let request = match kind {
            0x01 => Request::Hello { client: r.u64()?, key: r.key()? },
            0x02 => Request::Stat { path: r.string()? },
            0x03 => Request::List { path: r.string()?, after: r.string()? },
            0x04 => Request::Get { have: r.u64()?, path: r.string()? },
            0x05 => Request::Put { size: r.u64()?, path: r.string()? },
            0x06 => Request::Delete { path: r.string()? },
            0x07 => Request::Auth { token: r.string()? },
            0x10 => Request::Cancel { id: r.u64()? },
            other => return Err(WireError::UnknownKind(other)),
        };
        Ok(Some((r.end(request)?, used)))
    }
}

impl Reply {
    /// Append this reply's frame to `out`. A listing is cut to fit one frame (and marked
    /// truncated).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Welcome { lease_ms, client, key } => {
                Writer::new(out, 0x81).u32(*lease_ms).u64(*client).bytes(key).finish()
            }
            Reply::Authorized { right } => Writer::new(out, 0x8A).u8(*right as u8).finish(),
            Reply::Ready { id } => Writer::new(out, 0x8B).u64(*id).finish(),
            Reply::Stat(m) => {
                Writer::new(out, 0x82).u8(m.is_dir as u8).u64(m.size).u64(m.version).u64(m.modified_ms).finish()
            }
            Reply::List { truncated, entries } => {
                // 1 + 4 header bytes, then entries while they fit in a page.
                let mut fit = 0;
                let mut size = 5;
                for e in entries {
                    let len = 1 + 8 + 2 + e.name.len().min(u16::MAX as usize);
                    if size + len > LIST_PAGE - 5 {
                        break;
                    }
                    size += len;
                    fit += 1;
                }
                let cut = *truncated || fit < entries.len();
                let mut w = Writer::new(out, 0x83).u8(cut as u8).u32(fit as u32);
                for e in &entries[..fit] {
                    w = w.u8(e.is_dir as u8).u64(e.size).string(&e.name);
                }
                w.finish();
            }
            Reply::File { version, size, lease_ms } => {
                Writer::new(out, 0x84).u64(*version).u64(*size).u32(*lease_ms).finish()
            }
            Reply::NotModified { version, lease_ms } => Writer::new(out, 0x85).u64(*version).u32(*lease_ms).finish(),
            Reply::Done { version } => Writer::new(out, 0x86).u64(*version).finish(),
            Reply::Deleted => Writer::new(out, 0x87).finish(),
            Reply::Cancelled { id, received } => Writer::new(out, 0x88).u64(*id).u64(*received).finish(),
            Reply::Callback { path } => Writer::new(out, 0x89).string(path).finish(),
            Reply::CancelResult { id, outcome } => Writer::new(out, 0x90).u64(*id).u8(*outcome as u8).finish(),
            Reply::Error { code, message } => Writer::new(out, 0x8F).u8(*code as u8).string(message).finish(),
        }
    }

    /// The first reply in `buf` and the bytes it took, or `Ok(None)` while incomplete.
    pub fn decode(buf: &[u8]) -> Result<Option<(Reply, usize)>, WireError> {
        let Some((kind, payload, used)) = split(buf)? else { return Ok(None) };
        let mut r = Reader(payload);
        let reply = match kind {
            0x81 => Reply::Welcome { lease_ms: r.u32()?, client: r.u64()?, key: r.key()? },
            0x8A => Reply::Authorized { right: r.right()? },
            0x8B => Reply::Ready { id: r.u64()? },
            0x82 => Reply::Stat(Meta { is_dir: r.bool()?, size: r.u64()?, version: r.u64()?, modified_ms: r.u64()? }),
            0x83 => {
                let truncated = r.bool()?;
                let count = r.u32()? as usize;
                // Each entry takes at least 11 bytes: a count beyond that is a lie.
                if count > payload.len() / 11 {
                    return Err(WireError::Malformed("more entries than bytes"));
                }
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    entries.push(Entry { is_dir: r.bool()?, size: r.u64()?, name: r.string()? });
                }
                Reply::List { truncated, entries }
            }
            0x84 => Reply::File { version: r.u64()?, size: r.u64()?, lease_ms: r.u32()? },
            0x85 => Reply::NotModified { version: r.u64()?, lease_ms: r.u32()? },
            0x86 => Reply::Done { version: r.u64()? },
            0x87 => Reply::Deleted,
            0x88 => Reply::Cancelled { id: r.u64()?, received: r.u64()? },
            0x89 => Reply::Callback { path: r.string()? },
            0x90 => Reply::CancelResult {
                id: r.u64()?,
                outcome: match r.u8()? {
                    0 => Outcome::Stopped,
                    1 => Outcome::Unknown,
                    2 => Outcome::Completed,
                    _ => return Err(WireError::Malformed("unknown cancel outcome")),
                },
            },
            0x8F => Reply::Error { code: ErrorCode::from_u8(r.u8()?)?, message: r.string()? },
            other => return Err(WireError::UnknownKind(other)),
        };
        Ok(Some((r.end(reply)?, used)))
    }
}

impl ErrorCode {
    fn from_u8(v: u8) -> Result<Self, WireError> {
        Ok(match v {
            1 => Self::NotFound,
            2 => Self::BadPath,
            3 => Self::TooLarge,
            4 => Self::Protocol,
            5 => Self::Io,
            6 => Self::Busy,
            7 => Self::WrongKind,
            8 => Self::Denied,
            9 => Self::Quota,
            _ => return Err(WireError::Malformed("unknown error code")),
        })
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::NotFound => "not found",
            Self::BadPath => "bad path",
            Self::TooLarge => "too large",
            Self::Protocol => "protocol error",
            Self::Io => "i/o error",
            Self::Busy => "server busy",
            Self::WrongKind => "wrong kind",
            Self::Denied => "permission denied",
            Self::Quota => "over quota",
        };
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests;
