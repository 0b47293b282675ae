//! What the node's builtins hosted in this process hold, for the dashboard: each switch's
//! backends, each object server's objects, each agent host's agents. A builtin adds itself when
//! it starts ([`add`]); the dashboard reads them all at each sample ([`Sampler::sample`]).
//!
//! Weak references: the list never keeps a builtin that a reload replaced or removed, and such
//! an entry is dropped at the next sample.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use serde::Serialize;

use crate::switch_metrics::SwitchStats;

/// A builtin the dashboard shows.
pub(crate) enum Hosted {
    Switch(Weak<SwitchStats>),
    Objects(Weak<warren_objects::Objects>),
    Agents(Weak<warren_agents::roster::Roster>),
}

/// Every builtin added, by service name, in the order they started.
static HOSTED: Mutex<Vec<(String, Hosted)>> = Mutex::new(Vec::new());

/// Shows `hosted`, the builtin of service `service`, on the dashboard while it lives.
pub(crate) fn add(service: &str, hosted: Hosted) {
    HOSTED.lock().unwrap_or_else(|e| e.into_inner()).push((service.to_owned(), hosted));
}

/// The builtins at one instant (the `hosted` event, and part of `/api/status`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HostedView {
    /// When sampled, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Per agent host, the hops it has seen so far (arrivals and departures), for the chart.
    pub hops: BTreeMap<String, u64>,
    pub switches: Vec<SwitchView>,
    pub objects: Vec<ObjectsView>,
    pub agents: Vec<AgentsView>,
}

/// One switch: how it serves, and its backends.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SwitchView {
    pub service: String,
    /// `relay, round-robin`.
    pub describe: String,
    /// Connections or requests no backend could take.
    pub unavailable: u64,
    pub backends: Vec<BackendView>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BackendView {
    pub group: String,
    pub name: String,
    pub state: &'static str,
    pub weight: u32,
    pub load: f64,
    pub in_flight: u32,
    pub requests: u64,
    pub connections: u64,
    pub errors: u64,
    pub sent: u64,
    pub received: u64,
}

/// One object server's objects (those clients exported left out).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ObjectsView {
    pub service: String,
    pub objects: Vec<warren_objects::table::ObjectInfo>,
}

/// One agent host's agents, as its roster holds them (running, and the last ones ended).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AgentsView {
    pub service: String,
    pub agents: Vec<AgentView>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AgentView {
    pub id: u64,
    /// The module's id, shortened as `warren agents` prints it.
    pub module: String,
    pub hops: u32,
    /// `running`, `moving to …`, `moved to ID@ADDR`, `finished`, `failed: …`: where it runs, or
    /// where it went.
    pub state: String,
    pub fuel_used: u64,
}

/// The hops chart's point: hops seen by each agent host at one instant, in total.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HopPoint {
    pub at_ms: u64,
    pub hops: BTreeMap<String, u64>,
}

/// Agents that came and went between samples, counted from the rosters, for the node's
/// `/metrics` and the hops chart.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AgentCounts {
    /// Agents first seen on this host: started here, or arrived (hops in).
    pub started: u64,
    pub arrived: u64,
    /// Agents seen to end: finished, failed, or moved away (hops out).
    pub finished: u64,
    pub failed: u64,
    pub moved: u64,
}

/// Whether two views differ in anything but when they were taken: only then is an event sent.
pub fn changed(before: &HostedView, after: &HostedView) -> bool {
    HostedView { at_ms: after.at_ms, ..before.clone() } != *after
}

/// Reads the builtins, and keeps what only successive samples tell: agents' arrivals and ends,
/// and the hops history.
#[derive(Debug, Default)]
pub struct HostedSampler {
    /// Per agent host, the state each agent id had at the last sample.
    seen: BTreeMap<String, BTreeMap<u64, String>>,
    /// Per agent host, its totals so far.
    pub counts: BTreeMap<String, AgentCounts>,
    history: VecDeque<HopPoint>,
}

