//! The object server's metrics (`GET /metrics` on its HTTP front; `docs/metrics.md`): calls,
//! errors, calls in flight, call latency, activations and deactivations, per object.
//!
//! Every hosted object counts in atomics of its own ([`ObjectMeters`]), whichever front its
//! calls came by; a scrape reads the table. Objects are added at run time, so the `object`
//! label is bounded: the first [`LABELLED`] objects by name have series of their own, later ones
//! add to `object="_other"`, and objects that clients exported (callbacks, as many as clients
//! make) add to `object="_exported"`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use warren_proto::metrics::{LATENCY_SLOTS, Latency, read};

use crate::table::Objects;

/// Objects with series of their own; the rest are summed under `_other`.
pub const LABELLED: usize = 100;

/// One object's counters.
#[derive(Debug)]
pub struct ObjectMeters {
    pub(crate) calls: AtomicU64,
    application_errors: AtomicU64,
    platform_errors: AtomicU64,
    started: AtomicU64,
    finished: AtomicU64,
    activations: AtomicU64,
    deactivations: AtomicU64,
    latency: Box<[AtomicU64]>,
}

impl Default for ObjectMeters {
    fn default() -> Self {
        ObjectMeters {
            calls: AtomicU64::new(0),
            application_errors: AtomicU64::new(0),
            platform_errors: AtomicU64::new(0),
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            activations: AtomicU64::new(0),
            deactivations: AtomicU64::new(0),
            latency: (0..LATENCY_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// What a call ended with, for the error counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    Ok,
    /// The method's own error.
    Application,
    /// The platform's: refused, cancelled, timed out, failed to save…
    Platform,
}

impl ObjectMeters {
    /// A call submitted: in flight until [`Self::finished`].
    pub(crate) fn started(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn finished(&self, ended: Ended, took: Duration) {
        self.finished.fetch_add(1, Ordering::Relaxed);
        Latency(&self.latency).observe(took);
        match ended {
            Ended::Ok => {}
            Ended::Application => _ = self.application_errors.fetch_add(1, Ordering::Relaxed),
            Ended::Platform => _ = self.platform_errors.fetch_add(1, Ordering::Relaxed),
        }
    }

    pub(crate) fn activated(&self) {
        self.activations.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn deactivated(&self) {
        self.deactivations.fetch_add(1, Ordering::Relaxed);
    }
}

/// The metrics page of `objects`, in the OpenMetrics text format
/// ([`warren_proto::metrics::CONTENT_TYPE`]).
pub fn page(objects: &Arc<Objects>) -> String {
    let mut registry = Registry::with_prefix("warren_objects");
    registry.register_collector(Box::new(Page(objects.clone())));
    let mut page = String::new();
    prometheus_client::encoding::text::encode(&mut page, &registry).expect("a String takes every write");
    page
}

/// One series' values: an object's, or the sum of those under `_other` or `_exported`.
#[derive(Default)]
struct Row {
    calls: u64,
    application_errors: u64,
    platform_errors: u64,
    in_flight: i64,
    activations: u64,
    deactivations: u64,
    latency: Vec<u64>,
}

impl Row {
    fn add(&mut self, m: &ObjectMeters) {
        self.calls += read(&m.calls);
        self.application_errors += read(&m.application_errors);
        self.platform_errors += read(&m.platform_errors);
        // Read finished first: a call that ends between the two reads is never counted below 0.
        let finished = read(&m.finished);
        self.in_flight += read(&m.started).saturating_sub(finished) as i64;
        self.activations += read(&m.activations);
        self.deactivations += read(&m.deactivations);
        self.latency.resize(LATENCY_SLOTS, 0);
        for (sum, slot) in self.latency.iter_mut().zip(&m.latency) {
            *sum += read(slot);
        }
    }
}

#[derive(Debug)]
struct Page(Arc<Objects>);

impl Collector for Page {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut rows: Vec<(String, Row)> = Vec::new();
        let (mut other, mut exported) = (Row::default(), Row::default());
        for (name, meters, is_exported) in self.0.meters() {
            if is_exported {
                exported.add(&meters);
            } else if rows.len() < LABELLED {
                let mut row = Row::default();
                row.add(&meters);
                rows.push((name, row));
            } else {
                other.add(&meters);
            }
        }
        for (name, row) in [("_other", other), ("_exported", exported)] {
            if !row.latency.is_empty() {
                rows.push((name.to_owned(), row));
            }
        }
        let counter = |encoder: &mut DescriptorEncoder, name: &str, help: &str, value: fn(&Row) -> u64| {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (object, row) in &rows {
                ConstCounter::new(value(row)).encode(family.encode_family(&[("object", object.as_str())])?)?;
            }
            Ok::<(), std::fmt::Error>(())
        };
        counter(&mut encoder, "calls", "Calls submitted to the object", |r| r.calls)?;
        let help = "Calls answered with an error: the method's own (application) or the platform's";
        let mut family = encoder.encode_descriptor("errors", help, None, MetricType::Counter)?;
        for (object, row) in &rows {
            for (kind, value) in [("application", row.application_errors), ("platform", row.platform_errors)] {
                let labels = [("object", object.as_str()), ("kind", kind)];
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        let help = "Calls submitted and not yet answered";
        let mut family = encoder.encode_descriptor("calls_in_flight", help, None, MetricType::Gauge)?;
        for (object, row) in &rows {
            ConstGauge::new(row.in_flight).encode(family.encode_family(&[("object", object.as_str())])?)?;
        }
        let help = "Time from a call's submission to its outcome (queueing included)";
        let seconds = Unit::Seconds;
        let mut family = encoder.encode_descriptor("call_duration", help, Some(&seconds), MetricType::Histogram)?;
        for (object, row) in &rows {
            Latency(&to_atomics(&row.latency)).encode(family.encode_family(&[("object", object.as_str())])?)?;
        }
        counter(&mut encoder, "activations", "Servants made (at the start, on demand, or anew)", |r| r.activations)?;
        counter(
            &mut encoder,
            "deactivations",
            "Servants dropped (an on-demand object idle, a save that lost a race)",
            |r| r.deactivations,
        )
    }
}

/// A row's summed latency slots, in the shape [`Latency`] reads.
fn to_atomics(values: &[u64]) -> Vec<AtomicU64> {
    values.iter().map(|&v| AtomicU64::new(v)).collect()
}
