//! Tests of `parse_head`: tables of heads and refusals, the limits at and one past their edge,
//! keep-alive and length rules, and chunking independence (every split, and proptests).

use proptest::prelude::*;

use super::request::{Head, HeadError, Method, RequestLimits, Version, parse_head};

/// What a driver would see feeding `chunks` one after the other and parsing after each: every
/// head, the error that stopped it (if any), and the bytes left over (none after an error: how
/// much had arrived when the error was seen depends on the chunking, and the connection closes).
type Outcome = (Vec<Head>, Option<HeadError>, Vec<u8>);

fn drive(chunks: &[&[u8]], limits: &RequestLimits) -> Outcome {
    let mut buf = Vec::new();
    let mut heads = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match parse_head(&buf, limits) {
                Ok(Some((head, used))) => {
                    assert!(used > 0 && used <= buf.len());
                    heads.push(head);
                    buf.drain(..used);
                }
                Ok(None) => break,
                Err(e) => return (heads, Some(e), Vec::new()),
            }
        }
    }
    (heads, None, buf)
}

fn one(input: &str) -> Result<Option<(Head, usize)>, HeadError> {
    parse_head(input.as_bytes(), &RequestLimits::default())
}

fn get(target: &str, version: Version) -> Head {
    Head { method: Method::Get, target: target.into(), version, headers: Vec::new() }
}

#[test]
fn heads_and_refusals() {
    use HeadError::*;
    // (input, Ok((method, target, version, headers, consumed)) | Err(status) | incomplete)
    let ok: &[(&str, Method, &str, Version, usize, usize)] = &[
        ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", Method::Get, "/", Version::Http11, 1, 27),
        ("HEAD /x?y HTTP/1.0\r\n\r\n", Method::Head, "/x?y", Version::Http10, 0, 22),
        ("get / HTTP/1.0\r\n\r\n", Method::Other("get".into()), "/", Version::Http10, 0, 18),
        ("DELETE /a HTTP/1.1\nHost: h\nX-A: 1\n\n", Method::Other("DELETE".into()), "/a", Version::Http11, 2, 35),
        ("\r\n\nGET / HTTP/1.0\r\n\r\nrest", Method::Get, "/", Version::Http10, 0, 21),
        ("GET /path\n", Method::Get, "/path", Version::Http09, 0, 10),
        ("GET /path\r\nmore", Method::Get, "/path", Version::Http09, 0, 11),
        ("GET http://h/x HTTP/1.1\r\nHost: h\r\n\r\n", Method::Get, "http://h/x", Version::Http11, 1, 36),
    ];
    for (input, method, target, version, headers, used) in ok {
        let (head, n) = one(input).unwrap().unwrap_or_else(|| panic!("{input:?} incomplete"));
        assert_eq!((&head.method, head.target.as_str(), head.version), (method, *target, *version), "{input:?}");
        assert_eq!((head.headers.len(), n), (*headers, *used), "{input:?}");
    }
    let refused: &[(&str, HeadError)] = &[
        ("GET / HTTP/2.0\r\n", VersionNotSupported),
        ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", VersionNotSupported),
        ("GET / HTTP/3\r\n\r\n", VersionNotSupported),
        ("GET / HTTP/1.2\r\nHost: a\r\n\r\n", VersionNotSupported),
        ("GET / HTTP/0.9\r\n\r\n", VersionNotSupported),
        ("GET / http/1.1\r\n\r\n", BadRequest),
        ("GET / HTTX/1.1\r\n\r\n", BadRequest),
        ("GET\r\n", BadRequest),
        ("HEAD /x\r\n", BadRequest), // HTTP/0.9 has only GET
        ("GET  /x\r\n", BadRequest), // two spaces
        ("GET /\0 HTTP/1.1\r\n", BadRequest),
        ("GET /\r HTTP/1.1\r\n", BadRequest),
        ("GET /\t HTTP/1.1\r\n", BadRequest),
        ("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", BadRequest),
        ("GET / HTTP/1.1\r\n\r\n", BadRequest), // no Host in 1.1
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", BadRequest), // two
        ("GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n", BadRequest),
        ("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", BadRequest), // bare CR
        ("GET / HTTP/1.1\r\nHost: a\0\r\n\r\n", BadRequest),
        ("GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n folded\r\n\r\n", BadRequest), // obs-fold
        ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", BadRequest),                   // space before colon
        ("GET / HTTP/1.1\r\nHo st: a\r\n\r\n", BadRequest),
        ("GET / HTTP/1.1\r\n: a\r\n\r\n", BadRequest),
        ("\rGET / HTTP/1.1\r\n", BadRequest),
    ];
    for (input, want) in refused {
        assert_eq!(one(input).err(), Some(*want), "{input:?}");
    }
    for partial in ["", "\r\n", "\r", "GET /x", "GET / HTTP/1.1\r\nHost: a\r\n", "GET / HTTP/1.1\r\nHost: a\r\n\r"] {
        assert_eq!(one(partial), Ok(None), "{partial:?}");
    }
    assert_eq!(
        [BadRequest, UriTooLong, HeadersTooLarge, VersionNotSupported].map(|e| e.status()),
        [400, 414, 431, 505]
    );
}

