//! Answers prepared once per change of the directory, for the question nearly every query asks:
//! A or AAAA of a registry name, class IN, over UDP.
//!
//! Parsing a query into hickory's types, asking the directory (a lock and a copy of the
//! endpoints) and encoding the records again cost several times what the kernel spends
//! receiving and sending the datagram. So the UDP loop keeps, per (name, type), the answer
//! records as wire bytes, built from one `resolve` and kept until [`Directory::generation`]
//! moves. A query is then checked by hand, and its response is the query's own question between
//! a fixed header and those records, started at the rotation's offset.
//!
//! The response is the one [`answer`](crate::answer) gives, byte for byte (the tests and the
//! fuzz target compare the two); anything else (another type or class, a name that is not
//! bound, no address of that family, EDNS options, a response over 512 bytes, a malformed
//! query) is declined and left to `answer`.

use std::collections::HashMap;
use std::collections::HashSet;
use std::net::IpAddr;

use hickory_proto::rr::RecordType;
use hickory_proto::serialize::binary::BinEncodable;

use crate::config::Config;
use crate::rotation::Rotation;
use crate::{Directory, Resolution};

/// (Name, type) pairs kept at most; past this the whole table is dropped and rebuilt on demand,
/// so memory stays bounded whatever names are asked.
const MAX_ENTRIES: usize = 4096;
/// The longest name on the wire, its final zero included (RFC 1035 §2.3.4).
const MAX_NAME: usize = 255;
/// The size of a UDP response to a query without EDNS (RFC 1035 §4.2.1).
const PLAIN_LIMIT: usize = 512;
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;

/// The prepared answers of one UDP loop: owned by it, so reading them takes no lock.
#[derive(Debug)]
pub struct PreparedAnswers {
    /// The zone as lowercase wire labels.
    zone: Vec<u8>,
    ttl: [u8; 4],
    /// The largest UDP response to an EDNS query, whatever the client says (at least 512).
    max_udp_payload: u16,
    /// The OPT record of every response to an EDNS query: our UDP size, version 0, no flags.
    opt: [u8; 11],
    /// Keyed by the lowercase query name's wire form followed by the type.
    entries: HashMap<Box<[u8]>, Entry>,
    /// The key of the query at hand, reused.
    key: Vec<u8>,
}

#[derive(Debug)]
struct Entry {
    generation: u64,
    /// `None`: this (name, type) is not answered here (no address of the type).
    records: Option<Records>,
}

#[derive(Debug)]
struct Records {
    /// The answer records in the directory's order, `stride` bytes each.
    wire: Box<[u8]>,
    stride: usize,
    count: u16,
    /// The rotation counter of (name, type).
    slot: usize,
}

/// What a query asks, when it is the plain question prepared answers serve.
struct Question<'q> {
    /// Name, type and class, as asked (the response repeats them, case included).
    wire: &'q [u8],
    /// Where each label of the name starts in `wire`.
    labels: [u8; MAX_NAME / 2 + 1],
    label_count: usize,
    qtype: u16,
    /// The UDP size of the query's OPT record, if it has one.
    edns: Option<u16>,
}

impl PreparedAnswers {
    pub fn new(config: &Config) -> PreparedAnswers {
        let zone = config.zone.name().to_bytes().map(|z| z.to_ascii_lowercase()).unwrap_or_default();
        let payload = config.max_udp_payload.max(512).to_be_bytes();
        PreparedAnswers {
            zone,
            ttl: config.ttl.get().to_be_bytes(),
            max_udp_payload: config.max_udp_payload.max(512),
            opt: [0, 0, 41, payload[0], payload[1], 0, 0, 0, 0, 0, 0],
            entries: HashMap::new(),
            key: Vec::with_capacity(MAX_NAME + 2),
        }
    }

    /// Writes the response to `query` into `out` (cleared first) and returns true, or returns
    /// false when `query` is not one this serves: then [`answer`](crate::answer) must.
    ///
    /// `rotation` must be the one `answer` is given, so that both step the same counters.
    pub fn answer(&mut self, query: &[u8], directory: &dyn Directory, rotation: &Rotation, out: &mut Vec<u8>) -> bool {
        let Some(generation) = directory.generation() else { return false };
        let Some(question) = parse(query) else { return false };
        let Some(own_labels) = self.registry_labels(&question) else { return false };
        self.key.clear();
        let name_len = question.wire.len() - 4;
        self.key.extend(question.wire[..name_len].iter().map(u8::to_ascii_lowercase));
        self.key.extend_from_slice(&question.qtype.to_be_bytes());
        let fresh = self.entries.get(self.key.as_slice()).is_some_and(|e| e.generation == generation);
        if !fresh {
            let name = registry_name(&question, own_labels);
            let Resolution::Targets(targets) = directory.resolve(&name) else { return false };
            let records = prepare(&targets, question.qtype, self.ttl, &name, rotation);
            if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(self.key.as_slice()) {
                self.entries.clear();
            }
            self.entries.insert(self.key.as_slice().into(), Entry { generation, records });
        }
        let Some(records) = self.entries.get(self.key.as_slice()).and_then(|e| e.records.as_ref()) else {
            return false;
        };
        // The limit `answer` applies; over it, `answer` cuts the answer and sets TC.
        let (limit, opt_len) = match question.edns {
            None => (PLAIN_LIMIT, 0),
            Some(size) => (usize::from(size.clamp(512, self.max_udp_payload)), self.opt.len()),
        };
        if 12 + question.wire.len() + records.wire.len() + opt_len > limit {
            return false;
        }
        // Only now, once the response is certain: `answer` steps the counter once per answer too.
        let offset = if records.count > 1 { rotation.next_in(records.slot) % usize::from(records.count) } else { 0 };
        out.clear();
        // Header: the ID; QR, AA, and the query's RD; the query's CD; one question, the
        // records, the OPT record if asked with one.
        let count = records.count.to_be_bytes();
        out.extend_from_slice(&[query[0], query[1], 0x84 | (query[2] & 0x01), query[3] & 0x10]);
        out.extend_from_slice(&[0, 1, count[0], count[1], 0, 0, 0, u8::from(question.edns.is_some())]);
        out.extend_from_slice(question.wire);
        let (first, rest) = records.wire.split_at(offset * records.stride);
        out.extend_from_slice(rest);
        out.extend_from_slice(first);
        if question.edns.is_some() {
            out.extend_from_slice(&self.opt);
        }
        true
    }

