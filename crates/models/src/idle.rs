//! Idle outbound connections one event loop keeps for any of its sessions: a session gives up a
//! connection that may carry another request ([`warren_proto::Action::Park`]) and any session
//! takes one back by address ([`warren_proto::Action::Reuse`]), as HAProxy's server idle pools
//! do. Bounded per address, newest reused first (the one most likely still open at the peer),
//! and closed past the idle timeout.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How many idle connections are kept, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdleConfig {
    /// Idle connections kept per address; past it the oldest is closed. 0 keeps none (the
    /// default: only the switch's http mode asks for idle connections to be kept).
    pub per_addr: usize,
    /// An idle connection older than this is closed at the next park or reuse rather than
    /// reused (HAProxy's `pool-purge-delay`). Default 5 s.
    pub timeout: Duration,
}

impl Default for IdleConfig {
    fn default() -> Self {
        Self { per_addr: 0, timeout: Duration::from_secs(5) }
    }
}

/// The idle connections, `T` each (a socket; anything in the tests), by the address they go to.
#[derive(Debug)]
pub(crate) struct IdleConns<T> {
    config: IdleConfig,
    by_addr: HashMap<SocketAddr, VecDeque<(T, Instant)>>,
}

impl<T> IdleConns<T> {
    pub(crate) fn new(config: IdleConfig) -> Self {
        Self { config, by_addr: HashMap::new() }
    }

    /// Keeps `conn` to `addr` from `now`; dropped (closed) if none are kept, and the oldest to
    /// `addr` dropped if it is one too many.
    pub(crate) fn park(&mut self, addr: SocketAddr, conn: T, now: Instant) {
        self.purge(now);
        if self.config.per_addr == 0 {
            return;
        }
        let kept = self.by_addr.entry(addr).or_default();
        if kept.len() >= self.config.per_addr {
            kept.pop_front();
        }
        kept.push_back((conn, now));
    }

    /// The newest idle connection to `addr`, if one is kept.
    pub(crate) fn take(&mut self, addr: SocketAddr, now: Instant) -> Option<T> {
        self.purge(now);
        let kept = self.by_addr.get_mut(&addr)?;
        let (conn, _) = kept.pop_back()?;
        if kept.is_empty() {
            self.by_addr.remove(&addr);
        }
        Some(conn)
    }

    /// Drops the connections idle for the timeout or longer (the oldest are at the front).
    fn purge(&mut self, now: Instant) {
        let timeout = self.config.timeout;
        self.by_addr.retain(|_, kept| {
            while kept.front().is_some_and(|(_, since)| now.saturating_duration_since(*since) >= timeout) {
                kept.pop_front();
            }
            !kept.is_empty()
        });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_addr.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn the_newest_is_reused_and_each_address_keeps_its_bound() {
        let t0 = Instant::now();
        let mut idle = IdleConns::new(IdleConfig { per_addr: 2, timeout: Duration::from_secs(5) });
        for n in 1..=3 {
            idle.park(addr(1), n, t0);
        }
        idle.park(addr(2), 10, t0);
        assert_eq!(idle.len(), 3, "the oldest to :1 was closed");
        assert_eq!(idle.take(addr(1), t0), Some(3));
        assert_eq!(idle.take(addr(1), t0), Some(2));
        assert_eq!(idle.take(addr(1), t0), None);
        assert_eq!(idle.take(addr(2), t0), Some(10));
    }

    #[test]
    fn a_connection_idle_for_the_timeout_is_closed_not_reused() {
        let t0 = Instant::now();
        let mut idle = IdleConns::new(IdleConfig { per_addr: 4, timeout: Duration::from_secs(5) });
        idle.park(addr(1), 1, t0);
        idle.park(addr(1), 2, t0 + Duration::from_secs(3));
        assert_eq!(idle.take(addr(1), t0 + Duration::from_secs(6)), Some(2));
        assert_eq!(idle.len(), 0, "the first was closed at the timeout");
        idle.park(addr(1), 3, t0);
        assert_eq!(idle.take(addr(1), t0 + Duration::from_secs(5)), None);
    }

    #[test]
    fn with_none_to_keep_a_parked_connection_is_closed() {
        let t0 = Instant::now();
        let mut idle = IdleConns::new(IdleConfig::default());
        idle.park(addr(1), 1, t0);
        assert_eq!(idle.take(addr(1), t0), None);
    }
}
