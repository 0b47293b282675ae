//! Outlier ejection, Envoy's consecutive-failure rule: a replica that fails
//! [`consecutive_failures`](Ejection::consecutive_failures) calls in a row (default 5) is
//! left out of the choice for [`base_time`](Ejection::base_time) (default 30 s) times the
//! number of times it has been ejected, at most [`max_time`](Ejection::max_time) (default
//! 300 s). At most [`max_percent`](Ejection::max_percent) of the replicas (default 10 %) are
//! ejected at once, but at least one may always be, and a call never finds every replica
//! ejected: the ejected ones are used when nothing else is left (Envoy's panic mode).
//!
//! What counts as a failure is Envoy's "5xx": a platform error whose HTTP status is 5xx
//! (`unavailable`, `overloaded`, `deadline_exceeded`, `internal`) or a connection that could
//! not be opened. A method's own error is an answer, and a success resets the count. An
//! ejected replica comes back when its time is up (checked when replicas are chosen, not by a
//! sweep timer), with its count of consecutive failures reset.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use warren_rpc::Failure;

/// When a replica is ejected and for how long. The defaults are Envoy's.
#[derive(Clone, Debug)]
pub struct Ejection {
    pub consecutive_failures: u32,
    pub base_time: Duration,
    pub max_time: Duration,
    pub max_percent: u32,
}

impl Default for Ejection {
    fn default() -> Self {
        Ejection {
            consecutive_failures: 5,
            base_time: Duration::from_secs(30),
            max_time: Duration::from_secs(300),
            max_percent: 10,
        }
    }
}

/// The outcome of one call on one replica, as ejection counts it.
pub fn is_server_failure(failure: &Failure) -> bool {
    failure.code().is_some_and(|code| code.http_status() >= 500)
}

/// The health of each replica seen so far. Share it (`Arc`) between the services calling the
/// same replicas.
#[derive(Debug, Default)]
pub struct Outliers {
    policy: Ejection,
    hosts: Mutex<HashMap<SocketAddr, Host>>,
}

#[derive(Debug, Default)]
struct Host {
    consecutive: u32,
    times_ejected: u32,
    ejected_until: Option<Instant>,
}

impl Outliers {
    pub fn new(policy: Ejection) -> Outliers {
        Outliers { policy, hosts: Mutex::default() }
    }

    /// Record a call's outcome on `addr`: `failed` is true for a server failure.
    pub fn record(&self, addr: SocketAddr, failed: bool, replicas: &[SocketAddr], now: Instant) {
        let mut hosts = self.hosts.lock().expect("outliers");
        expire(&mut hosts, now);
        let host = hosts.entry(addr).or_default();
        if !failed {
            host.consecutive = 0;
            return;
        }
        host.consecutive += 1;
        if host.ejected_until.is_some() || host.consecutive < self.policy.consecutive_failures {
            return;
        }
        let ejected = replicas.iter().filter(|r| hosts.get(r).is_some_and(|h| h.ejected_until.is_some())).count();
        let allowed = (replicas.len() * self.policy.max_percent as usize / 100).max(1);
        // Never the last replica standing, whatever the percentage.
        if ejected >= allowed || ejected + 1 >= replicas.len() {
            return;
        }
        let host = hosts.get_mut(&addr).expect("inserted above");
        host.times_ejected += 1;
        let time = self.policy.base_time.saturating_mul(host.times_ejected).min(self.policy.max_time);
        host.ejected_until = Some(now + time);
    }

    /// `replicas` without the ejected ones; all of them if every one is ejected.
    pub fn admit(&self, replicas: &[SocketAddr], now: Instant) -> Vec<SocketAddr> {
        let mut hosts = self.hosts.lock().expect("outliers");
        expire(&mut hosts, now);
        let healthy: Vec<SocketAddr> =
            replicas.iter().copied().filter(|r| hosts.get(r).is_none_or(|h| h.ejected_until.is_none())).collect();
        if healthy.is_empty() { replicas.to_vec() } else { healthy }
    }

    /// The replicas ejected now.
    pub fn ejected(&self, now: Instant) -> Vec<SocketAddr> {
        let mut hosts = self.hosts.lock().expect("outliers");
        expire(&mut hosts, now);
        hosts.iter().filter(|(_, h)| h.ejected_until.is_some()).map(|(addr, _)| *addr).collect()
    }
}

fn expire(hosts: &mut HashMap<SocketAddr, Host>, now: Instant) {
    for host in hosts.values_mut() {
        if host.ejected_until.is_some_and(|until| until <= now) {
            host.ejected_until = None;
            host.consecutive = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (1..=n).map(|p| SocketAddr::from(([127, 0, 0, 1], p))).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn five_failures_in_a_row_eject_for_thirty_seconds_then_longer() {
        let (outliers, all, now) = (Outliers::default(), addrs(3), Instant::now());
        for _ in 0..4 {
            outliers.record(all[0], true, &all, now);
        }
        outliers.record(all[0], false, &all, now);
        for _ in 0..4 {
            outliers.record(all[0], true, &all, now);
        }
        assert!(outliers.ejected(now).is_empty(), "a success resets the count");
        outliers.record(all[0], true, &all, now);
        assert_eq!(outliers.ejected(now), vec![all[0]]);
        assert_eq!(outliers.admit(&all, now), all[1..].to_vec());
        let back = now + Duration::from_secs(30);
        assert_eq!(outliers.admit(&all, back), all, "back after the base time");
        for _ in 0..5 {
            outliers.record(all[0], true, &all, back);
        }
        let later = back + Duration::from_secs(59);
        assert_eq!(outliers.ejected(later), vec![all[0]], "the second ejection lasts twice as long");
        assert!(outliers.ejected(later + Duration::from_secs(1)).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_ten_percent_are_ejected_but_always_one_and_never_the_last() {
        let (outliers, all, now) = (Outliers::default(), addrs(3), Instant::now());
        for addr in &all {
            for _ in 0..5 {
                outliers.record(*addr, true, &all, now);
            }
        }
        assert_eq!(outliers.ejected(now).len(), 1, "10 % of 3 rounds down, but one may go");
        let (outliers, twenty) = (Outliers::default(), addrs(20));
        for addr in &twenty {
            for _ in 0..5 {
                outliers.record(*addr, true, &twenty, now);
            }
        }
        assert_eq!(outliers.ejected(now).len(), 2);
        let (outliers, one) = (Outliers::default(), addrs(1));
        for _ in 0..10 {
            outliers.record(one[0], true, &one, now);
        }
        assert!(outliers.ejected(now).is_empty(), "the only replica stays");
        assert_eq!(outliers.admit(&one, now), one);
    }
}
