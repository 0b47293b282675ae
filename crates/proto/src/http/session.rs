//! The HTTP/1.x static file server's connection: keep-alive, pipelining, GET and HEAD of files
//! and directories, ranges, conditional requests, errors, timeouts and the access log.
//!
//! Choices worth knowing:
//!
//! - **Input is bounded by the head limits**: every complete head in the buffer is answered at
//!   once (a driver calls `handle_input` only when bytes arrive, so none may wait), and an
//!   incomplete one longer than [`RequestLimits`] allow is refused by the parser; the buffer never
//!   holds more than one head's worth plus one read. Output is bounded by the drivers, which stop
//!   reading while much is pending.
//! - **No request bodies**: a static server has no use for them, and skipping one is a way to be
//!   desynchronised. `Transfer-Encoding` (any) is `501` and a `Content-Length` above zero on GET
//!   or HEAD is `413`; both close the connection, as does any other answer to a request with a
//!   body. Methods: other well-known ones (POST, PUT, …) are `405` with `Allow`, any other token
//!   `501`.
//! - **Timeouts**: idle between requests closes quietly; a request started and not finished
//!   within the read timeout gets `408` and a close. A long download is not idleness: while
//!   output is pending and shrinking between timeouts, the idle clock restarts.
//! - **HTTP/0.9** (the course's LargerHttpd clients): the raw file and a close; errors are the
//!   course's bare strings (`404 Object Not Found`), also for a malformed one-line request.
//! - **`/visits`** (when [`Http::visits`] is set): the demo counters of [`super::visits`]. A
//!   `/visits/session` request waits for the hub's answer; requests pipelined after it wait in
//!   the buffer, so that answers leave in request order.
//! - **Files the kernel has not cached** ([`Files::try_open`] says it would wait) are opened in
//!   a job, so a slow disk holds up only the connections that wait for it; requests pipelined
//!   behind one wait in the buffer, as behind a `/visits/session` request.
//! - **Metrics** ([`Http::metrics_path`], `/metrics` unless changed): the server's counters
//!   ([`HttpMetrics`]) as a Prometheus page, answered before the files are looked at, so a file
//!   of that name in the root is not served. Counting a request is a few atomic additions.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use super::files::{Dir, Entry, Files, FilesError};
use super::metrics::HttpMetrics;
use super::path::{SafePath, resolve_target};
use super::reply::{Frame, Reply, error, listing, send_whole, serve_file, with_slash};
use super::request::{Head, Method, RequestLimits, Version, parse_head};
use super::response::clf_date;
use super::visits::{
    COOKIE_LIFETIME, COUNT_COOKIE, Route, SESSION_COOKIE, VisitsConfig, VisitsHub, VisitsMessage, VisitsRequest,
    cookies, count_cookie, parse_session_id, route, session_cookie,
};
use crate::{ConnInfo, Deadline, Job, Level, Limits, Output, Service, Session, Token};

type Out = Output<VisitsRequest, Opened>;

/// A file opened in a job.
pub type Opened = Result<Entry, FilesError>;

/// A request whose answer waits, with what framing and logging it needs then.
#[derive(Debug)]
enum Waiting {
    /// A `/visits/session` request, for the hub.
    Visit { frame: Frame, logged: Logged },
    /// A file or directory being opened by a job.
    Open { head: Head, frame: Frame, path: SafePath },
}

/// Where the metrics page is answered unless [`Http::metrics_path`] says otherwise: where
/// Prometheus looks by default.
pub const DEFAULT_METRICS_PATH: &str = "/metrics";

/// What the server sends a connection it refuses at its limit, before closing it.
pub const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Length: 20\r\nConnection: close\r\n\r\nserver at capacity\r\n";

/// Per-connection limits of the HTTP server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Request line and header sizes: `414` and `431` beyond them. Default [`RequestLimits`].
    pub request: RequestLimits,
    /// Close a keep-alive connection quietly after this long without a request (nor progress
    /// sending an answer). Default 75 s, nginx's `keepalive_timeout`.
    pub idle_timeout: Duration,
    /// Answer `408` and close when a request started is not complete after this long: the
    /// slow-client defence. Default 30 s.
    pub read_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            request: RequestLimits::default(),
            idle_timeout: Duration::from_secs(75),
            read_timeout: Duration::from_secs(30),
        }
    }
}

