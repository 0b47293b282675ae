//! `warren bench models`: the chapter's table of server models, measured side by side in one
//! run on this machine.
//!
//! Each model serves echo from a child `warren serve` pinned to CPU 1 while the load generator
//! (this process, one tokio thread) runs on CPU 0 (anchors §4.3). Per model: requests per second
//! with keep-alive and with a new connection per request, the server tree's peak threads,
//! processes and memory, how it holds 1,000 and 10,000 idle connections, and whether a blocking
//! call in one connection stalls another. Throughput runs are interleaved across models so that
//! drift on a shared machine spreads over all of them instead of favouring the first.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::ensure;
use clap::Args;
use tokio::runtime::Runtime;
use warren_models::Model;

use crate::host::{self, Machine, Pinning};
use crate::idle::{self, Stall};
use crate::load;
use crate::probe::{self, Sampler};
use crate::report::{self, Header, Row};
use crate::server::Server;

/// Options of `warren bench models`.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// Models to measure, comma-separated [default: all eight, in the chapter's order].
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<Model>,
    /// Length of each throughput run [default: 3s; 1s with --quick].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Concurrent client connections in the keep-alive and new-connection runs.
    #[arg(long, default_value_t = 50)]
    pub connections: usize,
    /// Idle-connection levels, comma-separated; 0 skips the test [default: 1000,10000; 1000 with --quick].
    #[arg(long, value_delimiter = ',')]
    pub idle: Vec<usize>,
    /// Throughput runs per model, interleaved across models; with 3 or more the table shows the
    /// median and min–max.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Bytes per echo request.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Directory for models.md and models.svg.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
    /// About a minute: 1 s runs and 1,000 idle connections only.
    #[arg(long)]
    pub quick: bool,
    /// Let servers and the load generator share every CPU instead of pinning them apart.
    #[arg(long)]
    pub no_pin: bool,
}

/// The blocking call the timeserver makes per connection, and how long B waits at most.
const BLOCK_DELAY: Duration = Duration::from_millis(300);
const BLOCK_GAP: Duration = Duration::from_millis(20);
const BLOCK_LIMIT: Duration = Duration::from_secs(2);
/// Connection limit for every server but `fork`, above the largest idle level: the test is how
/// the model copes, not where a configured cap sits. `fork` keeps its default (512), the cap a
/// process per connection needs; hitting it is the lesson.
const MAX_CONNS: &str = "20000";

/// Validated settings.
#[derive(Debug)]
struct Plan {
    models: Vec<Model>,
    duration: Duration,
    connections: usize,
    idle: Vec<usize>,
    runs: usize,
    payload: usize,
}

impl Plan {
    fn new(args: &ModelsArgs, nofile: u64) -> anyhow::Result<Plan> {
        let models = if args.models.is_empty() { Model::ALL.to_vec() } else { args.models.clone() };
        let duration = args.duration.unwrap_or(Duration::from_secs(if args.quick { 1 } else { 3 }));
        let idle = match (args.idle.is_empty(), args.quick) {
            (true, true) => vec![1000],
            (true, false) => vec![1000, 10_000],
            (false, _) => args.idle.iter().copied().filter(|&n| n > 0).collect(),
        };
        ensure!(
            (Duration::from_millis(100)..=Duration::from_secs(60)).contains(&duration),
            "--duration must be 100ms to 60s"
        );
        ensure!((1..=2000).contains(&args.connections), "--connections must be 1 to 2000");
        ensure!((1..=20).contains(&args.runs), "--runs must be 1 to 20");
        ensure!((1..=65_536).contains(&args.payload), "--payload must be 1 to 65536 bytes");
        // Each idle connection costs a descriptor here and one in the server.
        let most = idle.iter().copied().max().unwrap_or(0) as u64;
        ensure!(most + 200 <= nofile, "--idle {most} needs more descriptors than the limit ({nofile}) allows");
        Ok(Plan { models, duration, connections: args.connections, idle, runs: args.runs, payload: args.payload })
    }
}

/// What every measurement needs.
struct Bench {
    exe: PathBuf,
    rt: Runtime,
    pinning: Pinning,
    started: Instant,
}

