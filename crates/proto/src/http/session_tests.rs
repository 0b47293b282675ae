//! Tests of the HTTP session on a virtual clock, over an in-memory tree whose files are real
//! (unlinked) temporary files, so that the wire a client would see can be rebuilt from the
//! output's byte and file segments.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use proptest::prelude::*;

use super::files::{Dir, DirEntry, Entry, Files, FilesError, OpenFile};
use super::path::SafePath;
use super::session::{Http, HttpLimits, HttpSession, REFUSAL};
use crate::{Action, ConnInfo, Job, Level, Output, Service, Session, SessionId, Transmit};

/// 2001-09-09 01:46:40 UTC: the wall clock at accept.
const WALL: u64 = 1_000_000_000;
const MTIME: u64 = 999_000_000;

#[derive(Default)]
struct MemFiles {
    files: HashMap<String, OpenFile>,
    dirs: HashMap<String, (bool, bool)>, // (has index, listing)
    /// Paths "not in the kernel's caches": `try_open` says they would wait.
    cold: Vec<String>,
}

fn temp_file(content: &[u8]) -> Arc<File> {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("warren-http-test-{}-{n}", std::process::id()));
    let mut f = File::options().read(true).write(true).create_new(true).open(&path).unwrap();
    f.write_all(content).unwrap();
    std::fs::remove_file(&path).unwrap(); // the open file lives on, nothing to clean up
    Arc::new(f)
}

impl MemFiles {
    fn file(mut self, path: &str, content: &[u8]) -> Self {
        let modified = SystemTime::UNIX_EPOCH + Duration::from_secs(MTIME);
        let file = OpenFile { file: temp_file(content), len: content.len() as u64, modified, id: 42 };
        self.files.insert(path.into(), file);
        self
    }
    fn dir(mut self, path: &str, index: bool, listing: bool) -> Self {
        self.dirs.insert(path.into(), (index, listing));
        self
    }
    fn cold(mut self, path: &str) -> Self {
        self.cold.push(path.into());
        self
    }
}

impl Files for MemFiles {
    fn try_open(&self, path: &SafePath) -> Option<Result<Entry, FilesError>> {
        (!self.cold.contains(&path.components.join("/"))).then(|| self.open(path))
    }

    fn open(&self, path: &SafePath) -> Result<Entry, FilesError> {
        let key = path.components.join("/");
        if key == "secret" {
            return Err(FilesError::Forbidden);
        }
        if key == "broken" {
            return Err(FilesError::Io(std::io::Error::other("disk on fire")));
        }
        if let Some(f) = self.files.get(&key) {
            return Ok(Entry::File(f.clone()));
        }
        let &(index, listing) = self.dirs.get(&key).ok_or(FilesError::NotFound)?;
        let index = index.then(|| ("index.html".into(), self.files[&format!("{key}/index.html")].clone()));
        let listing = listing.then(|| {
            let modified = SystemTime::UNIX_EPOCH;
            vec![
                DirEntry { name: "<b>&.txt".into(), is_dir: false, len: 3, modified },
                DirEntry { name: "sub dir".into(), is_dir: true, len: 0, modified },
            ]
        });
        Ok(Entry::Dir(Dir { index, listing }))
    }
}

fn tree() -> MemFiles {
    MemFiles::default()
        .file("a.txt", b"0123456789")
        .file("b.png", b"PNG")
        .file("docs/index.html", b"<h1>docs</h1>")
        .dir("", false, false)
        .dir("docs", true, false)
        .dir("list", false, true)
}

/// The server of [`tree`], with `set` applied.
fn with_http(set: impl FnOnce(&mut Http)) -> Http {
    let mut http = Http::new(Arc::new(tree()));
    set(&mut http);
    http
}

/// A session under test with its output, clock and what was sent so far.
struct Client {
    session: crate::http::HttpSession,
    out: crate::Out<HttpSession>,
    t0: Instant,
    now: Instant,
}

impl Client {
    fn with(http: Http) -> Self {
        let t0 = Instant::now();
        let peer = Some("192.0.2.7:5555".parse().unwrap());
        let info =
            ConnInfo { id: SessionId(1), peer, wall: SystemTime::UNIX_EPOCH + Duration::from_secs(WALL), seed: 0 };
        let mut session = http.new_session(&info, t0);
        let mut out = Output::new();
        session.handle_open(t0, &mut out);
        Self { session, out, t0, now: t0 }
    }

