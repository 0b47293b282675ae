//! Prepared answers against `answer`: byte for byte the same response wherever they answer,
//! rotating and complete, rebuilt when the directory's generation moves, bounded in memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hickory_proto::op::{Edns, Message, MessageType, OpCode};
use hickory_proto::rr::RecordType;
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use proptest::prelude::*;

use super::*;
use crate::answer::{Transport, answer};
use crate::test_names::{addresses, query, v4, v6};
use crate::{Resolution, Target};

fn targets(addrs: impl IntoIterator<Item = IpAddr>) -> Vec<Target> {
    addrs.into_iter().enumerate().map(|(i, addr)| Target { addr, port: 8000 + i as u16, weight: 1 }).collect()
}

fn directory() -> HashMap<String, Vec<Target>> {
    let mut names = HashMap::new();
    names.insert("web".into(), targets((1..=10).map(v4)));
    names.insert("n30".into(), targets((1..=30).map(v4)));
    names.insert("n31".into(), targets((1..=31).map(v4)));
    names.insert("six17".into(), targets((1..=17).map(v6)));
    names.insert("dual".into(), targets([v4(1), v6(1), v4(2), v6(2)]));
    names.insert("one".into(), targets([v4(7)]));
    names.insert("down".into(), vec![]);
    names.insert("db.eu".into(), targets([v4(9), v4(9), v4(8)]));
    names.insert("addr".into(), targets([v4(3)]));
    names
}

/// Both paths, each with its own rotation counters stepped in the same order.
struct Pair {
    directory: HashMap<String, Vec<Target>>,
    config: Config,
    prepared: PreparedAnswers,
    fast_rotation: Rotation,
    slow_rotation: Rotation,
}

impl Pair {
    fn new() -> Pair {
        let config = Config::default();
        let prepared = PreparedAnswers::new(&config);
        Pair {
            directory: directory(),
            config,
            prepared,
            fast_rotation: Rotation::new(),
            slow_rotation: Rotation::new(),
        }
    }

    /// Asks both; panics if the prepared answer differs from `answer`'s. Whether it answered.
    fn ask(&mut self, bytes: &[u8]) -> bool {
        let mut out = vec![0xee; 3];
        let answered = self.prepared.answer(bytes, &self.directory, &self.fast_rotation, &mut out);
        let slow = answer(bytes, &self.directory, &self.config, &self.slow_rotation, Transport::Udp);
        if answered {
            assert_eq!(Some(&out), slow.as_ref(), "prepared and full answers differ for {bytes:02x?}");
        } else {
            // Declined: `answer` runs in its place, on the fast path's counters too.
            answer(bytes, &self.directory, &self.config, &self.fast_rotation, Transport::Udp);
        }
        answered
    }
}

#[test]
fn plain_address_queries_are_answered_as_answer_would_rotation_included() {
    let mut pair = Pair::new();
    for round in 0..25 {
        for (name, qtype) in [
            ("web.warren.", RecordType::A),
            ("WeB.WARREN.", RecordType::A),
            ("six17.warren.", RecordType::AAAA),
            ("dual.warren.", RecordType::A),
            ("dual.warren.", RecordType::AAAA),
            ("one.warren.", RecordType::A),
            ("db.eu.warren.", RecordType::A),
            ("n30.warren.", RecordType::A),
        ] {
            let mut message = query(name, qtype);
            message.metadata.id = round;
            message.metadata.recursion_desired = round % 2 == 0;
            message.metadata.checking_disabled = round % 3 == 0;
            assert!(pair.ask(&message.to_vec().unwrap()), "{name} {qtype} declined");
            let mut edns = Edns::new();
            edns.set_max_payload(1232 + round).set_dnssec_ok(round % 2 == 1);
            message.edns = Some(edns);
            assert!(pair.ask(&message.to_vec().unwrap()), "{name} {qtype} with EDNS declined");
        }
    }
}

#[test]
fn every_address_comes_first_in_turn() {
    let mut pair = Pair::new();
    let bytes = query("web.warren.", RecordType::A).to_vec().unwrap();
    let mut firsts = Vec::new();
    for _ in 0..10 {
        let mut out = Vec::new();
        assert!(pair.prepared.answer(&bytes, &pair.directory, &pair.fast_rotation, &mut out));
        let addrs = addresses(&Message::from_vec(&out).unwrap());
        let mut sorted = addrs.clone();
        sorted.sort();
        assert_eq!(sorted, (1..=10).map(v4).collect::<Vec<_>>(), "every address in every answer");
        firsts.push(addrs[0]);
    }
    assert_eq!(firsts, (1..=10).map(v4).collect::<Vec<_>>());
}

