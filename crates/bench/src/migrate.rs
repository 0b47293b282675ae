//! `warren bench migrate`: strong mobility's costs between two `warren up` nodes on loopback
//! (docs/bench-migrate.md).
//!
//! - **Hops**: an agent with 64 KiB, 1 MiB or 64 MiB of dirty state bounces between the two
//!   nodes, each hop ordered from outside as `warren agents move` orders it ([`hops`]), and ends
//!   with the checksum of an unmoved run; p50 and p99 per size, rows interleaved over `--runs`.
//!   Each node is pinned to a CPU of its own, as two machines would be.
//! - **Snapshot size**: the encoded snapshot of each state, measured in this process.
//! - **Safe points in steady state**: the same loops plain, with the flag check, and with the
//!   check and Asyncify ([`overhead`]).
//!
//! A table with each goal met or not, and a chart of every figure divided by its goal.

mod guests;
mod hops;
mod overhead;
mod report;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::{Args, ValueEnum};
use warren_agents::{Ended, Freezer, Host, HostConfig, Job, Limits, Trust, Unsigned, Value};

use self::hops::Trip;
use self::report::HopRow;
use crate::host::{CpuSet, Machine};
use crate::progress::bench_line;
use crate::scratch::Scratch;
use crate::server::Server;

/// Options of `warren bench migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// State sizes to move, comma-separated [default: 64k,1m,64m].
    #[arg(long, value_delimiter = ',')]
    pub sizes: Vec<Size>,
    /// Timed hops per size and run [default: 100 for 64k, 60 for 1m, 10 for 64m; a third with --quick].
    #[arg(long)]
    pub hops: Option<u32>,
    /// Runs, interleaved across sizes [default: 3; 1 with --quick].
    #[arg(long)]
    pub runs: Option<usize>,
    /// Iterations of each steady-state loop [default: 100,000,000; 20,000,000 with --quick].
    #[arg(long)]
    pub iterations: Option<i64>,
    /// Runs of each steady-state loop, interleaved; the best counts [default: 7; 3 with --quick].
    #[arg(long)]
    pub loop_runs: Option<usize>,
    /// Directory for migrate.md and migrate.svg.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
    /// Under a minute: fewer hops, one run, shorter loops.
    #[arg(long)]
    pub quick: bool,
    /// Let both nodes share every CPU instead of pinning each to its own.
    #[arg(long)]
    pub no_pin: bool,
}

/// A state size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Size {
    #[value(name = "64k")]
    Kib64,
    #[value(name = "1m")]
    Mib1,
    #[value(name = "64m")]
    Mib64,
}

impl Size {
    fn label(self) -> &'static str {
        match self {
            Size::Kib64 => "64 KiB",
            Size::Mib1 => "1 MiB",
            Size::Mib64 => "64 MiB",
        }
    }

    /// 64 KiB WebAssembly pages.
    fn pages(self) -> u32 {
        match self {
            Size::Kib64 => 1,
            Size::Mib1 => 16,
            Size::Mib64 => 1024,
        }
    }

    fn default_hops(self) -> u32 {
        match self {
            Size::Kib64 => 100,
            Size::Mib1 => 60,
            Size::Mib64 => 10,
        }
    }

    /// The goal for the p50 of a hop.
    fn goal(self) -> Duration {
        match self {
            Size::Mib64 => Duration::from_millis(150),
            _ => Duration::from_millis(5),
        }
    }
}

/// Untimed hops before the timed ones: the first arrival on each node prepares the module.
const WARM_UP: u32 = 2;

/// Validated settings.
#[derive(Debug)]
struct Plan {
    sizes: Vec<Size>,
    hops: Option<u32>,
    quick: bool,
    runs: usize,
    iterations: i64,
    loop_runs: usize,
}

impl Plan {
    fn new(args: &MigrateArgs) -> anyhow::Result<Plan> {
        let sizes = if args.sizes.is_empty() { vec![Size::Kib64, Size::Mib1, Size::Mib64] } else { args.sizes.clone() };
        let runs = args.runs.unwrap_or(if args.quick { 1 } else { 3 });
        let iterations = args.iterations.unwrap_or(if args.quick { 20_000_000 } else { 100_000_000 });
        let loop_runs = args.loop_runs.unwrap_or(if args.quick { 3 } else { 7 });
        ensure!(args.hops.is_none_or(|h| (1..=500).contains(&h)), "--hops must be 1 to 500");
        ensure!((1..=20).contains(&runs), "--runs must be 1 to 20");
        ensure!((1_000..=1_000_000_000).contains(&iterations), "--iterations must be 1,000 to 1,000,000,000");
        ensure!((1..=50).contains(&loop_runs), "--loop-runs must be 1 to 50");
        Ok(Plan { sizes, hops: args.hops, quick: args.quick, runs, iterations, loop_runs })
    }

    fn hops(&self, size: Size) -> u32 {
        self.hops.unwrap_or(if self.quick { size.default_hops().div_ceil(3) } else { size.default_hops() })
    }
}

/// A node's warren.toml: one agents service on loopback that admits unsigned code (the bench's
/// own nodes, reachable only on 127.0.0.1), with room for 64 MiB of state and hops within
/// each agent's wall time.
fn node_config() -> String {
    "status = \"off\"\nregistry = \"off\"\n\n[[service]]\nname = \"agents\"\nbuiltin = \"agents\"\n\
     model = \"thread\"\nport = 0\nallow_unsigned = \"yes\"\nwall_ms = 10000\nfuel = 10000000000\nmemory_mib = 96\n"
        .to_owned()
}