    /// How many labels of the question's name come before the zone, when the name is a
    /// registry name (in the zone, not the apex, not under `addr.`, every byte one a registry
    /// name may hold); `None` otherwise.
    fn registry_labels(&self, question: &Question<'_>) -> Option<usize> {
        let name = &question.wire[..question.wire.len() - 4];
        let zone_start = name.len().checked_sub(self.zone.len())?;
        let own = question.labels[..question.label_count].iter().position(|&at| usize::from(at) == zone_start)?;
        if own == 0 || !name[zone_start..].eq_ignore_ascii_case(&self.zone) {
            return None;
        }
        let last = label(name, usize::from(question.labels[own - 1]));
        if last.eq_ignore_ascii_case(b"addr") {
            return None;
        }
        let registry = &name[..zone_start];
        let mut at = 0;
        while at < registry.len() {
            let text = label(registry, at);
            if !text.iter().all(|b| b.is_ascii_graphic() && *b != b'.') {
                return None;
            }
            at += 1 + text.len();
        }
        Some(own)
    }

    /// Entries kept now (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The label starting at `at` in a name's wire form.
fn label(name: &[u8], at: usize) -> &[u8] {
    &name[at + 1..at + 1 + usize::from(name[at])]
}

/// The question of `query` when it is a plain query for A or AAAA in class IN: QR clear, opcode
/// QUERY, one question in uncompressed labels, nothing in the answer and authority sections,
/// and either nothing more or one OPT record of version 0 without options, ending the message.
fn parse(query: &[u8]) -> Option<Question<'_>> {
    let header = query.get(..12)?;
    if header[2] & 0xf8 != 0 || header[4..10] != [0, 1, 0, 0, 0, 0] || header[10] != 0 || header[11] > 1 {
        return None;
    }
    let body = &query[12..];
    let mut labels = [0u8; MAX_NAME / 2 + 1];
    let mut label_count = 0;
    let mut at = 0;
    loop {
        let len = usize::from(*body.get(at)?);
        if len == 0 {
            break;
        }
        // A pointer (0xc0) or an extended label type: left to the full parser.
        if len > 63 || at + 1 + len >= MAX_NAME {
            return None;
        }
        labels[label_count] = at as u8;
        label_count += 1;
        at += 1 + len;
    }
    let end = at + 1 + 4;
    let fixed = body.get(at + 1..end)?;
    let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    if !matches!(qtype, TYPE_A | TYPE_AAAA) || u16::from_be_bytes([fixed[2], fixed[3]]) != CLASS_IN {
        return None;
    }
    let edns = match (header[11], &body[end..]) {
        (0, []) => None,
        // Root name, type OPT, any UDP size, extended RCODE 0, version 0, any flags, no options.
        (1, &[0, 0, 41, high, low, 0, 0, _, _, 0, 0]) => Some(u16::from_be_bytes([high, low])),
        _ => return None,
    };
    Some(Question { wire: &body[..end], labels, label_count, qtype, edns })
}

/// The registry name of the question's first `own` labels: lowercase, joined by dots.
fn registry_name(question: &Question<'_>, own: usize) -> String {
    let name = question.wire;
    let mut text = String::with_capacity(name.len());
    for (i, &at) in question.labels[..own].iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        text.extend(label(name, usize::from(at)).iter().map(|b| char::from(b.to_ascii_lowercase())));
    }
    text
}

/// The answer records for `qtype` from `targets`, as `answer` writes them: each distinct
/// address of the family once, in the directory's order, its owner a pointer to the question.
fn prepare(targets: &[crate::Target], qtype: u16, ttl: [u8; 4], name: &str, rotation: &Rotation) -> Option<Records> {
    let mut seen = HashSet::with_capacity(targets.len());
    let mut wire = Vec::new();
    let mut count = 0u16;
    for target in targets {
        let rdata: &[u8] = match (&target.addr, qtype) {
            (IpAddr::V4(v4), TYPE_A) => &v4.octets(),
            (IpAddr::V6(v6), TYPE_AAAA) => &v6.octets(),
            _ => continue,
        };
        if !seen.insert(target.addr) {
            continue;
        }
        // Owner: a pointer to the question's name at offset 12.
        wire.extend_from_slice(&[0xc0, 12]);
        wire.extend_from_slice(&qtype.to_be_bytes());
        wire.extend_from_slice(&CLASS_IN.to_be_bytes());
        wire.extend_from_slice(&ttl);
        wire.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        wire.extend_from_slice(rdata);
        count = count.checked_add(1)?;
    }
    if count == 0 {
        return None;
    }
    let stride = wire.len() / usize::from(count);
    let slot = rotation.slot(name, RecordType::from(qtype));
    Some(Records { wire: wire.into(), stride, count, slot })
}

#[cfg(test)]
mod tests;
