//! `warren bench switch`: `warren switch` against HAProxy (Debian's 2.6) doing the same work on
//! the same pinned CPU, and against no switch at all (docs/bench-switch.md).
//!
//! - **relay** (`--mode relay` against HAProxy's `mode tcp`) and **http** (`--mode http` against
//!   `mode http`): two `warren serve http` backends; wrk with keep-alive (requests per second) and
//!   with `Connection: close` (connections per second) for 0 B, 4 KiB and 1 MiB answers, Gbit/s
//!   of body, requests per switch CPU-second, and the p99 latency the switch adds at half of the
//!   lowest maximum rate, measured by an open-loop load ([`paced`]).
//! - **handoff**: two hand-off receivers behind `--mode handoff`, against the same server
//!   listening directly; new connections for 1 KiB, 1 MiB and 100 MiB answers: the switch's CPU
//!   per request (it should not grow with the answer) and the throughput beside direct.
//! - **lard**: `--mode http` with `--policy lard` against `--policy round-robin`, over backends
//!   whose page cache a memory cgroup bounds, on a working set larger than one of them caches
//!   ([`lard`]).
//!
//! The switches run on CPU 1; wrk, the open-loop load and the backends share CPU 0, so on two
//! cores the load side may saturate before the switch does: the per-CPU-second figures say what
//! each switch costs. Runs are interleaved across switches and rotated, as `bench http` does.

mod haproxy;
mod lard;
mod memcg;
mod paced;

use std::cell::RefCell;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::ensure;
use clap::{Args, ValueEnum};

use self::haproxy::Haproxy;
use crate::chart::{BarChart, Format};
use crate::host::{self, LOAD_CPU, Machine, Pinning, SERVER_CPU};
use crate::probe;
use crate::report::{median, thousands};
use crate::scratch::Scratch;
use crate::server::Server;
use crate::wrk;

/// Options of `warren bench switch`.
#[derive(Debug, Args)]
pub struct SwitchArgs {
    /// Parts to run, comma-separated [default: relay,http,handoff,lard].
    #[arg(long, value_delimiter = ',')]
    pub parts: Vec<Part>,
    /// wrk's connections in the relay and http parts (the handoff part uses at most 8, so that
    /// 100 MiB answers finish within wrk's timeout).
    #[arg(long, default_value_t = 50)]
    pub connections: usize,
    /// Length of each run.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub duration: Duration,
    /// Runs per switch and scenario, interleaved; the table shows the median.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// lard: backends behind the switch.
    #[arg(long, default_value_t = 4)]
    pub lard_backends: usize,
    /// lard: documents in the working set (each backend has its own copy of all of them).
    #[arg(long, default_value_t = 3072)]
    pub lard_files: usize,
    /// lard: the size of each document, in KiB.
    #[arg(long, default_value_t = 32)]
    pub lard_file_kib: u64,
    /// lard: each backend's memory cgroup limit in MiB: its page cache, and its own few MiB.
    #[arg(long, default_value_t = 40)]
    pub lard_cache_mib: u64,
    /// lard: the Zipf exponent of the documents' popularity; 0 draws them uniformly.
    #[arg(long, default_value_t = 0.0)]
    pub lard_zipf: f64,
    /// Directory for switch.md.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
}

/// A part of the bench.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Part {
    Relay,
    Http,
    Handoff,
    Lard,
}

/// The answers the backends serve: (label, file, bytes).
const SIZES: [(&str, &str, u64); 3] = [("0 B", "0.bin", 0), ("4 KiB", "4k.bin", 4096), ("1 MiB", "1m.bin", 1 << 20)];
const HANDOFF_SIZES: [(&str, &str, u64); 3] =
    [("1 KiB", "1k.bin", 1024), ("1 MiB", "1m.bin", 1 << 20), ("100 MiB", "100m.bin", 100 << 20)];

