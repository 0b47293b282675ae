//! The server as `dig` (Debian's bind9-dnsutils) sees it, over UDP and TCP on loopback.

mod common;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::process::Command;

use warren_dns::{Config, Server};

/// What dig printed: the status, the header flags, and the records of each section.
#[derive(Debug)]
struct Dig {
    output: String,
    status: String,
    flags: Vec<String>,
    answer: Vec<Vec<String>>,
    authority: Vec<Vec<String>>,
    additional: Vec<Vec<String>>,
}

fn dig(server: &Server, args: &[&str]) -> Dig {
    let addr = server.local_addr();
    let output = Command::new("dig")
        .arg(format!("@{}", addr.ip()))
        .args(["-p", &addr.port().to_string(), "+tries=1", "+time=5"])
        .args(args)
        .output()
        .expect("dig on PATH (Debian: apt-get install bind9-dnsutils; scripts/test installs it)");
    let output = String::from_utf8(output.stdout).unwrap();
    let field = |prefix: &str, end: char| {
        output.lines().find_map(|l| l.split_once(prefix)).map(|(_, rest)| rest.split(end).next().unwrap().to_owned())
    };
    let status = field("status: ", ',').unwrap_or_else(|| panic!("no status in:\n{output}"));
    let flags = field(";; flags: ", ';').unwrap().split_whitespace().map(str::to_owned).collect();
    let section = |title: &str| -> Vec<Vec<String>> {
        let lines = output.lines().skip_while(|l| !l.starts_with(&format!(";; {title} SECTION:"))).skip(1);
        lines.take_while(|l| !l.is_empty()).map(|l| l.split_whitespace().map(str::to_owned).collect()).collect()
    };
    let (answer, authority, additional) = (section("ANSWER"), section("AUTHORITY"), section("ADDITIONAL"));
    Dig { status, flags, answer, authority, additional, output }
}

/// The addresses of the answer's A and AAAA records, sorted.
fn addresses(dig: &Dig) -> Vec<IpAddr> {
    let mut addrs: Vec<IpAddr> = dig.answer.iter().map(|r| r[4].parse().unwrap()).collect();
    addrs.sort();
    addrs
}

#[test]
fn a_gives_every_address_with_the_ttl() {
    let server = common::start(Config::default());
    let dig = dig(&server, &["web.warren", "A"]);
    assert_eq!(dig.status, "NOERROR");
    assert!(dig.flags.contains(&"aa".to_owned()) && !dig.flags.contains(&"tc".to_owned()), "{}", dig.output);
    assert_eq!(addresses(&dig), common::web_addresses());
    assert!(dig.answer.iter().all(|r| r[0] == "web.warren." && r[1] == "5" && r[3] == "A"), "{}", dig.output);
}

#[test]
fn aaaa_gives_the_ipv6_addresses() {
    let server = common::start(Config::default());
    let dig = dig(&server, &["dual.warren", "AAAA"]);
    assert_eq!(addresses(&dig), ["2001:db8::1".parse::<IpAddr>().unwrap(), "2001:db8::2".parse().unwrap()]);
}

#[test]
fn srv_gives_ports_and_targets_with_glue() {
    let server = common::start(Config::default());
    let dig = dig(&server, &["dual.warren", "SRV"]);
    let mut srv: Vec<String> = dig.answer.iter().map(|r| r[4..].join(" ")).collect();
    srv.sort();
    let expected = [
        "0 10 9000 7f000a01.addr.warren.",
        "0 10 9001 20010db8000000000000000000000001.addr.warren.",
        "0 10 9002 7f000a02.addr.warren.",
        "0 10 9003 20010db8000000000000000000000002.addr.warren.",
    ];
    assert_eq!(srv, expected, "{}", dig.output);
    let mut glue: Vec<String> = dig.additional.iter().filter(|r| r[3] != "OPT").map(|r| r.join(" ")).collect();
    glue.sort();
    assert_eq!(
        glue,
        [
            "20010db8000000000000000000000001.addr.warren. 5 IN AAAA 2001:db8::1",
            "20010db8000000000000000000000002.addr.warren. 5 IN AAAA 2001:db8::2",
            "7f000a01.addr.warren. 5 IN A 127.0.10.1",
            "7f000a02.addr.warren. 5 IN A 127.0.10.2",
        ]
    );
}