/// The HTTP file server: one [`HttpSession`] per connection; the hub holds the `/visits`
/// session table.
///
/// The settings are read once, at the first connection, into what every session shares.
#[derive(Clone)]
pub struct Http {
    pub limits: HttpLimits,
    /// The document root, or any other tree of files.
    pub files: Arc<dyn Files>,
    /// Log one line per request in nginx's `combined` format, as [`Level::Access`].
    pub access_log: bool,
    /// The `/visits` demo's key and table limits; `None` serves `/visits` from the files.
    pub visits: Option<Arc<VisitsConfig>>,
    /// Where the metrics page is answered (`/metrics` by default; `None`: nowhere). It hides a
    /// file of that name in the root.
    pub metrics_path: Option<String>,
    /// The counters every session adds to: this process's own by default; under `fork` and
    /// `prefork`, slots the processes share.
    pub metrics: HttpMetrics,
    shared: OnceLock<Arc<Shared>>,
}

/// What every session of one server reads: one pointer per connection instead of a copy.
struct Shared {
    files: Arc<dyn Files>,
    request: RequestLimits,
    timeouts: Limits,
    access_log: bool,
    visits: Option<Arc<VisitsConfig>>,
    metrics_path: Option<String>,
    metrics: HttpMetrics,
    /// What encodes the metrics page.
    registry: prometheus_client::registry::Registry,
}

impl Http {
    /// A server of `files` with the default limits and no access log.
    pub fn new(files: Arc<dyn Files>) -> Self {
        Self {
            limits: HttpLimits::default(),
            files,
            access_log: false,
            visits: None,
            metrics_path: Some(DEFAULT_METRICS_PATH.to_owned()),
            metrics: HttpMetrics::private(),
            shared: OnceLock::new(),
        }
    }

    fn shared(&self) -> &Arc<Shared> {
        self.shared.get_or_init(|| {
            let timeouts = Limits {
                idle_timeout: self.limits.idle_timeout,
                read_timeout: self.limits.read_timeout,
                max_request: 0,
            };
            Arc::new(Shared {
                files: self.files.clone(),
                request: self.limits.request.clone(),
                timeouts,
                access_log: self.access_log,
                visits: self.visits.clone(),
                metrics_path: self.metrics_path.clone(),
                metrics: self.metrics,
                registry: self.metrics.registry(),
            })
        })
    }
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http").field("limits", &self.limits).field("access_log", &self.access_log).finish()
    }
}

impl Service for Http {
    type Hub = VisitsHub;
    type Session = HttpSession;

    fn name(&self) -> &'static str {
        "http"
    }

    fn new_session(&self, info: &ConnInfo, now: Instant) -> HttpSession {
        HttpSession::new(self, info, now)
    }

    fn new_hub(&self, _: Instant) -> VisitsHub {
        VisitsHub::new(self.visits.as_deref().cloned())
    }

    fn refusal(&self) -> &'static [u8] {
        REFUSAL
    }

    fn client_speaks_first(&self) -> bool {
        true
    }
}

/// One HTTP connection.
pub struct HttpSession {
    http: Arc<Shared>,
    deadline: Deadline,
    opened_at: Instant,
    wall: SystemTime,
    peer: Option<SocketAddr>,
    /// Received bytes not yet part of an answered request.
    buf: Vec<u8>,
    /// The last request was answered with a close: input is ignored from now on.
    done: bool,
    /// Output still pending at the last timeout, to tell a slow download from a stuck one.
    last_pending: u64,
    /// A request waiting for the hub or for a file to open. Nothing after it is answered
    /// before it.
    waiting: Option<Box<Waiting>>,
    /// The peer closed while a request waited: close once it is answered.
    read_closed: bool,
    /// Closed after answering a request that asked to close, with no byte behind it: the
    /// peer sends nothing more, so the close need not linger.
    clean_close: bool,
    /// No request has been answered yet: a lone `\n` now is a one-line client's empty request.
    first_request: bool,
    /// When the request being answered had its whole head, for its latency.
    asked_at: Instant,
}

impl Drop for HttpSession {
    fn drop(&mut self) {
        self.http.metrics.closed();
    }
}

impl std::fmt::Debug for HttpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSession").field("buffered", &self.buf.len()).field("done", &self.done).finish()
    }
}

