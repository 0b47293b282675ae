//! Maglev's consistent-hashing lookup table (Eisenbud et al., NSDI 2016, §3.4).
//!
//! Each backend has a permutation of the table's `M` slots, drawn from two hashes of its name
//! (`offset` and `skip`); backends take turns claiming their next free preferred slot until the
//! table is full. So each backend owns `⌊M/N⌋` or `⌈M/N⌉` slots (max/min share ≤ 1.01 while
//! `M ≥ 100·N`), and when one of `N` leaves, little more than its own `1/N` of the keys move
//! (Envoy measures about twice a ring hash's churn). A key is looked up with one hash and one
//! index. `M` must be prime so that every `skip` walks all the slots; the paper and Envoy use
//! 65,537.

use std::collections::BTreeMap;

use crate::BackendId;
use crate::hash::hash;

/// The paper's and Envoy's table size: prime, and ≥ 100 × N for N ≤ 655 backends.
pub const DEFAULT_TABLE_SIZE: usize = 65_537;

/// The largest table accepted: 2^24 slots, 64 MiB of slot owners.
pub const MAX_TABLE_SIZE: usize = 1 << 24;

const OFFSET_SEED: u64 = 0x6d61_676c_6576_6f66; // "maglevof"
const SKIP_SEED: u64 = 0x6d61_676c_6576_736b; // "maglevsk"
const KEY_SEED: u64 = 0;

/// A lookup table.
#[derive(Clone, Debug)]
pub struct Maglev {
    size: usize,
    /// Slot → owner; empty when the table has no member.
    slots: Vec<BackendId>,
    /// The members, in the order last given.
    members: Vec<BackendId>,
}

/// Whether `size` can be a Maglev table's size: a prime of at least 2 and at most
/// [`MAX_TABLE_SIZE`].
pub fn valid_table_size(size: usize) -> bool {
    (2..=MAX_TABLE_SIZE).contains(&size) && (2..).take_while(|d| d * d <= size).all(|d| !size.is_multiple_of(d))
}

