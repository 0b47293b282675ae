//! `warren bench superd`: new connections per second when every connection starts a program,
//! under warren's node, xinetd and tcpserver (Debian's `xinetd` and `ucspi-tcp`, installed with
//! apt-get when missing), side by side in one run.
//!
//! All three start the same tiny responder with every rate limit lifted: xinetd `cps`,
//! `instances` and `per_source`; tcpserver `-c`; no per-connection logging anywhere. By default
//! the responder is `tiny-responder` (`crates/node/src/bin/tiny-responder.c`, compiled here with
//! gcc into a static ELF without libc: one `write`, one `exit_group`), so that the servers' own
//! spawn cost is what differs; a dynamically linked program's start-up (the loader, libc, a
//! runtime) is the same under every server and would hide it. `--responder` picks another. Servers and their children
//! run on CPU 1, the load generator (blocking client threads) on CPU 0. A connection's latency
//! runs from `connect` to the end of the responder's output: the spawn latency a client sees.
//! Runs are interleaved across servers; the table gives medians with min–max.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use crate::chart::BarChart;
use crate::hist::Histogram;
use crate::host::{CpuSet, Machine, Pinning};
use crate::nginx;
use crate::report::{median, thousands};

/// Options of `warren bench superd`.
#[derive(Debug, Args)]
pub struct SuperdArgs {
    /// Length of each run.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    pub duration: Duration,
    /// Runs per server, interleaved.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Client threads, each connecting, reading to the end and connecting again.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// The program each connection starts, with its arguments, e.g. "/bin/busybox echo hi";
    /// `tiny` (the default) is tiny-responder, a static program without libc compiled with gcc
    /// at run time; `warren-responder` is the Rust one built next to this binary.
    #[arg(long, default_value = "tiny")]
    pub responder: String,
    /// Directory for superd.md.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
}

/// One server under test, running until dropped.
struct Server {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        crate::server::terminate(&mut self.child);
    }
}

#[derive(Default)]
struct Run {
    rate: f64,
    errors: u64,
    latency: Histogram,
}

/// `warren bench superd`.
pub fn superd(args: &SuperdArgs) -> anyhow::Result<()> {
    let scratch = nginx::site()?;
    let responder = Responder::choose(&args.responder, &scratch.dir)?;
    let (xinetd, tcpserver) = ensure_tools()?;
    let machine = Machine::read();
    let mut pinning = Pinning::apply(true, machine.cpus);
    let cpus = pinning.server_cpus(false);
    let mut servers = [
        start_warren(&scratch.dir, &responder, cpus)?,
        start_xinetd(&xinetd, &scratch.dir, &responder, cpus)?,
        start_tcpserver(&tcpserver, &responder, cpus)?,
    ];
    pinning.observed(crate::probe::cpus_allowed(servers[0].child.id() as i32));
    let mut runs: Vec<Vec<Run>> = servers.iter().map(|_| Vec::new()).collect();
    for round in 0..args.runs {
        for (i, server) in servers.iter_mut().enumerate() {
            let run = measure(server.addr, args.connections, args.duration);
            crate::progress::bench_line(&format!(
                "bench superd: run {}/{} {:<9} {:>7.0} conn/s, {} errors",
                round + 1,
                args.runs,
                server.name,
                run.rate,
                run.errors
            ));
            runs[i].push(run);
        }
    }
    let table = report(&servers, &runs, args, &responder, &machine, &pinning);
    crate::results::write(&args.out, "superd", &table, &chart(&servers, &runs, &responder))?;
    Ok(())
}

/// Connections per second, one bar per server.
fn chart(servers: &[Server], runs: &[Vec<Run>], responder: &Responder) -> BarChart {
    BarChart {
        title: "Superservers: a program started per connection".into(),
        unit: "conn/s".into(),
        series: vec!["connections per second (median)".into()],
        groups: servers
            .iter()
            .zip(runs)
            .map(|(s, r)| (s.name.to_string(), vec![Some(median(&r.iter().map(|r| r.rate).collect::<Vec<_>>()))]))
            .collect(),
        note: format!("each connection starts {}; servers on one CPU, clients on the other", responder.label),
        ..BarChart::default()
    }
}