/// `warren bench switch`.
pub fn switch(args: &SwitchArgs) -> anyhow::Result<()> {
    ensure!((1..=20).contains(&args.runs), "--runs must be 1 to 20");
    ensure!((1..=60).contains(&args.duration.as_secs()), "--duration must be 1s to 60s");
    ensure!((1..=5000).contains(&args.connections), "--connections must be 1 to 5000");
    let parts = if args.parts.is_empty() {
        vec![Part::Relay, Part::Http, Part::Handoff, Part::Lard]
    } else {
        args.parts.clone()
    };
    let [haproxy_bin, wrk_bin] = host::ensure_programs(["haproxy", "wrk"], &["haproxy", "wrk"], "switch")?;
    host::raise_nofile().ok();
    let machine = Machine::read();
    let background = host::background_load(Duration::from_millis(500));
    // This thread, and so the backends it starts, run on the load CPU; the switches on the other.
    let pinning = Pinning::apply(true, machine.cpus);
    let (switch_cpu, load_cpu) = match pinning {
        Pinning::Applied { .. } => (Some(SERVER_CPU), Some(LOAD_CPU)),
        _ => (None, None),
    };
    let site = site()?;
    let bench = Bench {
        exe: crate::warren_exe()?,
        wrk: wrk_bin,
        haproxy: haproxy_bin,
        root: site.dir.join("root"),
        pinning,
        switch_cpu,
        load_cpu,
        args,
        started: Instant::now(),
        chart: RefCell::default(),
    };
    let mut md = String::new();
    writeln!(md, "# warren bench switch\n")?;
    writeln!(
        md,
        "Machine: {} CPUs ({}), kernel {}. HAProxy {}. Background load before the bench: {}.  ",
        machine.cpus,
        machine.cpu_model,
        machine.kernel,
        Haproxy::version(&bench.haproxy),
        background.iter().map(|b| format!("{b:.0}%")).collect::<Vec<_>>().join(" / ")
    )?;
    let pinning = match (switch_cpu, load_cpu) {
        (Some(switch), Some(load)) => format!(
            "the switches (HAProxy, `warren switch`) on CPU {switch}; wrk, the paced load and the backends on CPU {load}"
        ),
        _ => bench.pinning.describe(),
    };
    writeln!(md, "Pinning: {pinning}.  ")?;
    let names: Vec<String> = parts.iter().filter_map(|p| Some(p.to_possible_value()?.get_name().to_owned())).collect();
    let mut command = format!(
        "warren bench switch --parts {} --connections {} --duration {} --runs {}",
        names.join(","),
        args.connections,
        humantime::format_duration(args.duration),
        args.runs
    );
    if parts.contains(&Part::Lard) {
        write!(
            command,
            " --lard-backends {} --lard-files {} --lard-file-kib {} --lard-cache-mib {} --lard-zipf {}",
            args.lard_backends, args.lard_files, args.lard_file_kib, args.lard_cache_mib, args.lard_zipf
        )?;
    }
    writeln!(md, "Command: `{command}`; medians of the runs.\n")?;
    for part in parts {
        match part {
            Part::Relay => bench.proxied(haproxy::Mode::Tcp, &mut md)?,
            Part::Http => bench.proxied(haproxy::Mode::Http, &mut md)?,
            Part::Handoff => bench.handoff(&mut md)?,
            Part::Lard => bench.lard(&mut md)?,
        }
    }
    let chart = BarChart {
        title: "Switches: requests per second as a ratio to no switch".into(),
        unit: "ratio to direct".into(),
        series: vec!["HAProxy".into(), "warren switch".into()],
        groups: bench.chart.take(),
        reference: Some((1.0, "direct to a backend = 1.0×".into())),
        format: Format::Ratio,
        note: "medians over runs; two backends, round-robin".into(),
    };
    crate::results::write(&args.out, "switch", &md, &chart)?;
    Ok(())
}

/// A scratch document root with every answer the bench asks for.
fn site() -> anyhow::Result<Scratch> {
    let scratch = Scratch::new("switch", 0o755)?;
    let root = scratch.dir.join("root");
    std::fs::create_dir_all(&root)?;
    for (_, name, size) in SIZES.iter().chain(&HANDOFF_SIZES) {
        let file = std::fs::File::create(root.join(name))?;
        // Sparse is enough: the servers send it with sendfile from the page cache either way.
        file.set_len(*size)?;
    }
    Ok(scratch)
}

/// What one wrk run against one front measured.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    rate: f64,
    requests: u64,
    /// The front's CPU seconds over the run (0 for direct).
    cpu: f64,
    errors: u64,
}

/// Samples of one front in one scenario.
#[derive(Clone, Debug, Default)]
struct Cell(Vec<Sample>);

