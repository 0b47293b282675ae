//! `warren bench registry`: the registry's embedded store against etcd (Debian's
//! `etcd-server`, one node, on this machine, in the same run), each through its own client, and
//! the DNS front end under `dnsperf`.
//!
//! Both servers run on CPU 1 (warren's registry on a pinned thread of this process, etcd as a
//! pinned child); the load runs on CPU 0 from one tokio thread with `--concurrency` requests in
//! flight. For each operation the runs alternate between the two servers, `--runs` times:
//!
//! - **register**: warren `register` (name, endpoint, lease, durable) against etcd's
//!   `LeaseGrant` + `Put` with that lease (the two calls a registration is in etcd);
//! - **renew**: warren `renew` against etcd `LeaseKeepAlive` on a stream per lease;
//! - **lookup**: warren `lookup` against a linearizable etcd `Range` over the name's prefix;
//! - **watch latency**: one write at a time, from the write being sent to 1, 100 and 10,000
//!   watchers on other connections having its event ([`watch`]).

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use etcd_client::{GetOptions, PutOptions};
use warren_registry::client::Client;
use warren_registry::model::{Endpoint, LeaseId, Name};
use warren_testkit::LocalEtcd;

use crate::chart::BarChart;
use crate::hist::Histogram;
use crate::host::{CpuSet, LOAD_CPU, Machine, SERVER_CPU};

mod watch;

/// Options of `warren bench registry`.
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Length of each rate run.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub duration: Duration,
    /// Runs per server and operation, alternating; the table shows the median and min–max.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Requests in flight at once, per server.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Writes timed one at a time for the watch latency with 1 and 100 watchers; with 10,000,
    /// a fiftieth of it (at least 200), so that the part stays under a minute.
    #[arg(long, default_value_t = 2000)]
    pub watch_samples: usize,
    /// Length of the dnsperf run (whole seconds); 0 skips it.
    #[arg(long, default_value_t = 5)]
    pub dns_seconds: u32,
    /// Directory for registry.md and registry.svg.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
}

/// One server's figures for one operation, over its runs.
#[derive(Debug, Default)]
struct Rates(Vec<f64>);

