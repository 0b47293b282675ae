//! `warren bench rpc`: warren's remote objects measured side by side in one run (docs/bench-rpc.md).
//!
//! - **Unary calls against tonic**: `HelloServer.sayHello()` on `warren objects serve`, over
//!   the binary framing under each model asked for and over JSON/HTTP, against tonic's
//!   hello-world (`warren bench tonic-hello`, its own process), at 1 and 64 calls in flight.
//!   Every server is a child pinned to CPU 1, the load generator (this process, one tokio
//!   thread) runs on CPU 0; rows are interleaved and rotated over `--runs`, and each is divided
//!   by tonic's: calls per second, p50, and the server's CPU time per call.
//! - **Hedging**: three replicas (`warren bench rpc-replica`), one of which stalls 50 ms on 5 %
//!   of calls; p50 to p99.9 through warren-rpc-layers' `Replicated` without hedging and with
//!   it, and the extra copies sent.
//! - **Failover**: three `warren objects serve`, one killed (SIGKILL) a third into each run;
//!   the errors the callers saw, without failover and with it.

mod json;
mod load;
mod replica;
mod report;
mod tonic_hello;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::{Args, ValueEnum};
use tokio::runtime::Runtime;
use warren_models::Model;
use warren_objects::examples::HelloClient;
use warren_rpc::{Caller as BoxedCaller, Connection, ConnectionConfig, Target};
use warren_rpc_layers::{Ejection, Fixed, Hedging, LEARN_AFTER, Outliers, Replicated, RetryBudget};

use self::json::JsonCaller;
use self::load::{Caller, Outcome, closed_loop};
use self::report::{Header, TailRow, UnaryRow, UnaryRun};
use self::tonic_hello::GreeterClient;
use crate::host::{self, Machine, Pinning};
use crate::probe;
use crate::server::Server;

pub use self::replica::{ReplicaArgs, serve as serve_replica};

/// Options of `warren bench rpc`.
#[derive(Debug, Args)]
pub struct RpcArgs {
    /// Parts to run, comma-separated [default: unary,hedging,failover].
    #[arg(long, value_delimiter = ',')]
    pub parts: Vec<Part>,
    /// Models of `warren objects serve` in the unary runs, comma-separated [default: event,hybrid].
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<Model>,
    /// Calls in flight in the unary runs, comma-separated [default: 1,64].
    #[arg(long, value_delimiter = ',')]
    pub in_flight: Vec<usize>,
    /// Length of each run [default: 2s; 1s with --quick].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Runs per row, interleaved across rows [default: 3; 1 with --quick].
    #[arg(long)]
    pub runs: Option<usize>,
    /// Busy-poll budget of the busy-polling client's rows (`ConnectionConfig::busy_poll`).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "100us")]
    pub busy_poll: Duration,
    /// Calls in flight in the hedging and failover runs.
    #[arg(long, default_value_t = 8)]
    pub callers: usize,
    /// Percent of the stalling replica's calls that stall.
    #[arg(long, default_value_t = 5.0)]
    pub stall_percent: f64,
    /// How long a stalled call waits.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "50ms")]
    pub stall: Duration,
    /// The hedge delay of the tuned hedging row [default: the p99 of three healthy replicas,
    /// measured in the same run, at least 1ms]; the library's default (10 ms) has its own row.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub hedge_delay: Option<Duration>,
    /// Directory for rpc.md.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
    /// About a minute: 1 s runs, one run per row.
    #[arg(long)]
    pub quick: bool,
    /// Let servers and the load generator share every CPU instead of pinning them apart.
    #[arg(long)]
    pub no_pin: bool,
}

/// The parts of the bench.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Part {
    Unary,
    Hedging,
    Failover,
}

/// Options of the hidden `warren bench tonic-hello`.
#[derive(Debug, Args)]
pub struct TonicHelloArgs {
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
}

/// `warren bench tonic-hello`: tonic's hello-world server, for the unary runs.
pub fn serve_tonic_hello(args: &TonicHelloArgs) -> anyhow::Result<()> {
    tonic_hello::serve(args.listen)
}

/// Validated settings.
#[derive(Debug)]
struct Plan {
    parts: Vec<Part>,
    models: Vec<Model>,
    in_flight: Vec<usize>,
    duration: Duration,
    /// Calls made and not counted before each run: connections opened, budgets filled.
    warm_up: Duration,
    runs: usize,
    callers: usize,
    stall_percent: f64,
    stall: Duration,
    hedge_delay: Option<Duration>,
    busy_poll: Duration,
}