impl Cell {
    fn rate(&self) -> Option<f64> {
        (!self.0.is_empty()).then(|| median(&self.0.iter().map(|s| s.rate).collect::<Vec<_>>()))
    }

    /// Requests per front CPU-second over every run.
    fn per_cpu_second(&self) -> Option<f64> {
        let cpu: f64 = self.0.iter().map(|s| s.cpu).sum();
        (cpu > 0.0).then(|| self.0.iter().map(|s| s.requests).sum::<u64>() as f64 / cpu)
    }

    fn errors(&self) -> u64 {
        self.0.iter().map(|s| s.errors).sum()
    }
}

/// The rate, then per hand-off size: requests made and µs of switch CPU per request.
type SameRate = (f64, Vec<(u64, f64)>);

/// Something wrk loads: the backend itself, HAProxy, or `warren switch`.
enum Front {
    Direct(SocketAddr),
    Haproxy(Haproxy),
    Warren(Server),
}

impl Front {
    fn addr(&self) -> SocketAddr {
        match self {
            Front::Direct(a) => *a,
            Front::Haproxy(h) => h.addr(),
            Front::Warren(s) => s.addr(),
        }
    }

    /// The switch's pid, whose CPU time is the cost measured; none for direct.
    fn pid(&self) -> Option<i32> {
        match self {
            Front::Direct(_) => None,
            Front::Haproxy(h) => Some(h.pid()),
            Front::Warren(s) => Some(s.pid()),
        }
    }
}

struct Bench<'a> {
    exe: PathBuf,
    wrk: PathBuf,
    haproxy: PathBuf,
    root: PathBuf,
    pinning: Pinning,
    switch_cpu: Option<usize>,
    load_cpu: Option<usize>,
    args: &'a SwitchArgs,
    started: Instant,
    /// The chart's groups, filled by the relay and http parts: HAProxy's and warren's rates as
    /// ratios to the backend reached directly.
    chart: RefCell<Vec<(String, Vec<Option<f64>>)>>,
}

