//! The DNS front end's counters, shown on the registry's `/metrics` (docs/metrics.md): queries
//! by transport and type, answers by transport and code, datagrams dropped and slipped by the
//! rate limiter, and how long an answer took.
//!
//! Each count is one relaxed atomic addition into a fixed table, so the UDP loop's batches stay
//! free of locks and allocation; a scrape reads the table through [`DnsMetrics::registry`].

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::registry::{Registry, Unit};
use warren_proto::metrics::{LATENCY_SLOTS, Latency, add, read};

use crate::Transport;

/// The `transport` label's values, by [`Transport`].
const TRANSPORTS: [&str; 2] = ["udp", "tcp"];
/// The `type` label's values: the types the server answers, then everything else.
const TYPES: [&str; 6] = ["A", "AAAA", "SRV", "SOA", "NS", "other"];
/// The `code` label's values, by the header's four-bit RCODE (an extended code, BADVERS, shows
/// as its low four bits, NOERROR): the codes the server gives, then everything else.
const CODES: [&str; 7] = ["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "other"];
/// Why a query got no answer: nothing to answer to (too short, or a response), or the rate
/// limiter dropped it.
const DROPPED: [&str; 2] = ["unanswerable", "rate_limited"];

/// The counters of one DNS server.
#[derive(Debug)]
pub struct DnsMetrics {
    queries: [[AtomicU64; TYPES.len()]; 2],
    answers: [[AtomicU64; CODES.len()]; 2],
    dropped: [AtomicU64; DROPPED.len()],
    slipped: AtomicU64,
    latency: [Box<[AtomicU64]>; 2],
}

/// Why a query was not answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dropped {
    Unanswerable,
    RateLimited,
}

fn at(transport: Transport) -> usize {
    match transport {
        Transport::Udp => 0,
        Transport::Tcp => 1,
    }
}

impl Default for DnsMetrics {
    fn default() -> Self {
        let latency = || (0..LATENCY_SLOTS).map(|_| AtomicU64::new(0)).collect();
        DnsMetrics {
            queries: Default::default(),
            answers: Default::default(),
            dropped: Default::default(),
            slipped: AtomicU64::new(0),
            latency: [latency(), latency()],
        }
    }
}

impl DnsMetrics {
    /// A query received, counted under its question's type.
    pub(crate) fn query(&self, transport: Transport, query: &[u8]) {
        add(&self.queries[at(transport)][type_index(query)], 1);
    }

    /// An answer sent, counted under its code, `took` after its query arrived.
    pub(crate) fn answer(&self, transport: Transport, response: &[u8], took: Duration) {
        let code = response.get(3).map_or(CODES.len() - 1, |b| usize::from(b & 0x0f).min(CODES.len() - 1));
        add(&self.answers[at(transport)][code], 1);
        Latency(&self.latency[at(transport)]).observe(took);
    }

    pub(crate) fn dropped(&self, why: Dropped) {
        add(&self.dropped[why as usize], 1);
    }

    /// An answer the rate limiter sent truncated instead of dropping it (BIND's slip).
    pub(crate) fn slipped(&self) {
        add(&self.slipped, 1);
    }

    /// A registry of these counters under `warren_dns_`, for a page that shows them.
    pub fn registry(self: &Arc<Self>) -> Registry {
        let mut registry = Registry::with_prefix("warren_dns");
        registry.register_collector(Box::new(Page(self.clone())));
        registry
    }
}

/// The index in [`TYPES`] of the first question's type: the two bytes after its name, which
/// starts past the 12-byte header. Anything that cannot be read is `other`.
fn type_index(query: &[u8]) -> usize {
    let mut at = 12;
    // A name is at most 255 bytes, so at most 128 labels.
    for _ in 0..128 {
        match query.get(at) {
            Some(0) => {
                let kind = query.get(at + 1..at + 3).map(|t| u16::from_be_bytes([t[0], t[1]]));
                return match kind {
                    Some(1) => 0,
                    Some(28) => 1,
                    Some(33) => 2,
                    Some(6) => 3,
                    Some(2) => 4,
                    _ => TYPES.len() - 1,
                };
            }
            Some(&len) if len < 64 => at += 1 + usize::from(len),
            _ => break,
        }
    }
    TYPES.len() - 1
}

#[derive(Debug)]
struct Page(Arc<DnsMetrics>);

impl Collector for Page {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = &self.0;
        let help = "Queries received, by transport and question type";
        let mut family = encoder.encode_descriptor("queries", help, None, MetricType::Counter)?;
        for (transport, counts) in TRANSPORTS.iter().zip(&m.queries) {
            for (kind, count) in TYPES.iter().zip(counts) {
                let labels = [("transport", *transport), ("type", *kind)];
                ConstCounter::new(read(count)).encode(family.encode_family(&labels)?)?;
            }
        }
        let help = "Answers sent, by transport and response code";
        let mut family = encoder.encode_descriptor("answers", help, None, MetricType::Counter)?;
        for (transport, counts) in TRANSPORTS.iter().zip(&m.answers) {
            for (code, count) in CODES.iter().zip(counts) {
                let labels = [("transport", *transport), ("code", *code)];
                ConstCounter::new(read(count)).encode(family.encode_family(&labels)?)?;
            }
        }
        let help = "Queries not answered: nothing to answer to, or over the response rate limit (UDP)";
        let mut family = encoder.encode_descriptor("dropped", help, None, MetricType::Counter)?;
        for (reason, count) in DROPPED.iter().zip(&m.dropped) {
            ConstCounter::new(read(count)).encode(family.encode_family(&[("reason", *reason)])?)?;
        }
        let slipped = ConstCounter::new(read(&m.slipped));
        let help = "Answers over the rate limit sent truncated, so that a real client retries over TCP";
        slipped.encode(encoder.encode_descriptor("slipped", help, None, MetricType::Counter)?)?;
        let help = "From a query's arrival (UDP: its batch's) to its answer being ready, by transport";
        let seconds = Unit::Seconds;
        let mut family = encoder.encode_descriptor("answer_duration", help, Some(&seconds), MetricType::Histogram)?;
        for (transport, slots) in TRANSPORTS.iter().zip(&m.latency) {
            Latency(slots).encode(family.encode_family(&[("transport", *transport)])?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_counted_under_its_type_and_an_answer_under_its_code() {
        // Header, then `web.warren.` type SRV class IN.
        let mut query = vec![0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        query.extend_from_slice(b"\x03web\x06warren\x00\x00\x21\x00\x01");
        assert_eq!(TYPES[type_index(&query)], "SRV");
        assert_eq!(TYPES[type_index(&query[..14])], "other", "a cut query");
        let metrics = DnsMetrics::default();
        metrics.query(Transport::Udp, &query);
        let mut response = query.clone();
        response[3] = 0x83;
        metrics.answer(Transport::Tcp, &response, Duration::ZERO);
        assert_eq!(read(&metrics.queries[0][2]), 1);
        assert_eq!(read(&metrics.answers[1][3]), 1, "NXDOMAIN");
    }
}
