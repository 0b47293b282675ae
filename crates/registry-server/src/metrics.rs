//! The registry's Prometheus metrics (`GET /metrics` on the HTTP API; `docs/metrics.md`).
//!
//! [`Metered`] wraps the store, beneath the health checks, so that every request reaches it
//! through one place whichever interface it came in by (the binary protocol, the HTTP API, the
//! health checker's own list and watch): requests, errors and latency per operation, open
//! watches, the events they sent and their lag. The names and leases held are read from the
//! store at each scrape ([`Backend::counts`]).
//!
//! **Watch lag** is measured from the first moment this server saw a revision committed (the
//! answer to the write that made it, or the first watch that delivered it, for a lease that
//! expired or a write through another server) to each watch handing it on. A store tells
//! neither when it committed nor to whom, so this is what one process can see: how far the
//! slowest watcher trails the first.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use warren_registry::backend::{Backend, Lease, Watch};
use warren_registry::model::{Endpoint, Entry, Error, Event, LeaseId, Name, Revision};

/// The content type of a metrics page: the OpenMetrics text format, which Prometheus reads.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How many recent revisions keep the time this server first saw them, for the watch lag.
const REMEMBERED_REVISIONS: usize = 4096;

type Op = [(&'static str, &'static str); 1];
type OpKind = [(&'static str, &'static str); 2];

/// The registry's metrics: made once per server, shared by its store wrapper and its page.
#[derive(Debug)]
pub struct RegistryMetrics {
    registry: Registry,
    requests: Family<Op, Counter>,
    errors: Family<OpKind, Counter>,
    latency: Family<Op, Histogram>,
    watchers: Gauge,
    watch_events: Counter,
    watch_lag: Histogram,
    first_seen: Mutex<VecDeque<(Revision, Instant)>>,
    /// Pages of what serves beside the store (the DNS front end), shown after its own.
    beside: Mutex<Vec<Registry>>,
}

/// Latency buckets from 100 µs to about 3.3 s, doubling: a lookup from memory at the bottom, a
/// write's fsync in the middle, a store that stalls at the top.
fn seconds_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl RegistryMetrics {
    /// Metrics for a server whose store is `store`: its names and leases are read at each scrape.
    pub fn new(store: Arc<dyn Backend>) -> Arc<RegistryMetrics> {
        let mut registry = Registry::with_prefix("warren_registry");
        let requests = Family::<Op, Counter>::default();
        let errors = Family::<OpKind, Counter>::default();
        let latency = Family::<Op, Histogram>::new_with_constructor(seconds_buckets as fn() -> Histogram);
        let (watchers, watch_events, watch_lag) = (Gauge::default(), Counter::default(), seconds_buckets());
        registry.register("requests", "Requests that reached the store, by operation", requests.clone());
        registry.register("errors", "Requests answered with an error, by operation and error kind", errors.clone());
        registry.register_with_unit(
            "request_duration",
            "Time from a request reaching the store to its answer, by operation",
            Unit::Seconds,
            latency.clone(),
        );
        registry.register("watchers", "Watches open (the health checker's own included)", watchers.clone());
        registry.register("watch_events", "Events handed on by watches", watch_events.clone());
        registry.register_with_unit(
            "watch_lag",
            "Time from this server first seeing a revision committed to a watch handing it on",
            Unit::Seconds,
            watch_lag.clone(),
        );
        registry.register_collector(Box::new(StoreCounts(store)));
        Arc::new(RegistryMetrics {
            registry,
            requests,
            errors,
            latency,
            watchers,
            watch_events,
            watch_lag,
            first_seen: Mutex::default(),
            beside: Mutex::default(),
        })
    }

    /// The metrics page, in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut page = String::new();
        encode_registry(&mut page, &self.registry).expect("a String takes every write");
        for beside in self.beside.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            encode_registry(&mut page, beside).expect("a String takes every write");
        }
        encode_eof(&mut page).expect("a String takes every write");
        page
    }

    /// Shows `registry` (its own prefix, such as `warren_dns`) on this page too, after the
    /// store's families: a server hosted beside the store, as the DNS front end is.
    pub fn show_beside(&self, registry: Registry) {
        self.beside.lock().unwrap_or_else(|e| e.into_inner()).push(registry);
    }

    /// Counts `call` under `operation`, and times it.
    async fn timed<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let started = Instant::now();
        let outcome = call.await;
        let labels = [("operation", operation)];
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
        if let Err(e) = &outcome {
            self.errors.get_or_create(&[("operation", operation), ("kind", kind(e))]).inc();
        }
        outcome
    }

    /// How long ago this server first saw `revision` committed; now, if this is the first time.
    fn since_first_seen(&self, revision: Revision, now: Instant) -> Duration {
        let mut seen = self.first_seen.lock().expect("no panics while held");
        if let Some((_, at)) = seen.iter().rev().find(|(r, _)| *r == revision) {
            return now.saturating_duration_since(*at);
        }
        if seen.len() == REMEMBERED_REVISIONS {
            seen.pop_front();
        }
        seen.push_back((revision, now));
        Duration::ZERO
    }

    /// A write's revision, answered now: committed no later than this.
    fn committed(&self, revision: Revision) {
        self.since_first_seen(revision, Instant::now());
    }
}

