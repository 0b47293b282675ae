//! The query → response function: no sockets, no clock, no threads, so that tests and the fuzzer
//! call it directly and the drivers in `server.rs` stay thin.

use std::collections::HashSet;
use std::hash::Hash;
use std::net::IpAddr;

use hickory_proto::op::{Edns, Header, Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use crate::config::Config;
use crate::encode::Reply;
use crate::names::{Node, address_name, classify};
use crate::rotation::Rotation;
use crate::{Directory, Resolution};

/// Longest query read: one question and an OPT record take a few hundred bytes, so anything
/// longer is refused with FORMERR (and over TCP the connection is closed) before parsing.
pub const MAX_QUERY: usize = 4096;

/// The transport a query came in on: it bounds the size of the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// 512 bytes, or the client's EDNS size up to [`Config::max_udp_payload`].
    Udp,
    /// 65535 bytes, what the 2-byte length prefix can say.
    Tcp,
}

/// The response to `query`, or `None` when nothing must be sent: a message too short to hold a
/// header has no ID to answer to, and answering a response could start a loop between servers.
///
/// Never panics: malformed input gets FORMERR, opcodes other than QUERY get NOTIMP, names outside
/// the zone REFUSED (see `docs/dns.md` for every case).
pub fn answer(
    query: &[u8],
    directory: &dyn Directory,
    config: &Config,
    rotation: &Rotation,
    transport: Transport,
) -> Option<Vec<u8>> {
    let header = Header::read(&mut BinDecoder::new(query)).ok()?;
    if header.metadata.message_type == MessageType::Response {
        return None;
    }
    let mut reply = Reply::new(Metadata::response_from_request(&header.metadata));
    let parsed = if query.len() <= MAX_QUERY { Message::from_vec(query).ok() } else { None };
    let Some(message) = parsed else {
        return Some(refuse(reply, ResponseCode::FormErr));
    };
    reply.query = message.queries.first().cloned();
    let mut limit = match transport {
        Transport::Udp => 512,
        Transport::Tcp => u16::MAX,
    };
    if let Some(edns) = &message.edns {
        let mut ours = Edns::new();
        ours.set_max_payload(config.max_udp_payload.max(512));
        reply.edns = Some(ours);
        if transport == Transport::Udp {
            limit = edns.max_payload().clamp(512, config.max_udp_payload.max(512));
        }
        if edns.version() > 0 {
            return Some(refuse(reply, ResponseCode::BADVERS));
        }
    }
    if header.metadata.op_code != OpCode::Query {
        return Some(refuse(reply, ResponseCode::NotImp));
    }
    let Some(question) = message.queries.first().filter(|_| message.queries.len() == 1) else {
        return Some(refuse(reply, ResponseCode::FormErr));
    };
    match question.query_type() {
        RecordType::AXFR | RecordType::IXFR => return Some(refuse(reply, ResponseCode::NotImp)),
        RecordType::OPT => return Some(refuse(reply, ResponseCode::FormErr)),
        _ => {}
    }
    if !matches!(question.query_class(), DNSClass::IN | DNSClass::ANY) {
        return Some(refuse(reply, ResponseCode::Refused));
    }
    let Some(node) = classify(question.name(), &config.zone) else {
        return Some(refuse(reply, ResponseCode::Refused));
    };
    reply.metadata.authoritative = true;
    fill(&mut reply, question, node, directory, config, rotation);
    Some(reply.encode(limit))
}

/// An error response: the header, the question if there was one, and OPT for an EDNS query.
fn refuse(mut reply: Reply, code: ResponseCode) -> Vec<u8> {
    reply.metadata.response_code = code;
    reply.encode(512)
}

/// Answers an authoritative question about `node`.
fn fill(
    reply: &mut Reply,
    question: &Query,
    node: Node,
    directory: &dyn Directory,
    config: &Config,
    rotation: &Rotation,
) {
    let qname = question.name();
    let qtype = question.query_type();
    let ttl = config.ttl.get();
    match node {
        Node::Apex if matches!(qtype, RecordType::SOA | RecordType::ANY) => reply.answers.push(soa(config)),
        Node::Apex | Node::AddrParent => {}
        Node::Missing => reply.metadata.response_code = ResponseCode::NXDomain,
        Node::Address(addr) => {
            if wants(qtype, addr) {
                reply.answers.push(address_record(qname.clone(), ttl, addr));
            }
        }
        Node::Registry(name) => match directory.resolve(&name) {
            Resolution::NoSuchName => reply.metadata.response_code = ResponseCode::NXDomain,
            Resolution::Targets(targets) if qtype == RecordType::SRV => {
                let targets = rotate(unique(targets.iter().copied(), |t| (t.addr, t.port)), &name, qtype, rotation);
                for target in &targets {
                    let srv = SRV::new(0, target.weight, target.port, address_name(target.addr, &config.zone));
                    reply.answers.push(Record::from_rdata(qname.clone(), ttl, RData::SRV(srv)));
                }
                for addr in unique(targets.iter().map(|t| t.addr), |a| *a) {
                    reply.additionals.push(address_record(address_name(addr, &config.zone), ttl, addr));
                }
            }
            Resolution::Targets(targets) => {
                let addrs = unique(targets.iter().map(|t| t.addr).filter(|a| wants(qtype, *a)), |a| *a);
                for addr in rotate(addrs, &name, qtype, rotation) {
                    reply.answers.push(address_record(qname.clone(), ttl, addr));
                }
            }
        },
    }
    if reply.answers.is_empty() {
        // NXDOMAIN or NODATA: the SOA tells resolvers how long to cache the absence (RFC 2308).
        reply.authorities.push(soa(config));
    }
}

/// Whether a query of `qtype` asks for the address record of `addr`.
fn wants(qtype: RecordType, addr: IpAddr) -> bool {
    matches!((qtype, addr), (RecordType::A, IpAddr::V4(_)) | (RecordType::AAAA, IpAddr::V6(_)) | (RecordType::ANY, _))
}

fn address_record(name: Name, ttl: u32, addr: IpAddr) -> Record {
    let data = match addr {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name, ttl, data)
}

/// The zone's SOA. Its serial means nothing (there are no secondaries to tell of changes), and
/// its minimum, the negative-caching time, is the TTL.
fn soa(config: &Config) -> Record {
    let zone = config.zone.name();
    let ttl = config.ttl.get();
    let rname = zone.prepend_label("hostmaster").unwrap_or_else(|_| zone.clone());
    Record::from_rdata(zone.clone(), ttl, RData::SOA(SOA::new(zone.clone(), rname, 1, 3600, 600, 86400, ttl)))
}

/// The items in order, without repeats by `key`: an RRset holds no duplicate records (RFC 2181
/// §5), although a name may have several endpoints on one address.
fn unique<T, K: Hash + Eq>(items: impl Iterator<Item = T>, key: impl Fn(&T) -> K) -> Vec<T> {
    // Sized for all of them up front: growing the set showed in profiles.
    let mut seen = HashSet::with_capacity(items.size_hint().1.unwrap_or(0));
    items.filter(|item| seen.insert(key(item))).collect()
}

/// The records starting at this query's offset for (name, type), wrapping around.
fn rotate<T>(mut items: Vec<T>, name: &str, qtype: RecordType, rotation: &Rotation) -> Vec<T> {
    if items.len() > 1 {
        let offset = rotation.next(name, qtype) % items.len();
        items.rotate_left(offset);
    }
    items
}

#[cfg(test)]
mod tests;