    fn new() -> Self {
        Self::with(Http::new(Arc::new(tree())))
    }

    fn send(&mut self, data: &str) -> String {
        self.session.handle_input(self.now, data.as_bytes(), &mut self.out);
        self.wire()
    }

    /// Everything pending, as the client would read it; segments as `Ok(bytes)` / `Err(file len)`.
    fn segments(&mut self) -> Vec<Result<Vec<u8>, (u64, u64)>> {
        let mut segments = Vec::new();
        while let Some(t) = self.out.poll_transmit() {
            let (seg, n) = match t {
                Transmit::Bytes(b) => (Ok(b.to_vec()), b.len()),
                Transmit::File(f) => (Err((f.offset, f.len)), f.len as usize),
            };
            if let Transmit::File(f) = t {
                let mut data = vec![0; f.len as usize];
                f.file.read_exact_at(&mut data, f.offset).unwrap();
                segments.push(Ok(data));
            }
            segments.push(seg);
            self.out.consume(n);
        }
        segments
    }

    fn wire(&mut self) -> String {
        // File slices appear twice in `segments` (their content, then their place): keep content.
        let bytes: Vec<u8> = self.segments().into_iter().filter_map(Result::ok).flatten().collect();
        String::from_utf8(bytes).unwrap()
    }

    fn logs(&mut self) -> Vec<String> {
        let mut actions = Vec::new();
        self.out.take_actions(&mut actions);
        actions
            .into_iter()
            .filter_map(|a| match a {
                Action::Log(Level::Access, line) => Some(line),
                _ => None,
            })
            .collect()
    }

    fn advance(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
        self.session.handle_timeout(self.now, &mut self.out);
    }
}

fn status(wire: &str) -> &str {
    &wire[9..12]
}

#[test]
fn get_has_every_header_and_the_file() {
    let mut c = Client::new();
    c.now += Duration::from_secs(2);
    let wire = c.send("GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        wire,
        "HTTP/1.1 200 OK\r\nDate: Sun, 09 Sep 2001 01:46:42 GMT\r\nServer: warren\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Length: 10\r\n\
         Last-Modified: Tue, 28 Aug 2001 12:00:00 GMT\r\nETag: \"2a-ddd2935029d8000-a\"\r\n\
         Accept-Ranges: bytes\r\n\r\n0123456789"
    );
    assert!(!c.out.is_closed());
    assert!(c.send("GET /b.png HTTP/1.1\r\nHost: x\r\n\r\n").contains("Content-Type: image/png\r\n"));
}

