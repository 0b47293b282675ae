//! The HTTP/JSON API, for operators and scripts (`curl`), beside the binary protocol:
//!
//! | method and path | does |
//! |---|---|
//! | `GET /v1/names?prefix=p` | list names starting with `p` |
//! | `GET /v1/names/{name}` | lookup: the name as the registry spells it, its healthy endpoints |
//! | `POST /v1/names/{name}` `{"endpoints":[…]}` | bind (409 if bound) |
//! | `PUT /v1/names/{name}` `{"endpoints":[…]}` | rebind |
//! | `DELETE /v1/names/{name}` | unbind |
//! | `POST /v1/names/{name}/leases` `{"endpoint":{…},"ttl_ms":n}` | register under a new lease |
//! | `PUT /v1/leases/{id}` / `DELETE /v1/leases/{id}` | renew / release (the lease's token) |
//! | `GET /v1/watch?prefix=p&from=r` | the events after revision `r`, one JSON object per line, kept open |
//! | `GET /v1/health/{name}` | every endpoint with its health |
//! | `PUT /v1/health/{name}/{addr}/pass` | a TTL check's heartbeat (the name's token) |
//! | `GET /metrics` | the Prometheus page, when `warren registry` adds [`crate::metrics::route`] |
//!
//! `{name}` may be spelt in any case, as everywhere (see `warren_registry::model::Name`), and a
//! `prefix` matches in any case.
//!
//! Writes, renewals, releases and passes take the token as `Authorization: Bearer <token>`.
//! Errors are JSON `{"error": "...", "kind": "NotBound"}` with the status that fits (404, 409,
//! 401 without a token, 403 with another's, 410 for a compacted revision, 413, 400, 408, 429,
//! 503). Bodies are at most [`MAX_BODY`] bytes.
//!
//! **Limits** ([`Limits`]), as nginx's and Consul's HTTP servers have them:
//! - connections come through [`CappedListener`]: warren's accept policy (a reserve descriptor,
//!   a 503 and a back-off when descriptors run out) and at most `max_conns` at once; one past
//!   the cap is answered 503 and closed at once, so it neither waits unanswered nor takes a
//!   slot (as every warren server refuses over `--max-conns`);
//! - a request's head must arrive within `header_timeout` of the connection opening or of its
//!   previous answer (so this is also the keep-alive idle timeout), and its body within
//!   `body_timeout` (408 otherwise), so a slow peer cannot hold a slot for ever;
//! - a connection whose peer takes no byte of its answer for `send_timeout` is closed (a watch
//!   reader that stopped reading included); an open watch that is merely quiet is kept;
//! - watch streams are capped in total and per source address (`max_watches`,
//!   `max_watches_per_source`); one past a cap is answered 503 (total) or 429 (per source).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use warren_models::AsyncAcceptor;
use warren_registry::backend::Backend;
use warren_registry::model::{Endpoint, Error, LeaseId, Name, Revision};

use crate::health::Checked;

/// The largest request body: 64 endpoints with full metadata fit easily.
pub const MAX_BODY: usize = 256 * 1024;

type Shared = Arc<Checked>;

/// What every handler shares: the backend and the watch streams' slots.
#[derive(Clone)]
struct Api {
    backend: Shared,
    watches: Arc<WatchSlots>,
}

/// The API's routes over a health-checked backend, under `limits`' body timeout and watch caps.
/// Each request must carry its peer as a [`ConnectInfo<SocketAddr>`] extension ([`serve`] adds
/// it).
pub fn router(backend: Shared, limits: &Limits) -> axum::Router {
    let watches = Arc::new(WatchSlots::new(limits.max_watches, limits.max_watches_per_source));
    let body_timeout = limits.body_timeout;
    axum::Router::new()
        .route("/v1/names", get(list))
        .route("/v1/names/{name}", get(lookup).post(bind).put(rebind).delete(unbind))
        .route("/v1/names/{name}/leases", axum::routing::post(register))
        .route("/v1/leases/{id}", put(renew).delete(release))
        .route("/v1/watch", get(watch))
        .route("/v1/health/{name}", get(health))
        .route("/v1/health/{name}/{addr}/pass", put(pass))
        .layer(axum::middleware::from_fn(move |request: Request, next: Next| read_body(body_timeout, request, next)))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Api { backend, watches })
}