impl Plan {
    fn new(args: &RpcArgs) -> anyhow::Result<Plan> {
        let or = |given: &[Part]| {
            if given.is_empty() { vec![Part::Unary, Part::Hedging, Part::Failover] } else { given.to_vec() }
        };
        let models = if args.models.is_empty() { vec![Model::Event, Model::Hybrid] } else { args.models.clone() };
        let in_flight = if args.in_flight.is_empty() { vec![1, 64] } else { args.in_flight.clone() };
        let duration = args.duration.unwrap_or(Duration::from_secs(if args.quick { 1 } else { 2 }));
        let runs = args.runs.unwrap_or(if args.quick { 1 } else { 3 });
        ensure!(
            (Duration::from_millis(200)..=Duration::from_secs(60)).contains(&duration),
            "--duration must be 200ms to 60s"
        );
        ensure!((1..=20).contains(&runs), "--runs must be 1 to 20");
        ensure!(in_flight.iter().all(|n| (1..=1024).contains(n)), "--in-flight must be 1 to 1024 each");
        ensure!((1..=1024).contains(&args.callers), "--callers must be 1 to 1024");
        ensure!((0.0..=100.0).contains(&args.stall_percent), "--stall-percent must be 0 to 100");
        ensure!(args.stall <= Duration::from_secs(1), "--stall must be at most 1s");
        ensure!(
            args.hedge_delay.is_none_or(|d| (Duration::from_micros(100)..=Duration::from_secs(1)).contains(&d)),
            "--hedge-delay must be 100µs to 1s"
        );
        ensure!(
            (Duration::from_micros(1)..=warren_rpc::client::MAX_BUSY_POLL).contains(&args.busy_poll),
            "--busy-poll must be 1µs to 1s"
        );
        ensure!(
            models.iter().all(|m| !matches!(m, Model::Fork | Model::Prefork)),
            "--models: the object server refuses fork and prefork (objects live in one process)"
        );
        Ok(Plan {
            parts: or(&args.parts),
            models,
            in_flight,
            duration,
            warm_up: (duration / 10).min(Duration::from_millis(300)),
            runs,
            callers: args.callers,
            stall_percent: args.stall_percent,
            stall: args.stall,
            hedge_delay: args.hedge_delay,
            busy_poll: args.busy_poll,
        })
    }
}

/// What every part needs.
struct Bench {
    exe: PathBuf,
    rt: Runtime,
    pinning: Pinning,
    started: Instant,
    /// The object servers' data directories (their admin tokens).
    scratch: PathBuf,
    servers_started: usize,
}

