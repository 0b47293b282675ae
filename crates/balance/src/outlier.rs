//! Passive outlier ejection: a backend whose connections keep failing is taken out of rotation
//! for a while, without waiting for the active checks.
//!
//! Envoy's consecutive-failure detector and defaults (`outlier_detection.proto`):
//! `consecutive_gateway_failure` 5, `base_ejection_time` 30 s, `max_ejection_time` 300 s,
//! `max_ejection_percent` 10 % (but at least one backend may always be ejected), and the
//! ejection time grows as base × times ejected, the count falling by one for each `interval`
//! (10 s) the backend then stays in rotation.

use std::time::{Duration, Instant};

/// The ejection rules. [`OutlierConfig::default`] is Envoy's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutlierConfig {
    /// Consecutive failed connections that eject a backend. Default 5.
    pub consecutive_failures: u32,
    /// The first ejection's length; the n-th is n times this. Default 30 s.
    pub base_ejection: Duration,
    /// The longest ejection. Default 300 s.
    pub max_ejection: Duration,
    /// The most backends out at once, in percent of the set (at least one). Default 10.
    pub max_ejection_percent: u32,
    /// Time in rotation that forgives one past ejection. Default 10 s.
    pub interval: Duration,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 10,
            interval: Duration::from_secs(10),
        }
    }
}

impl OutlierConfig {
    /// The most backends of a set of `total` that may be ejected at once.
    pub fn max_ejected(&self, total: usize) -> usize {
        (total * self.max_ejection_percent as usize / 100).max(1)
    }
}

/// One backend's failure streak and ejection.
#[derive(Clone, Debug, Default)]
pub struct Outlier {
    failures: u32,
    times_ejected: u32,
    ejected_until: Option<Instant>,
}

impl Outlier {
    /// Whether the backend is out of rotation at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| now < until)
    }

    /// When the current or last ejection ends (`None` if never ejected).
    pub fn ejected_until(&self) -> Option<Instant> {
        self.ejected_until
    }

    /// Records a connection's outcome at `now`; `may_eject` says whether the set's ejection cap
    /// leaves room. Returns true if this outcome ejected the backend.
    pub fn record(&mut self, config: &OutlierConfig, now: Instant, ok: bool, may_eject: bool) -> bool {
        if ok {
            self.failures = 0;
            return false;
        }
        self.failures += 1;
        if self.failures < config.consecutive_failures || self.is_ejected(now) || !may_eject {
            return false;
        }
        if let Some(ended) = self.ejected_until {
            let forgiven = now.saturating_duration_since(ended).as_nanos() / config.interval.as_nanos().max(1);
            self.times_ejected = self.times_ejected.saturating_sub(u32::try_from(forgiven).unwrap_or(u32::MAX));
        }
        self.times_ejected += 1;
        let length = config.base_ejection.saturating_mul(self.times_ejected).min(config.max_ejection);
        self.ejected_until = Some(now + length);
        self.failures = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_eject_for_a_growing_time() {
        let config = OutlierConfig::default();
        let t0 = Instant::now();
        let mut o = Outlier::default();
        for _ in 0..4 {
            assert!(!o.record(&config, t0, false, true));
        }
        assert!(o.record(&config, t0, false, true));
        assert!(o.is_ejected(t0) && !o.is_ejected(t0 + Duration::from_secs(30)));
        let t1 = t0 + Duration::from_secs(31);
        for _ in 0..5 {
            o.record(&config, t1, false, true);
        }
        assert_eq!(o.ejected_until(), Some(t1 + Duration::from_secs(60)));
    }

    #[test]
    fn a_success_breaks_the_streak_and_the_cap_holds() {
        let config = OutlierConfig::default();
        let t0 = Instant::now();
        let mut o = Outlier::default();
        for i in 0..9 {
            assert!(!o.record(&config, t0, i == 4, true));
        }
        assert!(!o.record(&config, t0, false, false), "no room under the cap");
        assert_eq!(config.max_ejected(3), 1);
        assert_eq!(config.max_ejected(40), 4);
    }
}
