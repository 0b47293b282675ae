//! `warren bench dns`: the registry's DNS beside Knot DNS and BIND 9 (Debian's packages), in the
//! same run, under the same `dnsperf` load.
//!
//! Each server answers the same name, `bench.warren.`, with the same 10 addresses: warren from a
//! `warren registry --dns` child where the name is bound to 10 endpoints (healthy: they carry no
//! check), Knot and BIND from a zone file (`dns/peers.rs`). Every server runs pinned to CPU 1 with
//! one UDP thread; dnsperf runs pinned to CPU 0, 100 queries in flight from one socket, for
//! `--seconds`, the servers taking turns, `--runs` times. Per run: dnsperf's queries per second
//! and lost queries, every response's latency (dnsperf's `-v`, for the p99), and the server's
//! CPU time (utime + stime from /proc) before and after, which gives queries per server
//! CPU-second: on two cores dnsperf often runs out first, and then the rate says more about
//! dnsperf than about the server, while the work per query is what the server costs.
//!
//! Before the runs each server is asked ten times directly: the report says whether its answers
//! hold all 10 addresses and whether the first address rotates.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::Args;
use warren_registry::client::Client;
use warren_registry::model::{Endpoint, Name};

use crate::chart::BarChart;
use crate::host::{CpuSet, LOAD_CPU, Machine, SERVER_CPU};
use crate::scratch::Scratch;
use crate::server::Server;

mod peers;

use peers::{Kind, Peer};

/// Options of `warren bench dns`.
#[derive(Debug, Args)]
pub struct DnsArgs {
    /// Length of each dnsperf run, in whole seconds.
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// Runs per server, taking turns; the table shows the median and min–max.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Directory for dns.md and dns.svg.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
}

/// The name every server answers, and how many addresses it has.
const LABEL: &str = "bench";
const QNAME: &str = "bench.warren.";
const ADDRESSES: u8 = 10;
/// The admin token of the bench's own registry (it listens on loopback for this run only).
const TOKEN: &str = "warren-bench-dns";

/// One server under test.
struct Contender {
    label: String,
    pid: i32,
    addr: SocketAddr,
    check: Check,
    runs: Vec<Run>,
}

/// What asking a server ten times showed.
#[derive(Debug, Default)]
struct Check {
    complete: bool,
    rotates: bool,
    size: usize,
}

/// One dnsperf run against one server.
#[derive(Debug)]
struct Run {
    rate: f64,
    per_cpu_second: f64,
    cpu_busy: f64,
    p99: Option<u64>,
    lost: u64,
}

/// `warren bench dns`.
pub fn dns(args: &DnsArgs) -> anyhow::Result<()> {
    ensure!((1..=60).contains(&args.seconds), "--seconds must be 1 to 60");
    ensure!((1..=20).contains(&args.runs), "--runs must be 1 to 20");
    let started = Instant::now();
    let machine = Machine::read();
    let pinned = machine.cpus > SERVER_CPU;
    let [knotd, named] = crate::host::ensure_programs(["knotd", "named"], &["knot", "bind9"], "dns")?;
    let addrs: Vec<Ipv4Addr> = (1..=ADDRESSES).map(|i| Ipv4Addr::new(127, 0, 1, i)).collect();
    let zone = peers::zone_file(LABEL, &addrs);
    let server_cpu = pinned.then_some(SERVER_CPU);
    let background = crate::host::background_load(Duration::from_millis(500));

    let scratch = Scratch::new("dns-registry", 0o700)?;
    let (warren, warren_dns) = start_warren(&scratch, &addrs, server_cpu)?;
    let knot = Peer::start(Kind::Knot, &knotd, &zone, server_cpu)?;
    let bind = Peer::start(Kind::Bind, &named, &zone, server_cpu)?;
    let mut contenders = vec![
        contender("warren".into(), warren.pid(), warren_dns, &addrs)?,
        contender(peers::version(Kind::Knot, &knotd), knot.pid(), knot.addr(), &addrs)?,
        contender(peers::version(Kind::Bind, &named), bind.pid(), bind.addr(), &addrs)?,
    ];
    let load_cpu = pinned.then_some(LOAD_CPU);
    for run in 0..args.runs {
        for contender in &mut contenders {
            let before = crate::probe::cpu_seconds(contender.pid);
            let (report, latencies) =
                crate::dnsperf::run_dnsperf_latencies(contender.addr, QNAME, args.seconds, load_cpu)
                    .with_context(|| format!("dnsperf against {}", contender.label))?;
            let cpu = crate::probe::cpu_seconds(contender.pid) - before;
            let result = Run {
                rate: report.queries_per_second,
                per_cpu_second: if cpu > 0.0 { report.queries_completed as f64 / cpu } else { 0.0 },
                cpu_busy: cpu / f64::from(args.seconds),
                p99: latencies.percentile(99.0),
                lost: report.queries_lost,
            };
            crate::progress::bench_line(&format!(
                "bench: [{:>5.1}s] run {}/{} {}: {:.0} queries/s, {:.0} per CPU-second",
                started.elapsed().as_secs_f64(),
                run + 1,
                args.runs,
                contender.label,
                result.rate,
                result.per_cpu_second
            ));
            contender.runs.push(result);
        }
    }
    drop((knot, bind, warren));

    let mut md = String::new();
    writeln!(md, "# warren bench dns\n")?;
    writeln!(md, "- Machine: {} CPUs ({}), kernel {}", machine.cpus, machine.cpu_model, machine.kernel)?;
    let load: Vec<String> = background.iter().map(|p| format!("{p:.0}%")).collect();
    writeln!(
        md,
        "- Busy before the bench started, per CPU: {} (a shared machine drifts: compare ratios)",
        load.join(", ")
    )?;
    writeln!(
        md,
        "- Every server on CPU {SERVER_CPU} with one UDP thread, dnsperf on CPU {LOAD_CPU} (100 queries in flight, \
         one socket)?; A {QNAME} with {ADDRESSES} addresses; {} s a run, {} runs each, taking turns{}",
        args.seconds,
        args.runs,
        if pinned { "" } else { "; NOT pinned (one CPU)" }
    )?;
    writeln!(
        md,
        "- Command: `warren bench dns --seconds {} --runs {}`, took {:.0} s\n",
        args.seconds,
        args.runs,
        started.elapsed().as_secs_f64()
    )?;
    table(&mut md, &contenders)?;
    crate::results::write(&args.out, "dns", &md, &chart(&contenders))?;
    Ok(())
}

