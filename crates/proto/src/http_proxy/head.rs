//! Request and response heads as the proxy passes them on: parsed with `httparse`, checked, and
//! written again without the hop-by-hop fields (RFC 9110 §7.6.1) and with the forwarding
//! fields added. Pure functions of the bytes: [`request`] and [`response`] answer `Ok(None)`
//! until a whole head is there.

use std::io::Write as _;
use std::net::IpAddr;

/// Header fields parsed per head; more is `431` (a request) or `502` (a response).
pub const MAX_HEADERS: usize = 64;

/// How a message's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// No body.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`, passed on as it is.
    Chunked,
    /// Until the sender closes (a response without a length).
    UntilClose,
}

/// Why a request head is refused, with the status its answer carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Bad syntax, a missing `Host`, a bad or conflicting length: `400`.
    BadRequest,
    /// A body longer than allowed: `413`.
    TooLarge,
    /// A head over the size limit, or too many fields: `431`.
    HeadTooLarge,
    /// Not HTTP/1.0 or HTTP/1.1: `505`.
    Version,
}

impl Refusal {
    /// The status of the answer.
    pub fn status(self) -> u16 {
        match self {
            Refusal::BadRequest => 400,
            Refusal::TooLarge => 413,
            Refusal::HeadTooLarge => 431,
            Refusal::Version => 505,
        }
    }
}

/// What the proxy needs to know about a request it passes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// The head's length in the client's bytes.
    pub len: usize,
    pub body: Body,
    /// HEAD: the answer has no body whatever its fields say.
    pub head_method: bool,
    /// GET, HEAD, OPTIONS, PUT, DELETE or TRACE (RFC 9110 §9.2.2): may be sent again.
    pub idempotent: bool,
    /// The client keeps its connection after this exchange.
    pub keep_alive: bool,
    /// HTTP/1.0: no chunked answers, keep-alive only when asked.
    pub http10: bool,
    /// A WebSocket handshake (RFC 6455 §4.1: an HTTP/1.1 `GET` without a body, with
    /// `Connection: Upgrade` and `Upgrade: websocket`): passed on with both fields, so that a
    /// `101` answer may switch the connection to a tunnel.
    pub upgrade: bool,
}

/// Parses the request head at the front of `raw` (at most `max_head` bytes of it) and writes
/// it, as the backend gets it, into `fwd`: the request line, the end-to-end fields, then
/// `X-Forwarded-For` (the client's address appended to any the request had) and
/// `X-Forwarded-Proto: http`.
pub fn request(
    raw: &[u8],
    max_head: usize,
    max_body: Option<u64>,
    peer: Option<IpAddr>,
    fwd: &mut Vec<u8>,
) -> Result<Option<Request>, Refusal> {
    let seen = &raw[..raw.len().min(max_head)];
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let len = match req.parse(seen) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if seen.len() == max_head => return Err(Refusal::HeadTooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::HeadTooLarge),
        Err(httparse::Error::Version) => return Err(Refusal::Version),
        Err(_) => return Err(Refusal::BadRequest),
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(Refusal::BadRequest);
    };
    let fields = Fields::of(req.headers).ok_or(Refusal::BadRequest)?;
    let http10 = minor == 0;
    if fields.hosts != 1 && !http10 || fields.hosts > 1 {
        return Err(Refusal::BadRequest);
    }
    let body = match (fields.chunked, fields.length) {
        (Some(_), Some(_)) => return Err(Refusal::BadRequest),
        (Some(false), None) => return Err(Refusal::BadRequest),
        (Some(true), None) if http10 => return Err(Refusal::BadRequest),
        (Some(true), None) => Body::Chunked,
        (None, Some(0) | None) => Body::None,
        (None, Some(n)) => Body::Length(n),
    };
    if let (Body::Length(n), Some(max)) = (body, max_body)
        && n > max
    {
        return Err(Refusal::TooLarge);
    }
    let keep_alive = if http10 { fields.keep_alive } else { !fields.close };
    let upgrade = !http10 && method == "GET" && body == Body::None && fields.websocket();

    fwd.clear();
    let _ = write!(fwd, "{method} {target} HTTP/1.{minor}\r\n");
    let is_forwarded_for = |f: &httparse::Header<'_>| f.name.eq_ignore_ascii_case("x-forwarded-for");
    for f in req.headers.iter() {
        if !is_forwarded_for(f) && !f.name.eq_ignore_ascii_case("x-forwarded-proto") && fields.end_to_end(f) {
            field(fwd, f);
        }
    }
    // Several fields are one list (RFC 9110 §5.3): the client's address goes last.
    fwd.extend_from_slice(b"X-Forwarded-For: ");
    for f in req.headers.iter().filter(|f| is_forwarded_for(f)) {
        fwd.extend_from_slice(f.value);
        fwd.extend_from_slice(b", ");
    }
    match peer {
        Some(ip) => {
            let _ = write!(fwd, "{ip}");
        }
        None => fwd.extend_from_slice(b"unknown"),
    }
    // An HTTP/1.0 request asks to keep the backend connection (a 1.1 one does by default).
    fwd.extend_from_slice(b"\r\nX-Forwarded-Proto: http\r\n");
    if upgrade {
        fwd.extend_from_slice(UPGRADE_FIELDS);
    }
    if http10 {
        fwd.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    fwd.extend_from_slice(b"\r\n");
    Ok(Some(Request {
        len,
        body,
        head_method: method == "HEAD",
        idempotent: matches!(method, "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"),
        keep_alive,
        http10,
        upgrade,
    }))
}

