//! `warren bench http`: wrk against warren's HTTP server under each model and against nginx from
//! Debian's package, configured alike (one worker against one thread, both pinned to CPU 1, wrk
//! on CPU 0, access logs off, sendfile on, the same files). Runs are interleaved across servers
//! and every warren figure is also given as a ratio to nginx in the same bench, both requests
//! per second and requests per server CPU-second (the servers' user + system time, read from
//! /proc before and after each run), since on two CPUs wrk may run out before the server does.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::ensure;
use clap::Args;
use warren_models::Model;

use crate::host::{self, CpuSet, LOAD_CPU, Machine, SERVER_CPU};
use crate::httpreport::{self, Cell, Report, Run, Scenario, ServerRow};
use crate::nginx::{self, Nginx, Scratch};
use crate::probe::{self, Sampler};
use crate::server::Server;
use crate::wrk;

/// Options of `warren bench http`.
#[derive(Debug, Args)]
pub struct HttpArgs {
    /// warren models to measure, comma-separated [default: event,hybrid,thread,pool].
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<Model>,
    /// Concurrent connections, comma-separated [default: 1,50,256,1000].
    #[arg(long, value_delimiter = ',')]
    pub connections: Vec<usize>,
    /// Length of each wrk run (whole seconds).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub duration: Duration,
    /// wrk runs per server and scenario, interleaved; with 3 or more the table shows the median
    /// and min–max.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Idle keep-alive connections held against nginx and warren event; 0 skips the test.
    #[arg(long, default_value_t = 10_000)]
    pub idle: usize,
    /// Directory for http.md and http.svg.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
    /// Every server writes an access log to a file, as a production server would: nginx's
    /// `access_log FILE combined`, warren's `--access-log FILE`.
    #[arg(long)]
    pub access_log: bool,
}

/// A server under test: nginx or warren under one model.
enum Target {
    Nginx(Nginx),
    Warren(Server),
}

impl Target {
    fn addr(&self) -> std::net::SocketAddr {
        match self {
            Target::Nginx(n) => n.addr(),
            Target::Warren(s) => s.addr(),
        }
    }

    fn url(&self, file: &str) -> String {
        format!("http://{}/{file}", self.addr())
    }

    fn pid(&self) -> i32 {
        match self {
            Target::Nginx(n) => n.pid(),
            Target::Warren(s) => s.pid(),
        }
    }
}

