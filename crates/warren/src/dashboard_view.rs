//! What the dashboard shows, as JSON: the node's services sampled from its [`Status`] once a
//! second (with each one's starts per second, worked out from two samples), the last minutes of
//! those rates for the chart, and the registry's names.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use warren_node::Status;

/// How many samples the chart keeps: five minutes at one a second.
pub const HISTORY: usize = 300;

/// The node's services at one instant (the `services` event, and part of `/api/status`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Services {
    /// When sampled, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// One row per service, in the configuration's order.
    pub services: Vec<ServiceRow>,
    /// Children running, all services together.
    pub children: usize,
}

/// One service's row: [`warren_node::status::ServiceStatus`] and its rate.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceRow {
    pub name: String,
    /// `exec nowait`, `exec wait`, `redirect …` or `builtin <protocol> (<model>)`.
    pub kind: String,
    pub transport: &'static str,
    pub listener: String,
    pub running: u32,
    pub spawned: u64,
    pub refused: u64,
    /// Starts in the last complete second, as the node counts them (services with `cps`).
    pub rate: u32,
    pub state: String,
    /// Starts (children, or a builtin's admitted connections) per second between the last two
    /// samples.
    pub per_second: f64,
}

/// The registry's names (the `names` event, and part of `/api/status`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Names {
    /// The registry the node registers with, once known; `None`: the node uses none.
    pub registry: Option<String>,
    /// Every name, sorted, at most [`crate::dashboard_names::MAX_NAMES`].
    pub names: Vec<NameRow>,
    /// Why the list may be stale (the registry cannot be reached), if it may.
    pub error: Option<String>,
}

/// One registered name.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NameRow {
    pub name: String,
    pub endpoints: Vec<EndpointRow>,
}

/// One endpoint of a name, with the registry's verdict on it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EndpointRow {
    pub addr: String,
    pub transport: String,
    pub weight: u16,
    /// `healthy` or `failing` for an endpoint with a health check, else `unchecked`.
    pub health: &'static str,
    pub meta: BTreeMap<String, String>,
}

/// One point of the chart: each service's starts per second at one instant.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Point {
    pub at_ms: u64,
    pub per_second: BTreeMap<String, f64>,
}

/// Turns successive [`Status`] snapshots into [`Services`] and keeps the chart's history.
#[derive(Debug, Default)]
pub struct Sampler {
    /// Each service's `spawned` at the last sample.
    last: HashMap<String, u64>,
    history: VecDeque<Point>,
}

impl Sampler {
    /// The view of `status`, sampled at `now`, `elapsed` after the previous sample. A service
    /// new since then (or restarted by a reload, its count lower) starts at no rate.
    pub fn sample(&mut self, status: &Status, now: SystemTime, elapsed: Duration) -> Services {
        let at_ms = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let seconds = elapsed.as_secs_f64().max(0.001);
        let services: Vec<ServiceRow> = status
            .services
            .iter()
            .map(|s| {
                let before = self.last.get(&s.name).copied().unwrap_or(s.spawned);
                let per_second = round(s.spawned.saturating_sub(before) as f64 / seconds);
                ServiceRow {
                    name: s.name.clone(),
                    kind: s.kind.clone(),
                    transport: s.transport,
                    listener: s.addr.to_string(),
                    running: s.running,
                    spawned: s.spawned,
                    refused: s.refused,
                    rate: s.rate,
                    state: s.state.clone(),
                    per_second,
                }
            })
            .collect();
        self.last = status.services.iter().map(|s| (s.name.clone(), s.spawned)).collect();
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        let per_second = services.iter().map(|s| (s.name.clone(), s.per_second)).collect();
        self.history.push_back(Point { at_ms, per_second });
        Services { at_ms, services, children: status.children }
    }

    /// The chart's points, oldest first.
    pub fn history(&self) -> Vec<Point> {
        self.history.iter().cloned().collect()
    }
}

/// To a hundredth: the page shows no more, and equal rates then compare equal.
fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Whether two views differ in anything but when they were taken: only then is an event sent.
pub fn changed(before: &Services, after: &Services) -> bool {
    before.services != after.services || before.children != after.children
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_node::status::ServiceStatus;

    fn status(spawned: &[(&str, u64)]) -> Status {
        let services = spawned
            .iter()
            .map(|(name, spawned)| ServiceStatus {
                name: (*name).into(),
                kind: "exec nowait".into(),
                transport: "tcp",
                addr: "127.0.0.1:4000".parse().unwrap(),
                running: 1,
                spawned: *spawned,
                refused: 0,
                rate: 0,
                state: "listening".into(),
            })
            .collect();
        Status { services, children: 1 }
    }

    #[test]
    fn rates_come_from_two_samples_and_a_new_or_restarted_service_starts_at_none() {
        let mut sampler = Sampler::default();
        let t0 = UNIX_EPOCH + Duration::from_secs(1000);
        let first = sampler.sample(&status(&[("a", 10)]), t0, Duration::from_secs(1));
        assert_eq!(first.services[0].per_second, 0.0, "nothing to compare with yet");
        assert_eq!(first.at_ms, 1_000_000);
        let second = sampler.sample(&status(&[("a", 16), ("b", 5)]), t0, Duration::from_millis(2000));
        assert_eq!((second.services[0].per_second, second.services[1].per_second), (3.0, 0.0));
        let reloaded = sampler.sample(&status(&[("a", 2)]), t0, Duration::from_secs(1));
        assert_eq!(reloaded.services[0].per_second, 0.0, "a count that went down is a restart, not a negative rate");
        assert!(!changed(&reloaded, &reloaded.clone()));
        assert!(changed(&second, &reloaded));
    }

    #[test]
    fn the_history_keeps_the_last_minutes_only() {
        let mut sampler = Sampler::default();
        for i in 0..(HISTORY as u64 + 20) {
            sampler.sample(&status(&[("a", i)]), UNIX_EPOCH + Duration::from_secs(i), Duration::from_secs(1));
        }
        let history = sampler.history();
        assert_eq!(history.len(), HISTORY);
        assert_eq!(history[0].at_ms, 20_000, "the oldest points went first");
        assert_eq!(history.last().unwrap().per_second["a"], 1.0);
    }
}
