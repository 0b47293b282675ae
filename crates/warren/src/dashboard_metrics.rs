//! `/metrics`: the node's services in Prometheus' text format (version 0.0.4), from the latest
//! sample. Encoded by `prometheus-client` from a registry made per scrape: the node's counters
//! live in its loop and its builtins' gates, so the sample is copied in, not incremented here.
//! The agent hosts' counts come from their rosters, sample to sample
//! ([`crate::dashboard_hosted::HostedSampler`]).

use std::collections::BTreeMap;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::dashboard_hosted::{AgentCounts, HostedView};
use crate::dashboard_view::Services;

/// The `Content-Type` of what [`encode`] writes.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    service: String,
    outcome: &'static str,
}

/// The text of `/metrics` for `view`, with the agent hosts of `hosted` and their `counts`.
pub fn encode(view: &Services, hosted: &HostedView, counts: &BTreeMap<String, AgentCounts>) -> String {
    let mut registry = Registry::with_prefix("warren_node");
    let running = Family::<ServiceLabel, Gauge>::default();
    let spawned = Family::<ServiceLabel, Counter>::default();
    let refused = Family::<ServiceLabel, Counter>::default();
    let rate = Family::<ServiceLabel, Gauge>::default();
    for s in &view.services {
        let label = ServiceLabel { service: s.name.clone() };
        running.get_or_create(&label).set(i64::from(s.running));
        spawned.get_or_create(&label).inc_by(s.spawned);
        refused.get_or_create(&label).inc_by(s.refused);
        rate.get_or_create(&label).set(i64::from(s.rate));
    }
    let services = Gauge::<i64>::default();
    services.set(view.services.len() as i64);
    let children = Gauge::<i64>::default();
    children.set(view.children as i64);
    registry.register("services", "Services the node hosts", services);
    registry.register("children", "Children running, all services together", children);
    registry.register("running", "Children, relays or admitted connections running now, per service", running);
    // prometheus-client adds `_total` to counters: warren_node_spawned_total.
    registry.register("spawned", "Children started (or builtin connections admitted) since the node started", spawned);
    registry.register("refused", "Connections refused since the node started", refused);
    registry.register("spawn_rate", "Starts in the last complete second (services with cps)", rate);
    register_agents(&mut registry, hosted, counts);
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).expect("writing to a String");
    text
}

/// The agent hosts' families, `warren_node_agents_…`, per agents service.
fn register_agents(registry: &mut Registry, hosted: &HostedView, counts: &BTreeMap<String, AgentCounts>) {
    let running = Family::<ServiceLabel, Gauge>::default();
    let fuel = Family::<ServiceLabel, Gauge>::default();
    let started = Family::<ServiceLabel, Counter>::default();
    let hops_in = Family::<ServiceLabel, Counter>::default();
    let hops_out = Family::<ServiceLabel, Counter>::default();
    let ended = Family::<OutcomeLabel, Counter>::default();
    for agents in &hosted.agents {
        let label = ServiceLabel { service: agents.service.clone() };
        let here = agents.agents.iter().filter(|a| a.state == "running" || a.state.starts_with("moving"));
        running.get_or_create(&label).set(here.count() as i64);
        let burnt: u64 = agents.agents.iter().map(|a| a.fuel_used).sum();
        fuel.get_or_create(&label).set(i64::try_from(burnt).unwrap_or(i64::MAX));
        let c = counts.get(&agents.service).cloned().unwrap_or_default();
        started.get_or_create(&label).inc_by(c.started);
        hops_in.get_or_create(&label).inc_by(c.arrived);
        hops_out.get_or_create(&label).inc_by(c.moved);
        for (outcome, n) in [("finished", c.finished), ("failed", c.failed)] {
            ended.get_or_create(&OutcomeLabel { service: agents.service.clone(), outcome }).inc_by(n);
        }
    }
    registry.register("agents_running", "Agents running (or leaving) on this host now", running);
    registry.register("agents_started", "Agents seen starting on this host, arrivals included", started);
    registry.register("agents_ended", "Agents seen ending on this host, by outcome (finished, failed)", ended);
    registry.register("agents_hops_in", "Agents that arrived from another host", hops_in);
    registry.register("agents_hops_out", "Agents that moved away to another host", hops_out);
    registry.register("agents_fuel_used", "Fuel burnt by the agents the host remembers (running and recent)", fuel);
}

#[cfg(test)]
mod tests {
    use crate::dashboard_view::{ServiceRow, Services};

    #[test]
    fn every_service_has_its_counters_under_its_label() {
        let row = ServiceRow {
            name: "echo".into(),
            kind: "exec nowait".into(),
            transport: "tcp",
            listener: "127.0.0.1:7".into(),
            running: 2,
            spawned: 40,
            refused: 3,
            rate: 5,
            state: "listening".into(),
            per_second: 0.0,
        };
        let view = Services { at_ms: 0, services: vec![row], children: 2 };
        let text = super::encode(&view, &Default::default(), &Default::default());
        for line in [
            "# TYPE warren_node_spawned_total counter",
            "warren_node_spawned_total{service=\"echo\"} 40",
            "warren_node_refused_total{service=\"echo\"} 3",
            "warren_node_running{service=\"echo\"} 2",
            "warren_node_spawn_rate{service=\"echo\"} 5",
            "warren_node_services 1",
            "warren_node_children 2",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }
}
