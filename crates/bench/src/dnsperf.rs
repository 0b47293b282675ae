//! Measuring a DNS server with `dnsperf` (Debian's, DNS-OARC's load generator), for
//! `warren bench registry`, `warren bench dns` and `examples/dnsperf.rs`.

use std::io;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::hist::Histogram;

/// What one dnsperf run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsperfReport {
    pub queries_sent: u64,
    pub queries_completed: u64,
    pub queries_lost: u64,
    /// Responses with NOERROR; the others had another response code.
    pub noerror: u64,
    pub queries_per_second: f64,
    pub latency_avg: Duration,
    pub latency_min: Duration,
    pub latency_max: Duration,
    pub latency_stddev: Duration,
}

/// Why a dnsperf run gave no report.
#[derive(Debug, thiserror::Error)]
pub enum DnsperfError {
    #[error("dnsperf sends load to loopback only, not to {0}")]
    NotLoopback(SocketAddr),
    #[error(transparent)]
    Install(anyhow::Error),
    #[error("running dnsperf: {0}")]
    Io(#[from] io::Error),
    #[error("dnsperf failed ({status}): {stderr}")]
    Failed { status: String, stderr: String },
    #[error("dnsperf printed no {0:?} line; its output was:\n{1}")]
    Parse(&'static str, String),
}

/// Runs dnsperf for `seconds` against the server at `server` (loopback only), asking A for
/// `qname` (a full DNS name such as `web.warren.`), with dnsperf pinned to `cpu` when given
/// (`taskset`). Installs Debian's `dnsperf` first if it is missing.
///
/// dnsperf keeps 100 queries outstanding from one socket; the run is bounded by `-l seconds` and,
/// should dnsperf hang, by `timeout` ten seconds later.
pub fn run_dnsperf(
    server: SocketAddr,
    qname: &str,
    seconds: u32,
    cpu: Option<usize>,
) -> Result<DnsperfReport, DnsperfError> {
    let (stdout, _) = dnsperf(server, qname, seconds, cpu, false)?;
    parse(&stdout)
}

/// [`run_dnsperf`], with every query's latency too (dnsperf's `-v`, one line a response, written
/// to a file that is read once the run is over, so that the load generator does not wait on a
/// pipe), in a histogram: dnsperf 2.10 reports only the mean and deviation.
pub(crate) fn run_dnsperf_latencies(
    server: SocketAddr,
    qname: &str,
    seconds: u32,
    cpu: Option<usize>,
) -> Result<(DnsperfReport, Histogram), DnsperfError> {
    let (stdout, latencies) = dnsperf(server, qname, seconds, cpu, true)?;
    Ok((parse(&stdout)?, latencies))
}

/// Runs dnsperf; its statistics and, with `verbose`, the latencies of its responses.
fn dnsperf(
    server: SocketAddr,
    qname: &str,
    seconds: u32,
    cpu: Option<usize>,
    verbose: bool,
) -> Result<(String, Histogram), DnsperfError> {
    if !server.ip().is_loopback() {
        return Err(DnsperfError::NotLoopback(server));
    }
    let [dnsperf] =
        crate::host::ensure_programs(["dnsperf"], &["dnsperf"], "registry").map_err(DnsperfError::Install)?;
    // dnsperf reads its queries from a file, which it loops over until the time limit.
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let scratch = std::env::temp_dir().join(format!(
        "warren-dnsperf-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    let (datafile, outfile) = (scratch.with_extension("txt"), scratch.with_extension("out"));
    std::fs::write(&datafile, format!("{qname} A\n"))?;
    let mut command = Command::new("timeout");
    command.args(["--kill-after=5", &(u64::from(seconds) + 10).to_string()]);
    if let Some(cpu) = cpu {
        command.args(["taskset", "-c", &cpu.to_string()]);
    }
    command.arg(dnsperf).args(["-s", &server.ip().to_string(), "-p", &server.port().to_string()]);
    command.args(["-l", &seconds.to_string(), "-t", "2", "-d"]).arg(&datafile);
    if verbose {
        command.arg("-v").stdout(std::fs::File::create(&outfile)?);
    }
    let output = command.output();
    let _ = std::fs::remove_file(&datafile);
    let read = if verbose { read_verbose(&outfile) } else { Ok(Default::default()) };
    let _ = std::fs::remove_file(&outfile);
    let output = output?;
    let (verbose_stdout, latencies) = read?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned() + &verbose_stdout;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        return Err(DnsperfError::Failed { status: output.status.to_string(), stderr });
    }
    Ok((stdout, latencies))
}

/// Splits `-v` output into the latencies of its response lines (`> NOERROR web.warren. A
/// 0.000208`) and the rest.
fn read_verbose(path: &std::path::Path) -> io::Result<(String, Histogram)> {
    use std::io::BufRead;
    let mut rest = String::new();
    let mut latencies = Histogram::default();
    for line in io::BufReader::new(std::fs::File::open(path)?).lines() {
        let line = line?;
        match line.strip_prefix("> ").and_then(|l| l.rsplit(' ').next()).and_then(|s| s.parse::<f64>().ok()) {
            Some(seconds) => latencies.record(Duration::from_secs_f64(seconds)),
            None => {
                rest.push_str(&line);
                rest.push('\n');
            }
        }
    }
    Ok((rest, latencies))
}

/// Reads dnsperf 2.x's statistics block.
fn parse(stdout: &str) -> Result<DnsperfReport, DnsperfError> {
    let field = |label: &'static str| -> Result<&str, DnsperfError> {
        stdout
            .lines()
            .find_map(|line| line.trim().strip_prefix(label))
            .map(str::trim)
            .ok_or_else(|| DnsperfError::Parse(label, stdout.to_owned()))
    };
    let first_number = |label: &'static str| -> Result<f64, DnsperfError> {
        field(label)?
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| DnsperfError::Parse(label, stdout.to_owned()))
    };
    // "Average Latency (s):  0.000950 (min 0.000020, max 0.004110)"
    let latency = field("Average Latency (s):")?;
    let mut numbers = latency.split(|c: char| !(c.is_ascii_digit() || c == '.')).filter_map(|n| n.parse::<f64>().ok());
    let (Some(avg), Some(min), Some(max)) = (numbers.next(), numbers.next(), numbers.next()) else {
        return Err(DnsperfError::Parse("Average Latency (s):", stdout.to_owned()));
    };
    // "Response codes:       NOERROR 1000 (100.00%)" (absent when nothing was answered)
    let noerror = field("Response codes:").ok().and_then(|codes| {
        let mut words = codes.split_whitespace();
        words.position(|w| w == "NOERROR").and_then(|_| words.next()).and_then(|n| n.parse().ok())
    });
    Ok(DnsperfReport {
        queries_sent: first_number("Queries sent:")? as u64,
        queries_completed: first_number("Queries completed:")? as u64,
        queries_lost: first_number("Queries lost:")? as u64,
        noerror: noerror.unwrap_or(0),
        queries_per_second: first_number("Queries per second:")?,
        latency_avg: Duration::from_secs_f64(avg),
        latency_min: Duration::from_secs_f64(min),
        latency_max: Duration::from_secs_f64(max),
        latency_stddev: Duration::from_secs_f64(first_number("Latency StdDev (s):")?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 127.0.0.1 -p 5300 -l 2 -d /tmp/q.txt
[Status] Sending queries (to 127.0.0.1:5300)
[Status] Started at: Sun Nov 29 18:40:00 2026
[Status] Stopping after 2.000000 seconds
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         120012
  Queries completed:    120001 (99.99%)
  Queries lost:         11 (0.01%)

  Response codes:       NOERROR 120001 (100.00%)
  Average packet size:  request 28, response 188
  Run time (s):         2.000076
  Queries per second:   59998.220000

  Average Latency (s):  0.001650 (min 0.000021, max 0.004110)
  Latency StdDev (s):   0.000205

";

    #[test]
    fn parses_the_statistics() {
        let report = parse(OUTPUT).unwrap();
        assert_eq!(report.queries_sent, 120_012);
        assert_eq!(report.queries_completed, 120_001);
        assert_eq!(report.queries_lost, 11);
        assert_eq!(report.noerror, 120_001);
        assert!((report.queries_per_second - 59_998.22).abs() < 1e-6);
        assert_eq!(report.latency_avg, Duration::from_micros(1650));
        assert_eq!(report.latency_min, Duration::from_micros(21));
        assert_eq!(report.latency_max, Duration::from_micros(4110));
        assert_eq!(report.latency_stddev, Duration::from_micros(205));
    }

    #[test]
    fn verbose_output_gives_every_latency_and_the_statistics() {
        let path = std::env::temp_dir().join(format!("warren-dnsperf-test-{}.out", std::process::id()));
        let responses: String = (1..=100).map(|i| format!("> NOERROR web.warren. A 0.{i:06}\n")).collect();
        std::fs::write(&path, format!("{responses}{OUTPUT}")).unwrap();
        let (rest, latencies) = read_verbose(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(latencies.percentile(50.0), Some(50));
        assert_eq!(latencies.percentile(99.0), Some(99));
        assert_eq!(parse(&rest).unwrap().queries_completed, 120_001);
    }

    #[test]
    fn refuses_garbage_and_remote_servers() {
        assert!(matches!(parse("dnsperf: invalid option"), Err(DnsperfError::Parse(..))));
        let remote: SocketAddr = "192.0.2.1:53".parse().unwrap();
        assert!(matches!(run_dnsperf(remote, "web.warren.", 1, None), Err(DnsperfError::NotLoopback(_))));
    }
}