/// `warren bench http`.
pub fn http(args: &HttpArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let models = if args.models.is_empty() {
        vec![Model::Event, Model::Hybrid, Model::Thread, Model::Pool]
    } else {
        args.models.clone()
    };
    let conns = if args.connections.is_empty() { vec![1, 50, 256, 1000] } else { args.connections.clone() };
    ensure!(conns.iter().all(|c| (1..=10_000).contains(c)), "--connections must be 1 to 10000 each");
    ensure!((1..=20).contains(&args.runs), "--runs must be 1 to 20");
    ensure!((1..=60).contains(&args.duration.as_secs()), "--duration must be 1s to 60s");
    let nofile = host::raise_nofile().unwrap_or_else(|_| Machine::read().nofile);
    let most = conns.iter().copied().max().unwrap_or(0).max(args.idle) as u64;
    ensure!(most + 200 <= nofile, "{most} connections need more descriptors than the limit ({nofile})");
    let (nginx_bin, wrk_bin) = nginx::ensure_tools()?;
    let machine = Machine::read();
    let background = host::background_load(Duration::from_millis(500));
    let pinned = machine.cpus > SERVER_CPU;
    let (server_cpu, load_cpu) = if pinned { (Some(SERVER_CPU), Some(LOAD_CPU)) } else { (None, None) };
    let scratch = nginx::site()?;
    let exe = crate::warren_exe()?;
    let progress =
        |what: &str| crate::progress::bench_line(&format!("bench: [{:>5.1}s] {what}", started.elapsed().as_secs_f64()));

    // Every server runs for the whole bench, idle while another is measured.
    let mut names = vec!["nginx".to_owned()];
    let mut targets: Vec<Result<Target, String>> = vec![
        Nginx::start_logging(&nginx_bin, &scratch, server_cpu, args.access_log)
            .map(Target::Nginx)
            .map_err(|e| format!("{e:#}")),
    ];
    for &model in &models {
        names.push(format!("warren {model}"));
        let access_log = args.access_log.then(|| scratch.dir.join(format!("access-{model}.log")));
        targets.push(start_warren(&exe, &scratch, model, server_cpu, access_log).map(Target::Warren));
    }
    let scenarios: Vec<Scenario> = ["1k.bin", "1m.bin"]
        .into_iter()
        .flat_map(|file| [false, true].map(|close| (file, close)))
        .flat_map(|(file, close)| conns.iter().map(move |&c| Scenario { file, close, conns: c }))
        .collect();
    let mut rows: Vec<ServerRow> = names
        .iter()
        .zip(&targets)
        .map(|(name, t)| ServerRow {
            name: name.clone(),
            cells: vec![Cell::default(); scenarios.len()],
            problems: t.as_ref().err().cloned().into_iter().collect(),
            ..ServerRow::default()
        })
        .collect();

    let mut turn = 0;
    for run in 0..args.runs {
        for (s, scenario) in scenarios.iter().enumerate() {
            // Rotate the order so no server always goes first after a scenario change.
            turn += 1;
            for k in 0..targets.len() {
                let i = (k + turn) % targets.len();
                let Ok(target) = &targets[i] else { continue };
                let sampler = Sampler::start(target.pid()).ok();
                let (cpu_before, began) = (probe::cpu_seconds(target.pid()), Instant::now());
                let result = wrk::run(
                    &wrk_bin,
                    load_cpu,
                    &target.url(scenario.file),
                    scenario.conns,
                    args.duration,
                    scenario.close,
                );
                let server_cpu = probe::cpu_seconds(target.pid()) - cpu_before;
                let wall = began.elapsed().as_secs_f64();
                let peak = sampler.map(|s| s.take_peak(target.pid())).unwrap_or_else(|| probe::snapshot(target.pid()));
                rows[i].rss_kib = rows[i].rss_kib.max(peak.rss_kib);
                match result {
                    Ok(wrk) => {
                        let run_result = Run { wrk, server_cpu, wall };
                        progress(&format!(
                            "run {}/{} {}: {} {:.0} req/s, {:.0} per server CPU-second ({:.0}% busy), p99 {:.2} ms, \
                             {} errors",
                            run + 1,
                            args.runs,
                            scenario.label(),
                            names[i],
                            run_result.wrk.rate,
                            run_result.per_cpu_second().unwrap_or(0.0),
                            run_result.busy() * 100.0,
                            run_result.wrk.p99_ms,
                            run_result.wrk.errors()
                        ));
                        rows[i].cells[s].runs.push(run_result);
                    }
                    Err(e) => {
                        progress(&format!("{} {}: {e:#}", names[i], scenario.label()));
                        rows[i].problems.push(format!("{}: {e:#}", scenario.label()));
                    }
                }
            }
        }
    }
    for (row, target) in rows.iter_mut().zip(&targets) {
        if let Ok(Target::Warren(server)) = target
            && !server.running()
        {
            row.problems.push(format!("server exited: {}", server.output()));
        }
    }
    // Stop the throughput servers before the idle test, so it measures each alone.
    drop(targets);

    let mut idle_rows = Vec::new();
    if args.idle > 0 {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let wanted: [(&str, Option<Model>); 2] = [("nginx", None), ("warren event", Some(Model::Event))];
        for (name, model) in wanted {
            progress(&format!("{name}: {} idle keep-alive connections", args.idle));
            let target = match model {
                None => Nginx::start(&nginx_bin, &scratch, server_cpu).map(Target::Nginx).map_err(|e| format!("{e:#}")),
                Some(m) => start_warren(&exe, &scratch, m, server_cpu, None).map(Target::Warren),
            };
            let outcome = target.map(|target| {
                let before = probe::snapshot(target.pid()).rss_kib;
                let (idle, held) = rt.block_on(wrk::hold(target.addr(), args.idle, "/1k.bin", 1024));
                std::thread::sleep(Duration::from_millis(300));
                let after = probe::snapshot(target.pid()).rss_kib;
                rt.block_on(async move { drop(held) });
                (idle, before, after)
            });
            idle_rows.push((name.to_owned(), outcome));
        }
    }

    let report = Report {
        machine: format!(
            "{} CPUs ({}), Linux {}, {:.1} GiB RAM, open-files limit {nofile}; busy before the bench: {}",
            machine.cpus,
            machine.cpu_model,
            machine.kernel,
            machine.memory_gib,
            background.iter().enumerate().map(|(i, p)| format!("CPU {i} {p:.0}%")).collect::<Vec<_>>().join(", ")
        ),
        pinning: if pinned {
            format!("servers `taskset`/affinity CPU {SERVER_CPU}, `taskset -c {LOAD_CPU} wrk -t1`")
        } else {
            "not pinned (one CPU)".into()
        },
        nginx: Nginx::version(&nginx_bin),
        settings: format!(
            "{} per wrk run, {} run(s) per server and scenario, interleaved; idle test {} connections{}",
            humantime::format_duration(Duration::from_secs(args.duration.as_secs())),
            args.runs,
            args.idle,
            if args.access_log {
                "; access logs on (nginx `access_log FILE combined`, warren `--access-log FILE`)"
            } else {
                ""
            }
        ),
        command: std::iter::once("warren".to_owned()).chain(std::env::args().skip(1)).collect::<Vec<_>>().join(" "),
        elapsed: started.elapsed(),
        scenarios,
        rows,
        idle: idle_rows,
    };
    let markdown = httpreport::markdown(&report);
    crate::results::write(&args.out, "http", &markdown, &httpreport::chart(&report))?;
    Ok(())
}

fn start_warren(
    exe: &std::path::Path,
    scratch: &Scratch,
    model: Model,
    cpu: Option<usize>,
    access_log: Option<PathBuf>,
) -> Result<Server, String> {
    let root = nginx::root(scratch).display().to_string();
    let mut args: Vec<String> =
        ["http", "--model", model.name(), "--root", &root, "--listen", "127.0.0.1:0", "-d", "0"]
            .map(String::from)
            .into();
    if model != Model::Fork {
        args.extend(["--max-conns".into(), "20000".into()]);
    }
    if let Some(log) = access_log {
        args.extend(["--access-log".into(), log.display().to_string()]);
    }
    let cpus = match cpu.map(CpuSet::only) {
        Some(Ok(set)) => Some(set),
        Some(Err(e)) => return Err(format!("cannot pin to CPU {cpu:?}: {e}")),
        None => None,
    };
    Server::start(exe, &args, cpus).map_err(|e| format!("{e:#}"))
}
