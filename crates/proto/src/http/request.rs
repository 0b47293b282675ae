//! Parsing one HTTP/1.x request head (request line and header fields) from the front of a buffer.
//!
//! [`parse_head`] is a pure function of the bytes received so far: it answers `Ok(None)` until a
//! whole head is there, then the [`Head`] and how many bytes it took, so that the bytes after it
//! (a pipelined request) stay in the caller's buffer for the next call. The field grammar is
//! `httparse`'s; this module adds what `httparse` leaves to its caller:
//!
//! - **limits** ([`RequestLimits`]), applied by only ever showing `httparse` the bytes the limits
//!   allow, so that a head too large is refused with the same error however it was chunked;
//! - **versions**: an HTTP/0.9 simple request (`GET /path` and a newline, no version: the course's
//!   LargerHttpd clients) is recognised before `httparse`, which rejects it; `HTTP/2.0` or
//!   `HTTP/3` in a request line is `505`, anything else that is not `HTTP/1.0` or `HTTP/1.1` `400`;
//! - **strictness** beyond `httparse`: no NUL and no bare CR anywhere in the head, exactly one
//!   `Host` (and one is required in HTTP/1.1, RFC 9112 §3.2).
//!
//! Chunking independence is the property the tests and the fuzz target check: feeding a stream
//! whole or byte by byte yields the same heads and the same error.

/// How large a request head may be. The defaults are nginx's order of magnitude.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// The longest request line, without its `\r\n`. Longer: `414 URI Too Long`. Default 8 KiB.
    pub max_request_line: usize,
    /// The most bytes after the request line, up to and including the empty line that ends the
    /// head. More: `431 Request Header Fields Too Large`. Default 16 KiB.
    pub max_header_bytes: usize,
    /// The most header fields. More: `431`. Default 64.
    pub max_headers: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self { max_request_line: 8 * 1024, max_header_bytes: 16 * 1024, max_headers: 64 }
    }
}

/// Why a request head was refused; each maps to the status the answer carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Malformed: bad syntax, bad bytes, a missing or repeated `Host`, a bad `Content-Length`.
    #[error("400 Bad Request")]
    BadRequest,
    /// The request line is longer than [`RequestLimits::max_request_line`].
    #[error("414 URI Too Long")]
    UriTooLong,
    /// The header fields are more bytes or more fields than [`RequestLimits`] allow.
    #[error("431 Request Header Fields Too Large")]
    HeadersTooLarge,
    /// The request line names a version other than HTTP/1.0 and HTTP/1.1 (`HTTP/2.0`, `HTTP/3`).
    #[error("505 HTTP Version Not Supported")]
    VersionNotSupported,
}

impl HeadError {
    /// The status code of the answer.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::UriTooLong => 414,
            Self::HeadersTooLarge => 431,
            Self::VersionNotSupported => 505,
        }
    }

    /// The reason phrase of the answer's status line.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadRequest => "Bad Request",
            Self::UriTooLong => "URI Too Long",
            Self::HeadersTooLarge => "Request Header Fields Too Large",
            Self::VersionNotSupported => "HTTP Version Not Supported",
        }
    }
}

/// The request method. Methods are case-sensitive: `get` is `Other("get")`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    /// Any other token; the server answers `405` or `501`.
    Other(String),
}

/// The protocol version of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// A simple request, `GET /path` without a version: no headers, the raw file, then close.
    Http09,
    Http10,
    Http11,
}

/// A parsed request head, owning its parts (the buffer it came from is reused).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub method: Method,
    /// The request target as sent, still percent-encoded: see [`super::path::resolve_target`].
    pub target: String,
    pub version: Version,
    /// Header fields in arrival order, names lowercased, values as sent (they may hold obs-text).
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Head {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers_named(name).next()
    }

    /// Every value of header `name` (any case), in order.
    pub fn headers_named<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }

    /// Whether `Connection` lists `token` (case-insensitive), across all its fields.
    fn connection_has(&self, token: &str) -> bool {
        self.headers_named("connection")
            .flat_map(|v| v.split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    }

    /// Whether the connection stays open after the answer: HTTP/1.1 unless `Connection: close`,
    /// HTTP/1.0 only with `Connection: keep-alive` (and no `close`), HTTP/0.9 never.
    pub fn keep_alive(&self) -> bool {
        match self.version {
            Version::Http09 => false,
            Version::Http10 => self.connection_has("keep-alive") && !self.connection_has("close"),
            Version::Http11 => !self.connection_has("close"),
        }
    }

    /// The `Content-Length`, if any. Repeated fields and lists (`5, 5`) are accepted only when
    /// every value is the same (RFC 9110 §8.6); anything but digits is `BadRequest`.
    pub fn content_length(&self) -> Result<Option<u64>, HeadError> {
        let mut length = None;
        for value in self.headers_named("content-length").flat_map(|v| v.split(|&b| b == b',')) {
            let value = value.trim_ascii();
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return Err(HeadError::BadRequest);
            }
            // All digits: the only failure left is overflow.
            let n: u64 = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok()).ok_or(HeadError::BadRequest)?;
            if length.is_some_and(|l| l != n) {
                return Err(HeadError::BadRequest);
            }
            length = Some(n);
        }
        Ok(length)
    }

    /// Whether a body follows the head: a `Content-Length` above zero or any `Transfer-Encoding`.
    pub fn has_body(&self) -> Result<bool, HeadError> {
        if self.header("transfer-encoding").is_some() {
            return Ok(true);
        }
        Ok(self.content_length()?.is_some_and(|n| n > 0))
    }
}

