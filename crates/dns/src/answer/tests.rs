//! The answer function against a fixed directory: every response code, the sections, rotation
//! and truncation at its exact boundaries.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use proptest::prelude::*;

use super::*;
use crate::test_names::{addresses, query, v4, v6};
use crate::{Target, Zone};

fn targets(addrs: impl IntoIterator<Item = IpAddr>) -> Vec<Target> {
    addrs
        .into_iter()
        .enumerate()
        .map(|(i, addr)| Target { addr, port: 8000 + i as u16, weight: 1 + i as u16 })
        .collect()
}

fn directory() -> HashMap<String, Vec<Target>> {
    let mut names = HashMap::new();
    for n in [10, 17, 18, 29, 30, 31, 40] {
        names.insert(format!("n{n}"), targets((1..=n).map(v4)));
    }
    names.insert("six17".into(), targets((1..=17).map(v6)));
    names.insert("six18".into(), targets((1..=18).map(v6)));
    names.insert("web".into(), targets((1..=10).map(v4)));
    names.insert("dual".into(), targets([v4(1), v6(1), v4(2), v6(2)]));
    names.insert("v4only".into(), targets([v4(7)]));
    names.insert("down".into(), vec![]);
    names.insert("db.eu".into(), targets([v4(9)]));
    let shared = |port| Target { addr: v4(1), port, weight: 5 };
    names.insert("dup".into(), vec![shared(80), shared(81), shared(80), Target { addr: v4(2), port: 80, weight: 5 }]);
    names
}

fn with_edns(mut message: Message, payload: u16, version: u8) -> Message {
    let mut edns = Edns::new();
    edns.set_max_payload(payload).set_version(version);
    message.edns = Some(edns);
    message
}

struct Asker {
    directory: HashMap<String, Vec<Target>>,
    config: Config,
    rotation: Rotation,
}

impl Asker {
    fn new() -> Asker {
        Asker { directory: directory(), config: Config::default(), rotation: Rotation::new() }
    }

    fn raw(&self, bytes: &[u8], transport: Transport) -> Option<Vec<u8>> {
        answer(bytes, &self.directory, &self.config, &self.rotation, transport)
    }

    /// The response and its size on the wire.
    fn ask(&self, message: &Message, transport: Transport) -> (Message, usize) {
        let bytes = self.raw(&message.to_vec().unwrap(), transport).expect("a response");
        let response = Message::from_vec(&bytes).expect("a well-formed response");
        assert_eq!(response.metadata.id, message.metadata.id);
        assert_eq!(response.metadata.message_type, MessageType::Response);
        (response, bytes.len())
    }

    fn udp(&self, name: &str, qtype: RecordType) -> Message {
        self.ask(&query(name, qtype), Transport::Udp).0
    }
}

fn sorted(mut addrs: Vec<IpAddr>) -> Vec<IpAddr> {
    addrs.sort();
    addrs
}

fn assert_soa_authority(response: &Message, ttl: u32) {
    assert!(response.answers.is_empty());
    assert_eq!(response.authorities.len(), 1, "{response}");
    let soa = &response.authorities[0];
    assert_eq!(soa.name.to_string(), "warren.");
    assert_eq!(soa.ttl, ttl);
    let RData::SOA(data) = &soa.data else { panic!("not an SOA: {soa:?}") };
    assert_eq!(data.minimum, ttl);
}

#[test]
fn a_and_aaaa_give_every_address_of_their_family() {
    let asker = Asker::new();
    let response = asker.udp("web.warren.", RecordType::A);
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    assert!(response.metadata.authoritative && !response.metadata.truncation);
    assert!(response.metadata.recursion_desired && !response.metadata.recursion_available);
    assert_eq!(response.queries, query("web.warren.", RecordType::A).queries);
    assert_eq!(sorted(addresses(&response)), (1..=10).map(v4).collect::<Vec<_>>());
    assert!(response.answers.iter().all(|r| r.ttl == 5 && r.name.to_string() == "web.warren."));

    assert_eq!(sorted(addresses(&asker.udp("dual.warren.", RecordType::A))), [v4(1), v4(2)]);
    assert_eq!(sorted(addresses(&asker.udp("dual.warren.", RecordType::AAAA))), [v6(1), v6(2)]);
    assert_eq!(sorted(addresses(&asker.udp("dual.warren.", RecordType::ANY))), [v4(1), v4(2), v6(1), v6(2)]);
    assert_eq!(addresses(&asker.udp("db.eu.warren.", RecordType::A)), [v4(9)]);
}

