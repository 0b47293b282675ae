//! `http_head`: the HTTP request-head parser on arbitrary bytes, in arbitrary chunks, as a
//! driver would call it on a pipelined connection.
//!
//! Input: `[settings] stream...`. Settings bits 0-2 pick the chunking (see [`Chunker`]) and seed
//! the chunk sizes; bits 3-4 the limits: the defaults, small ones (32-byte request line, 64
//! header bytes, 4 fields), a 1-byte line with no header bytes, or all zero.
//!
//! Checks, whatever the input:
//! - no panic;
//! - chunking independence: the heads, and the error that stops the stream, are the same fed
//!   whole as fed in chunks; each head consumes at least one byte and no more than buffered;
//! - every head is sane: a target without spaces or control bytes; no headers in HTTP/0.9
//!   (nor keep-alive); `content_length` and `has_body` answer without panicking;
//! - a head printed back (`GET /x HTTP/1.1\r\nname: value\r\n...\r\n`) parses to itself;
//! - `resolve_target` on every target either refuses or yields only normal components.

use warren_proto::http::{Head, HeadError, Method, RequestLimits, Version, parse_head};

use crate::{Chunker, Rng};

/// Run one input; panics on a failed check.
pub fn run(data: &[u8]) {
    let Some((&settings, stream)) = data.split_first() else { return };
    let limits = match (settings >> 3) & 3 {
        0 => RequestLimits::default(),
        1 => RequestLimits { max_request_line: 32, max_header_bytes: 64, max_headers: 4 },
        2 => RequestLimits { max_request_line: 1, max_header_bytes: 0, max_headers: 1 },
        _ => RequestLimits { max_request_line: 0, max_header_bytes: 0, max_headers: 0 },
    };
    let whole = drive(&[stream], &limits);
    let chunks = Chunker::new(settings).split(&mut Rng::new(u64::from(settings)), stream);
    assert_eq!(drive(&chunks, &limits), whole, "chunking changed the outcome");
    for head in &whole.0 {
        check_head(head);
    }
}

/// Feeds `chunks` as a driver would: every head, and the error that stopped the stream.
fn drive(chunks: &[&[u8]], limits: &RequestLimits) -> (Vec<Head>, Option<HeadError>) {
    let mut buf = Vec::new();
    let mut heads = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match parse_head(&buf, limits) {
                Ok(Some((head, used))) => {
                    assert!(used > 0 && used <= buf.len(), "consumed {used} of {}", buf.len());
                    heads.push(head);
                    buf.drain(..used);
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(matches!(e.status(), 400 | 414 | 431 | 505));
                    return (heads, Some(e));
                }
            }
        }
    }
    (heads, None)
}

fn check_head(head: &Head) {
    assert!(!head.target.is_empty());
    assert!(!head.target.bytes().any(|b| b <= b' ' || b == 0x7f), "target {:?}", head.target);
    let _ = (head.content_length(), head.has_body());
    if head.version == Version::Http09 {
        assert!(head.headers.is_empty() && !head.keep_alive() && head.method == Method::Get);
    }
    for (name, value) in &head.headers {
        assert!(!name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase() && b != b':'));
        assert!(!value.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n'), "value {value:?}");
    }
    let printed = print(head);
    let roomy = RequestLimits { max_request_line: 1 << 20, max_header_bytes: 1 << 20, max_headers: 1024 };
    let (again, used) = parse_head(&printed, &roomy).expect("a printed head parses").expect("and is complete");
    assert_eq!((&again, used), (head, printed.len()), "round trip of {:?}", String::from_utf8_lossy(&printed));
    crate::http_path::check(&head.target);
}

fn print(head: &Head) -> Vec<u8> {
    let method = match &head.method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Other(m) => m,
    };
    let version = match head.version {
        Version::Http09 => return format!("{method} {}\r\n", head.target).into_bytes(),
        Version::Http10 => "HTTP/1.0",
        Version::Http11 => "HTTP/1.1",
    };
    let mut out = format!("{method} {} {version}\r\n", head.target).into_bytes();
    for (name, value) in &head.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}