impl HttpSession {
    /// A session for a connection accepted at `now`.
    pub fn new(http: &Http, info: &ConnInfo, now: Instant) -> Self {
        let shared = http.shared().clone();
        shared.metrics.accepted();
        Self {
            deadline: Deadline::new(&shared.timeouts, now),
            http: shared,
            opened_at: now,
            wall: info.wall,
            peer: info.peer,
            buf: Vec::new(),
            done: false,
            last_pending: 0,
            waiting: None,
            read_closed: false,
            clean_close: false,
            first_request: true,
            asked_at: now,
        }
    }

    /// The wall-clock time at `now`: the session reads no clock, it counts from the accept.
    fn wall_at(&self, now: Instant) -> SystemTime {
        self.wall + now.saturating_duration_since(self.opened_at)
    }

    fn finish(&mut self, out: &mut Out) {
        self.done = true;
        self.buf = Vec::new();
        out.close();
    }

    /// Answers every complete head in the buffer followed by `data`, in order, and keeps what
    /// is left. Most reads bring whole requests to an empty buffer: those are parsed where they
    /// are, without a copy, and an idle connection holds no buffer.
    fn answer_ready(&mut self, now: Instant, data: &[u8], out: &mut Out) -> bool {
        if self.buf.is_empty() {
            let (answered, used) = self.answer_from(now, data, out);
            if !self.done {
                self.buf.extend_from_slice(&data[used..]);
            }
            return answered;
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.extend_from_slice(data);
        let (answered, used) = self.answer_from(now, &buf, out);
        if !self.done && used < buf.len() {
            buf.drain(..used);
            self.buf = buf;
        }
        answered
    }

    /// Answers the complete heads at the front of `input`; returns whether any was answered and
    /// how many bytes they took.
    fn answer_from(&mut self, now: Instant, input: &[u8], out: &mut Out) -> (bool, usize) {
        let mut at = 0;
        let mut answered = false;
        self.asked_at = now;
        while !self.done && self.waiting.is_none() {
            if self.first_request && input.starts_with(b"\n") {
                // The course's LargerHttpd answers an empty one-line request; a CRLF (what
                // HTTP/1.x clients send) is skipped as RFC 9112 §2.2 asks.
                let frame = Frame { date: self.wall_at(now), version: Version::Http09, is_head: false, keep: false };
                let reply = error(400, frame, &[], out);
                self.log(now, Logged::default, &reply, out);
                self.finish(out);
                break;
            }
            match parse_head(&input[at..], &self.http.request) {
                Ok(Some((head, used))) => {
                    at += used;
                    answered = true;
                    self.answer(now, &head, out);
                    self.clean_close = self.done && at == input.len();
                }
                Ok(None) => break,
                Err(e) => {
                    let version = if looks_simple(&input[at..]) { Version::Http09 } else { Version::Http11 };
                    let frame = Frame { date: self.wall_at(now), version, is_head: false, keep: false };
                    let reply = error(e.status(), frame, &[], out);
                    self.log(now, || Logged::line(first_line(&input[at..])), &reply, out);
                    self.finish(out);
                }
            }
        }
        (answered, at)
    }

    fn answer(&mut self, now: Instant, head: &Head, out: &mut Out) {
        self.first_request = false;
        let has_body = head.has_body();
        let keep = head.keep_alive() && has_body == Ok(false);
        let frame =
            Frame { date: self.wall_at(now), version: head.version, is_head: head.method == Method::Head, keep };
        let visit = if self.http.visits.is_some() { route(&head.target) } else { None };
        let reply = match (&head.method, has_body) {
            (_, Err(_)) => error(400, frame, &[], out),
            _ if head.header("transfer-encoding").is_some() => error(501, frame, &[], out),
            (Method::Get | Method::Head, Ok(true)) => error(413, frame, &[], out),
            (Method::Get | Method::Head, Ok(false)) if self.is_metrics(&head.target) => {
                let mut page = String::new();
                prometheus_client::encoding::text::encode(&mut page, &self.http.registry).expect("a String takes it");
                let fields = [("Cache-Control", "no-store".to_owned())];
                send_whole(200, frame, crate::metrics::CONTENT_TYPE, page.as_bytes(), &fields, out)
            }
            (Method::Get | Method::Head, Ok(false)) if visit == Some(Route::Cookie) => {
                self.count_in_cookie(head, frame, out)
            }
            (Method::Get | Method::Head, Ok(false)) if visit == Some(Route::Session) => {
                // The first id that parses: a malformed one is as good as none.
                let id = cookies(head, SESSION_COOKIE).find_map(parse_session_id);
                out.hub(VisitsRequest::Visit { id });
                self.waiting = Some(Box::new(Waiting::Visit { frame, logged: Logged::of(head) }));
                return;
            }
            (Method::Get | Method::Head, Ok(false)) => match resolve_target(&head.target) {
                Err(e) => error(e.status(), frame, &[], out),
                Ok(path) => match self.http.files.try_open(&path) {
                    Some(opened) => self.serve(head, &path, opened, frame, out),
                    None => {
                        let files = self.http.files.clone();
                        let wanted = path.clone();
                        out.job(Token(0), Job::blocking(move || files.open(&wanted)));
                        self.waiting = Some(Box::new(Waiting::Open { head: head.clone(), frame, path }));
                        return;
                    }
                },
            },
            (Method::Other(m), _) if KNOWN_METHODS.contains(&m.as_str()) => {
                error(405, frame, &[("Allow", "GET, HEAD".into())], out)
            }
            (Method::Other(_), _) => error(501, frame, &[], out),
        };
        self.log(now, || Logged::of(head), &reply, out);
        if !frame.keep {
            self.finish(out);
        }
    }

    fn serve(&self, head: &Head, path: &SafePath, opened: Opened, frame: Frame, out: &mut Out) -> Reply {
        match opened {
            Err(e) => {
                if let FilesError::Io(io) = &e {
                    out.log(Level::Error, format!("{}: {io}", head.target));
                }
                error(e.status(), frame, &[], out)
            }
            // `/file.txt/`: a file is no directory.
            Ok(Entry::File(_)) if path.trailing_slash && !path.components.is_empty() => error(404, frame, &[], out),
            Ok(Entry::File(file)) => {
                let name = path.components.last().map_or("", String::as_str);
                serve_file(head, name, file, frame, out)
            }
            // HTTP/0.9 cannot be redirected: it gets the directory as if the `/` were there.
            Ok(Entry::Dir(_)) if !path.trailing_slash && frame.version != Version::Http09 => {
                error(301, frame, &[("Location", with_slash(&head.target))], out)
            }
            Ok(Entry::Dir(Dir { index: Some((name, file)), .. })) => serve_file(head, &name, file, frame, out),
            Ok(Entry::Dir(Dir { listing: Some(entries), .. })) => {
                let page = listing(path, &entries);
                send_whole(200, frame, "text/html; charset=utf-8", page.as_bytes(), &[], out)
            }
            Ok(Entry::Dir(_)) => error(403, frame, &[], out),
        }
    }

    /// `/visits/cookie`: the count from the first authentic cookie, plus one, signed anew.
    fn count_in_cookie(&self, head: &Head, frame: Frame, out: &mut Out) -> Reply {
        let visits = self.http.visits.as_deref().expect("routed only when configured");
        let mut count = None;
        let mut rejected = 0;
        for value in cookies(head, COUNT_COOKIE) {
            match visits.verify(value, frame.date) {
                Some(n) => {
                    count = Some(n);
                    break;
                }
                None => rejected += 1,
            }
        }
        if rejected > 0 && count.is_none() {
            out.log(Level::Debug, format!("visits: {COUNT_COOKIE} cookie failed verification, starting again at 1"));
        }
        let count = count.unwrap_or(0).saturating_add(1);
        let expiry = unix_secs_after(frame.date, COOKIE_LIFETIME);
        let cookie = count_cookie(&visits.sign(count, expiry));
        let body = format!("visits: {count} (kept in a signed cookie; the server stores nothing)\n");
        send_visits(frame, &body, cookie, out)
    }

    /// The hub counted a `/visits/session` visit: answer it, then whatever was pipelined after.
    fn visited(&mut self, now: Instant, id: u128, count: u64, out: &mut Out) {
        let Some(Waiting::Visit { frame, logged }) = self.waiting.take().map(|w| *w) else {
            out.log(Level::Error, "visits: an answer from the hub nobody asked for");
            return;
        };
        let body = format!("visits: {count} (kept in the server's session table; lost when it restarts)\n");
        let reply = send_visits(frame, &body, session_cookie(id), out);
        self.answered(now, frame, logged, &reply, out);
    }

    /// A job opened the file a request waits for: answer it, then whatever was pipelined after.
    fn opened(&mut self, now: Instant, opened: Opened, out: &mut Out) {
        let Some(Waiting::Open { head, frame, path }) = self.waiting.take().map(|w| *w) else {
            out.log(Level::Error, "http: a file opened that nobody waits for");
            return;
        };
        let reply = self.serve(&head, &path, opened, frame, out);
        self.answered(now, frame, Logged::of(&head), &reply, out);
    }

    /// A request that waited has its answer queued: log it, then go on with the buffer.
    fn answered(&mut self, now: Instant, frame: Frame, logged: Logged, reply: &Reply, out: &mut Out) {
        self.log(now, || logged, reply, out);
        if !frame.keep {
            self.clean_close = self.buf.is_empty();
            self.finish(out);
            return;
        }
        if self.answer_ready(now, &[], out) {
            self.deadline.input(now, false);
        }
        self.deadline.input(now, !self.buf.is_empty());
        if self.read_closed && self.waiting.is_none() {
            self.finish(out);
        }
    }

    /// Whether `target` (its query left out) is the metrics page's path.
    fn is_metrics(&self, target: &str) -> bool {
        let path = target.split_once('?').map_or(target, |(path, _)| path);
        self.http.metrics_path.as_deref() == Some(path)
    }

    /// Counts an answered request; and one access-log line, when the access log is on (only then
    /// is the request described), exactly as nginx's `combined` format writes it:
    /// `$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
    /// "$http_referer" "$http_user_agent"`.
    fn log(&self, now: Instant, logged: impl FnOnce() -> Logged, reply: &Reply, out: &mut Out) {
        self.http.metrics.answered(reply.status, reply.bytes, now.saturating_duration_since(self.asked_at));
        if !self.http.access_log {
            return;
        }
        let host = self.peer.map_or_else(|| "-".to_owned(), |p| p.ip().to_string());
        let date = clf_date(self.wall_at(now));
        let Logged { line, referer, agent } = logged();
        let (status, bytes) = (reply.status, reply.bytes);
        out.log(Level::Access, format!("{host} - - [{date}] \"{line}\" {status} {bytes} \"{referer}\" \"{agent}\""));
    }
}

/// Methods this server knows and refuses with `405` rather than `501`.
const KNOWN_METHODS: &[&str] = &["POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

impl Session for HttpSession {
    type Request = VisitsRequest;
    type Message = VisitsMessage;
    type Done = Opened;

    fn handle_open(&mut self, _: Instant, _: &mut Out) {}

    fn handle_input(&mut self, now: Instant, data: &[u8], out: &mut Out) {
        self.http.metrics.received(data.len());
        if self.done {
            return;
        }
        if self.waiting.is_some() {
            // Pipelined behind a request that waits: keep it, within what a few heads may take.
            self.buf.extend_from_slice(data);
            let bound = 4 * (self.http.request.max_request_line + self.http.request.max_header_bytes);
            if self.buf.len() > bound {
                out.log(Level::Debug, "closing: too much pipelined behind a request that waits");
                self.finish(out);
            }
            return;
        }
        if self.answer_ready(now, data, out) {
            // A new request's read clock starts now, not at the previous one's first byte.
            self.deadline.input(now, false);
        }
        self.deadline.input(now, !self.buf.is_empty());
    }

    fn handle_read_closed(&mut self, now: Instant, out: &mut Out) {
        if self.waiting.is_some() {
            // The request waiting for the hub (and those behind it) still get their answers.
            self.read_closed = true;
            return;
        }
        if !self.done && !self.buf.is_empty() && !self.buf.contains(&b'\n') {
            // A request line ended by the end of the stream, as the course's LargerHttpd takes
            // it (`printf 'GET /index.html' | nc -N`). Only a first line: a head cut short after
            // it is no request. An HTTP/1.x line still lacks its headers and gets no answer.
            self.read_closed = true;
            self.answer_ready(now, b"\n", out);
            if self.waiting.is_some() {
                return;
            }
        }
        // Complete requests were answered as they came; a partial one has no one to answer.
        self.finish(out);
    }

    fn handle_message(&mut self, now: Instant, msg: VisitsMessage, out: &mut Out) {
        if self.done {
            return;
        }
        let VisitsMessage::Visited { id, count } = msg;
        self.visited(now, id, count, out);
    }

    fn handle_completion(&mut self, now: Instant, _: Token, opened: Opened, out: &mut Out) {
        if !self.done {
            self.opened(now, opened, out);
        }
    }

    fn handle_timeout(&mut self, now: Instant, out: &mut Out) {
        // While the hub or the disk is asked, the delay is the server's, not the client's.
        if self.done || self.waiting.is_some() {
            return;
        }
        let pending = out.pending_len();
        if pending > 0 && pending != self.last_pending {
            self.last_pending = pending;
            self.deadline.touch(now);
        }
        match self.deadline.expired(now) {
            None => {}
            Some("read timeout") => {
                self.asked_at = now;
                let frame = Frame { date: self.wall_at(now), version: Version::Http11, is_head: false, keep: false };
                let reply = error(408, frame, &[], out);
                self.log(now, || Logged::line(first_line(&self.buf)), &reply, out);
                self.finish(out);
            }
            Some(why) => {
                out.log(Level::Debug, format!("closing: {why}"));
                self.finish(out);
            }
        }
    }

    fn lingers(&self) -> bool {
        !self.clean_close
    }

    fn poll_timeout(&self) -> Option<Instant> {
        (!self.done && self.waiting.is_none()).then(|| self.deadline.at())
    }
}

/// A `/visits` answer: a small text body that no cache may keep, and its cookie.
fn send_visits(frame: Frame, body: &str, cookie: String, out: &mut Out) -> Reply {
    let fields = [("Set-Cookie", cookie), ("Cache-Control", "no-store".to_owned())];
    send_whole(200, frame, "text/plain; charset=utf-8", body.as_bytes(), &fields, out)
}

/// Unix seconds `after` from `t`.
fn unix_secs_after(t: SystemTime, after: Duration) -> u64 {
    super::response::unix_secs(t).saturating_add(after.as_secs())
}

/// A request as the access log shows it: its line, `Referer` and `User-Agent`, escaped, with
/// `-` for a field the request lacks.
#[derive(Debug)]
struct Logged {
    line: String,
    referer: String,
    agent: String,
}

impl Default for Logged {
    fn default() -> Self {
        Self::line(b"")
    }
}

impl Logged {
    fn of(head: &Head) -> Self {
        let field = |name| head.header(name).map_or_else(|| "-".to_owned(), log_escape);
        Self { line: log_escape(request_line(head).as_bytes()), referer: field("referer"), agent: field("user-agent") }
    }

    /// A request with no head to speak of: a refused or empty one.
    fn line(line: &[u8]) -> Self {
        Self { line: log_escape(line), referer: "-".into(), agent: "-".into() }
    }
}

/// The request line as the access log shows it.
fn request_line(head: &Head) -> String {
    let method = match &head.method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Other(m) => m,
    };
    match head.version {
        Version::Http09 => format!("{method} {}", head.target),
        Version::Http10 => format!("{method} {} HTTP/1.0", head.target),
        Version::Http11 => format!("{method} {} HTTP/1.1", head.target),
    }
}

/// The first line of a refused request, at most 200 bytes, for the log.
fn first_line(buf: &[u8]) -> &[u8] {
    let end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len()).min(200);
    buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end])
}

/// Whether a refused request's first line was a one-line request, the course's kind: a whole
/// line whose last word names no HTTP version (`FOO`, `GET  /x`, `GET /x extra`). Those get the
/// course's bare answers; a line ending in `HTTP/…` gets an HTTP/1.1 status line.
fn looks_simple(buf: &[u8]) -> bool {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        return false;
    };
    let line = buf[..nl].strip_suffix(b"\r").unwrap_or(&buf[..nl]);
    let last_word = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    !last_word.starts_with(b"HTTP/")
}

/// Quotes, backslashes and bytes below 32 or above 126 as `\xHH`, as nginx's access log
/// writes them: a request must not forge a log line.
fn log_escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b == b'"' || b == b'\\' || !(32..=126).contains(&b) {
            out.push_str(&format!("\\x{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
    out
}
