//! `proxy_head`: the HTTP proxy's head parsers (`warren_proto::http_proxy::head`) and its
//! chunked-body scanner on arbitrary bytes.
//!
//! Input: `[settings] bytes`. Settings bits 0-1 pick what the bytes are: a request head, a
//! response head (answering a GET, or a HEAD with bit 2), or a chunked body; bits 3-7 are a
//! split point for the chunked body.
//!
//! Checks, whatever the input:
//! - no panic;
//! - a request head accepted is rewritten into one that parses again, to the same length, body
//!   and method, with no hop-by-hop field and the client's address last in `X-Forwarded-For`;
//!   its own bytes alone parse to the same;
//! - a response head accepted is rewritten into one that parses again, to the same status and
//!   body (a length beside chunking left out);
//! - the chunked scanner takes the same bytes and ends the same way fed whole or in two pieces,
//!   and never takes more than it is given.

use std::net::IpAddr;

use warren_proto::http_proxy::chunked::Chunked;
use warren_proto::http_proxy::head::{self, Body, Request};

const MAX_HEAD: usize = 2048;

/// Run one input; panics on a failed check.
pub fn run(data: &[u8]) {
    let Some((&settings, bytes)) = data.split_first() else { return };
    match settings & 3 {
        0 => request(bytes),
        1 | 2 => response(bytes, settings & 4 != 0),
        _ => chunked(bytes, usize::from(settings >> 3)),
    }
}

fn request(bytes: &[u8]) {
    let peer = Some(IpAddr::from([192, 0, 2, 1]));
    let mut fwd = Vec::new();
    let Ok(Some(r)) = head::request(bytes, MAX_HEAD, None, peer, &mut fwd) else { return };
    assert!(r.len > 0 && r.len <= bytes.len().min(MAX_HEAD));
    let mut again = Vec::new();
    assert_eq!(head::request(&bytes[..r.len], MAX_HEAD, None, peer, &mut again), Ok(Some(r)), "its own bytes");
    assert_eq!(again, fwd);
    let mut twice = Vec::new();
    let passed = head::request(&fwd, usize::MAX, None, None, &mut twice).expect("the rewritten head parses");
    let passed = passed.expect("whole");
    assert_eq!((passed.len, passed.body, passed.head_method), (fwd.len(), r.body, r.head_method));
    let text = String::from_utf8_lossy(&fwd).to_ascii_lowercase();
    for hop in ["\r\nconnection:", "\r\nkeep-alive:", "\r\nte:", "\r\nupgrade:", "\r\nproxy-connection:"] {
        assert!(!text.contains(hop) || r.http10 && hop == "\r\nconnection:", "{hop} passed: {text:?}");
    }
    let xff = text.lines().find(|l| l.starts_with("x-forwarded-for:")).expect("X-Forwarded-For");
    assert!(xff.ends_with("192.0.2.1"), "{xff}");
}

fn response(bytes: &[u8], head_method: bool) {
    let request = Request {
        len: 1,
        body: Body::None,
        head_method,
        idempotent: true,
        keep_alive: true,
        http10: false,
        upgrade: false,
    };
    let mut out = Vec::new();
    let Ok(Some(r)) = head::response(bytes, MAX_HEAD, &request, false, &mut out) else { return };
    assert!(r.len > 0 && r.len <= bytes.len().min(MAX_HEAD));
    let mut again = Vec::new();
    let passed = head::response(&out, usize::MAX, &request, false, &mut again).expect("the rewritten head parses");
    let passed = passed.expect("whole");
    assert_eq!((passed.len, passed.status, passed.body), (out.len(), r.status, r.body));
}

fn chunked(bytes: &[u8], split: usize) {
    let mut whole = Chunked::new();
    let taken = whole.scan(bytes);
    if let Ok(n) = taken {
        assert!(n <= bytes.len());
        assert!(n == bytes.len() || whole.is_done(), "stopped early without an end");
    }
    let at = split.min(bytes.len());
    let mut pieces = Chunked::new();
    let first = pieces.scan(&bytes[..at]);
    let split_outcome = match first {
        Ok(n) if n < at => Ok(n),
        Ok(n) => pieces.scan(&bytes[at..]).map(|m| n + m),
        Err(e) => Err(e),
    };
    assert_eq!(split_outcome, taken, "splitting changed the outcome");
    if taken.is_ok() {
        assert_eq!(pieces.is_done(), whole.is_done());
    }
}