/// The two nodes, each on a CPU of its own if pinned.
fn start_nodes(scratch: &Scratch, pin: bool) -> anyhow::Result<(Vec<Server>, String)> {
    let exe = crate::warren_exe()?;
    let conf = scratch.dir.join("warren.toml");
    std::fs::write(&conf, node_config())?;
    let cpus = Machine::read().cpus;
    let pinned = pin && cpus >= 2;
    let mut nodes = Vec::new();
    for cpu in 0..2 {
        let set = if pinned { Some(CpuSet::only(cpu)?) } else { None };
        let argv = ["up".to_owned(), "-c".to_owned(), conf.display().to_string()];
        nodes.push(Server::spawn(&exe, &argv, set).context("starting a node")?);
    }
    let pinning = if pinned {
        "each node on a CPU of its own (0 and 1); the bench unpinned".to_owned()
    } else {
        format!("off: both nodes share the machine's {cpus} CPU(s)")
    };
    Ok((nodes, pinning))
}

/// The encoded snapshot of `size`'s state, frozen at its safe point in this process.
fn snapshot_bytes(host: &Host, wasm: &[u8], size: Size) -> anyhow::Result<usize> {
    let module = host.prepare(wasm, None).context("preparing the state agent")?.module;
    let limits = Limits { memory: 96 << 20, ..Limits::default() };
    let job = Job { args: vec![Value::I32(1)], limits, ..Job::new(module, "main") };
    let freezer = Freezer::new();
    freezer.freeze();
    match host.run_mobile(&job, &freezer)? {
        Ended::Frozen(snapshot) => Ok(snapshot.encode().len()),
        Ended::Finished(_) => anyhow::bail!("the {} agent ended without freezing", size.label()),
    }
}

/// `warren bench migrate`.
pub fn migrate(args: &MigrateArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let plan = Plan::new(args)?;
    crate::host::ensure_programs(["wasm-opt"], &["binaryen"], "migrate")?;
    let load_before = loadavg();
    let scratch = Scratch::new("migrate", 0o700)?;
    bench_line("bench migrate: starting two nodes");
    let (nodes, pinning) = start_nodes(&scratch, !args.no_pin)?;
    let addrs: [SocketAddr; 2] = [nodes[0].addr(), nodes[1].addr()];
    let local = Host::new(HostConfig { trust: Trust::new().unsigned(Unsigned::Allow), ..HostConfig::default() })
        .map_err(|e| anyhow::anyhow!("the bench's own agent host: {e:#}"))?;

    let mut rows = Vec::new();
    let mut modules = Vec::new();
    for &size in &plan.sizes {
        let wasm = wat::parse_str(guests::state(size.pages()))?;
        bench_line(&format!("bench migrate: the {} snapshot", size.label()));
        rows.push(HopRow {
            label: size.label(),
            state_bytes: size.pages() as usize * 65536,
            snapshot_bytes: snapshot_bytes(&local, &wasm, size)?,
            samples: Vec::new(),
            failed: None,
            goal: size.goal(),
        });
        modules.push(wasm);
    }
    for run in 0..plan.runs {
        for (i, &size) in plan.sizes.iter().enumerate() {
            if rows[i].failed.is_some() {
                continue;
            }
            let hops = plan.hops(size);
            bench_line(&format!("bench migrate: run {}/{}: {} hops of {}", run + 1, plan.runs, hops, size.label()));
            let trip = Trip {
                nodes: addrs,
                module: &modules[i],
                warm_up: WARM_UP,
                hops,
                expected: guests::state_checksum(size.pages()),
            };
            match trip.run() {
                Ok(samples) => rows[i].samples.extend(samples),
                Err(error) => rows[i].failed = Some(format!("{error:#}")),
            }
        }
    }
    drop(nodes);

    bench_line("bench migrate: safe points in steady state");
    let overhead = overhead::measure(&local, plan.iterations, plan.loop_runs)?;
    let load_after = loadavg();

    let mut md = String::from("# warren bench migrate\n\n");
    let machine = Machine::read();
    md.push_str(&format!("- Machine: {} × {} ({})\n", machine.cpus, machine.cpu_model, machine.kernel));
    md.push_str(&format!("- Load average: {load_before} before, {load_after} after\n"));
    md.push_str(&format!("- Pinning: {pinning}\n"));
    md.push_str(&format!(
        "- Command: `warren {}`, took {:.0} s\n",
        std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        started.elapsed().as_secs_f64()
    ));
    md.push_str("\n## Freeze → resumed on the other node\n\n");
    md.push_str(
        "Two `warren up` nodes on loopback; each sample is an order to move, carried out at the agent's next \
         safe point, until its node says it has gone: one whole hop (freeze, encode, send, hash check and \
         admission on arrival, and the previous arrival's restore) and two loopback round trips. Every run \
         ends with the checksum of an unmoved run.\n\n",
    );
    md.push_str(&report::hop_table(&rows));
    md.push_str("\n## Safe points in steady state\n\n");
    md.push_str(&format!(
        "CPU time of this thread, best of {} interleaved runs; \"Asyncified\" is the code a node runs for an \
         agent that may move.\n\n",
        plan.loop_runs
    ));
    md.push_str(&report::overhead_table(&overhead));
    crate::results::write(&args.out, "migrate", &md, &report::chart(&rows, &overhead))
}

/// The 1-, 5- and 15-minute load averages.
fn loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}