/// The hop-by-hop fields of a WebSocket handshake, as the proxy writes them on each hop.
const UPGRADE_FIELDS: &[u8] = b"Connection: Upgrade\r\nUpgrade: websocket\r\n";

/// What the proxy needs to know about a response it passes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Response {
    /// The head's length in the backend's bytes.
    pub len: usize,
    pub status: u16,
    pub body: Body,
    /// The backend keeps the connection for another request.
    pub reusable: bool,
    /// The client's connection goes on after it.
    pub keep_alive: bool,
    /// `101 Switching Protocols` to a WebSocket handshake: from its end on, both connections
    /// are one tunnel.
    pub upgrade: bool,
}

/// Why a response head cannot be passed on (the client gets `502`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed response head")]
pub struct BadResponse;

/// Parses the response head at the front of `raw` (at most `max_head` bytes of it), answering
/// `request`, and writes it as the client gets it into `out` (appended). `close`: the client's
/// connection ends after this answer whatever it asked.
pub fn response(
    raw: &[u8],
    max_head: usize,
    request: &Request,
    close: bool,
    out: &mut Vec<u8>,
) -> Result<Option<Response>, BadResponse> {
    let seen = &raw[..raw.len().min(max_head)];
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut fields);
    let len = match resp.parse(seen) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if seen.len() < max_head => return Ok(None),
        _ => return Err(BadResponse),
    };
    let (Some(status), Some(minor)) = (resp.code, resp.version) else { return Err(BadResponse) };
    let fields = Fields::of(resp.headers).ok_or(BadResponse)?;
    let informational = (100..200).contains(&status);
    let upgrade = status == 101;
    if upgrade && !(request.upgrade && fields.websocket()) {
        // Only a WebSocket handshake is passed on with `Upgrade`, and only to WebSocket.
        return Err(BadResponse);
    }
    let body = if informational || status == 204 || status == 304 || request.head_method {
        Body::None
    } else {
        match (fields.chunked, fields.length) {
            (Some(true), _) => Body::Chunked,
            (Some(false), _) | (None, None) => Body::UntilClose,
            (None, Some(n)) => Body::Length(n),
        }
    };
    if body == Body::Chunked && request.http10 {
        // A 1.0 request asked for no chunking; a backend that chunks anyway cannot be passed on.
        return Err(BadResponse);
    }
    let reusable = body != Body::UntilClose && if minor == 0 { fields.keep_alive } else { !fields.close };
    let keep_alive = request.keep_alive && !close && body != Body::UntilClose;

    let reason = resp.reason.unwrap_or("");
    let _ = write!(out, "HTTP/1.1 {status} {reason}\r\n");
    for f in resp.headers.iter() {
        // With both, the chunking delimits the body (RFC 9112 §6.3) and the length must go.
        let stale_length = body == Body::Chunked && f.name.eq_ignore_ascii_case("content-length");
        if fields.end_to_end(f) && !stale_length {
            field(out, f);
        }
    }
    if upgrade {
        out.extend_from_slice(UPGRADE_FIELDS);
    } else if !informational {
        match (keep_alive, request.http10) {
            (false, _) => out.extend_from_slice(b"Connection: close\r\n"),
            (true, true) => out.extend_from_slice(b"Connection: keep-alive\r\n"),
            (true, false) => {}
        }
    }
    out.extend_from_slice(b"\r\n");
    let (reusable, keep_alive) = if upgrade { (false, false) } else { (reusable, keep_alive) };
    Ok(Some(Response { len, status, body, reusable, keep_alive, upgrade }))
}