#[test]
fn everything_else_is_left_to_answer() {
    let mut pair = Pair::new();
    let declined = |pair: &mut Pair, message: &Message| !pair.ask(&message.to_vec().unwrap());
    for (name, qtype) in [
        ("web.warren.", RecordType::SRV),
        ("web.warren.", RecordType::ANY),
        ("web.warren.", RecordType::AAAA),
        ("down.warren.", RecordType::A),
        ("nobody.warren.", RecordType::A),
        ("warren.", RecordType::A),
        ("addr.warren.", RecordType::A),
        ("0a000001.addr.warren.", RecordType::A),
        ("web.example.", RecordType::A),
        ("n31.warren.", RecordType::A),
    ] {
        assert!(declined(&mut pair, &query(name, qtype)), "{name} {qtype}");
    }
    let mut versioned = query("web.warren.", RecordType::A);
    let mut edns = Edns::new();
    edns.set_version(1);
    versioned.edns = Some(edns);
    assert!(declined(&mut pair, &versioned), "EDNS version 1 is BADVERS");
    let mut cookie = query("web.warren.", RecordType::A);
    let mut edns = Edns::new();
    edns.options_mut().insert(EdnsOption::Unknown(u16::from(EdnsCode::Cookie), vec![1; 8]));
    cookie.edns = Some(edns);
    assert!(declined(&mut pair, &cookie), "EDNS options");
    let mut notify = query("web.warren.", RecordType::A);
    notify.metadata.op_code = OpCode::Notify;
    assert!(declined(&mut pair, &notify));
    let mut response = query("web.warren.", RecordType::A);
    response.metadata.message_type = MessageType::Response;
    assert!(declined(&mut pair, &response));
    let plain = query("web.warren.", RecordType::A).to_vec().unwrap();
    assert!(!pair.ask(&[plain.as_slice(), &[0]].concat()), "a trailing byte");
    assert!(!pair.ask(&plain[..plain.len() - 1]), "a cut question");
    // The name as a pointer to itself.
    let mut pointer = plain[..12].to_vec();
    pointer.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    assert!(!pair.ask(&pointer));
    let mut bad_label = plain.clone();
    bad_label[13] = b' ';
    assert!(!pair.ask(&bad_label), "a byte no registry name holds");
}

/// A directory whose names change, with a generation that says so.
#[derive(Default)]
struct Changing {
    names: Mutex<HashMap<String, Vec<Target>>>,
    generation: AtomicU64,
}

impl Directory for Changing {
    fn resolve(&self, name: &str) -> Resolution {
        self.names.lock().unwrap().resolve(name)
    }

    fn generation(&self) -> Option<u64> {
        Some(self.generation.load(Ordering::Acquire))
    }
}

#[test]
fn a_new_generation_rebuilds_the_answer() {
    let directory = Changing::default();
    directory.names.lock().unwrap().insert("web".into(), targets([v4(1), v4(2)]));
    let mut prepared = PreparedAnswers::new(&Config::default());
    let rotation = Rotation::new();
    let bytes = query("web.warren.", RecordType::A).to_vec().unwrap();
    let mut out = Vec::new();
    let mut ask = |prepared: &mut PreparedAnswers| {
        assert!(prepared.answer(&bytes, &directory, &rotation, &mut out));
        let mut addrs = addresses(&Message::from_vec(&out).unwrap());
        addrs.sort();
        addrs
    };
    assert_eq!(ask(&mut prepared), [v4(1), v4(2)]);
    directory.names.lock().unwrap().insert("web".into(), targets([v4(3), v4(1), v4(2)]));
    assert_eq!(ask(&mut prepared), [v4(1), v4(2)], "kept until the generation moves");
    directory.generation.fetch_add(1, Ordering::Release);
    assert_eq!(ask(&mut prepared), [v4(1), v4(2), v4(3)]);
    directory.names.lock().unwrap().remove("web");
    directory.generation.fetch_add(1, Ordering::Release);
    assert!(!prepared.answer(&bytes, &directory, &rotation, &mut out), "an unbound name goes to `answer`");
}

#[test]
fn a_directory_without_a_generation_is_never_prepared() {
    struct Unversioned(HashMap<String, Vec<Target>>);
    impl Directory for Unversioned {
        fn resolve(&self, name: &str) -> Resolution {
            self.0.resolve(name)
        }
    }
    let mut prepared = PreparedAnswers::new(&Config::default());
    let bytes = query("web.warren.", RecordType::A).to_vec().unwrap();
    assert!(!prepared.answer(&bytes, &Unversioned(directory()), &Rotation::new(), &mut Vec::new()));
}

#[test]
fn the_table_stays_bounded() {
    let names: HashMap<String, Vec<Target>> =
        (0..MAX_ENTRIES + 10).map(|i| (format!("n{i}"), targets([v4(1)]))).collect();
    let mut prepared = PreparedAnswers::new(&Config::default());
    let rotation = Rotation::new();
    for i in 0..MAX_ENTRIES + 10 {
        let bytes = query(&format!("n{i}.warren."), RecordType::A).to_vec().unwrap();
        assert!(prepared.answer(&bytes, &names, &rotation, &mut Vec::new()));
        assert!(prepared.len() <= MAX_ENTRIES);
    }
}

proptest! {
    #[test]
    fn any_bytes_are_answered_as_answer_would_or_declined(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
        let mut pair = Pair::new();
        pair.ask(&bytes);
    }

    #[test]
    fn any_question_is_answered_as_answer_would_or_declined(
        name in prop::sample::select(vec!["web", "WEB", "dual", "six17", "one", "db.eu", "Db.Eu", "down", "x", "addr"]),
        zone in prop::sample::select(vec!["warren.", "WARREN.", "example."]),
        qtype in prop::sample::select(vec![RecordType::A, RecordType::AAAA, RecordType::SRV, RecordType::TXT]),
        header in any::<[u8; 2]>(),
        edns in proptest::option::of((any::<u16>(), 0..2u8, any::<bool>())),
        repeats in 1..4usize,
    ) {
        let mut message = query(&format!("{name}.{zone}"), qtype);
        if let Some((payload, version, dnssec_ok)) = edns {
            let mut edns = Edns::new();
            edns.set_max_payload(payload).set_version(version).set_dnssec_ok(dnssec_ok);
            message.edns = Some(edns);
        }
        let mut bytes = message.to_vec().unwrap();
        // Any flags but the opcode (QR, AA, TC, RD; RA, Z, AD, CD, RCODE): the other opcodes are
        // declined, and `everything_else_is_left_to_answer` has them.
        bytes[2] = header[0] & 0x87;
        bytes[3] = header[1];
        let mut pair = Pair::new();
        for _ in 0..repeats {
            pair.ask(&bytes);
        }
    }
}
