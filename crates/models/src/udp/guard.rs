//! Which datagrams a datagram service answers.
//!
//! echo, chargen, daytime and time answer whoever a datagram claims to come from, and UDP lets
//! anyone claim any source. So, before a datagram reaches its service:
//!
//! - **Reflection sources are dropped**: a source port below 1024 (xinetd's `bad_port_check`:
//!   another host's echo, chargen, daytime, time or DNS port, or port 0), the service's own port
//!   (FreeBSD inetd's loop check: a datagram spoofed from the service itself, or from the same
//!   service on another host, would bounce forever), and a source address no host sends from
//!   (unspecified, multicast, broadcast).
//! - **Answers are rate-limited per source address**: a token bucket per address (`--udp-rate`
//!   answers a second after a burst of `--udp-burst`), in a table of at most [`SourceRate::sources`]
//!   addresses. A flood from one address, spoofed or not, gets at most that many answers, while
//!   other sources are answered as before.
//! - **The gate decides**, where the service has one (the node's `only_from`, `no_access` and
//!   `access_times` for its UDP builtins): each datagram is a connection admitted and at once
//!   released.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::rate::{BucketShape, Buckets, Take};
use crate::accept::Gate;

/// How often one source address is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceRate {
    /// Answers a second per source address once its burst is spent; 0 turns the limit off.
    /// Default 20.
    pub per_second: u32,
    /// Answers a quiet source address may get at once. Default 40.
    pub burst: u32,
    /// Source addresses remembered at most; beyond, the oldest is forgotten. Default 16,384.
    pub sources: usize,
}

impl Default for SourceRate {
    fn default() -> Self {
        Self { per_second: 20, burst: 40, sources: 16_384 }
    }
}

/// Why a datagram was not answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its source could be another server or this one (see [`reflection_source`]).
    Reflection(&'static str),
    /// Its source address has spent its answers for now.
    RateLimited,
    /// The service's gate refused its source.
    NotAdmitted,
}

/// Why `from` must not be answered by a service on port `own_port`, if it must not.
pub fn reflection_source(from: SocketAddr, own_port: u16) -> Option<&'static str> {
    let port = from.port();
    if port == own_port {
        return Some("the service's own port");
    }
    if port < 1024 {
        return Some("a privileged source port");
    }
    let silent = match from.ip().to_canonical() {
        IpAddr::V4(ip) => ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast(),
        IpAddr::V6(ip) => ip.is_unspecified() || ip.is_multicast(),
    };
    silent.then_some("an address no host sends from")
}

/// The checks of one socket: its own port and the buckets of its sources.
#[derive(Debug)]
pub(crate) struct Guard {
    own_port: u16,
    buckets: Option<Mutex<Buckets<IpAddr>>>,
    gate: Option<Arc<dyn Gate>>,
}

impl Guard {
    pub(crate) fn new(own: SocketAddr, rate: SourceRate, gate: Option<Arc<dyn Gate>>) -> Self {
        let buckets = (rate.per_second > 0).then(|| {
            let shape =
                BucketShape { rate: f64::from(rate.per_second), ceiling: f64::from(rate.burst.max(1)), floor: 0.0 };
            Mutex::new(Buckets::new(shape, rate.sources))
        });
        Self { own_port: own.port(), buckets, gate }
    }

    /// Whether a datagram from `from`, received at `now`, may be answered.
    pub(crate) fn admit(&self, from: SocketAddr, now: Instant) -> Result<(), Refusal> {
        if let Some(why) = reflection_source(from, self.own_port) {
            return Err(Refusal::Reflection(why));
        }
        if let Some(gate) = &self.gate {
            let ip = from.ip().to_canonical();
            if !gate.admit(ip) {
                return Err(Refusal::NotAdmitted);
            }
            gate.release(ip);
        }
        let Some(buckets) = &self.buckets else { return Ok(()) };
        let mut buckets = buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match buckets.take(&from.ip().to_canonical(), now) {
            Take::Allowed => Ok(()),
            Take::Refused { .. } => Err(Refusal::RateLimited),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn reflection_sources_are_refused() {
        let own = 7007;
        for (from, refused) in [
            ("127.0.0.1:7007", true),
            ("192.0.2.1:7007", true),
            ("127.0.0.1:0", true),
            ("127.0.0.1:7", true),
            ("127.0.0.1:13", true),
            ("127.0.0.1:19", true),
            ("127.0.0.1:37", true),
            ("127.0.0.1:53", true),
            ("127.0.0.1:123", true),
            ("127.0.0.1:1023", true),
            ("0.0.0.0:40000", true),
            ("255.255.255.255:40000", true),
            ("224.0.0.1:40000", true),
            ("[ff02::1]:40000", true),
            ("[::ffff:127.0.0.1]:19", true),
            ("127.0.0.1:1024", false),
            ("127.0.0.1:40000", false),
            ("[::1]:40000", false),
        ] {
            assert_eq!(reflection_source(addr(from), own).is_some(), refused, "{from}");
        }
    }

    #[test]
    fn one_flooding_source_is_limited_and_another_is_answered() {
        let guard = Guard::new(addr("127.0.0.1:7007"), SourceRate { per_second: 1, burst: 5, sources: 16 }, None);
        let now = Instant::now();
        let flood = (0..100).filter(|_| guard.admit(addr("127.0.0.1:40000"), now).is_ok()).count();
        assert_eq!(flood, 5);
        // Another port of the same address shares its bucket; another address has its own.
        assert_eq!(guard.admit(addr("127.0.0.1:40001"), now), Err(Refusal::RateLimited));
        assert_eq!(guard.admit(addr("127.0.0.2:40000"), now), Ok(()));
        // An IPv4-mapped address is the same source as its IPv4 form.
        assert_eq!(guard.admit(addr("[::ffff:127.0.0.1]:40000"), now), Err(Refusal::RateLimited));
    }

    #[test]
    fn a_rate_of_zero_turns_the_limit_off() {
        let guard = Guard::new(addr("127.0.0.1:7007"), SourceRate { per_second: 0, ..SourceRate::default() }, None);
        let now = Instant::now();
        assert!((0..1000).all(|_| guard.admit(addr("127.0.0.1:40000"), now).is_ok()));
        assert!(guard.admit(addr("127.0.0.1:19"), now).is_err(), "reflection checks stay on");
    }
}