fn field(out: &mut Vec<u8>, f: &httparse::Header<'_>) {
    out.extend_from_slice(f.name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(f.value);
    out.extend_from_slice(b"\r\n");
}

/// What a head's fields say about its connection and its body.
struct Fields<'h> {
    /// `Connection` values: its options, and the fields it names as hop-by-hop.
    connection: [&'h [u8]; 4],
    close: bool,
    keep_alive: bool,
    /// `Connection` names `upgrade`.
    connection_upgrade: bool,
    /// `Upgrade` offers (or, in a `101`, chose) `websocket`.
    upgrade_websocket: bool,
    hosts: usize,
    /// `Transfer-Encoding`: whether its last coding is `chunked`.
    chunked: Option<bool>,
    length: Option<u64>,
}

impl<'h> Fields<'h> {
    /// `None`: conflicting or malformed lengths, or more `Connection` fields than are kept.
    fn of(headers: &[httparse::Header<'h>]) -> Option<Self> {
        let mut f = Fields {
            connection: [b""; 4],
            close: false,
            keep_alive: false,
            connection_upgrade: false,
            upgrade_websocket: false,
            hosts: 0,
            chunked: None,
            length: None,
        };
        let mut connections = 0;
        for h in headers {
            let name = h.name;
            if name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("proxy-connection") {
                *f.connection.get_mut(connections)? = h.value;
                connections += 1;
                for token in list(h.value) {
                    f.close |= token.eq_ignore_ascii_case(b"close");
                    f.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                    f.connection_upgrade |= token.eq_ignore_ascii_case(b"upgrade");
                }
            } else if name.eq_ignore_ascii_case("upgrade") {
                // A protocol may carry a version (`websocket/13` is not WebSocket's spelling,
                // but `Upgrade` allows one): the name before `/` is compared.
                let name = |t: &'h [u8]| t.split(|&b| b == b'/').next().unwrap_or_default();
                f.upgrade_websocket |= list(h.value).any(|t| name(t).eq_ignore_ascii_case(b"websocket"));
            } else if name.eq_ignore_ascii_case("host") {
                f.hosts += 1;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                let last = list(h.value).last()?;
                f.chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
            } else if name.eq_ignore_ascii_case("content-length") {
                for value in list(h.value) {
                    let n = std::str::from_utf8(value).ok().filter(|v| v.bytes().all(|b| b.is_ascii_digit()));
                    let n: u64 = n?.parse().ok()?;
                    if f.length.is_some_and(|m| m != n) {
                        return None;
                    }
                    f.length = Some(n);
                }
            }
        }
        Some(f)
    }

    /// Whether the head asks for (or agrees to) WebSocket.
    fn websocket(&self) -> bool {
        self.connection_upgrade && self.upgrade_websocket
    }

    /// Whether `h` goes on to the next hop: not connection-specific (RFC 9110 §7.6.1), nor named
    /// in `Connection`.
    fn end_to_end(&self, h: &httparse::Header<'_>) -> bool {
        const HOP_BY_HOP: [&str; 6] = ["connection", "proxy-connection", "keep-alive", "te", "upgrade", "trailer"];
        if HOP_BY_HOP.iter().any(|n| h.name.eq_ignore_ascii_case(n)) {
            return false;
        }
        !self.connection.iter().flat_map(|v| list(v)).any(|t| t.eq_ignore_ascii_case(h.name.as_bytes()))
    }
}

/// The elements of a comma-separated field value, trimmed, empty ones left out.
fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(raw: &str) -> Result<Option<(Request, String)>, Refusal> {
        let mut fwd = Vec::new();
        let peer = Some(IpAddr::from([10, 0, 0, 7]));
        let r = request(raw.as_bytes(), 1024, Some(1000), peer, &mut fwd)?;
        Ok(r.map(|r| (r, String::from_utf8(fwd).unwrap())))
    }

    #[test]
    fn a_request_loses_its_hop_by_hop_fields_and_gains_the_forwarding_ones() {
        let raw = "GET /a HTTP/1.1\r\nHost: h\r\nConnection: close, X-Secret\r\nX-Secret: s\r\nKeep-Alive: 5\r\n\
                            TE: trailers\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\nAccept: */*\r\n\r\nbody";
        let (r, fwd) = req(raw).unwrap().unwrap();
        assert_eq!(
            fwd,
            "GET /a HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nX-Forwarded-For: 1.2.3.4, 10.0.0.7\r\nX-Forwarded-Proto: http\r\n\r\n"
        );
        assert!(!r.keep_alive && r.idempotent && r.body == Body::None);
        assert_eq!(r.len, raw.len() - "body".len(), "the head's own length");
    }

    #[test]
    fn request_bodies_and_bad_heads() {
        let (r, _) = req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n").unwrap().unwrap();
        assert_eq!((r.body, r.idempotent, r.keep_alive), (Body::Length(5), false, true));
        let (r, _) = req("PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap().unwrap();
        assert_eq!(r.body, Body::Chunked);
        assert_eq!(req("GET / HTTP/1.1\r\nHost: h\r\n"), Ok(None), "not whole yet");
        assert_eq!(req("GET / HTTP/1.1\r\n\r\n"), Err(Refusal::BadRequest), "no Host");
        assert_eq!(
            req("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(Refusal::BadRequest)
        );
        assert_eq!(
            req("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(Refusal::BadRequest)
        );
        assert_eq!(req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1001\r\n\r\n"), Err(Refusal::TooLarge));
        assert_eq!(req(&format!("GET /{} HTTP/1.1\r\n", "a".repeat(2000))), Err(Refusal::HeadTooLarge));
        assert_eq!(req("GET / HTTP/2.0\r\nHost: h\r\n\r\n").map_err(Refusal::status), Err(505));
        assert_eq!(req("\x01\x02 nonsense\r\n\r\n"), Err(Refusal::BadRequest));
        let (r, fwd) = req("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(r.http10 && !r.keep_alive && fwd.ends_with("Connection: keep-alive\r\n\r\n"));
    }

    fn resp(raw: &str, request: &Request) -> Result<Option<(Response, String)>, BadResponse> {
        let mut out = Vec::new();
        let r = response(raw.as_bytes(), 1024, request, false, &mut out)?;
        Ok(r.map(|r| (r, String::from_utf8(out).unwrap())))
    }

    const GET: Request = Request {
        len: 0,
        body: Body::None,
        head_method: false,
        idempotent: true,
        keep_alive: true,
        http10: false,
        upgrade: false,
    };

    #[test]
    fn responses_are_delimited_and_rewritten() {
        let (r, out) = resp(
            "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive\r\n\r\n",
            &GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n");
        assert_eq!((r.body, r.reusable, r.keep_alive), (Body::Length(4), true, true));
        let (r, out) =
            resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n", &GET).unwrap().unwrap();
        assert_eq!((r.body, out.contains("Content-Length")), (Body::Chunked, false));
        let (r, out) = resp("HTTP/1.0 200 OK\r\n\r\n", &GET).unwrap().unwrap();
        assert_eq!((r.body, r.reusable, r.keep_alive), (Body::UntilClose, false, false));
        assert!(out.ends_with("Connection: close\r\n\r\n"));
        let head = Request { head_method: true, ..GET };
        let (r, _) = resp("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", &head).unwrap().unwrap();
        assert_eq!(r.body, Body::None);
        let (r, _) = resp("HTTP/1.1 100 Continue\r\n\r\n", &GET).unwrap().unwrap();
        assert_eq!((r.status, r.body), (100, Body::None));
        assert_eq!(resp("HTTP/1.1 200 OK\r\n", &GET), Ok(None));
        assert_eq!(resp("garbage\r\n\r\n", &GET), Err(BadResponse));
        assert_eq!(resp("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", &GET), Err(BadResponse));
    }

    #[test]
    fn a_websocket_handshake_keeps_its_upgrade_fields_and_only_it_may_switch() {
        let raw = "GET /chat HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        let (r, fwd) = req(raw).unwrap().unwrap();
        assert!(r.upgrade);
        assert!(fwd.contains("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"), "{fwd}");
        assert!(fwd.ends_with("Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"), "{fwd}");
        let (r, out) = resp(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
            &r,
        )
        .unwrap()
        .unwrap();
        assert!(r.upgrade && !r.reusable && r.body == Body::None);
        assert_eq!(
            out,
            "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
             Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        );
        // Not a handshake: no Upgrade passed on, and a 101 cannot be.
        let (r, fwd) = req("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n").unwrap().unwrap();
        assert!(!r.upgrade && !fwd.contains("Upgrade"));
        let (r, _) = req("GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n").unwrap().unwrap();
        assert!(!r.upgrade);
        assert_eq!(
            resp("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", &r),
            Err(BadResponse)
        );
        // A handshake the backend declines goes on as HTTP.
        let ws = Request { upgrade: true, ..GET };
        let (r, _) = resp("HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n", &ws).unwrap().unwrap();
        assert!(!r.upgrade && r.keep_alive);
    }
}
