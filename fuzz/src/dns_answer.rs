//! `dns_answer`: the registry's DNS server, `warren_dns::answer`, on arbitrary queries.
//!
//! Input: `[settings] query`: the query bytes as a datagram or a TCP frame's body. Settings bits:
//! transport (0: TCP if set), the server's EDNS size (1-2: 512, 1232, 4096, 65535).
//!
//! The directory is fixed: `web` (10 IPv4 addresses), `dual` (2 IPv4, 2 IPv6), `big` (100 IPv4,
//! more than a UDP answer holds), `dup` (one address on two ports), `down` (no endpoint); the
//! zone is `warren.`.
//!
//! Checks:
//! - no panic;
//! - a response exactly when the query has a whole header and is not itself a response;
//! - the response parses, has the query's ID and opcode, the QR bit, and an OPT record exactly
//!   when the query had one;
//! - it fits: 512 bytes over UDP, or the client's EDNS size within the server's, 65535 over TCP;
//! - answer records are whole RRsets of the name asked: no record twice, only addresses the
//!   directory holds for that name and of the family asked; without TC, all of them;
//! - over UDP, a prepared answer (`PreparedAnswers`, the UDP loop's fast path), when it answers,
//!   is byte for byte the response `answer` gave.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use warren_dns::{Config, Directory, PreparedAnswers, Rotation, Target, Transport, answer};

/// Run one input; panics on a failed check.
pub fn run(data: &[u8]) {
    let Some((&settings, query)) = data.split_first() else { return };
    let transport = if settings & 1 == 1 { Transport::Tcp } else { Transport::Udp };
    let config =
        Config { max_udp_payload: [512, 1232, 4096, 65535][usize::from(settings >> 1 & 3)], ..Config::default() };
    let directory = directory();
    let response = answer(query, &directory, &config, &Rotation::new(), transport);
    let mut prepared = Vec::new();
    if transport == Transport::Udp
        && PreparedAnswers::new(&config).answer(query, &directory, &Rotation::new(), &mut prepared)
    {
        assert_eq!(Some(&prepared), response.as_ref(), "the prepared answer differs from `answer`'s");
    }
    let is_query = query.len() >= 12 && query[2] & 0x80 == 0;
    assert_eq!(response.is_some(), is_query, "a response iff a query");
    let Some(response) = response else { return };
    let parsed = Message::from_vec(&response).expect("a well-formed response");
    let asked = Message::from_vec(query).ok();
    assert_eq!(parsed.metadata.id, u16::from_be_bytes([query[0], query[1]]));
    assert_eq!(parsed.metadata.message_type, MessageType::Response);
    assert_eq!(u8::from(parsed.metadata.op_code), query[2] >> 3 & 0xf);
    let client_edns = asked.as_ref().and_then(|m| m.edns.as_ref());
    if let Some(asked) = &asked {
        assert_eq!(parsed.edns.is_some(), asked.edns.is_some(), "OPT echoed");
    }
    let limit = match (transport, client_edns) {
        (Transport::Tcp, _) => 65535,
        (Transport::Udp, None) => 512,
        (Transport::Udp, Some(edns)) => edns.max_payload().clamp(512, config.max_udp_payload.max(512)),
    };
    assert!(response.len() <= usize::from(limit), "{} bytes over {limit}", response.len());
    check_answers(&parsed, &directory);
}

fn check_answers(response: &Message, directory: &HashMap<String, Vec<Target>>) {
    let (Some(question), ResponseCode::NoError) = (response.queries.first(), response.metadata.response_code) else {
        return;
    };
    let qtype = question.query_type();
    if !matches!(qtype, RecordType::A | RecordType::AAAA) {
        return;
    }
    let name = question.name().to_ascii().to_ascii_lowercase();
    let Some(registry_name) = name.strip_suffix(".warren.") else { return };
    let expected: BTreeSet<IpAddr> = match directory.resolve(registry_name) {
        warren_dns::Resolution::Targets(targets) => {
            targets.iter().map(|t| t.addr).filter(|a| a.is_ipv4() == (qtype == RecordType::A)).collect()
        }
        // An address name (`<hex>.addr.warren.`) answers for itself.
        warren_dns::Resolution::NoSuchName => return,
    };
    let mut seen = BTreeSet::new();
    for record in &response.answers {
        assert!(record.name.to_ascii().eq_ignore_ascii_case(&name), "owner {} for {name}", record.name);
        let addr = match &record.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
            other => panic!("{other:?} in an address answer"),
        };
        assert!(expected.contains(&addr), "{addr} is not an address of {name}");
        assert!(seen.insert(addr), "{addr} twice");
    }
    if !response.metadata.truncation {
        assert_eq!(seen, expected, "an answer without TC holds every address");
    }
}

fn directory() -> HashMap<String, Vec<Target>> {
    let target = |addr: IpAddr, port| Target { addr, port, weight: 1 };
    let v4 = |i: u32| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
    let v6 = |i: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i));
    HashMap::from([
        ("web".to_owned(), (1..=10).map(|i| target(v4(i), 80)).collect()),
        ("dual".to_owned(), vec![target(v4(1), 80), target(v6(1), 80), target(v4(2), 81), target(v6(2), 81)]),
        ("big".to_owned(), (1..=100).map(|i| target(v4(i), 80)).collect()),
        ("dup".to_owned(), vec![target(v4(1), 80), target(v4(1), 81)]),
        ("down".to_owned(), vec![]),
    ])
}
