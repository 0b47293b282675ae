//! The HTTP server's metrics (`docs/metrics.md`): connections, requests by status class, bytes,
//! and the time from a request's head to its answer, counted in atomic slots (see
//! [`crate::metrics`]) so that a request costs a handful of relaxed additions.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::registry::Registry;

use crate::metrics::{self as slots, LATENCY_SLOTS, Latency, add, read};

const ACCEPTED: usize = 0;
const CLOSED: usize = 1;
const RECEIVED: usize = 2;
const SENT_BODY: usize = 3;
/// Five slots, `1xx` to `5xx`.
const STATUS: usize = 4;
const LATENCY: usize = STATUS + 5;

/// The HTTP server's counters: shared by its sessions, and by its processes when they fork
/// ([`HttpMetrics::SLOTS`] slots from a shared mapping).
#[derive(Clone, Copy, Debug)]
pub struct HttpMetrics(&'static [AtomicU64]);

impl HttpMetrics {
    /// How many slots the counters take.
    pub const SLOTS: usize = LATENCY + LATENCY_SLOTS;

    /// Counters of this process's own.
    pub fn private() -> HttpMetrics {
        HttpMetrics(slots::private_slots(Self::SLOTS))
    }

    /// Counters in `slots` (zeroed, [`Self::SLOTS`] long), such as a mapping forked processes
    /// share. Panics on a slice of another length.
    pub fn in_slots(slots: &'static [AtomicU64]) -> HttpMetrics {
        assert_eq!(slots.len(), Self::SLOTS, "HTTP metrics take {} slots", Self::SLOTS);
        HttpMetrics(slots)
    }

    pub(super) fn accepted(&self) {
        add(&self.0[ACCEPTED], 1);
    }

    pub(super) fn closed(&self) {
        add(&self.0[CLOSED], 1);
    }

    pub(super) fn received(&self, bytes: usize) {
        add(&self.0[RECEIVED], bytes as u64);
    }

    /// A request answered with `status` and `body` bytes, `took` after its head was complete.
    pub(super) fn answered(&self, status: u16, body: u64, took: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        add(&self.0[STATUS + class], 1);
        if body > 0 {
            add(&self.0[SENT_BODY], body);
        }
        Latency(&self.0[LATENCY..]).observe(took);
    }

    /// The page's registry: one collector reading the slots at each scrape.
    pub(super) fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix("warren_http");
        registry.register_collector(Box::new(Page(*self)));
        registry
    }
}

/// Reads the slots at a scrape.
#[derive(Debug)]
struct Page(HttpMetrics);

impl Collector for Page {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.0;
        let (accepted, closed) = (read(&s[ACCEPTED]), read(&s[CLOSED]));
        slots::counter(&mut encoder, "connections_accepted", "Connections accepted", accepted)?;
        let open = i64::try_from(accepted.saturating_sub(closed)).unwrap_or(i64::MAX);
        slots::gauge(&mut encoder, "connections_open", "Connections open", open)?;
        let help = "Requests answered, by status class (1xx to 5xx)";
        let counter = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor("requests", help, None, counter.metric_type())?;
        for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].into_iter().enumerate() {
            let labels = [("code", class)];
            ConstCounter::new(read(&s[STATUS + i])).encode(family.encode_family(&labels)?)?;
        }
        slots::counter(&mut encoder, "received_bytes", "Bytes received from clients", read(&s[RECEIVED]))?;
        let help = "Response body bytes queued to clients (heads not included)";
        slots::counter(&mut encoder, "sent_body_bytes", help, read(&s[SENT_BODY]))?;
        let help = "Time from a request's head being complete to its answer being queued";
        slots::latency(&mut encoder, "request_duration", help, Latency(&s[LATENCY..]))
    }
}
