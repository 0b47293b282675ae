//! `warren agents` for agents that move: `run --mobile` starts one and follows it from node to
//! node until it ends, `run --detach` starts one and prints its ID (`N@NODE`), `wait ID`
//! follows one, `move ID NODE` orders one to move (signed, as code is), `ls NODE` lists what a
//! node holds.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use warren_agents::client::ask;
use warren_agents::trust::order_message_bound;
use warren_agents::wire::{End, Order, Request, Response, RunRequest, signature_to};
use warren_agents::{ModuleId, ModuleSignature, Overrides};

use crate::agents_cmd::{node_addr, print_outcome, secret_key};
use crate::registry_cmd::Conn;

/// How long a node may take to answer a start (it may prepare the module with wasm-opt first)
/// or one wait (it answers "still running" after 10 s).
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// How long `run --mobile` and `wait` follow an agent: longer than any agent may run (its wall
/// time, 10 s at most, holds across hops), with room for the hops themselves.
const FOLLOW_FOR: Duration = Duration::from_secs(120);

/// The most hops followed; each is one answer, so a loop between nodes cannot keep a client.
const MAX_FOLLOWED: usize = 1000;

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The agent: N@NODE, as `run --detach` printed it.
    pub id: String,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Debug, Args)]
pub struct MoveArgs {
    /// The agent: N@NODE, as `run --detach` printed it.
    pub id: String,
    /// Where it goes: ADDR:PORT of another node's agent host, as that node sees it.
    pub dest: String,
    /// Send a copy (`migrate` returns 1 to it) and keep the agent running where it is.
    #[arg(long)]
    pub clone: bool,
    /// Sign the order with this secret key (one the node trusts for code).
    #[arg(long)]
    pub key: Option<std::path::PathBuf>,
    /// The action for a resource on this move, instead of the agent's own or the default:
    /// KIND=ACTION, KIND `kv` or `file`, ACTION `move`, `copy`, `ref` or `rebind` (one of its
    /// cell's in the binding table); repeatable.
    #[arg(long, value_name = "KIND=ACTION")]
    pub bind: Vec<String>,
    #[command(flatten)]
    pub conn: Conn,
}

/// `--bind KIND=ACTION`s as overrides.
pub fn overrides(bind: &[String]) -> anyhow::Result<Overrides> {
    let mut overrides = Overrides::default();
    for text in bind {
        overrides.set(text).map_err(|e| anyhow::anyhow!("--bind {text}: {e}"))?;
    }
    Ok(overrides)
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// The node: a registry name, or ADDR:PORT.
    pub node: String,
    #[command(flatten)]
    pub conn: Conn,
}

/// `N@NODE`: the agent's number and its node's address.
fn parse_id(id: &str, conn: &Conn) -> anyhow::Result<(u64, SocketAddr)> {
    let (number, node) = id.split_once('@').with_context(|| format!("{id:?} is not an agent ID (N@NODE)"))?;
    let number = number.parse().with_context(|| format!("{id:?}: {number:?} is not an agent number"))?;
    Ok((number, node_addr(node, conn)?))
}

/// Starts `request` on `addr` as a moving agent; prints its ID and returns if `detach`, else
/// follows it to its end and prints its result.
pub fn start(addr: SocketAddr, request: RunRequest, detach: bool) -> anyhow::Result<()> {
    let id = match ask(addr, &Request::Start(request), ANSWER_WITHIN).map_err(anyhow::Error::msg)? {
        Response::Started(id) => id,
        Response::Refused(reason) => bail!("the agent did not start on {addr}: {reason}"),
        _ => bail!("{addr} answered a start with something else: not a warren agent host"),
    };
    if detach {
        println!("{id}@{addr}");
        return Ok(());
    }
    follow(id, addr)
}

/// Asks where agent `id` is, from `addr` on, until it ends; prints its result, and each hop on
/// standard error.
fn follow(mut id: u64, mut addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + FOLLOW_FOR;
    for _ in 0..MAX_FOLLOWED {
        if Instant::now() >= deadline {
            break;
        }
        match ask(addr, &Request::Wait(id), ANSWER_WITHIN).map_err(anyhow::Error::msg)? {
            Response::Ended(End::Running) => {}
            Response::Ended(End::Finished(outcome)) => return print_outcome(&outcome),
            Response::Ended(End::Failed(reason)) => bail!("the agent did not run to its end on {addr}: {reason}"),
            Response::Ended(End::Moved { to, id: there }) => {
                eprintln!("agent {id}@{addr} moved to {there}@{to}");
                addr = to.parse().with_context(|| format!("{addr} says the agent went to {to:?}"))?;
                id = there;
            }
            Response::Refused(reason) => bail!("{addr} refused the wait: {reason}"),
            _ => bail!("{addr} answered a wait with something else: not a warren agent host"),
        }
    }
    bail!("agent {id}@{addr} has not ended within {FOLLOW_FOR:?}; `warren agents wait {id}@{addr}` waits again")
}

pub fn wait(args: &WaitArgs) -> anyhow::Result<()> {
    let (id, addr) = parse_id(&args.id, &args.conn)?;
    follow(id, addr)
}

pub fn order(args: &MoveArgs) -> anyhow::Result<()> {
    let (id, addr) = parse_id(&args.id, &args.conn)?;
    let bind = overrides(&args.bind)?;
    let message = order_message_bound(id, &args.dest, args.clone, &bind);
    let signature =
        args.key.as_deref().map(secret_key).transpose()?.map(|key| ModuleSignature::sign_order(&message, &key));
    let signature = signature_to(signature.as_ref());
    let order = Order { id, dest: args.dest.clone(), clone: args.clone, signature, bind };
    match ask(addr, &Request::Order(order), ANSWER_WITHIN).map_err(anyhow::Error::msg)? {
        Response::Ordered => {
            let what = if args.clone { "cloned" } else { "moved" };
            println!("agent {id}@{addr} will be {what} to {} at its next safe point", args.dest);
            Ok(())
        }
        Response::Refused(reason) => bail!("{addr} refused the order: {reason}"),
        _ => bail!("{addr} answered an order with something else: not a warren agent host"),
    }
}

pub fn list(args: &LsArgs) -> anyhow::Result<()> {
    let addr = node_addr(&args.node, &args.conn)?;
    let agents = match ask(addr, &Request::List, ANSWER_WITHIN).map_err(anyhow::Error::msg)? {
        Response::Agents(agents) => agents,
        Response::Refused(reason) => bail!("{addr} refused the list: {reason}"),
        _ => bail!("{addr} answered a list with something else: not a warren agent host"),
    };
    println!("{:>6}  {:<16}  {:>4}  {:>14}  STATE", "ID", "MODULE", "HOPS", "FUEL USED");
    for agent in agents {
        let module = ModuleId(agent.module).to_string();
        println!("{:>6}  {:<16}  {:>4}  {:>14}  {}", agent.id, &module[..16], agent.hops, agent.fuel_used, agent.state);
    }
    Ok(())
}