/// `warren bench models`.
pub fn models(args: &ModelsArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let nofile = host::raise_nofile().unwrap_or_else(|e| {
        eprintln!("bench: cannot raise the open-files limit: {e}");
        Machine::read().nofile
    });
    let plan = Plan::new(args, nofile)?;
    let machine = Machine::read();
    let background = host::background_load(Duration::from_millis(500));
    // Pin before the runtime or any helper thread exists, so every thread inherits CPU 0.
    let pinning = Pinning::apply(!args.no_pin, machine.cpus);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let exe = crate::warren_exe()?;
    let mut bench = Bench { exe, rt, pinning, started };
    let mut rows: Vec<Row> = plan.models.iter().map(|m| Row { name: m.name().into(), ..Row::default() }).collect();

    for run in 0..plan.runs {
        // Rotate the order each run, so no model always goes first (or right after fork).
        for k in 0..rows.len() {
            let i = (k + run) % rows.len();
            bench.throughput(&plan, plan.models[i], &mut rows[i], run);
        }
    }
    for &level in &plan.idle {
        for (model, row) in plan.models.iter().zip(&mut rows) {
            bench.idle(*model, level, row);
        }
    }
    for (model, row) in plan.models.iter().zip(&mut rows) {
        row.blocking = Some(bench.blocking(*model, &[]));
    }
    // The documented ways around the stall, measured the same way.
    for (model, extra) in [(Model::Green, ["--helpers", "2"]), (Model::Event, ["--helpers", "2"])] {
        if plan.models.contains(&model) {
            let name = format!("{model} {}", extra.join(" "));
            rows.push(Row { name, blocking: Some(bench.blocking(model, &extra)), ..Row::default() });
        }
    }

    let header = Header {
        machine: format!(
            "{} CPUs ({}), Linux {}, {:.1} GiB RAM, open-files limit {}",
            machine.cpus, machine.cpu_model, machine.kernel, machine.memory_gib, nofile
        ),
        pinning: bench.pinning.describe(),
        background: background
            .iter()
            .enumerate()
            .map(|(i, p)| format!("CPU {i} {p:.0}%"))
            .collect::<Vec<_>>()
            .join(", "),
        settings: format!(
            "{}-byte echo, {} connections × {} per regime, {} run(s) interleaved; idle: {} connections, held, \
             then one byte each; blocking call: timeserver --delay {}, client B {} after A",
            plan.payload,
            plan.connections,
            humantime::format_duration(plan.duration),
            plan.runs,
            plan.idle.iter().map(|n| report::thousands(*n as f64)).collect::<Vec<_>>().join(", "),
            humantime::format_duration(BLOCK_DELAY),
            humantime::format_duration(BLOCK_GAP),
        ),
        servers: format!(
            "`warren serve echo -d 0 --max-conns {MAX_CONNS}` (fork keeps its default 512), otherwise default flags \
             (event, green and hybrid --helpers 0; hybrid one runtime thread per usable CPU, so 1 when pinned); \
             blocking-call servers \
             run unpinned"
        ),
        command: std::iter::once("warren".to_owned()).chain(std::env::args().skip(1)).collect::<Vec<_>>().join(" "),
        elapsed: started.elapsed(),
    };
    let markdown = report::markdown(&header, &rows, &plan.idle);
    crate::results::write(&args.out, "models", &markdown, &report::chart(&rows))?;
    Ok(())
}

impl Bench {
    fn progress(&self, what: &str) {
        crate::progress::bench_line(&format!("bench: [{:>5.1}s] {what}", self.started.elapsed().as_secs_f64()));
    }