/// Queries per server CPU-second, a bar per server: what each costs, whoever ran out first.
fn chart(contenders: &[Contender]) -> BarChart {
    BarChart {
        title: "DNS servers: queries per server CPU-second".into(),
        unit: "queries/CPU-s".into(),
        series: vec!["queries per CPU-second (median)".into()],
        groups: contenders
            .iter()
            .map(|c| (c.label.to_string(), vec![Some(median(c.runs.iter().map(|r| r.per_cpu_second).collect()))]))
            .collect(),
        note: "the same dnsperf load against each, one UDP thread per server".into(),
        ..BarChart::default()
    }
}

/// Starts `warren registry` with DNS on the server CPU and binds the name to every address; the
/// server and its DNS address.
fn start_warren(scratch: &Scratch, addrs: &[Ipv4Addr], cpu: Option<usize>) -> anyhow::Result<(Server, SocketAddr)> {
    let exe = crate::warren_exe()?;
    let port = warren_testkit::free_port()?;
    let argv: Vec<String> = [
        "registry",
        "--listen",
        "127.0.0.1:0",
        "--data",
        &scratch.dir.display().to_string(),
        "--admin-token",
        TOKEN,
        "--dns",
        &format!("127.0.0.1:{port}"),
        // dnsperf asks from one address far faster than response-rate limiting lets any client.
        "--dns-rate",
        "0",
    ]
    .map(str::to_owned)
    .to_vec();
    let cpus = cpu.map(CpuSet::only).transpose()?;
    let server = Server::spawn(&exe, &argv, cpus)?;
    let registry = server.addr();
    let endpoints: Vec<Endpoint> = addrs.iter().map(|a| Endpoint::tcp(SocketAddr::from((*a, 80)))).collect();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let client = Client::connect(registry, Duration::from_secs(5)).await?;
        client.rebind(&Name::new(LABEL)?, TOKEN, endpoints).await?;
        anyhow::Ok(())
    })?;
    Ok((server, SocketAddr::from(([127, 0, 0, 1], port))))
}

fn contender(label: String, pid: i32, addr: SocketAddr, addrs: &[Ipv4Addr]) -> anyhow::Result<Contender> {
    let check = check(addr, addrs).with_context(|| format!("{label} at {addr} does not answer as expected"))?;
    Ok(Contender { label, pid, addr, check, runs: Vec::new() })
}

/// Asks `addr` ten times: does every answer hold every address, and does the first one move?
fn check(addr: SocketAddr, expected: &[Ipv4Addr]) -> anyhow::Result<Check> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut result = Check { complete: true, ..Check::default() };
    let mut firsts = BTreeSet::new();
    let wanted: BTreeSet<Ipv4Addr> = expected.iter().copied().collect();
    for id in 0..10u16 {
        socket.send_to(&query(id), addr)?;
        let mut buffer = [0u8; 1500];
        let (len, _) = socket.recv_from(&mut buffer)?;
        let answer = addresses(&buffer[..len], id).context("a malformed answer")?;
        result.complete &= answer.iter().copied().collect::<BTreeSet<_>>() == wanted && answer.len() == wanted.len();
        firsts.extend(answer.first().copied());
        result.size = len;
    }
    result.rotates = firsts.len() > 1;
    Ok(result)
}

