//! The HTTP/JSON API, for operators and scripts (`curl`), beside the binary protocol:
//!
//! | method and path | does |
//! |---|---|
//! | `GET /v1/names?prefix=p` | list names starting with `p` |
//! | `GET /v1/names/{name}` | lookup: the healthy endpoints |
//! | `POST /v1/names/{name}` `{"endpoints":[…]}` | bind (409 if bound) |
//! | `PUT /v1/names/{name}` `{"endpoints":[…]}` | rebind |
//! | `DELETE /v1/names/{name}` | unbind |
//! | `POST /v1/names/{name}/leases` `{"endpoint":{…},"ttl_ms":n}` | register under a new lease |
//! | `PUT /v1/leases/{id}` / `DELETE /v1/leases/{id}` | renew / release |
//! | `GET /v1/watch?prefix=p&from=r` | the events after revision `r`, one JSON object per line, kept open |
//! | `GET /v1/health/{name}` | every endpoint with its health |
//! | `PUT /v1/health/{name}/{addr}/pass` | a TTL check's heartbeat |
//!
//! Writes take the name's token as `Authorization: Bearer <token>`. Errors are JSON
//! `{"error": "...", "kind": "NotBound"}` with the status that fits (404, 409, 403, 410 for a
//! compacted revision, 413, 400, 503). Bodies are at most [`MAX_BODY`] bytes.
//!
//! Connections come through [`CappedListener`]: warren's accept policy (a reserve descriptor,
//! a 503 and a back-off when descriptors run out) and at most [`Limits::max_conns`] at once;
//! at the cap it stops accepting until one closes (new ones wait in the backlog), as nginx's
//! `worker_connections` does. A connection must send a request's head within
//! [`Limits::header_timeout`] of opening or of its previous answer, so an idle peer cannot hold
//! a slot for ever; an open watch is not idle and is kept.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
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

/// The API's routes over a health-checked backend.
pub fn router(backend: Shared) -> axum::Router {
    axum::Router::new()
        .route("/v1/names", get(list))
        .route("/v1/names/{name}", get(lookup).post(bind).put(rebind).delete(unbind))
        .route("/v1/names/{name}/leases", axum::routing::post(register))
        .route("/v1/leases/{id}", put(renew).delete(release))
        .route("/v1/watch", get(watch))
        .route("/v1/health/{name}", get(health))
        .route("/v1/health/{name}/{addr}/pass", put(pass))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(backend)
}

/// The API's connection limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once (1024); beyond them new ones wait in the listen backlog.
    pub max_conns: usize,
    /// How long a connection may take to send a request's head, from its opening or its
    /// previous answer (30 s, hyper's default); then it is closed.
    pub header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_conns: 1024, header_timeout: Duration::from_secs(30) }
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
    let listener = CappedListener::new(listener, limits.max_conns)?;
    serve_on(listener, router(backend), limits.header_timeout, shutdown).await;
    Ok(())
}