/// Reads a request's whole body (at most [`MAX_BODY`]) within `timeout` before its handler runs,
/// so that a body that stalls is answered 408 and its connection closed, not held for ever.
async fn read_body(timeout: Duration, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, MAX_BODY)).await {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Ok(Err(_)) => Failure(StatusCode::PAYLOAD_TOO_LARGE, format!("a body of at most {MAX_BODY} bytes"), "TooLarge")
            .into_response(),
        Err(_) => {
            let why = format!("the body did not arrive within {timeout:?}");
            let mut answer = Failure(StatusCode::REQUEST_TIMEOUT, why, "Timeout").into_response();
            answer.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
            answer
        }
    }
}

/// The API's limits (see the module documentation), with `warren registry`'s defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once (1024); one more is answered 503 and closed.
    pub max_conns: usize,
    /// How long a connection may take to send a request's head, from its opening or its
    /// previous answer (30 s); then it is closed.
    pub header_timeout: Duration,
    /// How long a request's body may take to arrive (30 s); then 408 and the connection closes.
    pub body_timeout: Duration,
    /// How long an answer may wait for the peer to take a byte (30 s); then the connection is
    /// closed.
    pub send_timeout: Duration,
    /// Watch streams open at once (512); one more is answered 503.
    pub max_watches: usize,
    /// Watch streams open at once from one source address (32); one more is answered 429.
    pub max_watches_per_source: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_conns: 1024,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(30),
            max_watches: 512,
            max_watches_per_source: 32,
        }
    }
}

/// The open watch streams, in total and per source address.
#[derive(Debug)]
struct WatchSlots {
    max: usize,
    max_per_source: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One open watch stream's slot, given back when the stream ends.
struct WatchSlot {
    slots: Arc<WatchSlots>,
    source: IpAddr,
}

impl WatchSlots {
    fn new(max: usize, max_per_source: usize) -> WatchSlots {
        WatchSlots { max, max_per_source, open: Mutex::default() }
    }

    fn take(self: &Arc<Self>, source: IpAddr) -> Result<WatchSlot, Failure> {
        let mut open = self.open.lock().expect("no panics while held");
        let (total, per_source) = &mut *open;
        if *total >= self.max {
            let why = format!("{} watch streams are open, the most this server keeps; try again later", self.max);
            return Err(Failure(StatusCode::SERVICE_UNAVAILABLE, why, "TooManyWatches"));
        }
        let mine = per_source.entry(source).or_default();
        if *mine >= self.max_per_source {
            let why = format!("{source} has {} watch streams open, the most per address", self.max_per_source);
            return Err(Failure(StatusCode::TOO_MANY_REQUESTS, why, "TooManyWatches"));
        }
        *mine += 1;
        *total += 1;
        Ok(WatchSlot { slots: self.clone(), source })
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().expect("no panics while held");
        let (total, per_source) = &mut *open;
        *total -= 1;
        if let Some(mine) = per_source.get_mut(&self.source) {
            *mine -= 1;
            if *mine == 0 {
                per_source.remove(&self.source);
            }
        }
    }
}

/// Serves the API on `listener` until `shutdown` resolves, then stops accepting, lets the
/// answers in progress finish, closes idle connections and returns once every one is closed.
/// Call inside a tokio runtime.
pub async fn serve(
    listener: std::net::TcpListener,
    backend: Shared,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) -> io::Result<()> {
    serve_router(listener, router(backend, &limits), limits, shutdown).await
}

/// [`serve`] with routes of the caller's making: [`router`]'s, with others beside them (the
/// `/metrics` page of [`crate::metrics::route`]).
pub async fn serve_router(
    listener: std::net::TcpListener,
    router: axum::Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) -> io::Result<()> {
    let listener = CappedListener::new(listener, limits.max_conns, limits.send_timeout)?;
    serve_on(listener, router, limits.header_timeout, shutdown).await;
    Ok(())
}

/// What `axum::serve` does, with hyper's timer set so that `header_timeout` takes effect
/// (`axum::serve` gives no way to set it), and each request told its peer. HTTP/1 only: the
/// API's clients are curl and scripts.
async fn serve_on<L: axum::serve::Listener<Addr = SocketAddr>>(
    mut listener: L,
    router: axum::Router,
    header_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let (stopping, stop) = tokio::sync::watch::channel(());
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            () = &mut shutdown => break,
            // Reap finished connections so that the set holds only live ones.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            conn = listener.accept() => conn,
        };
        let router = router.clone().layer(axum::Extension(ConnectInfo(peer)));
        let service = hyper_util::service::TowerToHyperService::new(router);
        let mut stop = stop.clone();
        tasks.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(header_timeout);
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stop.changed() => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
    // Closing the listener leaves connections still in its backlog to be reset.
    drop(listener);
    let _ = stopping.send(());
    while tasks.join_next().await.is_some() {}
}