fn small() -> RequestLimits {
    RequestLimits { max_request_line: 32, max_header_bytes: 64, max_headers: 4 }
}

/// Request lines of exactly the limit, and one byte over, with either line end and whatever
/// follows; and the same for the header bytes and the header count.
#[test]
fn limits_at_and_one_over_the_edge() {
    let limits = small();
    let line = |len: usize| format!("GET /{} HTTP/1.0", "a".repeat(len - 14));
    assert_eq!(line(32).len(), 32);
    for end in ["\r\n", "\n"] {
        let at = format!("{}{end}\r\n", line(32));
        assert!(matches!(parse_head(at.as_bytes(), &limits), Ok(Some(_))), "{at:?}");
        let over = format!("{}{end}\r\n", line(33));
        assert_eq!(parse_head(over.as_bytes(), &limits).err(), Some(HeadError::UriTooLong));
        // Without the line end yet: 33 bytes are already too many, 32 and a `\r` not yet.
        assert_eq!(parse_head(&over.as_bytes()[..33], &limits).err(), Some(HeadError::UriTooLong));
        assert_eq!(parse_head(&at.as_bytes()[..33], &limits), Ok(None));
    }
    assert_eq!(parse_head(&[b'\n'; 33], &limits).err(), Some(HeadError::BadRequest)); // only empty lines

    // Header bytes: "Host: h\r\n" + "X: <v>\r\n" + "\r\n" = 9 + (5 + v) + 2, at the limit for v = 48.
    let head = |v: usize| format!("GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\nNEXT", "v".repeat(v));
    let (_, used) = parse_head(head(48).as_bytes(), &limits).unwrap().unwrap();
    assert_eq!(used, 16 + 64);
    assert_eq!(parse_head(head(49).as_bytes(), &limits).err(), Some(HeadError::HeadersTooLarge));
    // Over the limit without an end in sight is refused at once, not buffered.
    assert_eq!(parse_head(&head(49).as_bytes()[..16 + 65], &limits).err(), Some(HeadError::HeadersTooLarge));

    let fields = |n: usize| format!("GET / HTTP/1.1\r\nHost: h\r\n{}\r\n", "A: 1\r\n".repeat(n - 1));
    assert_eq!(parse_head(fields(4).as_bytes(), &limits).unwrap().unwrap().0.headers.len(), 4);
    assert_eq!(parse_head(fields(5).as_bytes(), &limits).err(), Some(HeadError::HeadersTooLarge));
    assert_eq!(
        RequestLimits::default(),
        RequestLimits { max_request_line: 8192, max_header_bytes: 16384, max_headers: 64 }
    );
}

