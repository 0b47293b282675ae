//! `warren up`'s admin listener: the live dashboard (`/`, its assets embedded in the binary),
//! `/api/status` (a JSON snapshot), `/events` (server-sent events) and `/metrics` (Prometheus
//! text). Read-only, so without a credential, and on loopback by default (docs/node.md,
//! "Dashboard").
//!
//! The node's loop is asked for its status once a second by `warren up` ([`Dashboard::sample`]);
//! the registry's names come from its watch ([`crate::dashboard_names`]). Both land in `watch`
//! channels, and each event stream sends what changed, at most once per [`MIN_GAP`]: the page
//! never polls.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::{Semaphore, watch};
use warren_registry_server::api::CappedListener;

use crate::dashboard_hosted::{HopPoint, HostedSampler, HostedView};
use crate::dashboard_view::{Names, Point, Sampler, Services, changed};

/// Admin connections at once (the page, its event stream, scrapers); one more is answered 503.
const MAX_CONNS: usize = 64;
/// Event streams at once; one more is answered 503, so browsers left open cannot take every slot.
const MAX_STREAMS: usize = 16;
/// A request head must arrive within this; a peer that takes nothing this long is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// The least time between two batches of events on one stream: at most four a second.
const MIN_GAP: Duration = Duration::from_millis(250);
/// A comment line this often on a quiet stream, so a peer gone away is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The page's assets: no build step, nothing fetched from elsewhere.
const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");
/// Everything the page loads comes from this listener; no inline script runs.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// What the handlers share.
#[derive(Debug)]
struct Shared {
    services: watch::Sender<Services>,
    names: watch::Sender<Names>,
    /// The switches, object servers and agent hosts this process hosts for the node.
    hosted: watch::Sender<HostedView>,
    sampler: Mutex<Sampler>,
    hosted_sampler: Mutex<HostedSampler>,
    streams: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
}

/// The running admin listener.
#[derive(Debug)]
pub struct Dashboard {
    runtime: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    last_sample: Mutex<Instant>,
}

impl Dashboard {
    /// Serve on `listener`; with `registry` (the address the node registers with, once known),
    /// follow its names too.
    pub fn start(
        listener: std::net::TcpListener,
        registry: Option<watch::Receiver<Option<SocketAddr>>>,
    ) -> io::Result<Dashboard> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("warren-dashboard")
            .enable_all()
            .build()?;
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            services: watch::Sender::new(Services::default()),
            names: watch::Sender::new(Names::default()),
            hosted: watch::Sender::new(HostedView::default()),
            sampler: Mutex::new(Sampler::default()),
            hosted_sampler: Mutex::new(HostedSampler::default()),
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
            stop: stopped.clone(),
        });
        let listener = {
            let _entered = runtime.enter();
            CappedListener::new(listener, MAX_CONNS, SEND_TIMEOUT)?
        };
        if let Some(target) = registry {
            runtime.spawn(crate::dashboard_names::follow(target, shared.names.clone(), stopped.clone()));
        }
        let server = runtime.spawn(serve(listener, router(shared.clone()), stopped));
        Ok(Dashboard { runtime, shared, stop, server, last_sample: Mutex::new(Instant::now()) })
    }

    /// Take in the node's status: the page hears of it if anything but the time changed.
    pub fn sample(&self, status: &warren_node::Status) {
        let elapsed = {
            let mut last = self.last_sample.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            std::mem::replace(&mut *last, now).elapsed()
        };
        let view =
            self.shared.sampler.lock().unwrap_or_else(|e| e.into_inner()).sample(status, SystemTime::now(), elapsed);
        let hosted = self.shared.hosted_sampler.lock().unwrap_or_else(|e| e.into_inner()).sample(view.at_ms);
        self.shared.services.send_if_modified(|current| {
            let changed = changed(current, &view);
            *current = view;
            changed
        });
        self.shared.hosted.send_if_modified(|current| {
            let changed = crate::dashboard_hosted::changed(current, &hosted);
            *current = hosted;
            changed
        });
    }

    /// Stop: event streams end, answers in progress finish (for up to a second).
    pub fn stop(self) {
        let _ = self.stop.send(true);
        let server = self.server;
        self.runtime.block_on(async {
            let _ = tokio::time::timeout(Duration::from_secs(1), server).await;
        });
        self.runtime.shutdown_background();
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route("/api/status", get(status))
        .route("/events", get(events))
        .route("/metrics", get(metrics))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found: see / for the dashboard\n") })
        .with_state(shared)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    (headers, body).into_response()
}