/// A TCP listener under warren's accept policy ([`AsyncAcceptor`]) that holds at most
/// `max_conns` connections at once: one over the cap is answered 503 and closed.
#[derive(Debug)]
pub struct CappedListener {
    acceptor: AsyncAcceptor,
    slots: Arc<Semaphore>,
    send_timeout: Duration,
}

/// The answer to a connection over the cap.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
Content-Length: 70\r\nConnection: close\r\n\r\n\
{\"error\":\"too many connections; try again later\",\"kind\":\"Unavailable\"}";

impl CappedListener {
    /// Accept from `listener`, at most `max_conns` (at least 1) at once, each closed when its
    /// peer takes nothing for `send_timeout`. Call inside a tokio runtime.
    pub fn new(listener: std::net::TcpListener, max_conns: usize, send_timeout: Duration) -> io::Result<Self> {
        let refusal = warren_proto::http::session::REFUSAL;
        let slots = Arc::new(Semaphore::new(max_conns.clamp(1, Semaphore::MAX_PERMITS)));
        Ok(Self { acceptor: AsyncAcceptor::new(listener, refusal)?, slots, send_timeout })
    }
}

impl axum::serve::Listener for CappedListener {
    type Io = CappedConn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CappedConn, SocketAddr) {
        loop {
            let incoming = match self.acceptor.accept().await {
                Ok(incoming) => incoming,
                Err(e) => {
                    // Neither transient nor a shortage (EBADF, EINVAL…): say so, without spinning.
                    tracing::error!("registry-http: accept: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut stream = incoming.stream;
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                warren_models::accept::refuse(&mut stream, BUSY);
                continue;
            };
            match stream.set_nonblocking(true).and_then(|()| tokio::net::TcpStream::from_std(stream)) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    let stalled = SendClock { limit: self.send_timeout, since: None };
                    return (CappedConn { stream, stalled, _slot: slot }, incoming.peer);
                }
                Err(e) => tracing::warn!("registry-http: cannot serve a connection: {e}"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.acceptor.local_addr()
    }
}

/// A connection from [`CappedListener`]; its slot frees when it is dropped. A write that makes
/// no progress for the send timeout fails with `TimedOut`, which ends the connection.
#[derive(Debug)]
pub struct CappedConn {
    stream: tokio::net::TcpStream,
    stalled: SendClock,
    _slot: OwnedSemaphorePermit,
}

/// Since when writes have been waiting for the peer, and how long they may.
#[derive(Debug)]
struct SendClock {
    limit: Duration,
    since: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl SendClock {
    /// Passes a write's outcome through; a `Pending` one starts (or goes on with) the clock,
    /// and fails once the clock has run out.
    fn watch<T>(&mut self, cx: &mut Context<'_>, outcome: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if outcome.is_ready() {
            self.since = None;
            return outcome;
        }
        let limit = self.limit;
        let deadline = self.since.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                let why = format!("the peer took nothing for {limit:?}");
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for CappedConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CappedConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let outcome = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.stalled.watch(cx, outcome)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let outcome = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.stalled.watch(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// An error as the API answers it.
struct Failure(StatusCode, String, &'static str);

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let (status, kind) = match &e {
            Error::NotBound(_) => (StatusCode::NOT_FOUND, "NotBound"),
            Error::AlreadyBound(_) => (StatusCode::CONFLICT, "AlreadyBound"),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden"),
            Error::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "NoToken"),
            Error::LeaseNotFound(_) => (StatusCode::NOT_FOUND, "LeaseNotFound"),
            Error::Compacted { .. } => (StatusCode::GONE, "Compacted"),
            Error::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "TooLarge"),
            Error::Invalid(_) => (StatusCode::BAD_REQUEST, "Invalid"),
            Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable"),
        };
        Failure(status, e.to_string(), kind)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1, "kind": self.2 }))).into_response()
    }
}

type Answer = Result<Response, Failure>;

fn name(raw: &str) -> Result<Name, Failure> {
    Ok(Name::new(raw)?)
}

fn token(headers: &HeaderMap) -> Result<String, Failure> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
        .ok_or_else(|| {
            let why = "this needs the owner's token: Authorization: Bearer <token>".into();
            Failure(StatusCode::UNAUTHORIZED, why, "NoToken")
        })
}

fn lease_id(raw: &str) -> Result<LeaseId, Failure> {
    Ok(LeaseId::parse(raw)?)
}

fn revision(r: Revision) -> Response {
    Json(json!({ "revision": r.0 })).into_response()
}

#[derive(Deserialize)]
struct Prefix {
    #[serde(default)]
    prefix: String,
}