#[test]
fn keep_alive_rules() {
    let cases = [
        ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
        ("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", false),
        ("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, CLOSE\r\n\r\n", false),
        ("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n", false),
        ("GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n", true),
        ("GET / HTTP/1.0\r\n\r\n", false),
        ("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
        ("GET / HTTP/1.0\r\nconnection: te , keep-alive\r\n\r\n", true),
        ("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", false),
        ("GET /\r\n", false),
    ];
    for (input, want) in cases {
        assert_eq!(one(input).unwrap().unwrap().0.keep_alive(), want, "{input:?}");
    }
}

#[test]
fn content_length_and_body() {
    let head = |fields: &str| one(&format!("POST / HTTP/1.1\r\nHost: a\r\n{fields}\r\n")).unwrap().unwrap().0;
    type Case = (&'static str, Result<Option<u64>, HeadError>, Result<bool, HeadError>);
    let cases: &[Case] = &[
        ("", Ok(None), Ok(false)),
        ("Content-Length: 0\r\n", Ok(Some(0)), Ok(false)),
        ("Content-Length: 12\r\n", Ok(Some(12)), Ok(true)),
        ("Content-Length: 5, 5\r\ncontent-length: 5\r\n", Ok(Some(5)), Ok(true)),
        ("Content-Length: 5\r\nContent-Length: 6\r\n", Err(HeadError::BadRequest), Err(HeadError::BadRequest)),
        ("Content-Length: -1\r\n", Err(HeadError::BadRequest), Err(HeadError::BadRequest)),
        ("Content-Length: +1\r\n", Err(HeadError::BadRequest), Err(HeadError::BadRequest)),
        ("Content-Length: 1x\r\n", Err(HeadError::BadRequest), Err(HeadError::BadRequest)),
        ("Content-Length:\r\n", Err(HeadError::BadRequest), Err(HeadError::BadRequest)),
        ("Content-Length: 99999999999999999999\r\n", Err(HeadError::BadRequest), Err(HeadError::BadRequest)),
        ("Transfer-Encoding: chunked\r\n", Ok(None), Ok(true)),
        ("Transfer-Encoding: chunked\r\nContent-Length: 0\r\n", Ok(Some(0)), Ok(true)),
    ];
    for (fields, length, body) in cases {
        let h = head(fields);
        assert_eq!((h.content_length(), h.has_body()), (*length, *body), "{fields:?}");
    }
    let h = head("X-Multi: a\r\nx-multi: b\r\n");
    assert_eq!(h.header("X-MULTI"), Some(&b"a"[..]));
    assert_eq!(h.headers_named("x-multi").collect::<Vec<_>>(), [b"a", b"b"]);
    assert_eq!(h.headers[0].0, "host");
}

const PIPELINE: &str = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n\
    \r\nHEAD /b?q HTTP/1.0\r\nConnection: keep-alive\r\n\r\n\
    GET /c HTTP/1.1\nHost: h\nAccept: */*\n\n\
    GET /d\r\n\
    GET /e HTTP/1.1\r\nHo";

/// A driver gets the same heads and leftovers wherever the reads split the stream.
#[test]
fn pipelined_heads_at_every_split() {
    let limits = RequestLimits::default();
    for stream in [
        PIPELINE.as_bytes(),
        b"GET /a\nGET / HTTP/2.0\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nX\r\n",
    ] {
        let whole = drive(&[stream], &limits);
        for at in 0..=stream.len() {
            assert_eq!(drive(&[&stream[..at], &stream[at..]], &limits), whole, "split at {at}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(drive(&bytes, &limits), whole);
    }
    let (heads, err, rest) = drive(&[PIPELINE.as_bytes()], &limits);
    let targets: Vec<_> = heads.iter().map(|h| (h.target.as_str(), h.version)).collect();
    use Version::*;
    assert_eq!(targets, [("/a", Http11), ("/b?q", Http10), ("/c", Http11), ("/d", Http09)]);
    assert_eq!((err, rest.as_slice()), (None, &b"GET /e HTTP/1.1\r\nHo"[..]));
    assert_eq!(heads[3], get("/d", Http09));
}

/// Building blocks for streams that reach deep into the grammar, and its limits.
fn piece() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "GET",
        "HEAD",
        " ",
        "/",
        "/a",
        "%2e",
        "HTTP/1.1",
        "HTTP/1.0",
        "HTTP/2.0",
        "\r\n",
        "\n",
        "\r",
        "\0",
        "Host: h",
        "Connection: close",
        "X:",
        " v",
        "\t",
        "GET / HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /x\n",
        "\r\n\r\n",
        "aaaaaaaa",
    ])
}

proptest! {
    #[test]
    fn any_bytes_any_chunking(data in prop::collection::vec(any::<u8>(), 0..300), cuts in prop::collection::vec(1usize..40, 0..20)) {
        check_chunking(&data, &cuts);
    }

    #[test]
    fn grammar_pieces_any_chunking(pieces in prop::collection::vec(piece(), 0..40), cuts in prop::collection::vec(1usize..40, 0..20)) {
        check_chunking(pieces.concat().as_bytes(), &cuts);
    }
}

fn check_chunking(data: &[u8], cuts: &[usize]) {
    for limits in
        [RequestLimits::default(), small(), RequestLimits { max_request_line: 0, max_header_bytes: 0, max_headers: 0 }]
    {
        let whole = drive(&[data], &limits);
        let mut chunks = Vec::new();
        let mut rest = data;
        for &cut in cuts.iter().cycle().take(data.len()) {
            if rest.is_empty() {
                break;
            }
            let (a, b) = rest.split_at(cut.min(rest.len()));
            chunks.push(a);
            rest = b;
        }
        chunks.push(rest);
        assert_eq!(drive(&chunks, &limits), whole);
    }
}
