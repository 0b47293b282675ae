//! Queries per second for a name with 10 addresses: the server on this process's CPU, dnsperf
//! pinned to another.
//!
//! ```sh
//! cargo build --release -p warren-bench --example dnsperf
//! taskset -c 1 target/release/examples/dnsperf [seconds] [dnsperf's cpu]   # defaults: 10, 0
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use warren_bench::run_dnsperf;
use warren_dns::{Config, RateLimit, Server, Target};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let seconds: u32 = args.next().map_or(Ok(10), |s| s.parse())?;
    let cpu: usize = args.next().map_or(Ok(0), |s| s.parse())?;
    let targets = (1..=10)
        .map(|i| Target { addr: IpAddr::V4(Ipv4Addr::new(127, 0, 20, i)), port: 8000 + u16::from(i), weight: 1 })
        .collect();
    let directory = HashMap::from([("bench".to_owned(), targets)]);
    // dnsperf asks from one address far faster than response-rate limiting lets any client.
    let config = Config { rate_limit: RateLimit::OFF, ..Config::default() };
    let server = Server::bind("127.0.0.1:0".parse()?, config, Arc::new(directory))?;
    let report = run_dnsperf(server.local_addr(), "bench.warren.", seconds, Some(cpu))?;
    println!("| queries/s | avg latency | min | max | sent | completed | lost | NOERROR |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {:.0} | {:.0} µs | {:.0} µs | {:.0} µs | {} | {} | {} | {} |",
        report.queries_per_second,
        report.latency_avg.as_secs_f64() * 1e6,
        report.latency_min.as_secs_f64() * 1e6,
        report.latency_max.as_secs_f64() * 1e6,
        report.queries_sent,
        report.queries_completed,
        report.queries_lost,
        report.noerror,
    );
    Ok(())
}