impl Bench<'_> {
    fn progress(&self, what: &str) {
        crate::progress::bench_line(&format!("bench: [{:>5.1}s] {what}", self.started.elapsed().as_secs_f64()));
    }

    /// `warren serve http` on the load CPU, listening on loopback or for hand-offs at `handoff`.
    fn backend(&self, handoff: Option<&str>) -> anyhow::Result<Server> {
        let root = self.root.display().to_string();
        let mut argv: Vec<String> =
            ["http", "--model", "event", "--root", &root, "-d", "0", "--max-conns", "20000"].map(String::from).into();
        match handoff {
            Some(name) => argv.extend(["--handoff-listen".into(), name.into()]),
            None => argv.extend(["--listen".into(), "127.0.0.1:0".into()]),
        }
        Server::start(&self.exe, &argv, None)
    }

    /// `warren switch --mode MODE --policy POLICY` on the switch CPU in front of `backends`.
    fn warren_switch(&self, mode: &str, policy: &str, backends: &[String]) -> anyhow::Result<Server> {
        let mut argv: Vec<String> =
            ["switch", "--listen", "127.0.0.1:0", "--mode", mode, "--policy", policy].map(String::from).into();
        for b in backends {
            argv.extend(["--backend".into(), b.clone()]);
        }
        Server::spawn(&self.exe, &argv, self.pinning.server_cpus(false))
    }

    /// One wrk run of `file` against `front`.
    fn measure(&self, front: &Front, file: &str, conns: usize, close: bool) -> anyhow::Result<Sample> {
        let url = format!("http://{}/{file}", front.addr());
        let cpu = || front.pid().map(probe::sched_cpu_seconds).unwrap_or(0.0);
        let before = cpu();
        let w = wrk::run(&self.wrk, self.load_cpu, &url, conns, self.args.duration, close)?;
        Ok(Sample { rate: w.rate, requests: w.requests, cpu: cpu() - before, errors: w.errors() })
    }

    /// Every front × scenario, `runs` times, interleaved and rotated. `cells[front][scenario]`.
    fn interleave(
        &self,
        names: &[String],
        fronts: &[Front],
        scenarios: &[(&str, bool)],
        conns: usize,
    ) -> (Vec<Vec<Cell>>, Vec<String>) {
        let mut cells = vec![vec![Cell::default(); scenarios.len()]; fronts.len()];
        let mut problems = Vec::new();
        let mut turn = 0;
        for run in 0..self.args.runs {
            for (s, &(file, close)) in scenarios.iter().enumerate() {
                turn += 1;
                for k in 0..fronts.len() {
                    let i = (k + turn) % fronts.len();
                    let label = format!("{file}{}", if close { " close" } else { "" });
                    match self.measure(&fronts[i], file, conns, close) {
                        Ok(sample) => {
                            self.progress(&format!(
                                "run {}/{} {label}: {} {:.0} req/s, {:.0}% of a CPU, {} errors",
                                run + 1,
                                self.args.runs,
                                names[i],
                                sample.rate,
                                sample.cpu * 100.0 / self.args.duration.as_secs_f64(),
                                sample.errors
                            ));
                            cells[i][s].0.push(sample);
                        }
                        Err(e) => problems.push(format!("{} {label}: {e:#}", names[i])),
                    }
                }
            }
        }
        (cells, problems)
    }

    /// The relay (`Tcp`) or http part.
    fn proxied(&self, mode: haproxy::Mode, md: &mut String) -> anyhow::Result<()> {
        let (title, warren_mode) = match mode {
            haproxy::Mode::Tcp => ("relay (L4) against HAProxy `mode tcp`", "relay"),
            haproxy::Mode::Http => ("http (L7) against HAProxy `mode http`", "http"),
        };
        self.progress(&format!("part: {title}"));
        let backends = [self.backend(None)?, self.backend(None)?];
        let addrs: Vec<SocketAddr> = backends.iter().map(Server::addr).collect();
        let mut names = vec!["direct".to_owned()];
        let mut fronts = vec![Front::Direct(addrs[0])];
        let mut problems = Vec::new();
        match Haproxy::start(&self.haproxy, mode, &addrs, self.switch_cpu) {
            Ok(h) => {
                names.push("HAProxy".into());
                fronts.push(Front::Haproxy(h));
            }
            Err(e) => {
                self.progress(&format!("HAProxy did not start: {e:#}"));
                problems.push(format!("HAProxy: {e:#}"));
            }
        }
        match self.warren_switch(warren_mode, "round-robin", &addrs.iter().map(ToString::to_string).collect::<Vec<_>>())
        {
            Ok(s) => {
                names.push("warren".into());
                fronts.push(Front::Warren(s));
            }
            Err(e) => {
                self.progress(&format!("warren switch --mode {warren_mode} did not start: {e:#}"));
                problems.push(format!("warren switch --mode {warren_mode}: {e:#}"));
            }
        }
        let scenarios: Vec<(&str, bool)> =
            SIZES.iter().flat_map(|&(_, file, _)| [(file, false), (file, true)]).collect();
        let (cells, more) = self.interleave(&names, &fronts, &scenarios, self.args.connections);
        problems.extend(more);

        // The open-loop runs, all at the same rate: half of the lowest maximum.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let mut p99 = vec![vec![None; SIZES.len()]; fronts.len()];
        let mut paced_rates = Vec::new();
        for (z, &(label, file, _)) in SIZES.iter().enumerate() {
            let lowest = (0..fronts.len()).filter_map(|i| cells[i][2 * z].rate()).fold(f64::INFINITY, f64::min);
            if !lowest.is_finite() || lowest < 2.0 {
                paced_rates.push(None);
                continue;
            }
            let rate = lowest / 2.0;
            paced_rates.push(Some(rate));
            for (i, front) in fronts.iter().enumerate() {
                let path = format!("/{file}");
                let out = rt.block_on(paced::run(front.addr(), &path, rate, 16, self.args.duration, false));
                self.progress(&format!(
                    "paced {label} at {rate:.0}/s: {} p99 {} µs, {} errors",
                    names[i],
                    out.hist.percentile(99.0).map_or("–".into(), |v| v.to_string()),
                    out.errors
                ));
                if out.errors > 0 {
                    problems.push(format!("{} paced {label}: {} errors", names[i], out.errors));
                }
                p99[i][z] = out.hist.percentile(99.0);
            }
        }
        drop(fronts);
        drop(backends);

        writeln!(md, "## {title}\n")?;
        writeln!(
            md,
            "{} connections, two `warren serve http --model event` backends, round-robin. \"per CPU-s\" is \
             requests per CPU-second of the switch process.\n",
            self.args.connections
        )?;
        let col = |name: &str| names.iter().position(|n| n == name);
        let (hap, war) = (col("HAProxy"), col("warren"));
        for (close, what) in
            [(false, "Requests per second (keep-alive)"), (true, "Connections per second (`Connection: close`)")]
        {
            writeln!(md, "### {what}\n")?;
            writeln!(
                md,
                "| answer | direct | HAProxy | warren | warren ÷ HAProxy | HAProxy per CPU-s | warren per CPU-s | ÷ | Gbit/s warren | errors |"
            )?;
            writeln!(md, "|---|---|---|---|---|---|---|---|---|---|")?;
            for (z, &(label, _, bytes)) in SIZES.iter().enumerate() {
                let s = 2 * z + usize::from(close);
                let rate = |i: Option<usize>| i.and_then(|i| cells[i][s].rate());
                let per = |i: Option<usize>| i.and_then(|i| cells[i][s].per_cpu_second());
                let errors: u64 = (0..names.len()).map(|i| cells[i][s].errors()).sum();
                let to_direct = |i: Option<usize>| Some(rate(i)? / rate(Some(0)).filter(|d| *d > 0.0)?);
                let regime = if close { "close" } else { "keep-alive" };
                self.chart
                    .borrow_mut()
                    .push((format!("{warren_mode} {label} {regime}"), vec![to_direct(hap), to_direct(war)]));
                writeln!(
                    md,
                    "| {label} | {} | {} | {} | {} | {} | {} | {} | {} | {errors} |",
                    opt(rate(Some(0))),
                    opt(rate(hap)),
                    opt(rate(war)),
                    ratio(rate(war), rate(hap)),
                    opt(per(hap)),
                    opt(per(war)),
                    ratio(per(war), per(hap)),
                    rate(war).map(|r| format!("{:.2}", r * bytes as f64 * 8.0 / 1e9)).unwrap_or_else(|| "–".into()),
                )?;
            }
            writeln!(md)?;
        }
        writeln!(md, "### p99 latency at half of the lowest maximum rate (open loop, 16 connections)\n")?;
        writeln!(md, "| answer | rate | direct | HAProxy | warren | added: HAProxy | added: warren |")?;
        writeln!(md, "|---|---|---|---|---|---|---|")?;
        for (z, &(label, _, _)) in SIZES.iter().enumerate() {
            let at = |i: Option<usize>| i.and_then(|i| p99[i][z]);
            let added = |i: Option<usize>| match (at(i), at(Some(0))) {
                (Some(a), Some(d)) => format!("{} µs", a as i64 - d as i64),
                _ => "–".into(),
            };
            let us = |v: Option<u64>| v.map(|v| format!("{v} µs")).unwrap_or_else(|| "–".into());
            writeln!(
                md,
                "| {label} | {}/s | {} | {} | {} | {} | {} |",
                opt(paced_rates[z]),
                us(at(Some(0))),
                us(at(hap)),
                us(at(war)),
                added(hap),
                added(war)
            )?;
        }
        write_problems(md, &problems)
    }

    /// The handoff part.
    fn handoff(&self, md: &mut String) -> anyhow::Result<()> {
        self.progress("part: handoff against direct");
        let names: Vec<String> = (0..2).map(|k| format!("@warren-bench-handoff-{}-{k}", std::process::id())).collect();
        let receivers = [self.backend(Some(&names[0]))?, self.backend(Some(&names[1]))?];
        let direct = self.backend(None)?;
        let mut problems = Vec::new();
        let mut labels = vec!["direct".to_owned()];
        let mut fronts = vec![Front::Direct(direct.addr())];
        match self.warren_switch("handoff", "round-robin", &names) {
            Ok(s) => {
                labels.push("handoff".into());
                fronts.push(Front::Warren(s));
            }
            Err(e) => problems.push(format!("warren switch --mode handoff: {e:#}")),
        }
        let conns = self.args.connections.min(8);
        let scenarios: Vec<(&str, bool)> = HANDOFF_SIZES.iter().map(|&(_, file, _)| (file, true)).collect();
        let (cells, more) = self.interleave(&labels, &fronts, &scenarios, conns);
        problems.extend(more);
        let same_rate = match fronts.get(1) {
            Some(switch) => self.handoff_at_one_rate(switch, &cells[1], &mut problems)?,
            None => None,
        };
        drop(fronts);
        drop((receivers, direct));

        writeln!(md, "## handoff against direct\n")?;
        writeln!(
            md,
            "{conns} connections, each request on a new connection (`Connection: close`), so every request \
             passes the switch once. Direct is the same server listening on TCP itself.\n"
        )?;
        writeln!(
            md,
            "| answer | direct req/s | handoff req/s | direct Gbit/s | handoff Gbit/s | handoff ÷ direct | switch CPU per request | errors |"
        )?;
        writeln!(md, "|---|---|---|---|---|---|---|---|")?;
        for (z, &(label, _, bytes)) in HANDOFF_SIZES.iter().enumerate() {
            let rate = |i: usize| cells.get(i).and_then(|c| c[z].rate());
            let gbit = |i: usize| {
                rate(i).map(|r| format!("{:.2}", r * bytes as f64 * 8.0 / 1e9)).unwrap_or_else(|| "–".into())
            };
            let cost = cells
                .get(1)
                .and_then(|c| c[z].per_cpu_second())
                .map(|per| format!("{:.1} µs", 1e6 / per))
                .unwrap_or_else(|| "–".into());
            let errors: u64 = cells.iter().map(|c| c[z].errors()).sum();
            writeln!(
                md,
                "| {label} | {} | {} | {} | {} | {} | {cost} | {errors} |",
                opt(rate(0)),
                opt(rate(1)),
                gbit(0),
                gbit(1),
                ratio(rate(1), rate(0))
            )?;
        }
        if let Some((rate, costs)) = same_rate {
            writeln!(
                md,
                "\nAt full load the switch's CPU per request also depends on how often it runs (it grows as \
                 the rate falls). So every size again, each request on a new connection at the same \
                 open-loop rate, {rate:.1} a second (the largest answer's measured rate):\n"
            )?;
            writeln!(md, "| answer | requests | switch CPU per request |")?;
            writeln!(md, "|---|---|---|")?;
            for ((label, _, _), (done, cost)) in HANDOFF_SIZES.iter().zip(costs) {
                writeln!(md, "| {label} | {done} | {cost:.1} µs |")?;
            }
        }
        write_problems(md, &problems)
    }

    /// Every hand-off size at one rate, the largest answer's: the switch's CPU per request when
    /// only the answer's size differs.
    fn handoff_at_one_rate(
        &self,
        switch: &Front,
        measured: &[Cell],
        problems: &mut Vec<String>,
    ) -> anyhow::Result<Option<SameRate>> {
        let (Some(pid), Some(rate)) = (switch.pid(), measured.last().and_then(Cell::rate)) else { return Ok(None) };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        // Long enough for a few dozen requests even at a dozen a second.
        let duration = self.args.duration.max(Duration::from_secs(3));
        let mut costs = Vec::new();
        for &(label, file, _) in &HANDOFF_SIZES {
            let before = probe::sched_cpu_seconds(pid);
            let out = rt.block_on(paced::run(switch.addr(), &format!("/{file}"), rate, 4, duration, true));
            let cpu = probe::sched_cpu_seconds(pid) - before;
            let per = if out.done > 0 { cpu * 1e6 / out.done as f64 } else { f64::NAN };
            self.progress(&format!(
                "handoff {label} at {rate:.1}/s: {} requests, {per:.1} µs of switch CPU each",
                out.done
            ));
            if out.errors > 0 {
                problems.push(format!("handoff {label} at {rate:.1}/s: {} errors", out.errors));
            }
            costs.push((out.done, per));
        }
        Ok(Some((rate, costs)))
    }
}

fn write_problems(md: &mut String, problems: &[String]) -> anyhow::Result<()> {
    writeln!(md)?;
    if !problems.is_empty() {
        writeln!(md, "Problems:\n")?;
        for p in problems {
            writeln!(md, "- {p}")?;
        }
        writeln!(md)?;
    }
    Ok(())
}

fn opt(v: Option<f64>) -> String {
    v.map(thousands).unwrap_or_else(|| "–".into())
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}