impl HostedSampler {
    /// The builtins now, sampled at `at_ms`.
    pub fn sample(&mut self, at_ms: u64) -> HostedView {
        let mut view = HostedView { at_ms, ..HostedView::default() };
        let mut hosted = HOSTED.lock().unwrap_or_else(|e| e.into_inner());
        hosted.retain(|(service, hosted)| match hosted {
            Hosted::Switch(stats) => stats.upgrade().map(|s| view.switches.push(switch_view(service, &s))).is_some(),
            Hosted::Objects(objects) => objects
                .upgrade()
                .map(|o| view.objects.push(ObjectsView { service: service.clone(), objects: o.list() }))
                .is_some(),
            Hosted::Agents(roster) => roster.upgrade().map(|r| view.agents.push(agents_view(service, &r))).is_some(),
        });
        drop(hosted);
        for agents in &view.agents {
            self.count(agents);
        }
        self.seen.retain(|service, _| view.agents.iter().any(|a| &a.service == service));
        if self.history.len() == crate::dashboard_view::HISTORY {
            self.history.pop_front();
        }
        self.counts.retain(|service, _| view.agents.iter().any(|a| &a.service == service));
        view.hops = self.counts.iter().map(|(service, c)| (service.clone(), c.arrived + c.moved)).collect();
        self.history.push_back(HopPoint { at_ms, hops: view.hops.clone() });
        view
    }

    /// Counts what changed in one agent host since the last sample.
    fn count(&mut self, view: &AgentsView) {
        let before = self.seen.entry(view.service.clone()).or_default();
        let counts = self.counts.entry(view.service.clone()).or_default();
        for agent in &view.agents {
            let was = before.get(&agent.id);
            if was.is_none() {
                counts.started += 1;
                // A snapshot carries its hops: one seen with any has come from elsewhere.
                if agent.hops > 0 {
                    counts.arrived += 1;
                }
            }
            let ended = |state: &str| !(state == "running" || state.starts_with("moving"));
            if was.is_none_or(|w| !ended(w)) && ended(&agent.state) {
                if agent.state.starts_with("moved") {
                    counts.moved += 1;
                } else if agent.state.starts_with("failed") {
                    counts.failed += 1;
                } else {
                    counts.finished += 1;
                }
            }
        }
        *before = view.agents.iter().map(|a| (a.id, a.state.clone())).collect();
    }

    /// The hops chart's points, oldest first.
    pub fn history(&self) -> Vec<HopPoint> {
        self.history.iter().cloned().collect()
    }
}

fn switch_view(service: &str, stats: &Arc<SwitchStats>) -> SwitchView {
    let backends = stats
        .rows()
        .into_iter()
        .map(|r| BackendView {
            group: r.group,
            name: r.name,
            state: r.state,
            weight: r.weight,
            load: r.load,
            in_flight: r.in_flight,
            requests: r.meters.requests(),
            connections: r.meters.connections(),
            errors: r.meters.errors(),
            sent: r.meters.sent(),
            received: r.meters.received(),
        })
        .collect();
    SwitchView {
        service: service.to_owned(),
        describe: stats.describe.clone(),
        unavailable: stats.unavailable_total(),
        backends,
    }
}

fn agents_view(service: &str, roster: &warren_agents::roster::Roster) -> AgentsView {
    let agents = roster
        .list()
        .into_iter()
        .map(|a| AgentView {
            id: a.id,
            module: warren_agents::ModuleId(a.module).to_string().chars().take(12).collect(),
            hops: a.hops,
            state: a.state,
            fuel_used: a.fuel_used,
        })
        .collect();
    AgentsView { service: service.to_owned(), agents }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: u64, hops: u32, state: &str) -> AgentView {
        AgentView { id, module: "m".into(), hops, state: state.into(), fuel_used: 0 }
    }

    fn host(agents: Vec<AgentView>) -> AgentsView {
        AgentsView { service: "agents".into(), agents }
    }

    #[test]
    fn agents_are_counted_once_as_they_start_arrive_end_and_leave() {
        let mut sampler = HostedSampler::default();
        // One started here, one arrived with two hops behind it.
        sampler.count(&host(vec![agent(1, 0, "running"), agent(2, 2, "running")]));
        // The first leaves; the second finishes; a third starts and fails between two samples.
        let later = vec![agent(1, 1, "moved to 4@127.0.0.1:9"), agent(2, 2, "finished"), agent(3, 0, "failed: trap")];
        sampler.count(&host(later.clone()));
        sampler.count(&host(later));
        let c = &sampler.counts["agents"];
        assert_eq!((c.started, c.arrived, c.moved, c.finished, c.failed), (3, 1, 1, 1, 1));
    }

    #[test]
    fn a_view_that_differs_only_in_its_time_is_no_change() {
        let a = HostedView { at_ms: 1, ..HostedView::default() };
        let b = HostedView { at_ms: 2, ..HostedView::default() };
        assert!(!changed(&a, &b));
        let c = HostedView { hops: [("agents".to_owned(), 1)].into(), ..b.clone() };
        assert!(changed(&b, &c));
    }
}