async fn list(State(Api { backend: b, .. }): State<Api>, Query(q): Query<Prefix>) -> Answer {
    let (rev, entries) = b.list(&q.prefix).await?;
    Ok(Json(json!({ "revision": rev.0, "names": entries })).into_response())
}

async fn lookup(State(Api { backend: b, .. }): State<Api>, Path(raw): Path<String>) -> Answer {
    let (rev, entry) = b.lookup(&name(&raw)?).await?;
    Ok(Json(json!({ "revision": rev.0, "name": entry.name, "endpoints": entry.endpoints })).into_response())
}

#[derive(Deserialize)]
struct Endpoints {
    endpoints: Vec<Endpoint>,
}

async fn bind(
    State(Api { backend: b, .. }): State<Api>,
    Path(raw): Path<String>,
    h: HeaderMap,
    Json(body): Json<Endpoints>,
) -> Answer {
    Ok(revision(b.bind(&name(&raw)?, &token(&h)?, body.endpoints).await?))
}

async fn rebind(
    State(Api { backend: b, .. }): State<Api>,
    Path(raw): Path<String>,
    h: HeaderMap,
    Json(body): Json<Endpoints>,
) -> Answer {
    Ok(revision(b.rebind(&name(&raw)?, &token(&h)?, body.endpoints).await?))
}

async fn unbind(State(Api { backend: b, .. }): State<Api>, Path(raw): Path<String>, h: HeaderMap) -> Answer {
    Ok(revision(b.unbind(&name(&raw)?, &token(&h)?).await?))
}

#[derive(Deserialize)]
struct Registration {
    endpoint: Endpoint,
    ttl_ms: u64,
}

async fn register(
    State(Api { backend: b, .. }): State<Api>,
    Path(raw): Path<String>,
    h: HeaderMap,
    Json(body): Json<Registration>,
) -> Answer {
    let lease = b.register(&name(&raw)?, &token(&h)?, body.endpoint, Duration::from_millis(body.ttl_ms)).await?;
    let answer =
        json!({ "lease": lease.id.to_string(), "ttl_ms": lease.ttl.as_millis() as u64, "revision": lease.revision.0 });
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

async fn renew(State(Api { backend: b, .. }): State<Api>, Path(raw): Path<String>, h: HeaderMap) -> Answer {
    let ttl = b.renew(lease_id(&raw)?, &token(&h)?).await?;
    Ok(Json(json!({ "ttl_ms": ttl.as_millis() as u64 })).into_response())
}

async fn release(State(Api { backend: b, .. }): State<Api>, Path(raw): Path<String>, h: HeaderMap) -> Answer {
    Ok(revision(b.release(lease_id(&raw)?, &token(&h)?).await?))
}

#[derive(Deserialize)]
struct WatchQuery {
    #[serde(default)]
    prefix: String,
    from: u64,
}

/// A chunked stream of events, one JSON object per line; a final `{"error":…}` line if the
/// watch ends (compacted history, the store stopping). Opening it fails early with 410 when
/// `from` is already compacted.
async fn watch(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<WatchQuery>,
) -> Answer {
    let slot = api.watches.take(peer.ip())?;
    let watch = api.backend.watch(&q.prefix, Revision(q.from)).await?;
    // The slot lives as long as the stream.
    let lines = futures_util::stream::unfold(Some((watch, slot)), |open| async move {
        let (mut watch, slot) = open?;
        let (line, next) = match watch.next().await {
            Ok(events) => {
                let mut text = String::new();
                for e in &events {
                    text.push_str(&serde_json::to_string(e).expect("events serialise"));
                    text.push('\n');
                }
                (text, Some((watch, slot)))
            }
            Err(e) => (format!("{}\n", json!({ "error": e.to_string() })), None),
        };
        Some((Ok::<_, std::convert::Infallible>(line), next))
    });
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(lines)).into_response())
}

async fn health(State(Api { backend: b, .. }): State<Api>, Path(raw): Path<String>) -> Answer {
    let all = b.health(&name(&raw)?).await?;
    let endpoints: Vec<_> = all.into_iter().map(|(e, healthy)| json!({ "endpoint": e, "healthy": healthy })).collect();
    Ok(Json(json!({ "endpoints": endpoints })).into_response())
}

async fn pass(
    State(Api { backend: b, .. }): State<Api>,
    Path((raw, addr)): Path<(String, String)>,
    h: HeaderMap,
) -> Answer {
    let addr: SocketAddr = addr.parse().map_err(|_| Error::Invalid(format!("{addr:?}: not an address:port")))?;
    b.pass(&name(&raw)?, addr, &token(&h)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