/// Parses the request head at the front of `buf`: `Ok(None)` while it is incomplete, else the
/// head and the number of bytes it took (leading empty lines included, RFC 9112 §2.2). Whatever
/// follows in `buf` belongs to the next request (or to this one's body).
pub fn parse_head(buf: &[u8], limits: &RequestLimits) -> Result<Option<(Head, usize)>, HeadError> {
    let start = skip_empty_lines(buf);
    if start > limits.max_request_line {
        // Only empty lines so far, and too many of them: refuse before buffering more.
        return Err(HeadError::BadRequest);
    }
    let rest = &buf[start..];
    // Look for the end of the request line only as far as the limit allows (+2 for `\r\n`), so
    // the answer does not depend on how much arrived after it.
    let window = &rest[..rest.len().min(limits.max_request_line + 2)];
    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
        let over = window.len() == limits.max_request_line + 2
            || (window.len() == limits.max_request_line + 1 && window[limits.max_request_line] != b'\r');
        return if over { Err(HeadError::UriTooLong) } else { Ok(None) };
    };
    let line = window[..nl].strip_suffix(b"\r").unwrap_or(&window[..nl]);
    if line.len() > limits.max_request_line {
        return Err(HeadError::UriTooLong);
    }
    if line.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(HeadError::BadRequest); // bare CR, NUL, tabs: none belongs in a request line
    }
    if let Some(head) = simple_request(line)? {
        return Ok(Some((head, start + nl + 1)));
    }

    // HTTP/1.0 or 1.1: `httparse` sees at most the request line and the header bytes allowed.
    let allowed = (nl + 1).saturating_add(limits.max_header_bytes).min(rest.len());
    // The usual limit fits on the stack; a larger one configured takes the heap.
    let (mut inline, mut heap) = ([httparse::EMPTY_HEADER; INLINE_HEADERS], Vec::new());
    let fields = if limits.max_headers <= INLINE_HEADERS {
        &mut inline[..limits.max_headers]
    } else {
        heap.resize(limits.max_headers, httparse::EMPTY_HEADER);
        &mut heap[..]
    };
    let mut req = httparse::Request::new(fields);
    let len = match req.parse(&rest[..allowed]) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if allowed < rest.len() => return Err(HeadError::HeadersTooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::HeadersTooLarge),
        Err(_) => return Err(HeadError::BadRequest),
    };
    let raw = &rest[..len];
    if raw.contains(&0) || raw.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n') {
        return Err(HeadError::BadRequest);
    }
    let head = Head {
        method: method(req.method.ok_or(HeadError::BadRequest)?),
        target: req.path.ok_or(HeadError::BadRequest)?.to_owned(),
        version: if req.version == Some(0) { Version::Http10 } else { Version::Http11 },
        headers: req.headers.iter().map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec())).collect(),
    };
    let hosts = head.headers_named("host").count();
    if hosts > 1 || (hosts == 0 && head.version == Version::Http11) {
        return Err(HeadError::BadRequest);
    }
    Ok(Some((head, start + len)))
}

/// Header slots [`parse_head`] keeps on the stack: the default [`RequestLimits::max_headers`].
const INLINE_HEADERS: usize = 64;

/// How many bytes of empty lines (`\r\n` or `\n`) open `buf`.
fn skip_empty_lines(buf: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match &buf[i..] {
            [b'\r', b'\n', ..] => i += 2,
            [b'\n', ..] => i += 1,
            _ => return i,
        }
    }
}

/// Classifies a complete request line (no control bytes, no line end): `Some` head for an
/// HTTP/0.9 simple request, `None` for HTTP/1.0 or 1.1 (left to `httparse`), or the error for
/// any other version.
fn simple_request(line: &[u8]) -> Result<Option<Head>, HeadError> {
    let Some(space) = line.iter().rposition(|&b| b == b' ') else {
        return Err(HeadError::BadRequest);
    };
    let (left, last) = (&line[..space], &line[space + 1..]);
    if left.contains(&b' ') {
        // Three tokens (or more, which `httparse` refuses): the last one is the version.
        return match last {
            b"HTTP/1.0" | b"HTTP/1.1" => Ok(None),
            [b'H', b'T', b'T', b'P', b'/', d, ..] if d.is_ascii_digit() => Err(HeadError::VersionNotSupported),
            _ => Err(HeadError::BadRequest),
        };
    }
    // Two tokens: `GET /path`. HTTP/0.9 knows no other method.
    if left != b"GET" || last.is_empty() {
        return Err(HeadError::BadRequest);
    }
    let target = std::str::from_utf8(last).map_err(|_| HeadError::BadRequest)?;
    // The course's LargerHttpd takes `GET index.html` as `GET /index.html` (its pattern is
    // `GET /?(\S*)`); the path is resolved beneath the root like any other.
    let target = if target.starts_with('/') { target.to_owned() } else { format!("/{target}") };
    Ok(Some(Head { method: Method::Get, target, version: Version::Http09, headers: Vec::new() }))
}

fn method(token: &str) -> Method {
    match token {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        other => Method::Other(other.to_owned()),
    }
}
