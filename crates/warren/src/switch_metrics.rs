//! The switch's metrics (`warren switch --metrics ADDR`, docs/metrics.md): per backend, what
//! the pool knows (health, weight, load, connections or requests in flight) and what the
//! sessions report through each lease (picks, connections made, bytes each way, failures by
//! kind, how long each lease was held).
//!
//! Counting is a relaxed atomic addition on the backend's [`Meters`], which each lease holds,
//! so the hot path takes no lock beyond the pool's own. A scrape asks every routing group for
//! its rows ([`SwitchStats::rows`]) and encodes them with `prometheus-client`.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use warren_balance::State;
use warren_proto::metrics::{LATENCY_SLOTS, Latency, add, read};
use warren_proto::pick::Failure;

/// Failures by the `kind` label they are counted under.
const KINDS: [(Failure, &str); 5] = [
    (Failure::Refused, "connect_refused"),
    (Failure::Timeout, "connect_timeout"),
    (Failure::Connect, "connect_error"),
    (Failure::BadGateway, "502"),
    (Failure::GatewayTimeout, "504"),
];

/// The states a backend's `warren_switch_backend_state` series name, one of them 1.
const STATES: [&str; 4] = ["up", "down", "ejected", "draining"];

/// One backend's counters, shared by the leases on it.
#[derive(Debug)]
pub(crate) struct Meters {
    requests: AtomicU64,
    connections: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    errors: [AtomicU64; KINDS.len()],
    held: Box<[AtomicU64]>,
}

impl Default for Meters {
    fn default() -> Self {
        Meters {
            requests: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            errors: Default::default(),
            held: (0..LATENCY_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Meters {
    /// A lease taken on the backend: a connection (relay, handoff) or a request (http).
    pub(crate) fn picked(&self) {
        add(&self.requests, 1);
    }

    pub(crate) fn connected(&self) {
        add(&self.connections, 1);
    }

    pub(crate) fn moved(&self, to_backend: u64, from_backend: u64) {
        if to_backend > 0 {
            add(&self.sent, to_backend);
        }
        if from_backend > 0 {
            add(&self.received, from_backend);
        }
    }

    pub(crate) fn failed(&self, why: Failure) {
        if let Some(at) = KINDS.iter().position(|(kind, _)| *kind == why) {
            add(&self.errors[at], 1);
        }
    }

    /// A lease released after `held`.
    pub(crate) fn released(&self, held: Duration) {
        Latency(&self.held).observe(held);
    }

    pub(crate) fn requests(&self) -> u64 {
        read(&self.requests)
    }

    pub(crate) fn connections(&self) -> u64 {
        read(&self.connections)
    }

    pub(crate) fn sent(&self) -> u64 {
        read(&self.sent)
    }

    pub(crate) fn received(&self) -> u64 {
        read(&self.received)
    }

    pub(crate) fn errors(&self) -> u64 {
        self.errors.iter().map(read).sum()
    }
}

/// One backend at a scrape.
#[derive(Clone, Debug)]
pub(crate) struct BackendRow {
    /// The http mode's routing group (`default` in the other modes).
    pub group: String,
    pub name: String,
    pub state: &'static str,
    pub weight: u32,
    pub load: f64,
    /// Connections (relay, handoff) or requests (http) it holds now.
    pub in_flight: u32,
    pub meters: Arc<Meters>,
}

/// The name a [`State`] is shown under.
pub(crate) fn state_name(state: State) -> &'static str {
    match state {
        State::Up => "up",
        State::Down => "down",
        State::Ejected => "ejected",
        State::Draining { .. } => "draining",
    }
}

type Rows = Box<dyn Fn(Instant) -> Vec<BackendRow> + Send + Sync>;

/// One switch's metrics: its groups' rows, and the picks no backend could take.
pub(crate) struct SwitchStats {
    /// How it serves: `relay, round-robin`.
    pub describe: String,
    unavailable: AtomicU64,
    groups: Mutex<Vec<Rows>>,
}

impl std::fmt::Debug for SwitchStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwitchStats").field("describe", &self.describe).finish_non_exhaustive()
    }
}

impl SwitchStats {
    pub(crate) fn new(describe: String) -> Arc<SwitchStats> {
        Arc::new(SwitchStats { describe, unavailable: AtomicU64::new(0), groups: Mutex::new(Vec::new()) })
    }

    /// A group's rows, asked at each scrape.
    pub(crate) fn add_group(&self, rows: Rows) {
        self.groups.lock().unwrap_or_else(|e| e.into_inner()).push(rows);
    }

    /// A connection or request that no backend could take.
    pub(crate) fn unavailable(&self) {
        add(&self.unavailable, 1);
    }

    pub(crate) fn unavailable_total(&self) -> u64 {
        read(&self.unavailable)
    }

    /// Every backend of every group now.
    pub(crate) fn rows(&self) -> Vec<BackendRow> {
        let now = Instant::now();
        let groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        groups.iter().flat_map(|rows| rows(now)).collect()
    }

