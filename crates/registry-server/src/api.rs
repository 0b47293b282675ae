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

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde::Deserialize;
use serde_json::json;
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

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    backend: Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(backend)).with_graceful_shutdown(shutdown).await
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