/// What `axum::serve` does, with hyper's timer set so that `header_timeout` takes effect
/// (`axum::serve` gives no way to set it). HTTP/1 only: the API's clients are curl and scripts.
async fn serve_on<L: axum::serve::Listener>(
    mut listener: L,
    router: axum::Router,
    header_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let (stopping, stop) = tokio::sync::watch::channel(());
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (io, _peer) = tokio::select! {
            () = &mut shutdown => break,
            // Reap finished connections so that the set holds only live ones.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            conn = listener.accept() => conn,
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
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
/// `max_conns` connections at once: at the cap it does not accept until one of them closes.
#[derive(Debug)]
pub struct CappedListener {
    acceptor: AsyncAcceptor,
    slots: Arc<Semaphore>,
}

impl CappedListener {
    /// Accept from `listener`, at most `max_conns` (at least 1) at once. Call inside a tokio
    /// runtime.
    pub fn new(listener: std::net::TcpListener, max_conns: usize) -> io::Result<Self> {
        let refusal = warren_proto::http::session::REFUSAL;
        let slots = Arc::new(Semaphore::new(max_conns.clamp(1, Semaphore::MAX_PERMITS)));
        Ok(Self { acceptor: AsyncAcceptor::new(listener, refusal)?, slots })
    }
}

impl axum::serve::Listener for CappedListener {
    type Io = CappedConn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CappedConn, SocketAddr) {
        // A free slot first: at the cap, connections wait in the backlog, not half-served.
        let slot = self.slots.clone().acquire_owned().await.expect("the semaphore is never closed");
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
            let stream = incoming.stream;
            match stream.set_nonblocking(true).and_then(|()| tokio::net::TcpStream::from_std(stream)) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return (CappedConn { stream, _slot: slot }, incoming.peer);
                }
                Err(e) => tracing::warn!("registry-http: cannot serve a connection: {e}"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.acceptor.local_addr()
    }
}

/// A connection from [`CappedListener`]; its slot frees when it is dropped.
#[derive(Debug)]
pub struct CappedConn {
    stream: tokio::net::TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for CappedConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CappedConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
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
        .ok_or_else(|| Failure(StatusCode::UNAUTHORIZED, "writes need Authorization: Bearer <token>".into(), "NoToken"))
}

fn lease_id(raw: &str) -> Result<LeaseId, Failure> {
    u64::from_str_radix(raw, 16)
        .map(LeaseId)
        .map_err(|_| Error::Invalid(format!("lease {raw:?}: 16 hex digits")).into())
}

fn revision(r: Revision) -> Response {
    Json(json!({ "revision": r.0 })).into_response()
}

#[derive(Deserialize)]
struct Prefix {
    #[serde(default)]
    prefix: String,
}

async fn list(State(b): State<Shared>, Query(q): Query<Prefix>) -> Answer {
    let (rev, entries) = b.list(&q.prefix).await?;
    Ok(Json(json!({ "revision": rev.0, "names": entries })).into_response())
}

async fn lookup(State(b): State<Shared>, Path(raw): Path<String>) -> Answer {
    let (rev, endpoints) = b.lookup(&name(&raw)?).await?;
    Ok(Json(json!({ "revision": rev.0, "endpoints": endpoints })).into_response())
}

#[derive(Deserialize)]
struct Endpoints {
    endpoints: Vec<Endpoint>,
}

async fn bind(State(b): State<Shared>, Path(raw): Path<String>, h: HeaderMap, Json(body): Json<Endpoints>) -> Answer {
    Ok(revision(b.bind(&name(&raw)?, &token(&h)?, body.endpoints).await?))
}

async fn rebind(State(b): State<Shared>, Path(raw): Path<String>, h: HeaderMap, Json(body): Json<Endpoints>) -> Answer {
    Ok(revision(b.rebind(&name(&raw)?, &token(&h)?, body.endpoints).await?))
}

async fn unbind(State(b): State<Shared>, Path(raw): Path<String>, h: HeaderMap) -> Answer {
    Ok(revision(b.unbind(&name(&raw)?, &token(&h)?).await?))
}

#[derive(Deserialize)]
struct Registration {
    endpoint: Endpoint,
    ttl_ms: u64,
}

async fn register(
    State(b): State<Shared>,
    Path(raw): Path<String>,
    h: HeaderMap,
    Json(body): Json<Registration>,
) -> Answer {
    let lease = b.register(&name(&raw)?, &token(&h)?, body.endpoint, Duration::from_millis(body.ttl_ms)).await?;
    let answer =
        json!({ "lease": lease.id.to_string(), "ttl_ms": lease.ttl.as_millis() as u64, "revision": lease.revision.0 });
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

async fn renew(State(b): State<Shared>, Path(raw): Path<String>) -> Answer {
    let ttl = b.renew(lease_id(&raw)?).await?;
    Ok(Json(json!({ "ttl_ms": ttl.as_millis() as u64 })).into_response())
}

async fn release(State(b): State<Shared>, Path(raw): Path<String>, h: HeaderMap) -> Answer {
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
async fn watch(State(b): State<Shared>, Query(q): Query<WatchQuery>) -> Answer {
    let watch = b.watch(&q.prefix, Revision(q.from)).await?;
    let lines = futures_util::stream::unfold(Some(watch), |watch| async move {
        let mut watch = watch?;
        let (line, next) = match watch.next().await {
            Ok(events) => {
                let mut text = String::new();
                for e in &events {
                    text.push_str(&serde_json::to_string(e).expect("events serialise"));
                    text.push('\n');
                }
                (text, Some(watch))
            }
            Err(e) => (format!("{}\n", json!({ "error": e.to_string() })), None),
        };
        Some((Ok::<_, std::convert::Infallible>(line), next))
    });
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(lines)).into_response())
}

async fn health(State(b): State<Shared>, Path(raw): Path<String>) -> Answer {
    let all = b.health(&name(&raw)?).await?;
    let endpoints: Vec<_> = all.into_iter().map(|(e, healthy)| json!({ "endpoint": e, "healthy": healthy })).collect();
    Ok(Json(json!({ "endpoints": endpoints })).into_response())
}

async fn pass(State(b): State<Shared>, Path((raw, addr)): Path<(String, String)>) -> Answer {
    let addr: SocketAddr = addr.parse().map_err(|_| Error::Invalid(format!("{addr:?}: not an address:port")))?;
    b.pass(&name(&raw)?, addr)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