    /// The page, in the OpenMetrics text format ([`warren_proto::metrics::CONTENT_TYPE`]).
    pub(crate) fn page(self: &Arc<Self>) -> String {
        let mut registry = Registry::with_prefix("warren_switch");
        registry.register_collector(Box::new(Page(self.clone())));
        let mut page = String::new();
        prometheus_client::encoding::text::encode(&mut page, &registry).expect("a String takes every write");
        page
    }
}

#[derive(Debug)]
struct Page(Arc<SwitchStats>);

impl Collector for Page {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows = self.0.rows();
        let labels = |r: &BackendRow| [("backend", r.name.clone()), ("group", r.group.clone())];
        let counter = |encoder: &mut DescriptorEncoder, name: &str, help: &str, value: fn(&BackendRow) -> u64| {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for row in &rows {
                ConstCounter::new(value(row)).encode(family.encode_family(&labels(row))?)?;
            }
            Ok::<(), std::fmt::Error>(())
        };
        let gauge = |encoder: &mut DescriptorEncoder, name: &str, help: &str, value: fn(&BackendRow) -> f64| {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for row in &rows {
                ConstGauge::new(value(row)).encode(family.encode_family(&labels(row))?)?;
            }
            Ok::<(), std::fmt::Error>(())
        };
        let help = "Connections (relay, handoff) or requests (http) sent to the backend";
        counter(&mut encoder, "backend_requests", help, |r| r.meters.requests())?;
        let help = "Connections made to the backend (http: new ones, not reused)";
        counter(&mut encoder, "backend_connections", help, |r| r.meters.connections())?;
        counter(&mut encoder, "backend_sent_bytes", "Bytes sent to the backend", |r| r.meters.sent())?;
        counter(&mut encoder, "backend_received_bytes", "Bytes received from the backend", |r| r.meters.received())?;
        let help = "Failures: connect refused, timed out or failed otherwise; http answers 502 and 504";
        let mut family = encoder.encode_descriptor("backend_errors", help, None, MetricType::Counter)?;
        for row in &rows {
            for ((_, kind), count) in KINDS.iter().zip(&row.meters.errors) {
                let [backend, group] = labels(row);
                let labels = [backend, group, ("kind", (*kind).to_owned())];
                ConstCounter::new(read(count)).encode(family.encode_family(&labels)?)?;
            }
        }
        let help = "Connections (relay, handoff) or requests (http) the backend holds now";
        gauge(&mut encoder, "backend_in_flight", help, |r| f64::from(r.in_flight))?;
        gauge(&mut encoder, "backend_weight", "The backend's configured weight", |r| f64::from(r.weight))?;
        gauge(&mut encoder, "backend_load", "The load the backend last reported, 0 to 1", |r| r.load)?;
        gauge(&mut encoder, "backend_up", "1 while the backend is in rotation", |r| {
            f64::from(u8::from(r.state == "up"))
        })?;
        let help = "Where the backend stands: 1 for its state (up, down, ejected, draining), 0 for the others";
        let mut family = encoder.encode_descriptor("backend_state", help, None, MetricType::Gauge)?;
        for row in &rows {
            for state in STATES {
                let [backend, group] = labels(row);
                let labels = [backend, group, ("state", state.to_owned())];
                ConstGauge::new(i64::from(row.state == state)).encode(family.encode_family(&labels)?)?;
            }
        }
        let help =
            "From a backend's pick to its release: a connection's life (relay, handoff), a request's answer (http)";
        let seconds = Unit::Seconds;
        let mut family =
            encoder.encode_descriptor("backend_request_duration", help, Some(&seconds), MetricType::Histogram)?;
        for row in &rows {
            Latency(&row.meters.held).encode(family.encode_family(&labels(row))?)?;
        }
        let help = "Connections (relay, handoff) or requests (http, answered 503) no backend could take";
        let unavailable = ConstCounter::new(self.0.unavailable_total());
        unavailable.encode(encoder.encode_descriptor("unavailable", help, None, MetricType::Counter)?)
    }
}

/// The admin listener of a switch's `--metrics ADDR`: `GET /metrics`, until dropped.
pub(crate) struct MetricsServer {
    runtime: Option<tokio::runtime::Runtime>,
    stop: tokio::sync::watch::Sender<bool>,
}

/// Connections at once on the metrics listener (scrapers); one more is answered 503.
const MAX_CONNS: usize = 16;

impl MetricsServer {
    /// Serves `stats` on `listener`, on a thread of its own.
    pub(crate) fn start(listener: std::net::TcpListener, stats: Arc<SwitchStats>) -> std::io::Result<MetricsServer> {
        use axum::http::header;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("warren-switch-metrics")
            .enable_all()
            .build()?;
        let listener = {
            let _entered = runtime.enter();
            warren_registry_server::api::CappedListener::new(listener, MAX_CONNS, Duration::from_secs(10))?
        };
        let router = axum::Router::new()
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let stats = stats.clone();
                    async move { ([(header::CONTENT_TYPE, warren_proto::metrics::CONTENT_TYPE)], stats.page()) }
                }),
            )
            .fallback(|| async {
                (axum::http::StatusCode::NOT_FOUND, "not found: the switch's metrics are at /metrics\n")
            });
        let (stop, stopped) = tokio::sync::watch::channel(false);
        runtime.spawn(crate::dashboard::serve(listener, router, stopped));
        Ok(MetricsServer { runtime: Some(runtime), stop })
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