#[test]
fn srv_gives_ports_weights_and_targets_with_their_addresses() {
    let asker = Asker::new();
    let response = asker.udp("dual.warren.", RecordType::SRV);
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    let mut seen = Vec::new();
    for record in &response.answers {
        let RData::SRV(srv) = &record.data else { panic!("not SRV: {record:?}") };
        assert_eq!((srv.priority, record.ttl), (0, 5));
        let target = srv.target.clone();
        let glue = response.additionals.iter().find(|r| r.name == target).expect("the target's address");
        let addr = match &glue.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
            other => panic!("not an address: {other:?}"),
        };
        // The target name answers for itself too, for clients that dropped the glue.
        assert_eq!(addresses(&asker.udp(&target.to_string(), glue.record_type())), [addr]);
        seen.push((addr, srv.port, srv.weight));
    }
    seen.sort();
    assert_eq!(seen, [(v4(1), 8000, 1), (v4(2), 8002, 3), (v6(1), 8001, 2), (v6(2), 8003, 4)]);
    assert_eq!(response.additionals.len(), 4);
}

#[test]
fn rotation_puts_every_address_first_in_turn() {
    let asker = Asker::new();
    let all: Vec<IpAddr> = (1..=10).map(v4).collect();
    let mut firsts = Vec::new();
    for _ in 0..10 {
        let got = addresses(&asker.udp("web.warren.", RecordType::A));
        // Always a rotation of the directory's order: every address, each once.
        let start = all.iter().position(|a| *a == got[0]).unwrap();
        assert_eq!(got, [&all[start..], &all[..start]].concat());
        // An AAAA query in between (as getaddrinfo sends) does not disturb the A rotation.
        asker.udp("web.warren.", RecordType::AAAA);
        firsts.push(got[0]);
    }
    assert_eq!(sorted(firsts), all);
}