/// A query for A `QNAME` with RD set, no EDNS: what dnsperf sends.
fn query(id: u16) -> Vec<u8> {
    let mut query = id.to_be_bytes().to_vec();
    query.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in QNAME.trim_end_matches('.').split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    query
}

/// The A records of the answer section of `response`, in order; `None` if it is not a NOERROR
/// response to `id` that parses.
fn addresses(response: &[u8], id: u16) -> Option<Vec<Ipv4Addr>> {
    if response.get(..2)? != id.to_be_bytes() || response[3] & 0x0f != 0 {
        return None;
    }
    let answers = u16::from_be_bytes([*response.get(6)?, *response.get(7)?]);
    let mut at = skip_name(response, 12)? + 4;
    let mut addrs = Vec::new();
    for _ in 0..answers {
        at = skip_name(response, at)?;
        let fixed = response.get(at..at + 10)?;
        let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let rdata = response.get(at + 10..at + 10 + rdlen)?;
        if fixed[..2] == [0, 1] && rdlen == 4 {
            addrs.push(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]));
        }
        at += 10 + rdlen;
    }
    Some(addrs)
}

/// The offset after the name at `at`: labels up to the root, or a compression pointer.
fn skip_name(message: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *message.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return Some(at + 2),
            l => at += 1 + usize::from(l),
        }
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// "median [min–max]" of `values`.
fn spread(values: &[f64]) -> String {
    let (lo, hi) = values.iter().fold((f64::MAX, 0.0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    format!("{:.0} [{:.0}–{:.0}]", median(values.to_vec()), lo, hi)
}

fn table(md: &mut String, contenders: &[Contender]) -> std::fmt::Result {
    let per_cpu = |c: &Contender| median(c.runs.iter().map(|r| r.per_cpu_second).collect());
    let rate = |c: &Contender| median(c.runs.iter().map(|r| r.rate).collect());
    let Some(warren) = contenders.first() else { return Ok(()) };
    writeln!(
        md,
        "| server | queries/s | queries per server CPU-second | warren ÷ server, per CPU-second | \
         warren ÷ server, queries/s | server CPU busy | p99 latency | lost | answer |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|")?;
    for c in contenders {
        let ratio = |f: &dyn Fn(&Contender) -> f64| {
            let theirs = f(c);
            if theirs > 0.0 { format!("{:.2}×", f(warren) / theirs) } else { "–".into() }
        };
        let p99 = median(c.runs.iter().filter_map(|r| r.p99).map(|p| p as f64).collect());
        let busy = median(c.runs.iter().map(|r| r.cpu_busy * 100.0).collect());
        let lost: u64 = c.runs.iter().map(|r| r.lost).sum();
        let answer = format!(
            "{} B, {}, {}",
            c.check.size,
            if c.check.complete { "all 10 addresses" } else { "INCOMPLETE" },
            if c.check.rotates { "rotates" } else { "fixed order" }
        );
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {busy:.0}% | {p99:.0} µs | {lost} | {answer} |",
            c.label,
            spread(&c.runs.iter().map(|r| r.rate).collect::<Vec<_>>()),
            spread(&c.runs.iter().map(|r| r.per_cpu_second).collect::<Vec<_>>()),
            ratio(&per_cpu),
            ratio(&rate),
        )?;
    }
    writeln!(
        md,
        "\nMedians over the runs, [min–max]. Server CPU busy is the server's CPU time over the run's length: \
         near 100% the server ran out of CPU, below it dnsperf did. Lost queries are summed over the runs."
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_and_its_answer_parse() {
        let query = query(7);
        assert_eq!(query.len(), 30, "what dnsperf reports as its request size");
        // The query echoed as a response with two A records, the second with its name whole.
        let mut response = query.clone();
        response[2] = 0x84;
        response[7] = 2;
        response.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 127, 0, 1, 1]);
        response.extend_from_slice(&query[12..26]);
        response.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 127, 0, 1, 2]);
        let addrs = addresses(&response, 7).unwrap();
        assert_eq!(addrs, [Ipv4Addr::new(127, 0, 1, 1), Ipv4Addr::new(127, 0, 1, 2)]);
        assert_eq!(addresses(&response, 8), None, "another id");
        assert_eq!(addresses(&response[..40], 7), None, "cut");
        response[3] = 3;
        assert_eq!(addresses(&response, 7), None, "NXDOMAIN");
    }

    #[test]
    fn medians_and_spreads() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(spread(&[3.0, 1.0, 2.0]), "2 [1–3]");
    }
}
