//! Objects over HTTP with JSON, so that curl and any language can call them:
//!
//! - `POST /v1/objects/NAME/METHOD`, the arguments as a JSON array, answers the result as JSON
//!   (`200`), the method's own error as `422 {"error":{"code":"application","value":…}}`, and a
//!   platform error with its status and `{"error":{"code":"…","message":"…"}}`;
//! - `GET /v1/objects` lists the objects, `GET /v1/objects/NAME` describes one;
//! - `GET /metrics`: the objects' calls, errors, latency and activations as a Prometheus page
//!   ([`crate::metrics`]), behind the same token as the rest.
//!
//! Optional request headers: `Warren-Interface` and `Warren-Version` (checked as the binary
//! protocol checks them), `Warren-Timeout-Ms` (the call's deadline). One request at a time per
//! connection, keep-alive as HTTP/1.1 says; bodies need a `Content-Length`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use warren_proto::http::request::{Head, HeadError, Method, RequestLimits, parse_head};
use warren_proto::{Action, ConnInfo, Deadline, Job, Limits, NoHub, Nothing, Output, Service, Session, Token};
use warren_rpc::wire::{Call, Outcome};
use warren_rpc::{Code, Context, RpcError};

use crate::table::Objects;

/// The largest request body: 1 MiB.
pub const MAX_BODY: usize = 1 << 20;

/// The JSON front of an object server.
#[derive(Clone, Debug)]
pub struct HttpObjectService {
    objects: Arc<Objects>,
    limits: Limits,
    max_timeout: Duration,
    callers: Option<[u8; 32]>,
}

impl HttpObjectService {
    /// `callers`: the SHA-256 of the token every request must bear (`Authorization: Bearer`).
    pub fn new(objects: Arc<Objects>, callers: Option<[u8; 32]>) -> Self {
        Self { objects, limits: Limits::default(), max_timeout: Duration::from_secs(3600), callers }
    }
}

impl Service for HttpObjectService {
    type Hub = NoHub;
    type Session = HttpObjectSession;

    fn name(&self) -> &'static str {
        "objects-http"
    }

    fn new_session(&self, _: &ConnInfo, now: Instant) -> HttpObjectSession {
        HttpObjectSession {
            objects: self.objects.clone(),
            max_timeout: self.max_timeout,
            callers: self.callers,
            input: Vec::new(),
            waiting: None,
            deadline: Deadline::new(&self.limits, now),
            read_closed: false,
        }
    }

    fn new_hub(&self, _: Instant) -> NoHub {
        NoHub
    }

    fn client_speaks_first(&self) -> bool {
        true
    }
}

/// A call in flight for the request being served.
struct Waiting {
    token: Token,
    keep_alive: bool,
    cancelled: Arc<AtomicBool>,
    deadline: Option<Instant>,
}

/// One HTTP connection.
pub struct HttpObjectSession {
    objects: Arc<Objects>,
    max_timeout: Duration,
    callers: Option<[u8; 32]>,
    input: Vec<u8>,
    waiting: Option<Waiting>,
    deadline: Deadline,
    read_closed: bool,
}

impl std::fmt::Debug for HttpObjectSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpObjectSession").field("waiting", &self.waiting.is_some()).finish()
    }
}

type Out = Output<Nothing, Outcome>;

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        499 => "Client Closed Request",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

fn respond(out: &mut Out, status: u16, body: &[u8], keep_alive: bool) {
    respond_typed(out, status, "application/json", body, keep_alive);
}

fn respond_typed(out: &mut Out, status: u16, content_type: &str, body: &[u8], keep_alive: bool) {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
        reason(status),
        body.len()
    );
    out.send(head.as_bytes());
    out.send(body);
    if !keep_alive {
        out.close();
    }
}

fn error_body(code: &str, message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "error": { "code": code, "message": message } })).expect("json")
}

fn respond_error(out: &mut Out, e: &RpcError, keep_alive: bool) {
    respond(out, e.code.http_status(), &error_body(e.code.as_str(), &e.message), keep_alive);
}

fn respond_outcome(out: &mut Out, outcome: Outcome, keep_alive: bool) {
    match outcome {
        Outcome::Ok(json) => respond(out, 200, &json, keep_alive),
        Outcome::App(json) => {
            let value: serde_json::Value = serde_json::from_slice(&json).unwrap_or(serde_json::Value::Null);
            let body = serde_json::json!({ "error": { "code": "application", "value": value } });
            respond(out, 422, &serde_json::to_vec(&body).expect("json"), keep_alive);
        }
        Outcome::Err(e) => respond_error(out, &e, keep_alive),
    }
}

