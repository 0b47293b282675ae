//! The server as a resolver library (hickory-resolver) sees it: lookups of every kind, the retry
//! over TCP after a truncated UDP answer, NXDOMAIN and the TTL.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};
use warren_dns::{Config, Server};

/// A resolver asking only `server`, over UDP and then TCP when an answer is truncated, with
/// `edns0` as given (512 bytes without, 1232 with) and no cache, so every lookup reaches the server.
fn resolver(server: &Server, edns0: bool) -> TokioResolver {
    let addr = server.local_addr();
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    let name_server = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
    let mut options = ResolverOpts::default();
    options.edns0 = edns0;
    options.cache_size = 0;
    options.attempts = 1;
    options.timeout = Duration::from_secs(5);
    Resolver::builder_with_config(ResolverConfig::from_name_servers(vec![name_server]), TokioRuntimeProvider::default())
        .with_options(options)
        .build()
        .expect("a resolver")
}

fn ips(rdata: impl Iterator<Item = RData>) -> BTreeSet<IpAddr> {
    rdata
        .map(|data| match data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
            other => panic!("not an address: {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn a_and_aaaa_lookups_give_every_address() {
    let server = common::start(Config::default());
    let resolver = resolver(&server, false);
    let v4 = resolver.ipv4_lookup("web.warren.").await.unwrap();
    assert_eq!(ips(v4.answers().iter().map(|r| r.data.clone())), common::web_addresses().into_iter().collect());
    let v6 = resolver.ipv6_lookup("dual.warren.").await.unwrap();
    let expected: BTreeSet<IpAddr> = ["2001:db8::1".parse().unwrap(), "2001:db8::2".parse().unwrap()].into();
    assert_eq!(ips(v6.answers().iter().map(|r| r.data.clone())), expected);
}

#[tokio::test]
async fn srv_lookups_give_ports_and_target_addresses() {
    let server = common::start(Config::default());
    let resolver = resolver(&server, true);
    let lookup = resolver.srv_lookup("dual.warren.").await.unwrap();
    let mut ports = Vec::new();
    for record in lookup.answers() {
        let RData::SRV(srv) = &record.data else { panic!("not SRV: {record:?}") };
        assert_eq!((srv.priority, srv.weight), (0, 10));
        // The target resolves on its own, as a client that ignores the additional section asks.
        let target = resolver.lookup_ip(srv.target.clone()).await.unwrap();
        assert_eq!(target.iter().count(), 1, "{}", srv.target);
        ports.push(srv.port);
    }
    ports.sort();
    assert_eq!(ports, [9000, 9001, 9002, 9003]);
}

#[tokio::test]
async fn a_truncated_answer_is_retried_over_tcp_and_complete() {
    let server = common::start(Config::default());
    // 100 addresses fit neither 512 bytes nor 1232: both resolvers get TC over UDP, then all 100.
    for edns0 in [false, true] {
        let lookup = resolver(&server, edns0).ipv4_lookup("big.warren.").await.unwrap();
        assert_eq!(lookup.answers().len(), 100, "edns0 {edns0}");
    }
}

#[tokio::test]
async fn unknown_names_are_nxdomain() {
    let server = common::start(Config::default());
    let resolver = resolver(&server, true);
    let error = resolver.ipv4_lookup("nobody.warren.").await.unwrap_err();
    assert!(error.is_nx_domain(), "{error:?}");
    let error = resolver.ipv4_lookup("down.warren.").await.unwrap_err();
    assert!(error.is_no_records_found() && !error.is_nx_domain(), "{error:?}");
}

#[tokio::test]
async fn answers_carry_the_ttl() {
    let server = common::start(Config::default());
    let asked = Instant::now();
    let lookup = resolver(&server, true).ipv4_lookup("web.warren.").await.unwrap();
    assert!(lookup.answers().iter().all(|r| r.ttl == 5));
    let answered = Instant::now();
    // The resolver caches it for the TTL from when the answer came.
    let ttl = Duration::from_secs(5);
    assert!(asked + ttl <= lookup.valid_until() && lookup.valid_until() <= answered + ttl);
}