impl Maglev {
    /// Builds the table of `size` slots over `members` with the paper's algorithm, each member
    /// named by the bytes its permutation is drawn from (its address, so every switch builds
    /// the same table from the same set). With no member every lookup is `None`.
    ///
    /// # Panics
    ///
    /// If `size` is not a valid table size (the pool checks it when configured).
    pub fn build(members: &[(BackendId, &[u8])], size: usize) -> Self {
        assert!(valid_table_size(size), "Maglev table size {size} is not a prime in 2..=2^24");
        let ids: Vec<BackendId> = members.iter().map(|(id, _)| *id).collect();
        if members.is_empty() {
            return Self { size, slots: Vec::new(), members: ids };
        }
        let m = size as u64;
        let walks: Vec<(u64, u64)> = members
            .iter()
            .map(|(_, name)| (hash(OFFSET_SEED, name) % m, hash(SKIP_SEED, name) % (m - 1) + 1))
            .collect();
        let mut slots: Vec<Option<BackendId>> = vec![None; size];
        let mut next = vec![0u64; members.len()];
        let mut filled = 0;
        'fill: loop {
            for (i, &(offset, skip)) in walks.iter().enumerate() {
                let mut slot = ((offset + next[i] * skip) % m) as usize;
                while slots[slot].is_some() {
                    next[i] += 1;
                    slot = ((offset + next[i] * skip) % m) as usize;
                }
                slots[slot] = Some(ids[i]);
                next[i] += 1;
                filled += 1;
                if filled == size {
                    break 'fill;
                }
            }
        }
        Self { size, slots: slots.into_iter().map(|s| s.expect("every slot filled")).collect(), members: ids }
    }

    /// Moves the table to a new member set with as few slots changing owner as the even shares
    /// allow: the slots of members that left, and the few that even shares take from the
    /// rest, change owner; no other does. So one of N leaving moves its own 1/N of the keys
    /// and little else, where a rebuild with the paper's algorithm moves more (up to 6.4/N in
    /// our runs at 65,537 slots). The price: the table now depends on the order of changes, so
    /// two switches agree on every key only if they saw the same changes since their builds.
    /// An empty table (or set) is built afresh.
    pub fn update(&mut self, members: &[(BackendId, &[u8])]) {
        if self.slots.is_empty() || members.is_empty() {
            *self = Self::build(members, self.size);
            return;
        }
        let ids: Vec<BackendId> = members.iter().map(|(id, _)| *id).collect();
        let mut counts: BTreeMap<BackendId, usize> = ids.iter().map(|&id| (id, 0)).collect();
        for owner in &self.slots {
            if let Some(c) = counts.get_mut(owner) {
                *c += 1;
            }
        }
        // Even targets: ⌈M/N⌉ for the r members holding most (they give up least), ⌊M/N⌋ else.
        let (q, r) = (self.slots.len() / ids.len(), self.slots.len() % ids.len());
        let mut by_holding: Vec<BackendId> = ids.clone();
        by_holding.sort_by_key(|id| (std::cmp::Reverse(counts[id]), *id));
        let target: BTreeMap<BackendId, usize> =
            by_holding.iter().enumerate().map(|(i, &id)| (id, q + usize::from(i < r))).collect();
        // Free the slots of leavers and of members above their target.
        let mut free = Vec::new();
        for (slot, owner) in self.slots.iter().enumerate() {
            match counts.get_mut(owner) {
                Some(c) if *c > target[owner] => {
                    *c -= 1;
                    free.push(slot);
                }
                Some(_) => {}
                None => free.push(slot),
            }
        }
        // Give them to the members below their target.
        let mut free = free.into_iter();
        for id in &ids {
            for _ in counts[id]..target[id] {
                self.slots[free.next().expect("targets sum to the table's size")] = *id;
            }
        }
        self.members = ids;
    }

    /// The backend that owns `key`, or `None` if the table has no member.
    pub fn lookup(&self, key: &[u8]) -> Option<BackendId> {
        if self.slots.is_empty() {
            return None;
        }
        Some(self.slots[(hash(KEY_SEED, key) % self.slots.len() as u64) as usize])
    }

    /// The members, in the order last given.
    pub fn members(&self) -> &[BackendId] {
        &self.members
    }

    /// How many slots each member owns, in the order of [`Maglev::members`].
    pub fn shares(&self) -> Vec<usize> {
        let mut counts: BTreeMap<BackendId, usize> = BTreeMap::new();
        for owner in &self.slots {
            *counts.entry(*owner).or_default() += 1;
        }
        self.members.iter().map(|id| counts.get(id).copied().unwrap_or(0)).collect()
    }

    /// The owner of each slot, in slot order (to compare two tables).
    pub fn owners(&self) -> impl Iterator<Item = BackendId> + '_ {
        self.slots.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_must_be_prime() {
        assert!(valid_table_size(65_537) && valid_table_size(251) && valid_table_size(2));
        assert!(!valid_table_size(65_536) && !valid_table_size(1) && !valid_table_size(0));
    }

    #[test]
    fn every_slot_is_owned_and_shares_are_even() {
        let names: Vec<String> = (0..3).map(|i| format!("10.0.0.{i}:80")).collect();
        let members: Vec<(BackendId, &[u8])> =
            names.iter().enumerate().map(|(i, n)| (BackendId(i as u64), n.as_bytes())).collect();
        let table = Maglev::build(&members, 251);
        let shares = table.shares();
        assert_eq!(shares.iter().sum::<usize>(), 251);
        assert!(shares.iter().all(|&s| s == 83 || s == 84), "{shares:?}");
        assert_eq!(table.lookup(b"client"), table.lookup(b"client"));
    }

    #[test]
    fn an_update_moves_only_what_even_shares_need() {
        let names: Vec<String> = (0..4).map(|i| format!("10.0.0.{i}:80")).collect();
        let members: Vec<(BackendId, &[u8])> =
            names.iter().enumerate().map(|(i, n)| (BackendId(i as u64), n.as_bytes())).collect();
        let before = Maglev::build(&members, 251);
        let mut after = before.clone();
        after.update(&members[1..]);
        let moved: Vec<_> = before.owners().zip(after.owners()).filter(|(a, b)| a != b).collect();
        assert!(moved.iter().all(|(from, _)| *from == BackendId(0)), "only the leaver's slots move");
        assert!(after.shares().iter().all(|&s| s == 83 || s == 84), "{:?}", after.shares());
        after.update(&members);
        assert!(after.shares().iter().all(|&s| s == 62 || s == 63), "{:?}", after.shares());
        after.update(&[]);
        assert_eq!(after.lookup(b"k"), None);
        after.update(&members[..1]);
        assert_eq!(after.lookup(b"k"), Some(BackendId(0)));
    }

    #[test]
    fn an_empty_table_finds_nothing() {
        assert_eq!(Maglev::build(&[], 251).lookup(b"k"), None);
    }
}