fn header_str<'a>(head: &'a Head, name: &str) -> Option<&'a str> {
    head.header(name).and_then(|v| std::str::from_utf8(v).ok()).map(str::trim)
}

impl HttpObjectSession {
    /// Serve the request at the front of the input, if it is all there.
    fn next_request(&mut self, now: Instant, out: &mut Out) {
        // Pipelined requests answered at once (inline objects, errors) are taken in turn; each
        // turn consumes a whole request, so the loop ends with the buffer.
        loop {
            if self.waiting.is_some() || out.is_closed() {
                return;
            }
            let (head, head_len) = match parse_head(&self.input, &RequestLimits::default()) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => {
                    self.deadline.input(now, !self.input.is_empty());
                    if self.read_closed {
                        out.close();
                    }
                    return;
                }
                Err(e) => return self.refuse(out, e),
            };
            let keep_alive = head.keep_alive() && !self.read_closed;
            if head.header("transfer-encoding").is_some() {
                let body = error_body("protocol", "send the body with a Content-Length");
                return respond(out, 411, &body, false);
            }
            let length = match head.content_length() {
                Ok(length) => length.unwrap_or(0) as usize,
                Err(e) => return self.refuse(out, e),
            };
            if length > MAX_BODY {
                return respond(
                    out,
                    413,
                    &error_body("protocol", &format!("bodies are at most {MAX_BODY} bytes")),
                    false,
                );
            }
            if self.input.len() < head_len + length {
                self.deadline.input(now, true);
                if self.read_closed {
                    out.close();
                }
                return;
            }
            let body = self.input[head_len..head_len + length].to_vec();
            self.input.drain(..head_len + length);
            self.deadline.input(now, !self.input.is_empty());
            self.route(now, &head, body, keep_alive, out);
            if self.input.is_empty() {
                return;
            }
        }
    }

    fn refuse(&mut self, out: &mut Out, e: HeadError) {
        self.input.clear();
        respond(out, e.status(), &error_body("protocol", &e.to_string()), false);
    }

    fn route(&mut self, now: Instant, head: &Head, body: Vec<u8>, keep_alive: bool, out: &mut Out) {
        if let Some(want) = self.callers {
            let bearer = header_str(head, "authorization").and_then(|v| v.strip_prefix("Bearer "));
            if bearer.is_none_or(|token| crate::admin::hash(token.trim()) != want) {
                let body = error_body(
                    "unauthenticated",
                    "this server admits requests with its token: Authorization: Bearer TOKEN",
                );
                return respond(out, 401, &body, keep_alive);
            }
        }
        let path = head.target.split('?').next().unwrap_or_default();
        if path == "/metrics" && matches!(head.method, Method::Get) {
            let page = crate::metrics::page(&self.objects);
            return respond_typed(out, 200, warren_proto::metrics::CONTENT_TYPE, page.as_bytes(), keep_alive);
        }
        let parts: Vec<&str> =
            path.strip_prefix("/v1/objects").map(|p| p.split('/').skip(1).collect()).unwrap_or_default();
        let post = matches!(&head.method, Method::Other(m) if m == "POST");
        let get = matches!(head.method, Method::Get);
        let not_found = |out: &mut Out| respond(out, 404, &error_body("not_found", "no such resource"), keep_alive);
        if !path.starts_with("/v1/objects") || path.len() > "/v1/objects".len() && !path[11..].starts_with('/') {
            return not_found(out);
        }
        match (parts.as_slice(), get, post) {
            ([] | [""], true, _) => {
                let list = serde_json::to_vec(&self.objects.list()).expect("json");
                respond(out, 200, &list, keep_alive);
            }
            ([name], true, _) => match self.objects.get(name) {
                Some(object) => respond(out, 200, &serde_json::to_vec(&object.info()).expect("json"), keep_alive),
                None => respond_error(
                    out,
                    &RpcError::new(Code::NoSuchObject, format!("no object named {name:?}")),
                    keep_alive,
                ),
            },
            ([name, method], _, true) => self.call(now, head, name, method, body, keep_alive, out),
            ([] | [""] | [_], false, _) | ([_, _], _, false) => {
                respond(out, 405, &error_body("method_not_allowed", "GET lists and describes, POST calls"), keep_alive)
            }
            _ => not_found(out),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn call(
        &mut self,
        now: Instant,
        head: &Head,
        name: &str,
        method: &str,
        args: Vec<u8>,
        keep_alive: bool,
        out: &mut Out,
    ) {
        let Some(object) = self.objects.get(name) else {
            return respond_error(
                out,
                &RpcError::new(Code::NoSuchObject, format!("no object named {name:?}")),
                keep_alive,
            );
        };
        let interface = header_str(head, "warren-interface").unwrap_or_default().to_owned();
        let version = match header_str(head, "warren-version").map(str::parse::<u32>) {
            None => 0,
            Some(Ok(v)) => v,
            Some(Err(_)) => {
                let e = RpcError::new(Code::BadArguments, "Warren-Version is a number");
                return respond_error(out, &e, keep_alive);
            }
        };
        let timeout_ms = match header_str(head, "warren-timeout-ms").map(str::parse::<u32>) {
            None => 0,
            Some(Ok(ms)) => ms,
            Some(Err(_)) => {
                let e = RpcError::new(Code::BadArguments, "Warren-Timeout-Ms is a number of milliseconds");
                return respond_error(out, &e, keep_alive);
            }
        };
        let deadline = (timeout_ms > 0).then(|| now + Duration::from_millis(timeout_ms.into()).min(self.max_timeout));
        let cancelled = Arc::new(AtomicBool::new(false));
        let ctx = Context::new(deadline, cancelled.clone()).with_exporter(self.objects.clone());
        let call = Call {
            id: 0,
            object: name.to_owned(),
            interface,
            version,
            method: method.to_owned(),
            json: true,
            timeout_ms,
            args,
        };
        let (answer, mut answered) = oneshot::channel();
        if let Err(e) = object.submit(ctx, call, answer) {
            return respond_error(out, &e, keep_alive);
        }
        if object.runs_inline() {
            // Answered already: no job, no thread woken.
            let outcome = answered
                .try_recv()
                .unwrap_or_else(|_| Outcome::Err(RpcError::new(Code::Internal, "the object dropped the call")));
            return respond_outcome(out, outcome, keep_alive);
        }
        let token = Token(1);
        out.job(
            token,
            Job::future(async move {
                answered
                    .await
                    .unwrap_or_else(|_| Outcome::Err(RpcError::new(Code::Internal, "the object dropped the call")))
            }),
        );
        self.waiting = Some(Waiting { token, keep_alive, cancelled, deadline });
    }
}

impl Drop for HttpObjectSession {
    fn drop(&mut self) {
        if let Some(waiting) = &self.waiting {
            waiting.cancelled.store(true, Ordering::Relaxed);
        }
    }
}

impl Session for HttpObjectSession {
    type Request = Nothing;
    type Message = Nothing;
    type Done = Outcome;

    fn handle_open(&mut self, _: Instant, _: &mut Out) {}

    fn handle_input(&mut self, now: Instant, data: &[u8], out: &mut Out) {
        self.input.extend_from_slice(data);
        self.next_request(now, out);
    }

    fn handle_read_closed(&mut self, now: Instant, out: &mut Out) {
        self.read_closed = true;
        if self.waiting.is_none() {
            self.next_request(now, out);
            out.close();
        }
    }

    fn handle_message(&mut self, _: Instant, msg: Nothing, _: &mut Out) {
        match msg {}
    }

    fn handle_completion(&mut self, now: Instant, _: Token, outcome: Outcome, out: &mut Out) {
        let Some(waiting) = self.waiting.take() else { return };
        respond_outcome(out, outcome, waiting.keep_alive && !self.read_closed);
        self.deadline.touch(now);
        // A pipelined request may wait behind this one.
        self.next_request(now, out);
    }

    fn handle_timeout(&mut self, now: Instant, out: &mut Out) {
        if let Some(waiting) = &self.waiting {
            if waiting.deadline.is_some_and(|d| d <= now) {
                let waiting = self.waiting.take().expect("checked");
                waiting.cancelled.store(true, Ordering::Relaxed);
                out.act(Action::Abort(waiting.token));
                let e = RpcError::new(Code::DeadlineExceeded, "the object did not answer before the deadline");
                respond_error(out, &e, waiting.keep_alive && !self.read_closed);
            }
            return;
        }
        if let Some(why) = self.deadline.expired(now) {
            if !self.input.is_empty() {
                respond(out, 408, &error_body("protocol", why), false);
            }
            out.close();
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match &self.waiting {
            Some(waiting) => waiting.deadline,
            None => Some(self.deadline.at()),
        }
    }

    fn wants_input(&self) -> bool {
        self.waiting.is_none() && self.input.len() < MAX_BODY + 32 * 1024
    }
}