fn measure(addr: SocketAddr, connections: usize, duration: Duration) -> Run {
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let per_thread: Vec<(u64, u64, Histogram)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..connections)
            .map(|_| {
                scope.spawn(move || {
                    let (mut done, mut errors, mut latency) = (0u64, 0u64, Histogram::default());
                    let mut buf = Vec::with_capacity(256);
                    while Instant::now() < deadline {
                        let t0 = Instant::now();
                        let ok = TcpStream::connect(addr).and_then(|mut s| {
                            s.set_read_timeout(Some(Duration::from_secs(10)))?;
                            buf.clear();
                            s.read_to_end(&mut buf)
                        });
                        match ok {
                            Ok(n) if n > 0 => {
                                done += 1;
                                latency.record(t0.elapsed());
                            }
                            _ => errors += 1,
                        }
                    }
                    (done, errors, latency)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap_or_default()).collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let mut run = Run::default();
    for (done, errors, latency) in per_thread {
        run.rate += done as f64 / elapsed;
        run.errors += errors;
        run.latency.merge(&latency);
    }
    run
}

/// The program started per connection.
struct Responder {
    program: PathBuf,
    args: Vec<String>,
    /// What the report calls it.
    label: String,
}

/// tiny-responder's source, compiled by the bench (Cargo builds no C).
const TINY_SOURCE: &str = include_str!("../../node/src/bin/tiny-responder.c");

impl Responder {
    /// `tiny`, `warren-responder`, or a program with its arguments.
    fn choose(word: &str, scratch: &Path) -> anyhow::Result<Responder> {
        let words: Vec<String> = word.split_whitespace().map(String::from).collect();
        let Some(first) = words.first() else { bail!("--responder is empty") };
        let (program, label) = match first.as_str() {
            "tiny" => (
                build_tiny(scratch)?,
                "tiny-responder (static, no libc: crates/node/src/bin/tiny-responder.c)".to_string(),
            ),
            "warren-responder" => {
                let path = crate::warren_exe()?.with_file_name("warren-responder");
                let label = format!("warren-responder (Rust, dynamically linked: {})", path.display());
                (path, label)
            }
            path => (PathBuf::from(path), path.to_string()),
        };
        if !program.is_file() {
            bail!("{} is missing (warren-responder: `cargo build --release -p warren-node`)", program.display());
        }
        let label = std::iter::once(label).chain(words[1..].iter().cloned()).collect::<Vec<_>>().join(" ");
        Ok(Responder { program, args: words[1..].to_vec(), label })
    }
}

/// Compile tiny-responder into `dir` with gcc (installed with apt-get if missing).
fn build_tiny(dir: &Path) -> anyhow::Result<PathBuf> {
    let [gcc] = crate::host::ensure_programs(["gcc"], &["gcc"], "superd")?;
    let source = dir.join("tiny-responder.c");
    let program = dir.join("tiny-responder");
    std::fs::write(&source, TINY_SOURCE)?;
    let status = Command::new(gcc)
        .args(["-Os", "-static", "-nostdlib", "-fno-pie", "-no-pie", "-fno-stack-protector", "-s", "-o"])
        .arg(&program)
        .arg(&source)
        .status()?;
    if !status.success() {
        bail!("gcc could not build tiny-responder ({status}); pick another with --responder");
    }
    Ok(program)
}

fn report(
    servers: &[Server],
    runs: &[Vec<Run>],
    args: &SuperdArgs,
    responder: &Responder,
    machine: &Machine,
    pinning: &Pinning,
) -> String {
    let rates: Vec<Vec<f64>> = runs.iter().map(|r| r.iter().map(|r| r.rate).collect()).collect();
    let medians: Vec<f64> = rates.iter().map(|r| median(r)).collect();
    let ratio =
        |i: usize, j: usize| if medians[j] > 0.0 { format!("{:.2}×", medians[i] / medians[j]) } else { "–".into() };
    let mut out = format!(
        "# warren bench superd\n\nA new connection per request, each starting {}. \
         {} client threads on CPU 0, servers on CPU 1; {} runs of {} per server, interleaved; rate limits lifted.\n\n\
         Machine: {} × {}, Linux {}. Pinning: {}.\n\n\
         | server | conn/s (median) | min–max | spawn latency p50 | p99 | errors | vs xinetd | vs tcpserver |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
        responder.label,
        args.connections,
        args.runs,
        humantime::format_duration(args.duration),
        machine.cpus,
        machine.cpu_model,
        machine.kernel,
        pinning.describe()
    );
    for (i, server) in servers.iter().enumerate() {
        let mut latency = Histogram::default();
        runs[i].iter().for_each(|r| latency.merge(&r.latency));
        let ms = |p: f64| latency.percentile(p).map_or("–".into(), |us| format!("{:.2} ms", us as f64 / 1000.0));
        let (min, max) = rates[i].iter().fold((f64::MAX, 0.0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
        out += &format!(
            "| {} | {} | {}–{} | {} | {} | {} | {} | {} |\n",
            server.name,
            thousands(medians[i]),
            thousands(min),
            thousands(max),
            ms(50.0),
            ms(99.0),
            runs[i].iter().map(|r| r.errors).sum::<u64>(),
            ratio(i, 1),
            ratio(i, 2)
        );
    }
    out
}

/// xinetd and tcpserver, installed with apt-get if missing.
fn ensure_tools() -> anyhow::Result<(PathBuf, PathBuf)> {
    let [xinetd, tcpserver] =
        crate::host::ensure_programs(["xinetd", "tcpserver"], &["xinetd", "ucspi-tcp"], "superd")?;
    Ok((xinetd, tcpserver))
}

/// A server command pinned to the server CPU and stopped if the bench dies.
fn pinned(program: &Path, cpus: Option<CpuSet>) -> Command {
    let mut command = Command::new(program);
    command.stdin(Stdio::null());
    // SAFETY: the closure runs between fork and exec and makes only async-signal-safe system
    // calls (prctl, sched_setaffinity); it allocates nothing and takes no lock.
    unsafe {
        command.pre_exec(move || {
            let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
            if let Some(cpus) = &cpus {
                let _ = cpus.apply();
            }
            Ok(())
        });
    }
    command
}

fn start_warren(dir: &Path, responder: &Responder, cpus: Option<CpuSet>) -> anyhow::Result<Server> {
    let conf = dir.join("warren.toml");
    let toml = format!(
        "status = \"off\"\n[[service]]\nname = \"bench\"\nport = 0\nserver = \"{}\"\nserver_args = {:?}\nlog_on_success = []\nlog_on_failure = []\n",
        responder.program.display(),
        responder.args
    );
    std::fs::write(&conf, toml)?;
    let mut command = pinned(&crate::warren_exe()?, cpus);
    let mut child = command.arg("up").arg("-c").arg(&conf).stdout(Stdio::piped()).spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("warren: serving bench (tcp)").and_then(|l| l.rsplit(' ').next()?.parse().ok()))
        .context("warren up printed no readiness line")?;
    // Keep reading so that the node never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Ok(Server { name: "warren", child, addr })
}

fn start_xinetd(xinetd: &Path, dir: &Path, responder: &Responder, cpus: Option<CpuSet>) -> anyhow::Result<Server> {
    let port = warren_testkit::free_port()?;
    let conf = dir.join("xinetd.conf");
    std::fs::write(
        &conf,
        format!(
            "defaults\n{{\n\tinstances = UNLIMITED\n\tper_source = UNLIMITED\n\tcps = 1000000 1\n\tlog_type = FILE /dev/null\n}}\n\
             service bench\n{{\n\ttype = UNLISTED\n\tport = {port}\n\tbind = 127.0.0.1\n\tsocket_type = stream\n\tprotocol = tcp\n\t\
             wait = no\n\tuser = {}\n\tserver = {}\n{}\tlog_on_success =\n\tlog_on_failure =\n}}\n",
            nix::unistd::User::from_uid(nix::unistd::geteuid())?.map_or("root".into(), |u| u.name),
            responder.program.display(),
            if responder.args.is_empty() {
                String::new()
            } else {
                format!("\tserver_args = {}\n", responder.args.join(" "))
            }
        ),
    )?;
    let mut command = pinned(xinetd, cpus);
    command.args(["-dontfork", "-f"]).arg(&conf).arg("-pidfile").arg(dir.join("xinetd.pid"));
    let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_until_accepting(addr, "xinetd")?;
    Ok(Server { name: "xinetd", child, addr })
}

fn start_tcpserver(tcpserver: &Path, responder: &Responder, cpus: Option<CpuSet>) -> anyhow::Result<Server> {
    let mut command = pinned(tcpserver, cpus);
    // -1 prints the port; -H -R -l0: no DNS or ident lookups; -D: TCP_NODELAY; -c: lifted limit.
    command
        .args(["-1", "-H", "-R", "-l0", "-D", "-c", "100000", "-b", "1024", "127.0.0.1", "0"])
        .arg(&responder.program)
        .args(&responder.args);
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let port: u16 = line.trim().parse().with_context(|| format!("tcpserver -1 printed {line:?}"))?;
    Ok(Server { name: "tcpserver", child, addr: SocketAddr::from(([127, 0, 0, 1], port)) })
}

fn wait_until_accepting(addr: SocketAddr, name: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{name} did not accept on {addr} within 10 s")
}