/// The error's kind, as the HTTP API names it: a small, fixed set of label values.
fn kind(e: &Error) -> &'static str {
    match e {
        Error::NotBound(_) => "NotBound",
        Error::AlreadyBound(_) => "AlreadyBound",
        Error::Forbidden(_) => "Forbidden",
        Error::Unauthenticated(_) => "NoToken",
        Error::LeaseNotFound(_) => "LeaseNotFound",
        Error::Compacted { .. } => "Compacted",
        Error::TooLarge(_) => "TooLarge",
        Error::Invalid(_) => "Invalid",
        Error::Unavailable(_) => "Unavailable",
    }
}

/// The names and leases the store holds, read at each scrape; left out for a store that cannot
/// count without a round trip (etcd).
struct StoreCounts(Arc<dyn Backend>);

impl std::fmt::Debug for StoreCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreCounts")
    }
}

impl Collector for StoreCounts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(counts) = self.0.counts() else { return Ok(()) };
        for (name, help, value) in [
            ("names", "Names bound", counts.names),
            ("leases", "Leases held (registered endpoints not yet released or expired)", counts.leases),
        ] {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

/// A store whose every request is counted and timed in [`RegistryMetrics`].
pub struct Metered {
    inner: Arc<dyn Backend>,
    metrics: Arc<RegistryMetrics>,
}

impl std::fmt::Debug for Metered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metered")
    }
}

impl Metered {
    pub fn new(inner: Arc<dyn Backend>, metrics: Arc<RegistryMetrics>) -> Metered {
        Metered { inner, metrics }
    }

    /// Passes a write's outcome through, noting the revision it committed.
    fn wrote(&self, outcome: Result<Revision, Error>) -> Result<Revision, Error> {
        if let Ok(revision) = outcome {
            self.metrics.committed(revision);
        }
        outcome
    }
}

#[async_trait]
impl Backend for Metered {
    async fn bind(&self, name: &Name, token: &str, endpoints: Vec<Endpoint>) -> Result<Revision, Error> {
        self.wrote(self.metrics.timed("bind", self.inner.bind(name, token, endpoints)).await)
    }
    async fn rebind(&self, name: &Name, token: &str, endpoints: Vec<Endpoint>) -> Result<Revision, Error> {
        self.wrote(self.metrics.timed("rebind", self.inner.rebind(name, token, endpoints)).await)
    }
    async fn unbind(&self, name: &Name, token: &str) -> Result<Revision, Error> {
        self.wrote(self.metrics.timed("unbind", self.inner.unbind(name, token)).await)
    }
    async fn lookup(&self, name: &Name) -> Result<(Revision, Entry), Error> {
        self.metrics.timed("lookup", self.inner.lookup(name)).await
    }
    async fn list(&self, prefix: &str) -> Result<(Revision, Vec<Entry>), Error> {
        self.metrics.timed("list", self.inner.list(prefix)).await
    }
    async fn register(&self, name: &Name, token: &str, endpoint: Endpoint, ttl: Duration) -> Result<Lease, Error> {
        let lease = self.metrics.timed("register", self.inner.register(name, token, endpoint, ttl)).await?;
        self.metrics.committed(lease.revision);
        Ok(lease)
    }
    async fn renew(&self, lease: LeaseId, token: &str) -> Result<Duration, Error> {
        self.metrics.timed("renew", self.inner.renew(lease, token)).await
    }
    async fn release(&self, lease: LeaseId, token: &str) -> Result<Revision, Error> {
        self.wrote(self.metrics.timed("release", self.inner.release(lease, token)).await)
    }
    async fn authorize(&self, name: &Name, token: &str) -> Result<(), Error> {
        self.metrics.timed("authorize", self.inner.authorize(name, token)).await
    }
    async fn watch(&self, prefix: &str, from: Revision) -> Result<Box<dyn Watch>, Error> {
        let inner = self.metrics.timed("watch", self.inner.watch(prefix, from)).await?;
        self.metrics.watchers.inc();
        Ok(Box::new(MeteredWatch { inner, metrics: self.metrics.clone() }))
    }
    fn snapshot(&self, name: &Name) -> Option<Vec<Endpoint>> {
        self.inner.snapshot(name)
    }
    fn snapshot_generation(&self) -> Option<u64> {
        self.inner.snapshot_generation()
    }
    fn counts(&self) -> Option<warren_registry::backend::Counts> {
        self.inner.counts()
    }
}

/// An open watch: counted in `warren_registry_watchers` until dropped.
struct MeteredWatch {
    inner: Box<dyn Watch>,
    metrics: Arc<RegistryMetrics>,
}

impl Drop for MeteredWatch {
    fn drop(&mut self) {
        self.metrics.watchers.dec();
    }
}

#[async_trait]
impl Watch for MeteredWatch {
    async fn next(&mut self) -> Result<Vec<Event>, Error> {
        let events = self.inner.next().await?;
        let now = Instant::now();
        self.metrics.watch_events.inc_by(events.len() as u64);
        // A revision's events are together and in order: one lag per revision.
        let mut last = None;
        for event in &events {
            if last != Some(event.revision) {
                last = Some(event.revision);
                self.metrics.watch_lag.observe(self.metrics.since_first_seen(event.revision, now).as_secs_f64());
            }
        }
        Ok(events)
    }
}

/// The API's `GET /metrics` route, beside the routes of [`crate::api::router`].
pub fn route(router: axum::Router, metrics: Arc<RegistryMetrics>) -> axum::Router {
    let page = move || {
        let metrics = metrics.clone();
        async move { ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], metrics.encode()) }
    };
    router.route("/metrics", axum::routing::get(page))
}