#[test]
fn head_has_the_headers_but_no_body() {
    let mut c = Client::new();
    let wire = c.send("HEAD /a.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\n\r\n");
    assert!(wire.starts_with("HTTP/1.1 200 OK\r\n") && wire.contains("Content-Length: 10\r\n"), "{wire}");
    assert!(wire.ends_with("\r\n\r\n"));
    let wire = c.send("HEAD /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(wire.starts_with("HTTP/1.1 404 Not Found") && wire.ends_with("\r\n\r\n"), "{wire}");
}

#[test]
fn ranges() {
    let mut c = Client::new();
    let get = |c: &mut Client, range: &str| c.send(&format!("GET /a.txt HTTP/1.1\r\nHost: x\r\n{range}\r\n\r\n"));
    let wire = get(&mut c, "Range: bytes=2-4");
    assert!(wire.starts_with("HTTP/1.1 206 Partial Content\r\n"), "{wire}");
    assert!(wire.contains("Content-Length: 3\r\n") && wire.contains("Content-Range: bytes 2-4/10\r\n"));
    assert!(wire.ends_with("\r\n\r\n234"));
    assert!(get(&mut c, "Range: bytes=7-").ends_with("Content-Range: bytes 7-9/10\r\n\r\n789"));
    assert!(get(&mut c, "Range: bytes=-2").ends_with("Content-Range: bytes 8-9/10\r\n\r\n89"));
    let wire = get(&mut c, "Range: bytes=10-");
    assert!(
        wire.starts_with("HTTP/1.1 416 Range Not Satisfiable\r\n") && wire.contains("Content-Range: bytes */10\r\n")
    );
    assert!(!c.out.is_closed(), "416 keeps the connection");
    let wire = get(&mut c, "Range: bytes=0-1,4-5");
    assert!(status(&wire) == "200" && wire.ends_with("0123456789"), "several ranges: the whole file");
    assert_eq!(status(&get(&mut c, "Range: bytes=0-1\r\nIf-Range: \"stale\"")), "200");
    let tag = "\"2a-ddd2935029d8000-a\"";
    assert_eq!(status(&get(&mut c, &format!("Range: bytes=0-1\r\nIf-Range: {tag}"))), "206");
}

#[test]
fn conditional_requests_get_304() {
    let mut c = Client::new();
    let tag = "\"2a-ddd2935029d8000-a\"";
    let wire = c.send(&format!("GET /a.txt HTTP/1.1\r\nHost: x\r\nIf-None-Match: W/{tag}\r\n\r\n"));
    assert!(wire.starts_with("HTTP/1.1 304 Not Modified\r\n") && wire.contains(&format!("ETag: {tag}\r\n")));
    assert!(wire.ends_with("\r\n\r\n") && !wire.contains("Content-Length"), "{wire}");
    let ims = "If-Modified-Since: Tue, 28 Aug 2001 12:00:00 GMT";
    assert_eq!(status(&c.send(&format!("GET /a.txt HTTP/1.1\r\nHost: x\r\n{ims}\r\n\r\n"))), "304");
    let old = "If-Modified-Since: Tue, 28 Aug 2001 11:59:59 GMT";
    assert_eq!(status(&c.send(&format!("GET /a.txt HTTP/1.1\r\nHost: x\r\n{old}\r\n\r\n"))), "200");
}

#[test]
fn keep_alive_and_close_by_version() {
    let mut c = Client::new();
    let wire = c.send("GET /a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(wire.contains("Connection: close\r\n") && c.out.is_closed());

    let mut c = Client::new();
    let wire = c.send("GET /a.txt HTTP/1.0\r\n\r\n");
    assert!(wire.contains("Connection: close\r\n") && c.out.is_closed());

    let mut c = Client::new();
    let wire = c.send("GET /a.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert!(wire.contains("Connection: keep-alive\r\n") && !c.out.is_closed());
    let wire = c.send("GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(!wire.contains("Connection:") && !c.out.is_closed());
}

#[test]
fn pipelined_requests_are_answered_in_order_with_their_slices() {
    let mut c = Client::new();
    let two = "GET /a.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=1-2\r\n\r\nGET /b.png HTTP/1.1\r\nHost: x\r\n\r\nGET /a";
    c.session.handle_input(c.now, two.as_bytes(), &mut c.out);
    let places: Vec<_> = c.segments().into_iter().filter(|s| !matches!(s, Ok(b) if !b.starts_with(b"HTTP"))).collect();
    assert_eq!(places.len(), 4, "head, slice, head, slice");
    assert!(matches!(&places[0], Ok(h) if h.ends_with(b"Content-Range: bytes 1-2/10\r\n\r\n")));
    assert_eq!(places[1], Err((1, 2)));
    assert!(matches!(&places[2], Ok(h) if h.windows(9).any(|w| w == b"image/png")));
    assert_eq!(places[3], Err((0, 3)));
    // The third request completes later.
    assert!(c.send(".txt HTTP/1.1\r\nHost: x\r\n\r\n").ends_with("0123456789"));
}

#[test]
fn every_error_status() {
    let cases: &[(&str, &str, bool)] = &[
        ("GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n", "400", false),
        ("GET /a/../b HTTP/1.1\r\nHost: x\r\n\r\n", "403", false),
        ("GET /secret HTTP/1.1\r\nHost: x\r\n\r\n", "403", false),
        ("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", "404", false),
        ("GET /a.txt/ HTTP/1.1\r\nHost: x\r\n\r\n", "404", false),
        ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", "403", false),
        ("POST /a.txt HTTP/1.1\r\nHost: x\r\n\r\n", "405", false),
        ("POST /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", "405", true),
        ("GET /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", "413", true),
        ("GET /a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", "501", true),
        ("BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n", "501", false),
        ("GET /broken HTTP/1.1\r\nHost: x\r\n\r\n", "500", false),
        ("GET / HTTP/1.1\r\n\r\n", "400", true),
        ("GET /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n", "400", true),
        ("GET / HTTP/2.0\r\n\r\n", "505", true),
    ];
    for (request, want, closes) in cases {
        let mut c = Client::new();
        let wire = c.send(request);
        assert_eq!(status(&wire), *want, "{request:?}: {wire}");
        assert_eq!(c.out.is_closed(), *closes, "{request:?}");
        assert_eq!(wire.contains("Connection: close\r\n"), *closes, "{request:?}");
        let (head, body) = wire.split_once("\r\n\r\n").unwrap();
        assert!(format!("{head}\r\n").contains(&format!("Content-Length: {}\r\n", body.len())), "{wire}");
        assert!(body.contains(want), "{wire}");
        if *want == "405" {
            assert!(head.contains("Allow: GET, HEAD"));
        }
    }
    let limits = HttpLimits {
        request: crate::http::RequestLimits { max_request_line: 20, max_header_bytes: 30, max_headers: 2 },
        ..HttpLimits::default()
    };
    for (request, want) in
        [("GET /aaaaaaaaaaaaaaaaaaaaaaaaaaa", "414"), ("GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\n", "431")]
    {
        let mut c = Client::with(with_http(|h| h.limits = limits.clone()));
        let wire = c.send(request);
        assert_eq!(status(&wire), want, "{wire}");
        assert!(c.out.is_closed());
    }
}

#[test]
fn directories_redirect_index_and_list() {
    let mut c = Client::new();
    let wire = c.send("GET /docs?x=1 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(wire.starts_with("HTTP/1.1 301 Moved Permanently\r\n") && wire.contains("Location: /docs/?x=1\r\n"));
    let wire = c.send("GET /docs/ HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(wire.contains("Content-Type: text/html; charset=utf-8\r\n") && wire.ends_with("<h1>docs</h1>"));
    let wire = c.send("GET /list/ HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status(&wire), "200");
    assert!(wire.contains("<title>Index of /list/</title>") && wire.contains("<a href=\"../\">"), "{wire}");
    assert!(wire.contains("<a href=\"%3Cb%3E%26.txt\">&lt;b&gt;&amp;.txt</a> 3 bytes"), "{wire}");
    assert!(wire.contains("<a href=\"sub%20dir/\">sub dir/</a>"), "{wire}");
}

#[test]
fn http09_gets_raw_bytes_and_bare_errors() {
    let cases = [
        ("GET /a.txt\r\n", "0123456789"),
        ("GET /docs\n", "<h1>docs</h1>"),
        ("GET /nope\r\n", "404 Object Not Found"),
        ("GET /%zz\r\n", "400 Bad Request"),
        ("GET /../etc/passwd\r\n", "403 Forbidden"),
        ("FOO /x\r\n", "400 Bad Request"),
    ];
    for (request, want) in cases {
        let mut c = Client::with(with_http(|h| h.access_log = true));
        assert_eq!(c.send(request), want, "{request:?}");
        assert!(c.out.is_closed());
        assert_eq!(c.logs().len(), 1);
    }
}

#[test]
fn dribbling_client_gets_408_and_idle_one_a_quiet_close() {
    let http = with_http(|h| {
        h.limits = HttpLimits {
            read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            ..Default::default()
        }
    });
    let mut c = Client::with(http.clone());
    assert_eq!(c.session.poll_timeout(), Some(c.t0 + Duration::from_secs(60)));
    for byte in "GET /a.txt HTTP/1.1\r\n".split_inclusive("") {
        c.now += Duration::from_secs(1);
        c.send(byte);
        c.session.handle_timeout(c.now, &mut c.out);
        if c.out.is_closed() {
            break;
        }
    }
    let wire = c.wire();
    assert!(wire.starts_with("HTTP/1.1 408 Request Timeout\r\n") && wire.contains("Connection: close"), "{wire}");
    assert_eq!(c.session.poll_timeout(), None);

    let mut c = Client::with(http);
    c.send("GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n");
    c.advance(59);
    assert!(!c.out.is_closed());
    c.advance(1);
    assert!(c.out.is_closed() && c.wire().is_empty(), "idle: closed without a word");
}

#[test]
fn slow_download_is_not_idleness() {
    let http = with_http(|h| h.limits = HttpLimits { idle_timeout: Duration::from_secs(5), ..Default::default() });
    let mut c = Client::with(http);
    c.send("GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n");
    c.session.handle_input(c.now, b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n", &mut c.out);
    let head = c.out.pending().len();
    c.out.consume(head);
    c.advance(5);
    assert!(!c.out.is_closed(), "the peer is still reading");
    c.out.consume(3);
    c.advance(5);
    assert!(!c.out.is_closed(), "and making progress");
    c.advance(5);
    assert!(c.out.is_closed(), "no progress for an idle period: stuck");
}

#[test]
fn access_log_is_nginx_combined_format() {
    let mut c = Client::with(with_http(|h| h.access_log = true));
    c.now += Duration::from_secs(1);
    c.send(
        "GET /a.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=0-3\r\nReferer: http://x/\r\nUser-Agent: curl/8.0 \"q\"\r\n\r\n\
         HEAD /\"x HTTP/1.1\r\nHost: x\r\nUser-Agent: café\r\n\r\n",
    );
    assert_eq!(
        c.logs(),
        [
            "192.0.2.7 - - [09/Sep/2001:01:46:41 +0000] \"GET /a.txt HTTP/1.1\" 206 4 \"http://x/\" \"curl/8.0 \\x22q\\x22\"",
            "192.0.2.7 - - [09/Sep/2001:01:46:41 +0000] \"HEAD /\\x22x HTTP/1.1\" 404 0 \"-\" \"caf\\xC3\\xA9\"",
        ]
    );
    assert!(Client::new().send("GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n").ends_with("0123456789"));
}

#[test]
fn refusal_is_a_complete_503() {
    let text = std::str::from_utf8(REFUSAL).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n") && head.contains("Connection: close"));
    assert!(head.contains(&format!("Content-Length: {}", body.len())));
    assert_eq!(Http::new(Arc::new(tree())).name(), "http");
}

proptest! {
    #[test]
    fn arbitrary_chunks_never_panic_nor_flood(chunks in prop::collection::vec(
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..40),
            Just(b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
            Just(b"GET /list/ HTTP/1.1\r\nHost: x\r\nRange: bytes=1-\r\n\r\n".to_vec()),
            Just(b"\r\n".to_vec()),
        ], 0..30)) {
        let mut c = Client::new();
        let mut fed = 0;
        for chunk in chunks.iter().filter(|c| !c.is_empty()) {
            if c.out.is_closed() {
                break;
            }
            fed += chunk.len();
            c.session.handle_input(c.now, chunk, &mut c.out);
            c.advance(1);
        }
        // Only bytes count: file slices cost no memory.
        let bytes: usize = c.segments().iter().map(|s| match s { Ok(b) if !b.is_empty() => b.len(), _ => 0 }).sum();
        prop_assert!(bytes <= 64 * fed + 1024, "{bytes} bytes out for {fed} in");
    }
}

#[test]
fn a_file_the_kernel_has_not_cached_is_opened_in_a_job_and_answers_keep_their_order() {
    let mut c = Client::with(Http::new(Arc::new(tree().cold("b.png"))));
    let sent = c.send("GET /b.png HTTP/1.1\r\nHost: x\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(sent, "", "nothing answers before the cold file is open, not even what follows it");
    let job = std::iter::from_fn(|| c.out.poll_action()).find_map(|a| match a {
        Action::Job(token, Job::Blocking(open)) => Some((token, open)),
        _ => None,
    });
    let (token, open) = job.expect("the open went to a job");
    assert_eq!(c.session.poll_timeout(), None, "the wait is the server's, not the client's");
    c.session.handle_completion(c.now, token, open(), &mut c.out);
    let wire = c.wire();
    let png = wire.find("PNG").expect("the cold file's body");
    let txt = wire.find("0123456789").expect("the pipelined request's body");
    assert!(png < txt, "answers leave in request order: {wire}");
}