#[test]
fn a_truncated_udp_answer_is_completed_over_tcp() {
    let server = common::start(Config::default());
    // Without the retry: TC, and as many records as 1232 bytes (dig's EDNS size) hold.
    let udp = dig(&server, &["+ignore", "big.warren", "A"]);
    assert!(udp.flags.contains(&"tc".to_owned()), "{}", udp.output);
    assert_eq!(udp.answer.len(), (1232 - 12 - 16 - 11) / 16);
    // dig's default: retry over TCP on TC, and get all 100.
    let retried = dig(&server, &["big.warren", "A"]);
    assert!(retried.output.contains("Truncated, retrying in TCP mode"), "{}", retried.output);
    assert_eq!((retried.answer.len(), retried.flags.contains(&"tc".to_owned())), (100, false));
    // Without EDNS, 512 bytes.
    let plain = dig(&server, &["+noedns", "+ignore", "big.warren", "A"]);
    assert_eq!(plain.answer.len(), (512 - 12 - 16) / 16);
}

#[test]
fn unknown_names_are_nxdomain_with_the_soa() {
    let server = common::start(Config::default());
    let nxdomain = dig(&server, &["nobody.warren", "A"]);
    assert_eq!(nxdomain.status, "NXDOMAIN");
    assert_eq!(
        nxdomain.authority,
        [["warren.", "5", "IN", "SOA", "warren.", "hostmaster.warren.", "1", "3600", "600", "86400", "5"]]
    );
    let nodata = dig(&server, &["down.warren", "A"]);
    assert_eq!((nodata.status.as_str(), nodata.answer.len(), nodata.authority.len()), ("NOERROR", 0, 1));
}

#[test]
fn other_zones_are_refused_and_other_opcodes_not_implemented() {
    let server = common::start(Config::default());
    assert_eq!(dig(&server, &["example.com", "A"]).status, "REFUSED");
    assert_eq!(dig(&server, &["+opcode=notify", "web.warren", "A"]).status, "NOTIMP");
}

#[test]
fn the_ttl_is_configurable() {
    let server = common::start(Config { ttl: NonZeroU32::new(42).unwrap(), ..Config::default() });
    let dig = dig(&server, &["web.warren", "A"]);
    assert!(!dig.answer.is_empty() && dig.answer.iter().all(|r| r[1] == "42"), "{}", dig.output);
}

#[test]
fn names_are_case_insensitive() {
    let server = common::start(Config::default());
    assert_eq!(addresses(&dig(&server, &["WeB.WaRrEn", "A"])), common::web_addresses());
}

#[test]
fn each_query_puts_another_address_first() {
    let server = common::start(Config::default());
    let mut firsts: Vec<IpAddr> =
        (0..10).map(|_| dig(&server, &["web.warren", "A"]).answer[0][4].parse().unwrap()).collect();
    firsts.sort();
    assert_eq!(firsts, common::web_addresses());
}

#[test]
fn edns_queries_get_an_opt_record_with_the_servers_size() {
    let server = common::start(Config::default());
    assert!(dig(&server, &["+bufsize=4096", "web.warren"]).output.contains("; EDNS: version: 0, flags:; udp: 1232"));
    assert!(!dig(&server, &["+noedns", "web.warren"]).output.contains("EDNS"));
}

#[test]
fn one_tcp_connection_carries_several_queries() {
    let server = common::start(Config::default());
    let dig = dig(&server, &["+tcp", "+keepopen", "web.warren", "A", "dual.warren", "AAAA", "nobody.warren"]);
    assert_eq!(dig.output.matches("status: NOERROR").count(), 2, "{}", dig.output);
    assert_eq!(dig.output.matches("status: NXDOMAIN").count(), 1, "{}", dig.output);
}