/// `/api/status`: services, names and the chart's history, as one JSON object.
async fn status(State(shared): State<Arc<Shared>>) -> Response {
    #[derive(serde::Serialize)]
    struct Snapshot {
        services: Services,
        names: Names,
        history: Vec<Point>,
        hosted: HostedView,
        hops: Vec<HopPoint>,
    }
    let snapshot = Snapshot {
        services: shared.services.borrow().clone(),
        names: shared.names.borrow().clone(),
        history: shared.sampler.lock().unwrap_or_else(|e| e.into_inner()).history(),
        hosted: shared.hosted.borrow().clone(),
        hops: shared.hosted_sampler.lock().unwrap_or_else(|e| e.into_inner()).history(),
    };
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(snapshot)).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let counts = shared.hosted_sampler.lock().unwrap_or_else(|e| e.into_inner()).counts.clone();
    let text = crate::dashboard_metrics::encode(&shared.services.borrow(), &shared.hosted.borrow(), &counts);
    ([(header::CONTENT_TYPE, crate::dashboard_metrics::CONTENT_TYPE)], text).into_response()
}

/// `/events`: a `services` and a `names` event at once, then each again when it changes.
async fn events(State(shared): State<Arc<Shared>>) -> Response {
    let Ok(slot) = shared.streams.clone().try_acquire_owned() else {
        let busy = format!("at most {MAX_STREAMS} event streams at once; try again later\n");
        return (StatusCode::SERVICE_UNAVAILABLE, busy).into_response();
    };
    let stream = EventStream {
        services: shared.services.subscribe(),
        names: shared.names.subscribe(),
        hosted: shared.hosted.subscribe(),
        stop: shared.stop.clone(),
        pending: VecDeque::new(),
        last_sent: None,
        _slot: slot,
    };
    let events = futures_util::stream::unfold(stream, |mut s| async move {
        let event = s.next().await?;
        Some((Ok::<_, Infallible>(event), s))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response()
}

/// One client's event stream; its slot frees when it ends.
struct EventStream {
    services: watch::Receiver<Services>,
    names: watch::Receiver<Names>,
    hosted: watch::Receiver<HostedView>,
    stop: watch::Receiver<bool>,
    pending: VecDeque<Event>,
    last_sent: Option<Instant>,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl EventStream {
    /// The next event; `None` once the dashboard stops.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            let first = self.last_sent.is_none();
            let (mut services, mut names, mut hosted) = (first, first, first);
            if let Some(last) = self.last_sent {
                tokio::select! {
                    changed = self.services.changed() => { changed.ok()?; services = true }
                    changed = self.names.changed() => { changed.ok()?; names = true }
                    changed = self.hosted.changed() => { changed.ok()?; hosted = true }
                    _ = self.stop.wait_for(|s| *s) => return None,
                }
                // Changes within the gap go out together, as one batch, after it.
                tokio::select! {
                    () = tokio::time::sleep_until((last + MIN_GAP).into()) => {}
                    _ = self.stop.wait_for(|s| *s) => return None,
                }
            }
            services |= self.services.has_changed().unwrap_or(false);
            names |= self.names.has_changed().unwrap_or(false);
            hosted |= self.hosted.has_changed().unwrap_or(false);
            if services {
                self.pending.push_back(event("services", &*self.services.borrow_and_update()));
            }
            if names {
                self.pending.push_back(event("names", &*self.names.borrow_and_update()));
            }
            if hosted {
                self.pending.push_back(event("hosted", &*self.hosted.borrow_and_update()));
            }
            self.last_sent = Some(Instant::now());
        }
    }
}

fn event(name: &str, data: &impl serde::Serialize) -> Event {
    let json = serde_json::to_string(data).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    Event::default().event(name).data(json)
}

/// Serve `router` on `listener` until `stop`, with a header timeout (which `axum::serve` does
/// not set), then let answers in progress finish.
pub(crate) async fn serve(mut listener: CappedListener, router: Router, mut stop: watch::Receiver<bool>) {
    use axum::serve::Listener;
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (io, _) = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            conn = listener.accept() => conn,
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let mut stopped = stop.clone();
        tasks.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stopped.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
}
