//! Round-robin offsets, one counter per (name, record type).
//!
//! A single counter for the whole server would not rotate: a stub resolver asks A and AAAA
//! together (glibc's `getaddrinfo` does), so with one counter every A query of such a client sees
//! an even offset, and with an even number of addresses half of them are never first. Keyed
//! counters make each name's A answers step by one whatever else is asked. Names are hashed into
//! a fixed table, so memory stays bounded however many names are queried; two names sharing a
//! slot still rotate, only less regularly.

use std::sync::atomic::{AtomicU32, Ordering};

use hickory_proto::rr::RecordType;

/// Counters behind the rotation of answers; one per server, shared by its UDP and TCP paths.
#[derive(Debug)]
pub struct Rotation {
    slots: Box<[AtomicU32]>,
}

const SLOTS: usize = 1024;

impl Rotation {
    pub fn new() -> Rotation {
        Rotation { slots: (0..SLOTS).map(|_| AtomicU32::new(0)).collect() }
    }

    /// The offset for this query of `name` (lowercase) and `qtype`: 0, 1, 2, … on successive calls.
    pub(crate) fn next(&self, name: &str, qtype: RecordType) -> usize {
        self.next_in(self.slot(name, qtype))
    }

    /// The counter of (`name`, `qtype`), for callers that keep it instead of hashing the name
    /// on every query (prepared answers).
    pub(crate) fn slot(&self, name: &str, qtype: RecordType) -> usize {
        // FNV-1a: a few instructions a byte, no allocation, stable across runs (tests rely on
        // each key starting at 0, not on which slot it gets).
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in name.bytes().chain(u16::from(qtype).to_be_bytes()) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        (hash % SLOTS as u64) as usize
    }

    /// The next offset of the counter `slot` (from [`Rotation::slot`]).
    pub(crate) fn next_in(&self, slot: usize) -> usize {
        self.slots[slot % SLOTS].fetch_add(1, Ordering::Relaxed) as usize
    }
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_name_and_type_counts_on_its_own() {
        let rotation = Rotation::new();
        assert_eq!(rotation.next("web", RecordType::A), 0);
        assert_eq!(rotation.next("web", RecordType::AAAA), 0);
        assert_eq!(rotation.next("web", RecordType::A), 1);
        assert_eq!(rotation.next("web", RecordType::AAAA), 1);
        assert_eq!(rotation.next("web", RecordType::A), 2);
    }
}