/// `warren bench rpc`.
pub fn rpc(args: &RpcArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let plan = Plan::new(args)?;
    let machine = Machine::read();
    let background = host::background_load(Duration::from_millis(500));
    // Pin before the runtime or any helper thread exists, so every thread inherits CPU 0.
    let pinning = Pinning::apply(!args.no_pin, machine.cpus);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let scratch = std::env::temp_dir().join(format!("warren-bench-rpc-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("cannot create {}", scratch.display()))?;
    let _cleanup = RemoveOnDrop(scratch.clone());
    let mut bench = Bench { exe: crate::warren_exe()?, rt, pinning, started, scratch, servers_started: 0 };

    let mut sections = Vec::new();
    let mut chart = report::unary_chart(&[]);
    if plan.parts.contains(&Part::Unary) {
        let rows = bench.unary(&plan)?;
        chart = report::unary_chart(&rows);
        let mut body = report::unary_table(&rows);
        body.push('\n');
        for goal in report::unary_goals(&rows) {
            body.push_str(&format!("- {goal}\n"));
        }
        sections.push(("Unary calls against tonic".to_owned(), body));
    }
    if plan.parts.contains(&Part::Hedging) {
        let rows = bench.hedging(&plan)?;
        let mut body = report::tail_table(&rows);
        body.push('\n');
        for hedged in &rows[2..] {
            if let Some(goal) = report::hedging_goal(&rows[1], hedged) {
                body.push_str(&format!("- {goal}\n"));
            }
        }
        if let Some(floor) = rows[0].latency.percentile(99.9) {
            body.push_str(&format!(
                "- The floor's p99.9 is {}: no client does better on this machine, so the 10× goal needs it at \
                 most a tenth of the stall.\n",
                report::latency(Some(floor))
            ));
        }
        let title = format!(
            "Hedging: three replicas, one stalling {} on {}% of calls",
            humantime::format_duration(plan.stall),
            plan.stall_percent
        );
        sections.push((title, body));
    }
    if plan.parts.contains(&Part::Failover) {
        let rows = bench.failover(&plan)?;
        let mut body = report::tail_table(&rows);
        if let Some(with) = rows.last() {
            let verdict = if with.errors.total == 0 && !with.rates.is_empty() { "met" } else { "not met" };
            body.push_str(&format!("\n- {}: {} errors (goal 0: {verdict})\n", with.name, with.errors.total));
        }
        sections.push(("Failover: one of three replicas killed under load".to_owned(), body));
    }

    let header = Header {
        machine: format!(
            "{} CPUs ({}), Linux {}, {:.1} GiB RAM",
            machine.cpus, machine.cpu_model, machine.kernel, machine.memory_gib
        ),
        background: background
            .iter()
            .enumerate()
            .map(|(i, p)| format!("CPU {i} {p:.0}%"))
            .collect::<Vec<_>>()
            .join(", "),
        pinning: bench.pinning.describe(),
        settings: format!(
            "closed loop, callers as tasks of one current-thread tokio runtime; warren binary and tonic: every caller \
             on one multiplexed connection (warren's `Connection`, tonic's `Channel`: one HTTP/2 connection); \
             JSON/HTTP: a keep-alive HTTP/1.1 connection per caller; replicated runs: `Replicated` over `Fixed` \
             (one connection per replica), {} callers; each run {} after a {} warm-up, {} run(s) per row, \
             interleaved, order rotated; latency percentiles over every call of every run",
            plan.callers,
            humantime::format_duration(plan.duration),
            humantime::format_duration(plan.warm_up),
            plan.runs,
        ),
        servers: format!(
            "tonic's hello-world written out by hand (prost messages, `ProstCodec`, `Server::builder()`, \
             multi-thread runtime as `#[tokio::main]` makes it: one worker per usable CPU) as `warren bench \
             tonic-hello`; `warren objects serve --store none --http 127.0.0.1:0 --model M -d 0` (its HelloServer, \
             inline, and HelloMailbox, the same class per-object, added with `warren objects add`); hedging replicas `warren bench rpc-replica` ×4, three healthy and one stalling (HelloServer \
             on warren-objects, policy {}, event model); failover replicas `warren objects serve --store none`, the second SIGKILLed a third \
             into each run",
            replica::POLICY
        ),
        command: std::iter::once("warren".to_owned()).chain(std::env::args().skip(1)).collect::<Vec<_>>().join(" "),
        elapsed: started.elapsed(),
    };
    let markdown = report::markdown(&header, &sections);
    crate::results::write(&args.out, "rpc", &markdown, &chart)?;
    Ok(())
}

/// A server of the unary runs, and how its rows call it.
enum Wire {
    Tonic,
    /// With the client's busy-poll budget, if it polls.
    Binary(Option<Duration>),
    Json(SocketAddr),
}

struct UnaryTarget {
    server: usize,
    wire: Wire,
    /// The object called on warren's servers.
    object: &'static str,
    row: String,
}

/// HelloServer under `per-object`, added beside the server's own (`inline`) one, so that one
/// run shows what handing each call to the object's thread costs.
const HELLO_MAILBOX: &str = "HelloMailbox";

impl Bench {
    fn progress(&self, what: &str) {
        crate::progress::bench_line(&format!("bench: [{:>5.1}s] {what}", self.started.elapsed().as_secs_f64()));
    }

    /// Start `warren <argv>` pinned to the server CPU.
    fn spawn(&mut self, argv: &[&str]) -> anyhow::Result<Server> {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let server = Server::spawn(&self.exe, &argv, self.pinning.server_cpus(false))?;
        self.pinning.observed(probe::cpus_allowed(server.pid()));
        Ok(server)
    }

    /// `warren objects serve` with the course's objects, nothing stored, under `model`.
    fn object_server(&mut self, model: Model, http: bool) -> anyhow::Result<Server> {
        self.servers_started += 1;
        let data = self.scratch.join(format!("objects-{}", self.servers_started));
        let data = data.to_str().context("a scratch path that is not UTF-8")?.to_owned();
        let mut argv =
            vec!["objects", "serve", "--listen", "127.0.0.1:0", "--store", "none", "--data", &data, "-d", "0"];
        argv.extend(["--model", model.name()]);
        if http {
            argv.extend(["--http", "127.0.0.1:0"]);
        }
        self.spawn(&argv)
    }

    /// `warren objects add NAME --class CLASS --policy POLICY` on `server`, with its admin token.
    fn add_object(&self, server: &Server, name: &str, class: &str, policy: &str) -> anyhow::Result<()> {
        let ready = server.ready_line();
        let token = ready
            .split_once("admin token in ")
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(path, _)| path)
            .with_context(|| format!("no admin token in {ready:?}"))?;
        let added = std::process::Command::new(&self.exe)
            .args(["objects", "add", name, "--class", class, "--policy", policy])
            .args(["--server", &server.addr().to_string(), "--token-file", token])
            .output()
            .context("warren objects add")?;
        anyhow::ensure!(added.status.success(), "objects add {name}: {}", String::from_utf8_lossy(&added.stderr));
        Ok(())
    }

    fn unary(&mut self, plan: &Plan) -> anyhow::Result<Vec<UnaryRow>> {
        let mut servers = vec![self.spawn(&["bench", "tonic-hello"]).context("tonic's hello-world")?];
        let mut targets = vec![UnaryTarget { server: 0, wire: Wire::Tonic, object: "", row: "tonic, gRPC".into() }];
        for &model in &plan.models {
            let server = self.object_server(model, true)?;
            let http = http_addr(server.ready_line())
                .with_context(|| format!("no HTTP address in {:?}", server.ready_line()))?;
            self.add_object(&server, HELLO_MAILBOX, "hello", "per-object")?;
            servers.push(server);
            let server = servers.len() - 1;
            let (hello, mailbox) = ("HelloServer", HELLO_MAILBOX);
            targets.extend([
                UnaryTarget {
                    server,
                    wire: Wire::Binary(None),
                    object: hello,
                    row: format!("warren {model}, binary, inline"),
                },
                UnaryTarget {
                    server,
                    wire: Wire::Binary(Some(plan.busy_poll)),
                    object: hello,
                    row: format!("warren {model}, binary, inline, busy-poll client"),
                },
                UnaryTarget {
                    server,
                    wire: Wire::Binary(None),
                    object: mailbox,
                    row: format!("warren {model}, binary, per-object"),
                },
                UnaryTarget {
                    server,
                    wire: Wire::Json(http),
                    object: hello,
                    row: format!("warren {model}, JSON/HTTP, inline"),
                },
            ]);
        }
        let mut rows: Vec<UnaryRow> = plan
            .in_flight
            .iter()
            .flat_map(|&n| {
                targets.iter().map(move |t| UnaryRow {
                    name: t.row.clone(),
                    in_flight: n,
                    baseline: matches!(t.wire, Wire::Tonic),
                    binary: matches!(t.wire, Wire::Binary(_)),
                    ..UnaryRow::default()
                })
            })
            .collect();
        let mut turn = 0;
        for run in 0..plan.runs {
            for (level, &in_flight) in plan.in_flight.iter().enumerate() {
                turn += 1;
                for k in 0..targets.len() {
                    let t = (k + turn) % targets.len();
                    let target = &targets[t];
                    let row = &mut rows[level * targets.len() + t];
                    let server = &servers[target.server];
                    let measured = self.rt.block_on(measure_unary(target, server, in_flight, plan));
                    match measured {
                        Ok(Measured { outcome, server_cpu, client_cpu, switches }) => {
                            self.progress(&format!(
                                "run {}/{} {in_flight} in flight: {}: {:.0} calls/s, p50 {}, p99 {}, {} errors",
                                run + 1,
                                plan.runs,
                                target.row,
                                outcome.rate(),
                                report::latency(outcome.latency.percentile(50.0)),
                                report::latency(outcome.latency.percentile(99.0)),
                                outcome.errors.total
                            ));
                            let per_call = |v: f64| (outcome.calls > 0).then(|| v / outcome.calls as f64);
                            row.runs.push(UnaryRun {
                                rate: outcome.rate(),
                                cpu_per_call: per_call(server_cpu),
                                client_cpu_per_call: per_call(client_cpu),
                                switches_per_call: per_call(switches as f64),
                            });
                            row.latency.merge(&outcome.latency);
                            row.errors.merge(&outcome.errors);
                        }
                        Err(e) => {
                            self.progress(&format!("{} at {in_flight} in flight: {e:#}", target.row));
                            row.problems.push(format!("{e:#}"));
                        }
                    }
                    if !server.running() {
                        row.problems.push(format!("server exited: {}", server.output()));
                    }
                }
            }
        }
        Ok(rows)
    }

    /// Four rows: three healthy replicas (the floor: what this machine gives without a stall),
    /// then with the stalling replica in place of one of them: no hedging, hedging at the
    /// library's default (the delay learnt from answers), and after a fixed tuned delay (`--hedge-delay`, or by default the
    /// floor's p99 in the same run, at least 1 ms: hedge a call once it is later than 99 % of
    /// healthy calls, so about 1 % of calls plus the stalled ones are sent twice).
    fn hedging(&mut self, plan: &Plan) -> anyhow::Result<Vec<TailRow>> {
        let stall = humantime::format_duration(plan.stall).to_string();
        let percent = plan.stall_percent.to_string();
        let mut replicas = Vec::new();
        for share in ["0", "0", "0", percent.as_str()] {
            replicas.push(self.spawn(&["bench", "rpc-replica", "--stall-percent", share, "--stall", &stall])?);
        }
        let addrs: Vec<SocketAddr> = replicas.iter().map(Server::addr).collect();
        let (healthy, one_stalls) = (addrs[..3].to_vec(), vec![addrs[0], addrs[1], addrs[3]]);
        let mut rows: Vec<TailRow> = [
            "three healthy replicas, no hedging (the floor)".to_owned(),
            "round robin, no hedging".to_owned(),
            // Named once their delays are known, after the runs.
            "hedging, learnt delay".to_owned(),
            "hedging, fixed delay".to_owned(),
        ]
        .into_iter()
        .map(|name| TailRow { name, ..TailRow::default() })
        .collect();
        let (mut learnt, mut tuned) = (Vec::new(), Vec::new());
        for run in 0..plan.runs {
            let floor = Replicated::new(Fixed::new(healthy.clone()));
            let (outcome, counts) = self.rt.block_on(replicated_run(&floor, plan, || std::future::ready(())));
            self.record_tail(&mut rows[0], run, plan, &outcome, counts);
            let floor_p99 = Duration::from_micros(outcome.latency.percentile(99.0).unwrap_or(0));
            let delay = plan.hedge_delay.unwrap_or(floor_p99.max(Duration::from_millis(1)));
            tuned.push(delay);
            let modes =
                [None, Some(Hedging::default()), Some(Hedging { delay, percentile: None, ..Hedging::default() })];
            for k in 0..modes.len() {
                let m = (k + run) % modes.len();
                let mut replicated = Replicated::new(Fixed::new(one_stalls.clone()));
                if let Some(policy) = modes[m] {
                    replicated = replicated.hedging(policy);
                }
                let (outcome, counts) = self.rt.block_on(replicated_run(&replicated, plan, || std::future::ready(())));
                self.record_tail(&mut rows[m + 1], run, plan, &outcome, counts);
                if m == 1 {
                    learnt.extend(replicated.hedge_delay());
                }
            }
        }
        let shown = |delays: &[Duration]| -> String {
            delays.iter().map(|d| report::latency(Some(d.as_micros() as u64))).collect::<Vec<_>>().join(", ")
        };
        let default = Hedging::default();
        rows[2].name = format!(
            "hedging at the p{:.0} of answers, learnt (the default; {} until {LEARN_AFTER} answers; learnt per run: {})",
            default.percentile.map_or(0.0, |p| p * 100.0),
            humantime::format_duration(default.delay),
            shown(&learnt)
        );
        rows[3].name = match plan.hedge_delay {
            Some(_) => format!("hedging after {}, fixed (--hedge-delay)", shown(&tuned[..1])),
            None => format!("hedging after the floor's p99, fixed (per run: {})", shown(&tuned)),
        };
        if let Some(gone) = replicas.iter().find(|r| !r.running()) {
            let why = format!("a replica exited: {}", gone.output());
            rows.iter_mut().for_each(|row| row.problems.push(why.clone()));
        }
        Ok(rows)
    }

    fn failover(&mut self, plan: &Plan) -> anyhow::Result<Vec<TailRow>> {
        let modes = ["round robin, no failover", "failover + outlier ejection (defaults)"];
        let mut rows: Vec<TailRow> =
            modes.iter().map(|name| TailRow { name: (*name).into(), ..TailRow::default() }).collect();
        for run in 0..plan.runs {
            for k in 0..modes.len() {
                let m = (k + run) % modes.len();
                let mut replicas = Vec::new();
                for _ in 0..3 {
                    replicas.push(self.object_server(Model::Event, false)?);
                }
                let addrs: Vec<SocketAddr> = replicas.iter().map(Server::addr).collect();
                let mut replicated = Replicated::new(Fixed::new(addrs));
                if m == 1 {
                    replicated = replicated
                        .failover(RetryBudget::default())
                        .outliers(Arc::new(Outliers::new(Ejection::default())));
                }
                let victim = &mut replicas[1];
                let kill_at = plan.duration / 3;
                let kill = async move {
                    tokio::time::sleep(kill_at).await;
                    victim.kill();
                };
                let (outcome, counts) = self.rt.block_on(replicated_run(&replicated, plan, || kill));
                self.record_tail(&mut rows[m], run, plan, &outcome, counts);
            }
        }
        Ok(rows)
    }

    fn record_tail(&self, row: &mut TailRow, run: usize, plan: &Plan, outcome: &Outcome, extra: (u64, u64)) {
        self.progress(&format!(
            "run {}/{} {}: {:.0} calls/s, p99 {}, p99.9 {}, {} hedges, {} failovers, errors {}",
            run + 1,
            plan.runs,
            row.name,
            outcome.rate(),
            report::latency(outcome.latency.percentile(99.0)),
            report::latency(outcome.latency.percentile(99.9)),
            extra.0,
            extra.1,
            outcome.errors.summary()
        ));
        row.rates.push(outcome.rate());
        row.latency.merge(&outcome.latency);
        row.calls += outcome.calls;
        row.hedges += extra.0;
        row.failovers += extra.1;
        row.errors.merge(&outcome.errors);
    }
}

/// `warren: serving 4 objects (store none, http 127.0.0.1:PORT, admin token in …) …`: the
/// HTTP front's address.
fn http_addr(ready: &str) -> Option<SocketAddr> {
    let rest = &ready[ready.find(", http ")? + ", http ".len()..];
    rest.split([',', ')', ' ']).next()?.parse().ok()
}

/// What one unary run saw, and what it cost each side.
struct Measured {
    outcome: Outcome,
    /// CPU seconds of the server's process tree over the run.
    server_cpu: f64,
    /// CPU seconds of the load generator's thread (every caller, and the client library's
    /// tasks, run on it) over the run.
    client_cpu: f64,
    /// The server's context switches over the run.
    switches: u64,
}

/// One unary run against `target`.
async fn measure_unary(
    target: &UnaryTarget,
    server: &Server,
    in_flight: usize,
    plan: &Plan,
) -> anyhow::Result<Measured> {
    match target.wire {
        Wire::Tonic => {
            let client = GreeterClient::connect(server.addr()).await?;
            let mut callers: Vec<TonicCaller> = (0..in_flight).map(|_| TonicCaller(client.clone())).collect();
            Ok(timed(&mut callers, server.pid(), plan).await)
        }
        Wire::Binary(busy_poll) => {
            let mut config = ConnectionConfig::default().connect_timeout(Duration::from_secs(2));
            if let Some(budget) = busy_poll {
                config = config.busy_poll(budget);
            }
            let connection = Connection::connect_with(server.addr(), config).await?;
            let hello = HelloClient::new(Target::on(&connection, target.object).with_timeout(load::CALL_TIMEOUT));
            let mut callers: Vec<StubCaller> = (0..in_flight).map(|_| StubCaller(hello.clone())).collect();
            Ok(timed(&mut callers, server.pid(), plan).await)
        }
        Wire::Json(addr) => {
            let mut callers: Vec<JsonCaller> = (0..in_flight).map(|_| JsonCaller::new(addr)).collect();
            Ok(timed(&mut callers, server.pid(), plan).await)
        }
    }
}

/// Warm up, then a measured run, reading both sides' CPU time and the server's context
/// switches around it.
async fn timed<C: Caller>(callers: &mut [C], pid: i32, plan: &Plan) -> Measured {
    closed_loop(callers, plan.warm_up).await;
    let (server_cpu, switches) = (probe::cpu_seconds(pid), probe::context_switches(pid));
    let client_cpu = probe::thread_cpu_seconds();
    let outcome = closed_loop(callers, plan.duration).await;
    Measured {
        outcome,
        client_cpu: probe::thread_cpu_seconds() - client_cpu,
        server_cpu: probe::cpu_seconds(pid) - server_cpu,
        switches: probe::context_switches(pid).saturating_sub(switches),
    }
}

/// A run through `replicated`, with `during` (a replica's death) running beside it; the
/// outcome, and the hedges and failovers it sent.
async fn replicated_run<F: Future<Output = ()>>(
    replicated: &Replicated<Fixed>,
    plan: &Plan,
    during: impl FnOnce() -> F,
) -> (Outcome, (u64, u64)) {
    let target = Target::new(BoxedCaller::new(replicated.clone()), "HelloServer").with_timeout(load::CALL_TIMEOUT);
    let hello = HelloClient::new(target);
    let mut callers: Vec<StubCaller> = (0..plan.callers).map(|_| StubCaller(hello.clone())).collect();
    closed_loop(&mut callers, plan.warm_up).await;
    let before = replicated.counts();
    let (outcome, ()) = tokio::join!(closed_loop(&mut callers, plan.duration), during());
    let after = replicated.counts();
    (outcome, (after.hedges - before.hedges, after.failovers - before.failovers))
}

/// warren's generated stub: `HelloClient::say_hello`.
struct StubCaller(HelloClient);

impl Caller for StubCaller {
    async fn call(&mut self) -> Result<(), String> {
        match self.0.say_hello().await {
            Ok(answer) if answer == "Hello World!" => Ok(()),
            Ok(answer) => Err(format!("a wrong answer: {answer:?}")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// tonic's client: `Greeter/SayHello` with the example's name.
struct TonicCaller(GreeterClient);

impl Caller for TonicCaller {
    async fn call(&mut self) -> Result<(), String> {
        match self.0.say_hello("World").await {
            Ok(answer) if answer == "Hello World!" => Ok(()),
            Ok(answer) => Err(format!("a wrong answer: {answer:?}")),
            Err(status) => Err(format!("{:?}: {}", status.code(), status.message())),
        }
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: RpcArgs,
    }

    fn plan(argv: &[&str]) -> anyhow::Result<Plan> {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(argv.iter().copied()))?;
        Plan::new(&cli.args)
    }

    #[test]
    fn defaults_and_quick() {
        let p = plan(&[]).unwrap();
        assert_eq!(p.parts, [Part::Unary, Part::Hedging, Part::Failover]);
        assert_eq!(p.models, [Model::Event, Model::Hybrid]);
        assert_eq!((p.in_flight.as_slice(), p.duration, p.runs), (&[1, 64][..], Duration::from_secs(2), 3));
        assert_eq!((p.callers, p.stall_percent, p.stall), (8, 5.0, Duration::from_millis(50)));
        assert_eq!(p.busy_poll, Duration::from_micros(100));
        let q = plan(&["--quick"]).unwrap();
        assert_eq!((q.duration, q.runs), (Duration::from_secs(1), 1));
        let q = plan(&["--quick", "--runs", "2", "--duration", "3s"]).unwrap();
        assert_eq!((q.duration, q.runs), (Duration::from_secs(3), 2));
    }

    #[test]
    fn choices_are_checked() {
        let p = plan(&["--parts", "hedging", "--models", "green", "--in-flight", "4"]).unwrap();
        assert_eq!(
            (p.parts.as_slice(), p.models.as_slice(), p.in_flight.as_slice()),
            (&[Part::Hedging][..], &[Model::Green][..], &[4][..])
        );
        for bad in [
            &["--parts", "nonsense"][..],
            &["--models", "fork"],
            &["--in-flight", "0"],
            &["--runs", "0"],
            &["--duration", "10ms"],
            &["--stall-percent", "101"],
            &["--hedge-delay", "0s"],
            &["--busy-poll", "0s"],
            &["--busy-poll", "2s"],
        ] {
            assert!(plan(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_http_address_comes_from_the_readiness_line() {
        let line = "warren: serving 4 objects (store none, http 127.0.0.1:4001, admin token in /tmp/a) under event \
                    on 127.0.0.1:4000";
        assert_eq!(http_addr(line), Some(SocketAddr::from(([127, 0, 0, 1], 4001))));
        assert_eq!(http_addr("warren: serving 4 objects (store none, admin token in /tmp/a) under event on x"), None);
    }
}
