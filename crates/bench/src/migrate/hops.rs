//! Hops between two nodes, timed from outside: an agent parked at its safe point is ordered to
//! the other node, and the sample ends when its node says it has gone there; the next order
//! goes at once to where it arrived. An order is carried out at the agent's next safe point,
//! which on the node it just reached comes after that node has restored and rewound it; so
//! each sample holds one whole hop (freeze, encode, send, hash check and admission, and the
//! previous arrival's restore) plus two loopback round trips: an upper bound on freeze →
//! resumed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use warren_agents::Value;
use warren_agents::client::ask;
use warren_agents::wire::{End, Order, Request, Response, RunRequest};

/// How long one answer may take: a start prepares the module with wasm-opt, a wait answers
/// "still running" after 10 s.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// The most waits for one hop: a hop that does not end within them failed.
const WAITS_PER_HOP: usize = 3;

/// One agent's trip: `hops` timed hops between `nodes`, after `warm_up` untimed ones (the first
/// arrival on each node prepares the module there).
pub struct Trip<'a> {
    pub nodes: [SocketAddr; 2],
    pub module: &'a [u8],
    pub warm_up: u32,
    pub hops: u32,
    pub expected: i64,
}

impl Trip<'_> {
    /// Runs the trip: the timed hops' durations. Fails if a hop fails, or if the agent does not
    /// end with the checksum of an unmoved run.
    pub fn run(&self) -> anyhow::Result<Vec<Duration>> {
        let total = self.warm_up + self.hops;
        let request = RunRequest {
            module: self.module.to_vec(),
            signature: None,
            entry: "main".into(),
            args: vec![total.to_string()],
            input: Vec::new(),
            clock: false,
            log: false,
            kv: None,
            file: None,
            bind: Default::default(),
        };
        let (mut here, mut there) = (self.nodes[0], self.nodes[1]);
        let mut id = match ask(here, &Request::Start(request), ANSWER_WITHIN).map_err(anyhow::Error::msg)? {
            Response::Started(id) => id,
            Response::Refused(reason) => bail!("the agent did not start on {here}: {reason}"),
            _ => bail!("{here} answered a start with something else"),
        };
        let mut samples = Vec::with_capacity(self.hops as usize);
        for hop in 0..total {
            let started = Instant::now();
            id = hop_to(here, id, there).with_context(|| format!("hop {} of {total}", hop + 1))?;
            if hop >= self.warm_up {
                samples.push(started.elapsed());
            }
            (here, there) = (there, here);
        }
        match wait(here, id)? {
            End::Finished(outcome) => {
                ensure!(
                    outcome.results == [Value::I64(self.expected)],
                    "the agent ended with {:?}, not the {} of an unmoved run",
                    outcome.results,
                    self.expected
                );
                Ok(samples)
            }
            End::Failed(reason) => bail!("the agent failed on {here}: {reason}"),
            End::Moved { to, .. } => bail!("the agent moved on to {to} unasked"),
            End::Running => bail!("the agent did not end on {here}"),
        }
    }
}

/// Orders agent `id` of `here` to `there` and waits until `here` says it went: its id there.
fn hop_to(here: SocketAddr, id: u64, there: SocketAddr) -> anyhow::Result<u64> {
    let order = Order { id, dest: there.to_string(), clone: false, signature: None, bind: Default::default() };
    match ask(here, &Request::Order(order), ANSWER_WITHIN).map_err(anyhow::Error::msg)? {
        Response::Ordered => {}
        Response::Refused(reason) => bail!("{here} refused the order: {reason}"),
        _ => bail!("{here} answered an order with something else"),
    }
    for _ in 0..WAITS_PER_HOP {
        match wait(here, id)? {
            End::Moved { id, .. } => return Ok(id),
            End::Running => {
                // A refused hop leaves the agent running here, with the reason beside its state.
                if let Some(reason) = stayed_because(here, id)? {
                    bail!("agent {id}@{here} stayed: {reason}");
                }
            }
            End::Finished(_) => bail!("agent {id}@{here} finished before it moved"),
            End::Failed(reason) => bail!("agent {id}@{here} failed: {reason}"),
        }
    }
    bail!("agent {id}@{here} did not move within {WAITS_PER_HOP} waits")
}

fn wait(node: SocketAddr, id: u64) -> anyhow::Result<End> {
    match ask(node, &Request::Wait(id), ANSWER_WITHIN).map_err(anyhow::Error::msg)? {
        Response::Ended(end) => Ok(end),
        Response::Refused(reason) => bail!("{node} refused the wait: {reason}"),
        _ => bail!("{node} answered a wait with something else"),
    }
}

/// Why agent `id` of `node` could not move, if its state says so.
fn stayed_because(node: SocketAddr, id: u64) -> anyhow::Result<Option<String>> {
    let Response::Agents(agents) = ask(node, &Request::List, ANSWER_WITHIN).map_err(anyhow::Error::msg)? else {
        bail!("{node} answered a list with something else");
    };
    let state = agents.into_iter().find(|agent| agent.id == id).map(|agent| agent.state);
    Ok(state.filter(|state| state.contains("could not move")))
}
