//! Counters for hot paths, kept in plain atomics and read as Prometheus metrics at a scrape
//! (`docs/metrics.md`).
//!
//! A server's counters are a slice of `AtomicU64` slots: counting is one relaxed `fetch_add`,
//! with no lock, no map and no allocation, and a slice can live in memory shared by the
//! processes of `fork` and `prefork` (`warren_models::activity::shared_slots`), so that a scrape
//! answered by any one of them counts them all. At a scrape the slots are read into
//! `prometheus_client`'s constant metrics and encoded in the OpenMetrics text format.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// The content type of a metrics page: the OpenMetrics text format, which Prometheus reads.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the latency buckets, in seconds: 100 µs doubling to about 3.3 s, then `+Inf`.
/// A cached file at the bottom, a disk or a backend in the middle, a stall at the top.
pub const LATENCY_BOUNDS: [f64; 16] = {
    let mut bounds = [0.0001; 16];
    let mut i = 1;
    while i < bounds.len() {
        bounds[i] = bounds[i - 1] * 2.0;
        i += 1;
    }
    bounds
};

/// Slots a [`Latency`] takes: the sum in nanoseconds, then one per bucket and `+Inf`'s.
pub const LATENCY_SLOTS: usize = 1 + LATENCY_BOUNDS.len() + 1;

/// Zeroed slots of this process's own, for a server that does not fork.
pub fn private_slots(n: usize) -> &'static [AtomicU64] {
    // Leaked: a server's counters live as long as anything may scrape them (one per server).
    Box::leak((0..n).map(|_| AtomicU64::new(0)).collect())
}

/// Adds `n` to a slot.
pub fn add(slot: &AtomicU64, n: u64) {
    slot.fetch_add(n, Ordering::Relaxed);
}

/// A slot's value.
pub fn read(slot: &AtomicU64) -> u64 {
    slot.load(Ordering::Relaxed)
}

/// A latency histogram over [`LATENCY_SLOTS`] slots: an observation is two `fetch_add`s (one
/// when it is zero, as a sans-IO session's answer at the instant of its request is).
#[derive(Clone, Copy, Debug)]
pub struct Latency<'a>(pub &'a [AtomicU64]);

impl Latency<'_> {
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = LATENCY_BOUNDS.iter().position(|&bound| seconds <= bound).unwrap_or(LATENCY_BOUNDS.len());
        add(&self.0[1 + bucket], 1);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        if nanos > 0 {
            add(&self.0[0], nanos);
        }
    }

    /// Writes the histogram as one series of the family `encoder` is at.
    pub fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let counts: Vec<u64> = self.0[1..].iter().map(read).collect();
        // The encoder accumulates; the last bucket, `f64::INFINITY`, is written `+Inf`.
        let bounds = LATENCY_BOUNDS.iter().copied().chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds.zip(counts.iter().copied()).collect();
        let sum = read(&self.0[0]) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, counts.iter().sum(), &buckets, None)
    }
}

/// Writes a family of one unlabelled counter.
pub fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result<(), std::fmt::Error> {
    let counter = ConstCounter::new(value);
    counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)
}

/// Writes a family of one unlabelled gauge.
pub fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

/// Writes a family of one unlabelled latency histogram, in seconds.
pub fn latency(encoder: &mut DescriptorEncoder, name: &str, help: &str, slots: Latency) -> Result<(), std::fmt::Error> {
    slots.encode(encoder.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_double_from_100us_and_count_each_observation_once() {
        assert_eq!(LATENCY_BOUNDS[0], 0.0001);
        assert!((LATENCY_BOUNDS[15] - 3.2768).abs() < 1e-9);
        let slots = private_slots(LATENCY_SLOTS);
        let latency = Latency(slots);
        latency.observe(Duration::ZERO);
        latency.observe(Duration::from_micros(150));
        latency.observe(Duration::from_secs(60));
        assert_eq!(read(&slots[1]), 1, "zero is in the first bucket");
        assert_eq!(read(&slots[2]), 1, "150 µs is under 200 µs");
        assert_eq!(read(&slots[LATENCY_SLOTS - 1]), 1, "a minute is only under +Inf");
        assert_eq!(read(&slots[0]), 60_000_150_000);
    }
}