    /// Start a server for `protocol` under `model`, pinned unless `unpinned`; a failure becomes a
    /// note on the row.
    fn start(&mut self, protocol: &str, model: Model, extra: &[&str], unpinned: bool) -> Result<Server, String> {
        let mut args: Vec<String> =
            [protocol, "--model", model.name(), "--listen", "127.0.0.1:0", "-d", "0"].map(String::from).into();
        if model != Model::Fork {
            args.extend(["--max-conns".into(), MAX_CONNS.into()]);
        }
        if matches!(model, Model::Event | Model::Green | Model::Hybrid) && !extra.contains(&"--helpers") {
            // The pure model: helper threads for blocking calls are the documented way around
            // the stall and get rows of their own.
            args.extend(["--helpers".into(), "0".into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let server =
            Server::start(&self.exe, &args, self.pinning.server_cpus(unpinned)).map_err(|e| format!("{e:#}"))?;
        if !unpinned {
            self.pinning.observed(probe::cpus_allowed(server.pid()));
        }
        Ok(server)
    }

    /// A note for the row if the server died during a measurement.
    fn check_alive(server: &Server, row: &mut Row, during: &str) {
        if !server.running() {
            row.problems.push(format!("server exited during {during}: {}", server.output()));
        }
    }

    fn throughput(&mut self, plan: &Plan, model: Model, row: &mut Row, run: usize) {
        self.progress(&format!("{model}: throughput, run {} of {}", run + 1, plan.runs));
        let mut server = match self.start("echo", model, &[], false) {
            Ok(server) => server,
            Err(e) => return row.problems.push(e),
        };
        let (addr, pid) = (server.addr(), server.pid());
        let sampler = Sampler::start(pid).ok();
        let keep_alive = self.rt.block_on(load::keep_alive(addr, plan.connections, plan.duration, plan.payload));
        Self::check_alive(&server, row, "the keep-alive run");
        let new_conn = self.rt.block_on(load::new_conn(addr, plan.connections, plan.duration, plan.payload));
        Self::check_alive(&server, row, "the new-connection run");
        let peak = sampler.map(|s| s.take_peak(pid)).unwrap_or_else(|| probe::snapshot(pid));
        row.peak = Some(row.peak.map_or(peak, |p| p.max(peak)));
        self.progress(&format!(
            "{model}: {} req/s keep-alive, {} req/s new-conn",
            report::thousands(keep_alive.rate),
            report::thousands(new_conn.rate)
        ));
        row.keep_alive.push(keep_alive);
        row.new_conn.push(new_conn);
        server.stop();
    }

    fn idle(&mut self, model: Model, level: usize, row: &mut Row) {
        self.progress(&format!("{model}: {level} idle connections"));
        let mut server = match self.start("echo", model, &[], false) {
            Ok(server) => server,
            Err(e) => return row.idle.push((level, Err(e))),
        };
        let (addr, pid) = (server.addr(), server.pid());
        let sampler = Sampler::start(pid).ok();
        let (outcome, held) = self.rt.block_on(idle::hold(addr, level));
        // Measured while the connections are still open.
        let mut usage = sampler.map(|s| s.take_peak(pid)).unwrap_or_else(|| probe::snapshot(pid));
        usage.pss_kib = probe::tree_pss_kib(pid);
        // Dropped inside the runtime, which owns their registrations.
        self.rt.block_on(async move { drop(held) });
        Self::check_alive(&server, row, &format!("{level} idle connections"));
        row.idle.push((level, Ok((outcome, usage))));
        server.stop();
    }

    fn blocking(&mut self, model: Model, extra: &[&str]) -> Result<Stall, String> {
        let name = std::iter::once(model.name()).chain(extra.iter().copied()).collect::<Vec<_>>().join(" ");
        self.progress(&format!("{name}: blocking call"));
        let delay = format!("{}ms", BLOCK_DELAY.as_millis());
        // Unpinned: this measures structure, not speed, and `hybrid` sizes its pool by the CPUs it
        // may use, so on one pinned CPU it would be measured as `green`.
        let mut server = self.start("timeserver", model, &[&["--delay", delay.as_str()], extra].concat(), true)?;
        let waited = self.rt.block_on(idle::blocking_probe(server.addr(), BLOCK_GAP, BLOCK_LIMIT));
        server.stop();
        waited.map(|w| Stall::classify(w, BLOCK_DELAY, BLOCK_LIMIT))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ModelsArgs,
    }

    fn plan(argv: &[&str]) -> anyhow::Result<Plan> {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(argv.iter().copied()))?;
        Plan::new(&cli.args, 20_000)
    }

    #[test]
    fn defaults_and_quick() {
        let p = plan(&[]).unwrap();
        assert_eq!(
            (p.models.len(), p.duration, p.idle.as_slice(), p.runs),
            (8, Duration::from_secs(3), &[1000, 10_000][..], 3)
        );
        let q = plan(&["--quick"]).unwrap();
        assert_eq!((q.duration, q.idle.as_slice()), (Duration::from_secs(1), &[1000][..]));
    }

    #[test]
    fn choices_are_checked() {
        let p = plan(&["--models", "event,fork", "--idle", "0", "--duration", "500ms"]).unwrap();
        assert_eq!(p.models, [Model::Event, Model::Fork]);
        assert!(p.idle.is_empty());
        assert!(plan(&["--models", "nonsense"]).is_err());
        assert!(plan(&["--idle", "30000"]).is_err());
        assert!(plan(&["--runs", "0"]).is_err());
    }
}