#[test]
fn srv_records_rotate_too() {
    let asker = Asker::new();
    let firsts: Vec<u16> = (0..4)
        .map(|_| match &asker.udp("dual.warren.", RecordType::SRV).answers[0].data {
            RData::SRV(srv) => srv.port,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(firsts, [8000, 8001, 8002, 8003]);
}

#[test]
fn duplicate_endpoints_give_one_record_each() {
    let asker = Asker::new();
    assert_eq!(sorted(addresses(&asker.udp("dup.warren.", RecordType::A))), [v4(1), v4(2)]);
    let response = asker.udp("dup.warren.", RecordType::SRV);
    assert_eq!(response.answers.len(), 3, "{response}");
    assert_eq!(response.additionals.len(), 2, "{response}");
}

#[test]
fn names_are_case_insensitive_and_answered_as_asked() {
    let asker = Asker::new();
    let response = asker.udp("wEb.WaRRen.", RecordType::A);
    assert_eq!(addresses(&response).len(), 10);
    assert!(response.answers.iter().all(|r| r.name.to_ascii() == "wEb.WaRRen."));
    assert_eq!(response.queries[0].name().to_ascii(), "wEb.WaRRen.");
}

#[test]
fn unknown_names_are_nxdomain_with_the_soa() {
    let asker = Asker::new();
    let mut bad_label = Name::from_labels([b"bad label".as_ref(), b"warren"]).unwrap();
    bad_label.set_fqdn(true);
    let names = ["nobody.warren.", "x.web.warren.", "0a00000g.addr.warren.", "x.addr.warren."].map(Name::from_ascii);
    for name in names.into_iter().map(Result::unwrap).chain([bad_label]) {
        let mut message = query("warren.", RecordType::A);
        message.queries[0].set_name(name.clone());
        let (response, _) = asker.ask(&message, Transport::Udp);
        assert_eq!(response.metadata.response_code, ResponseCode::NXDomain, "{name}");
        assert!(response.metadata.authoritative);
        assert_soa_authority(&response, 5);
    }
}

#[test]
fn names_without_records_of_the_type_are_nodata_with_the_soa() {
    let asker = Asker::new();
    for (name, qtype) in [
        ("v4only.warren.", RecordType::AAAA),
        ("down.warren.", RecordType::A),
        ("down.warren.", RecordType::SRV),
        ("web.warren.", RecordType::TXT),
        ("web.warren.", RecordType::SOA),
        ("warren.", RecordType::A),
        ("warren.", RecordType::NS),
        ("addr.warren.", RecordType::A),
        ("0a000001.addr.warren.", RecordType::AAAA),
    ] {
        let response = asker.udp(name, qtype);
        assert_eq!(response.metadata.response_code, ResponseCode::NoError, "{name} {qtype}");
        assert_soa_authority(&response, 5);
    }
}

#[test]
fn the_apex_has_its_soa() {
    let response = Asker::new().udp("WARREN.", RecordType::SOA);
    assert_eq!(response.answers.len(), 1);
    let RData::SOA(soa) = &response.answers[0].data else { panic!("{response}") };
    assert_eq!((soa.mname.to_string(), soa.rname.to_string()), ("warren.".into(), "hostmaster.warren.".into()));
}

#[test]
fn the_ttl_is_the_configured_one() {
    let mut asker = Asker::new();
    asker.config.ttl = NonZeroU32::new(42).unwrap();
    assert!(asker.udp("web.warren.", RecordType::A).answers.iter().all(|r| r.ttl == 42));
    assert_soa_authority(&asker.udp("nobody.warren.", RecordType::A), 42);
}

#[test]
fn another_zone_is_configurable() {
    let mut asker = Asker::new();
    asker.config.zone = Zone::new("svc.example").unwrap();
    assert_eq!(addresses(&asker.udp("web.svc.example.", RecordType::A)).len(), 10);
    assert_eq!(asker.udp("web.warren.", RecordType::A).metadata.response_code, ResponseCode::Refused);
}

#[test]
fn names_outside_the_zone_and_other_classes_are_refused() {
    let asker = Asker::new();
    let mut chaos = query("version.bind.", RecordType::TXT);
    chaos.queries[0].set_query_class(DNSClass::CH);
    let mut chaos_in_zone = query("web.warren.", RecordType::A);
    chaos_in_zone.queries[0].set_query_class(DNSClass::CH);
    for message in [query("example.com.", RecordType::A), query(".", RecordType::NS), chaos, chaos_in_zone] {
        let (response, _) = asker.ask(&message, Transport::Udp);
        assert_eq!(response.metadata.response_code, ResponseCode::Refused, "{message}");
        assert!(!response.metadata.authoritative && response.answers.is_empty());
        assert_eq!(response.queries, message.queries);
    }
}

#[test]
fn malformed_and_unsupported_queries_get_an_error() {
    let asker = Asker::new();
    let valid = query("web.warren.", RecordType::A).to_vec().unwrap();
    let formerr = |bytes: &[u8]| {
        let response = Message::from_vec(&asker.raw(bytes, Transport::Udp).unwrap()).unwrap();
        assert_eq!(response.metadata.id, 0x4242);
        response.metadata.response_code
    };
    // Cut inside the question; a count claiming a second question; no question at all.
    assert_eq!(formerr(&valid[..valid.len() - 1]), ResponseCode::FormErr);
    let mut two = valid.clone();
    two[5] = 2;
    assert_eq!(formerr(&two), ResponseCode::FormErr);
    let mut none = valid[..12].to_vec();
    none[5] = 0;
    assert_eq!(formerr(&none), ResponseCode::FormErr);
    let mut two_questions = query("web.warren.", RecordType::A);
    two_questions.add_query(Query::query(Name::from_ascii("dual.warren.").unwrap(), RecordType::A));
    assert_eq!(formerr(&two_questions.to_vec().unwrap()), ResponseCode::FormErr);
    let mut long = valid.clone();
    long.resize(MAX_QUERY + 1, 0);
    assert_eq!(formerr(&long), ResponseCode::FormErr);
    assert_eq!(formerr(&query("web.warren.", RecordType::OPT).to_vec().unwrap()), ResponseCode::FormErr);

    for qtype in [RecordType::AXFR, RecordType::IXFR] {
        assert_eq!(formerr(&query("warren.", qtype).to_vec().unwrap()), ResponseCode::NotImp);
    }
    for op_code in [OpCode::Status, OpCode::Notify, OpCode::Update] {
        let mut message = query("web.warren.", RecordType::A);
        message.metadata.op_code = op_code;
        let (response, _) = asker.ask(&message, Transport::Udp);
        assert_eq!((response.metadata.response_code, response.metadata.op_code), (ResponseCode::NotImp, op_code));
    }
}

#[test]
fn short_messages_and_responses_get_no_answer() {
    let asker = Asker::new();
    assert_eq!(asker.raw(&[], Transport::Udp), None);
    assert_eq!(asker.raw(&[0x42; 11], Transport::Tcp), None);
    let mut response = query("web.warren.", RecordType::A);
    response.metadata.message_type = MessageType::Response;
    assert_eq!(asker.raw(&response.to_vec().unwrap(), Transport::Udp), None);
}

#[test]
fn edns_is_answered_with_an_opt_record() {
    let asker = Asker::new();
    let (plain, _) = asker.ask(&query("web.warren.", RecordType::A), Transport::Udp);
    assert!(plain.edns.is_none());
    for name in ["web.warren.", "nobody.warren.", "example.com."] {
        let (response, _) = asker.ask(&with_edns(query(name, RecordType::A), 4096, 0), Transport::Udp);
        let edns = response.edns.expect("an OPT record");
        assert_eq!((edns.version(), edns.max_payload()), (0, 1232), "{name}");
    }
    let (response, _) = asker.ask(&with_edns(query("web.warren.", RecordType::A), 4096, 1), Transport::Udp);
    // BADVERS, 16, which hickory decodes under its other name, BADSIG.
    assert_eq!(u16::from(response.metadata.response_code), 16);
    assert_eq!(response.edns.map(|e| e.version()), Some(0));
}

/// Sizes: header 12, question "nNN.warren." 16, an A record 16 (compressed owner), AAAA 28, OPT 11.
#[test]
fn udp_answers_hold_every_record_up_to_512_bytes_and_then_set_tc() {
    let asker = Asker::new();
    let cases =
        [("n30", RecordType::A, 30, false), ("n31", RecordType::A, 30, true), ("six17", RecordType::AAAA, 17, false)];
    let more_cases = [("six18", RecordType::AAAA, 17, true), ("n40", RecordType::A, 30, true)];
    for (name, qtype, count, truncated) in cases.into_iter().chain(more_cases) {
        let (response, size) = asker.ask(&query(&format!("{name}.warren."), qtype), Transport::Udp);
        assert_eq!((response.answers.len(), response.metadata.truncation), (count, truncated), "{name}");
        assert!(size <= 512, "{name}: {size} bytes");
        assert!(response.authorities.is_empty() && response.additionals.is_empty());
        // Over TCP: all of them.
        let (response, _) = asker.ask(&query(&format!("{name}.warren."), qtype), Transport::Tcp);
        assert!(!response.metadata.truncation);
        assert_eq!(response.answers.len(), name[name.len() - 2..].parse::<usize>().unwrap(), "{name}");
    }
}

#[test]
fn udp_answers_follow_the_edns_size_within_the_servers_limit() {
    let mut asker = Asker::new();
    // 512 advertised: 11 bytes go to the OPT record, so one A record fewer fits.
    let (response, size) = asker.ask(&with_edns(query("n30.warren.", RecordType::A), 512, 0), Transport::Udp);
    assert_eq!((response.answers.len(), response.metadata.truncation, size), (29, true, 39 + 29 * 16));
    assert!(response.edns.is_some());
    // Less than 512 advertised counts as 512.
    let (response, _) = asker.ask(&with_edns(query("n29.warren.", RecordType::A), 100, 0), Transport::Udp);
    assert_eq!((response.answers.len(), response.metadata.truncation), (29, false));
    // 1232 holds 40; the server's own limit caps what the client advertises.
    let (response, _) = asker.ask(&with_edns(query("n40.warren.", RecordType::A), 4096, 0), Transport::Udp);
    assert_eq!((response.answers.len(), response.metadata.truncation), (40, false));
    asker.config.max_udp_payload = 600;
    let (response, size) = asker.ask(&with_edns(query("n40.warren.", RecordType::A), 4096, 0), Transport::Udp);
    assert_eq!((response.answers.len(), response.metadata.truncation), ((600 - 39) / 16, true));
    assert!(size <= 600);
}

/// An SRV record here is 40 bytes: its target name is never compressed (RFC 2782).
#[test]
fn a_cut_additional_section_does_not_set_tc() {
    let asker = Asker::new();
    let mut names = directory();
    names.insert("srv11".into(), targets((1..=11).map(v4)));
    names.insert("srv13".into(), targets((1..=13).map(v4)));
    let ask = |name: &str, transport| {
        let bytes = query(name, RecordType::SRV).to_vec().unwrap();
        Message::from_vec(&answer(&bytes, &names, &asker.config, &asker.rotation, transport).unwrap()).unwrap()
    };
    // 11 SRV records fit in 512 bytes but not their 11 addresses as well: no TC for that.
    let response = ask("srv11.warren.", Transport::Udp);
    assert_eq!((response.answers.len(), response.metadata.truncation), (11, false));
    assert!(response.additionals.len() < 11, "{response}");
    assert_eq!(ask("srv11.warren.", Transport::Tcp).additionals.len(), 11);
    // 13 SRV records do not fit: TC, and no additional section.
    let response = ask("srv13.warren.", Transport::Udp);
    assert_eq!((response.answers.len(), response.metadata.truncation, response.additionals.len()), (12, true, 0));
    assert_eq!(ask("srv13.warren.", Transport::Tcp).answers.len(), 13);
}

#[test]
fn tcp_answers_stop_at_65535_bytes_with_tc() {
    let mut names = directory();
    names.insert("huge".into(), targets((1..=5000).map(v4)));
    let asker = Asker::new();
    let bytes = query("huge.warren.", RecordType::A).to_vec().unwrap();
    let wire = answer(&bytes, &names, &asker.config, &asker.rotation, Transport::Tcp).unwrap();
    let response = Message::from_vec(&wire).unwrap();
    assert!(response.metadata.truncation && wire.len() <= 65535);
    // 4094 records of 16 bytes would fit, but hickory compresses only the first 120 names of a
    // message (a guard against quadratic encoding), and the others take 27 bytes.
    assert_eq!(response.answers.len(), 119 + (65535 - 28 - 119 * 16) / 27);
}

proptest! {
    #[test]
    fn any_bytes_get_a_well_formed_answer_or_none(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let asker = Asker::new();
        if let Some(response) = asker.raw(&bytes, Transport::Udp) {
            prop_assert!(response.len() <= 512);
            let response = Message::from_vec(&response).expect("well-formed");
            prop_assert_eq!(response.metadata.id, u16::from_be_bytes([bytes[0], bytes[1]]));
            prop_assert_eq!(response.metadata.message_type, MessageType::Response);
        }
    }

    #[test]
    fn any_question_gets_a_well_formed_answer(
        labels in proptest::collection::vec("[a-zA-Z0-9_][a-zA-Z0-9_-]{0,19}", 0..4),
        in_zone in any::<bool>(),
        qtype in any::<u16>(),
        edns in proptest::option::of((any::<u16>(), 0..2u8)),
    ) {
        let asker = Asker::new();
        let name = format!("{}{}", labels.iter().map(|l| format!("{l}.")).collect::<String>(), if in_zone { "warren." } else { "" });
        let mut message = query(&name, RecordType::from(qtype));
        if let Some((size, version)) = edns {
            message = with_edns(message, size, version);
        }
        let (response, size) = asker.ask(&message, Transport::Udp);
        prop_assert!(size <= 512.max(edns.map_or(512, |(s, _)| usize::from(s))));
        prop_assert_eq!(response.edns.is_some(), edns.is_some());
    }
}
