//! `run_dnsperf` against the real dnsperf (installed if missing): its report adds up. The rate
//! itself is a bench figure, not asserted here.

use std::collections::HashMap;
use std::sync::Arc;

use warren_bench::run_dnsperf;
use warren_dns::{Config, RateLimit, Server, Target};

#[test]
fn dnsperf_reports_every_query_it_sent() {
    let target = Target { addr: "127.0.0.1".parse().unwrap(), port: 80, weight: 1 };
    let directory = HashMap::from([("web".to_owned(), vec![target])]);
    // dnsperf asks from one address far faster than response-rate limiting lets any client.
    let config = Config { rate_limit: RateLimit::OFF, ..Config::default() };
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), config, Arc::new(directory)).unwrap();
    let report = run_dnsperf(server.local_addr(), "web.warren.", 1, None).expect("a dnsperf report");
    assert!(report.queries_completed > 0, "{report:?}");
    assert_eq!(report.queries_completed + report.queries_lost, report.queries_sent, "{report:?}");
    assert_eq!(report.noerror, report.queries_completed, "{report:?}");
    assert!(report.queries_per_second > 0.0 && report.latency_min <= report.latency_avg, "{report:?}");
    assert!(report.latency_avg <= report.latency_max, "{report:?}");
}