impl Rates {
    fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    }

    fn cell(&self, peer: f64) -> String {
        let (lo, hi) = self.0.iter().fold((f64::MAX, 0.0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
        let ratio = if peer > 0.0 { format!(" ({:.2}×)", self.median() / peer) } else { String::new() };
        format!("{:.0}/s{ratio} [{:.0}–{:.0}]", self.median(), lo, hi)
    }
}

/// `warren bench registry`.
pub fn registry(args: &RegistryArgs) -> anyhow::Result<()> {
    anyhow::ensure!((1..=20).contains(&args.runs), "--runs must be 1 to 20");
    anyhow::ensure!((1..=4096).contains(&args.concurrency), "--concurrency must be 1 to 4096");
    anyhow::ensure!((1..=60).contains(&args.duration.as_secs()), "--duration must be 1s to 60s");
    let started = Instant::now();
    let machine = Machine::read();
    let pinned = machine.cpus > SERVER_CPU;
    let etcd_bin = ensure_etcd()?;
    let scratch = std::env::temp_dir().join(format!("warren-bench-registry-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let _cleanup = RemoveOnDrop(scratch.clone());

    let server_cpu = if pinned { Some(CpuSet::only(SERVER_CPU)?) } else { None };
    let mut etcd = Etcd::start(&etcd_bin, &scratch.join("etcd"), server_cpu)?;
    let warren = WarrenServer::start(&scratch.join("warren"), server_cpu)?;
    if pinned {
        CpuSet::only(LOAD_CPU)?.apply().context("pinning the load generator")?;
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let progress =
        |what: &str| crate::progress::bench_line(&format!("bench: [{:>5.1}s] {what}", started.elapsed().as_secs_f64()));

    let report = rt.block_on(async {
        let wc = Client::connect(warren.addr, Duration::from_secs(5)).await?;
        let ec = etcd.connect().await?;
        let mut table = Vec::new();
        for op in [Op::Register, Op::Renew, Op::Lookup] {
            let (mut w, mut e) = (Rates::default(), Rates::default());
            let prepared_w = prepare_warren(&wc, op, args.concurrency).await?;
            let prepared_e = prepare_etcd(&ec, op, args.concurrency).await?;
            for run in 0..args.runs {
                let r = rate(args.duration, args.concurrency, |i, n| run_warren(&wc, op, &prepared_w, i, n)).await?;
                progress(&format!("run {}/{} {op:?}: warren {r:.0}/s", run + 1, args.runs));
                w.0.push(r);
                let r = rate(args.duration, args.concurrency, |i, n| run_etcd(&ec, op, &prepared_e, i, n)).await?;
                progress(&format!("run {}/{} {op:?}: etcd {r:.0}/s", run + 1, args.runs));
                e.0.push(r);
            }
            table.push((op, w, e));
        }
        let mut watches = Vec::new();
        for watchers in watch::WATCHERS {
            let samples = watch::samples_for(args.watch_samples, watchers);
            progress(&format!("watch latency, {watchers} watchers, {samples} writes: warren"));
            let w = watch::measure(&watch::Target::Warren(warren.addr), watchers, samples).await?;
            progress(&format!("watch latency, {watchers} watchers, {samples} writes: etcd"));
            let e = watch::measure(&watch::Target::Etcd(etcd.url.clone()), watchers, samples).await?;
            watches.push((watchers, w, e));
        }
        anyhow::Ok((table, watches))
    })?;
    let (table, watches) = report;

    let dns = if args.dns_seconds > 0 {
        progress("dnsperf against warren's DNS (a name with 10 addresses)");
        Some(crate::run_dnsperf(warren.dns, "bench.warren.", args.dns_seconds, pinned.then_some(LOAD_CPU)))
    } else {
        None
    };
    etcd.stop();

    let mut md = String::new();
    writeln!(md, "# warren bench registry\n")?;
    writeln!(md, "- Machine: {} CPUs ({}), {:.1} GiB RAM", machine.cpus, machine.cpu_model, machine.memory_gib)?;
    writeln!(
        md,
        "- Servers: warren registry (embedded store, group-committed redb, health checks on) and {} (one node, \
         data on the same disk), both on CPU {SERVER_CPU}; load from one tokio thread on CPU {LOAD_CPU}",
        etcd.version
    )?;
    writeln!(
        md,
        "- {} requests in flight per server, {:?} per run, {} runs alternating; watch latency over {} writes",
        args.concurrency, args.duration, args.runs, args.watch_samples
    )?;
    writeln!(md, "- Command: `warren bench registry`, took {:.0} s\n", started.elapsed().as_secs_f64())?;
    writeln!(md, "| operation | warren (ratio to etcd) | etcd |\n|---|---|---|")?;
    for (op, w, e) in &table {
        writeln!(md, "| {} | {} | {} |", op.label(), w.cell(e.median()), e.cell(0.0))?;
    }
    write_watches(&mut md, &watches)?;
    match dns {
        Some(Ok(r)) => writeln!(
            md,
            "\nDNS (dnsperf, {} s, A query for a name with 10 addresses): {:.0} queries/s, {} lost, \
             average latency {:?}",
            args.dns_seconds, r.queries_per_second, r.queries_lost, r.latency_avg
        )?,
        Some(Err(e)) => writeln!(md, "\nDNS: dnsperf failed: {e}")?,
        None => {}
    }
    let chart = BarChart {
        title: "The registry against etcd: operations per second".into(),
        unit: "ops/s".into(),
        series: vec!["warren registry".into(), etcd.version.clone()],
        groups: table
            .iter()
            .map(|(op, w, e)| (op.label().to_owned(), vec![Some(w.median()), Some(e.median())]))
            .collect(),
        note: format!("{} requests in flight per server, median over {} runs", args.concurrency, args.runs),
        ..BarChart::default()
    };
    crate::results::write(&args.out, "registry", &md, &chart)?;
    Ok(())
}

/// The watch table: per watcher count, p50 / p99 of each delay and warren's ratio to etcd.
fn write_watches(md: &mut String, watches: &[(usize, watch::Fanout, watch::Fanout)]) -> std::fmt::Result {
    let us = |h: &Histogram, p: f64| h.percentile(p).map_or("–".into(), |v| format!("{v}"));
    let ratio = |w: &Histogram, e: &Histogram, p: f64| match (w.percentile(p), e.percentile(p)) {
        (Some(w), Some(e)) if e > 0 => format!("{:.2}×", w as f64 / e as f64),
        _ => "–".into(),
    };
    writeln!(
        md,
        "\nWatch latency, µs, p50 / p99 over the timed writes (one at a time), from the write being sent; \
         *last*: every watcher has the event; *median*: half of them have it; *ack*: the writer has its \
         acknowledgement. Watchers: {} per connection (warren) or per watch stream (etcd).\n",
        watch::PER_CONNECTION
    )?;
    writeln!(
        md,
        "| watchers | writes | delay | warren | etcd | warren ÷ etcd (p50, p99) |\n|---|---|---|---|---|---|"
    )?;
    for (watchers, w, e) in watches {
        for (what, wh, eh) in [("last", &w.last, &e.last), ("median", &w.median, &e.median), ("ack", &w.ack, &e.ack)] {
            writeln!(
                md,
                "| {watchers} | {} | {what} | {} / {} | {} / {} | {}, {} |",
                w.writes,
                us(wh, 50.0),
                us(wh, 99.0),
                us(eh, 50.0),
                us(eh, 99.0),
                ratio(wh, eh, 50.0),
                ratio(wh, eh, 99.0)
            )?;
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Register,
    Renew,
    Lookup,
}

impl Op {
    fn label(self) -> &'static str {
        match self {
            Op::Register => "register (durable write + lease)",
            Op::Renew => "lease renewal",
            Op::Lookup => "lookup",
        }
    }
}

/// Runs `call(task, n)` from `concurrency` tasks for `duration`; completed calls per second.
async fn rate<F, Fut>(duration: Duration, concurrency: usize, call: F) -> anyhow::Result<f64>
where
    F: Fn(usize, u64) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let start = Instant::now();
    let deadline = start + duration;
    let call = &call;
    let tasks = (0..concurrency).map(|i| async move {
        let mut n = 0u64;
        while Instant::now() < deadline {
            call(i, n).await?;
            n += 1;
        }
        anyhow::Ok(n)
    });
    let done: u64 = futures_util::future::try_join_all(tasks).await?.into_iter().sum();
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

const TOKEN: &str = "bench-token";

fn endpoint(i: usize, n: u64) -> Endpoint {
    Endpoint::tcp(SocketAddr::from(([127, 0, (i % 250) as u8, 1], (n % 60_000) as u16 + 1)))
}

type Keeper = tokio::sync::Mutex<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream)>;

/// Per task: the lease it renews (with etcd, over its own keep-alive stream), or the name it
/// looks up.
#[derive(Default)]
struct Prepared {
    leases: Vec<u128>,
    keepers: Vec<Keeper>,
    names: Vec<Name>,
}

async fn prepare_warren(c: &Client, op: Op, tasks: usize) -> anyhow::Result<Prepared> {
    let mut p = Prepared::default();
    for i in 0..tasks {
        let name = Name::new(format!("bench.w{i}"))?;
        match op {
            Op::Renew => {
                let lease = c.register(&name, TOKEN, endpoint(i, 0), Duration::from_secs(600)).await?;
                p.leases.push(lease.id.0);
            }
            Op::Lookup => {
                c.rebind(&name, TOKEN, (0..10).map(|n| endpoint(i, n)).collect()).await?;
                p.names.push(name);
            }
            Op::Register => {}
        }
    }
    Ok(p)
}

async fn run_warren(c: &Client, op: Op, p: &Prepared, i: usize, n: u64) -> anyhow::Result<()> {
    match op {
        Op::Register => {
            let name = Name::new(format!("bench.r{i}.n{}", n % 50))?;
            c.register(&name, TOKEN, endpoint(i, n), Duration::from_secs(600)).await?;
        }
        Op::Renew => {
            c.renew(LeaseId(p.leases[i]), TOKEN).await?;
        }
        Op::Lookup => {
            c.lookup(&p.names[i]).await?;
        }
    }
    Ok(())
}

async fn prepare_etcd(c: &etcd_client::Client, op: Op, tasks: usize) -> anyhow::Result<Prepared> {
    let mut p = Prepared::default();
    let mut client = c.clone();
    for i in 0..tasks {
        match op {
            Op::Renew => {
                let lease = client.lease_grant(600, None).await?;
                client.put(format!("/bench/w{i}/a"), "x", Some(PutOptions::new().with_lease(lease.id()))).await?;
                p.keepers.push(tokio::sync::Mutex::new(client.lease_keep_alive(lease.id()).await?));
                p.leases.push(lease.id() as u128);
            }
            Op::Lookup => {
                for n in 0..10 {
                    let e = serde_json::to_vec(&endpoint(i, n))?;
                    client.put(format!("/bench/l{i}/{n}"), e, None).await?;
                }
                p.names.push(Name::new(format!("l{i}"))?);
            }
            Op::Register => {}
        }
    }
    Ok(p)
}

async fn run_etcd(c: &etcd_client::Client, op: Op, p: &Prepared, i: usize, n: u64) -> anyhow::Result<()> {
    let mut client = c.clone();
    match op {
        Op::Register => {
            let lease = client.lease_grant(600, None).await?;
            let e = serde_json::to_vec(&endpoint(i, n))?;
            let key = format!("/bench/r{i}/n{}/{}", n % 50, n);
            client.put(key, e, Some(PutOptions::new().with_lease(lease.id()))).await?;
        }
        Op::Renew => {
            let mut guard = p.keepers[i].lock().await;
            let (keeper, stream) = &mut *guard;
            keeper.keep_alive().await?;
            stream.message().await?.context("etcd ended the keep-alive stream")?;
        }
        Op::Lookup => {
            client.get(format!("/bench/{}/", p.names[i]), Some(GetOptions::new().with_prefix())).await?;
        }
    }
    Ok(())
}

/// warren's registry (embedded store, health checks, DNS) on a thread pinned to the server CPU.
struct WarrenServer {
    addr: SocketAddr,
    dns: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WarrenServer {
    fn start(dir: &std::path::Path, cpu: Option<CpuSet>) -> anyhow::Result<WarrenServer> {
        use warren_registry::backend::Backend;
        let dir = dir.to_owned();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            if let Some(cpu) = cpu {
                let _ = cpu.apply();
            }
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let started = async {
                    let store = warren_registry_server::embedded::Embedded::open(&dir, Default::default(), None)?;
                    let inner: Arc<dyn Backend> = Arc::new(store);
                    let backend = Arc::new(warren_registry_server::health::Checked::new(inner).await?);
                    let name = Name::new("bench")?;
                    let ten: Vec<Endpoint> =
                        (0..10u8).map(|i| Endpoint::tcp(([127, 0, 1, i + 1], 80).into())).collect();
                    backend.rebind(&name, TOKEN, ten).await?;
                    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
                    let directory = Arc::new(warren_dns::RegistryDirectory(backend.clone()));
                    // Threads inherit the mask: the DNS thread runs on the server CPU too.
                    let dns = warren_dns::Server::bind(
                        "127.0.0.1:0".parse().expect("an address"),
                        // dnsperf asks from one address far faster than any client may.
                        warren_dns::Config { rate_limit: warren_dns::RateLimit::OFF, ..warren_dns::Config::default() },
                        directory,
                    )?;
                    anyhow::Ok((backend, listener, dns))
                };
                match started.await {
                    Ok((backend, listener, dns)) => {
                        let _ = ready_tx.send(Ok((listener.local_addr().expect("bound"), dns.local_addr())));
                        let shutdown = async {
                            let _ = stopped.await;
                        };
                        let model = warren_models::Model::Hybrid;
                        let served = warren_registry_server::server::serve(
                            backend,
                            listener,
                            Default::default(),
                            model,
                            shutdown,
                        );
                        if let Err(e) = served.await {
                            eprintln!("bench registry: the server stopped: {e}");
                        }
                        dns.shutdown();
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
        });
        let (addr, dns) = ready.recv().context("the registry thread died")??;
        Ok(WarrenServer { addr, dns, stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for WarrenServer {
    fn drop(&mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A one-node etcd, pinned to the server CPU, its data in `dir`.
struct Etcd {
    local: Option<LocalEtcd>,
    url: String,
    version: String,
}

impl Etcd {
    fn start(bin: &std::path::Path, dir: &std::path::Path, cpu: Option<CpuSet>) -> anyhow::Result<Etcd> {
        use std::os::unix::process::CommandExt;
        let version = std::process::Command::new(bin).arg("--version").output().map_or_else(
            |_| "etcd".into(),
            |o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("etcd").to_owned(),
        );
        let (mut cmd, url) = LocalEtcd::command(bin, dir)?;
        if let Some(cpu) = cpu {
            // SAFETY: sched_setaffinity is async-signal-safe; nothing else runs between fork and exec.
            unsafe { cmd.pre_exec(move || cpu.apply()) };
        }
        let local =
            LocalEtcd::spawn(cmd, url.clone(), dir).with_context(|| format!("cannot start {}", bin.display()))?;
        Ok(Etcd { local: Some(local), url, version: version.replace("etcd Version:", "etcd").trim().to_owned() })
    }

    async fn connect(&self) -> anyhow::Result<etcd_client::Client> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let connected = etcd_client::Client::connect([&self.url], None).await;
            let answering = match connected {
                Ok(mut client) => client.status().await.is_ok().then_some(client),
                Err(_) => None,
            };
            match answering {
                Some(client) => return Ok(client),
                _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                _ => bail!("etcd at {} did not answer within 20 s", self.url),
            }
        }
    }

    fn stop(&mut self) {
        self.local = None;
    }
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// etcd from Debian's `etcd-server`, installed with apt-get if missing.
fn ensure_etcd() -> anyhow::Result<std::path::PathBuf> {
    let [etcd] = crate::host::ensure_programs(["etcd"], &["etcd-server"], "registry")?;
    Ok(etcd)
}
