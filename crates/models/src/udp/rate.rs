//! Rate limits per source: a token bucket per key in a table of bounded size.
//!
//! One mechanism for the datagram services (a bucket per source address) and the DNS front end's
//! response-rate limiting (a bucket per source prefix, BIND's RRL). A bucket earns `rate`
//! credits a second up to `ceiling`; each answer spends one. With a `floor` of zero a refused
//! answer costs nothing, and the source is answered again as soon as a credit comes back; with
//! a floor below zero each refused answer is charged too, down to the floor, so that a source
//! that keeps flooding digs a debt it must wait out (BIND's `window`).
//!
//! The table holds at most `capacity` keys: when a new key would exceed it, the oldest key is
//! forgotten (first in, first out), so that a flood of spoofed sources costs bounded memory and
//! constant time per datagram. A forgotten key starts again with a full bucket, which a flood
//! from more sources than the table holds can exploit for one burst each; BIND's table behaves
//! the same way once full.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::Instant;

/// The shape of every bucket of a table.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BucketShape {
    /// Credits earned per second.
    pub rate: f64,
    /// Credits a bucket holds at most (the burst a quiet source may send at once).
    pub ceiling: f64,
    /// Zero: a refused answer costs nothing. Negative: refused answers are charged, down to this.
    pub floor: f64,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    credit: f64,
    at: Instant,
    /// Answers refused since the last one allowed.
    refused: u32,
}

/// What [`Buckets::take`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Take {
    /// There was a credit: answer.
    Allowed,
    /// There was none; this is the `in_a_row`th refusal since the last answer (from 1), which
    /// RRL's slip counts.
    Refused { in_a_row: u32 },
}

/// Buckets per key, at most `capacity` of them.
#[derive(Debug)]
pub struct Buckets<K> {
    shape: BucketShape,
    capacity: usize,
    buckets: HashMap<K, Bucket>,
    /// Keys in the order they entered the table, oldest first.
    order: VecDeque<K>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    /// An empty table of at most `capacity` keys (at least one).
    pub fn new(shape: BucketShape, capacity: usize) -> Self {
        Self { shape, capacity: capacity.max(1), buckets: HashMap::new(), order: VecDeque::new() }
    }

    /// Spend one credit of `key`'s bucket at `now`, if there is one. A refusal is charged down
    /// to a floor below zero.
    pub fn take(&mut self, key: &K, now: Instant) -> Take {
        let shape = self.shape;
        let bucket = match self.buckets.get_mut(key) {
            Some(bucket) => bucket,
            None => self.insert(key.clone(), now),
        };
        let earned = now.saturating_duration_since(bucket.at).as_secs_f64() * shape.rate;
        bucket.credit = (bucket.credit + earned).min(shape.ceiling);
        bucket.at = now;
        if bucket.credit >= 1.0 {
            bucket.credit -= 1.0;
            bucket.refused = 0;
            Take::Allowed
        } else {
            if shape.floor < 0.0 {
                bucket.credit = (bucket.credit - 1.0).max(shape.floor);
            }
            bucket.refused = bucket.refused.saturating_add(1);
            Take::Refused { in_a_row: bucket.refused }
        }
    }

    /// Keys in the table, at most `capacity`.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    fn insert(&mut self, key: K, now: Instant) -> &mut Bucket {
        if self.buckets.len() >= self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.buckets.remove(&oldest);
        }
        self.order.push_back(key.clone());
        self.buckets.entry(key).or_insert(Bucket { credit: self.shape.ceiling, at: now, refused: 0 })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const BURST_OF_3: BucketShape = BucketShape { rate: 1.0, ceiling: 3.0, floor: 0.0 };

    /// `take`, as a yes or no.
    fn allowed<K: Hash + Eq + Clone>(table: &mut Buckets<K>, key: K, at: Instant) -> bool {
        table.take(&key, at) == Take::Allowed
    }

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut table = Buckets::new(BURST_OF_3, 8);
        let answered = (0..10).filter(|_| allowed(&mut table, "a", t0)).count();
        assert_eq!(answered, 3, "the burst");
        assert!(!allowed(&mut table, "a", t0 + Duration::from_millis(900)));
        assert!(allowed(&mut table, "a", t0 + Duration::from_millis(1000)), "one credit a second");
        assert!(!allowed(&mut table, "a", t0 + Duration::from_millis(1500)));
        assert!(allowed(&mut table, "b", t0), "another key has its own bucket");
    }

    #[test]
    fn a_floor_below_zero_makes_a_flood_wait_out_its_debt() {
        let t0 = Instant::now();
        let shape = BucketShape { rate: 1.0, ceiling: 1.0, floor: -5.0 };
        let mut table = Buckets::new(shape, 8);
        assert!(allowed(&mut table, "a", t0));
        for _ in 0..100 {
            assert!(!allowed(&mut table, "a", t0));
        }
        // Five seconds of debt, then one more credit.
        assert!(!allowed(&mut table, "a", t0 + Duration::from_millis(5900)));
        let mut table = Buckets::new(shape, 8);
        assert!(allowed(&mut table, "a", t0));
        for _ in 0..100 {
            allowed(&mut table, "a", t0);
        }
        assert!(allowed(&mut table, "a", t0 + Duration::from_secs(6)));
    }

    #[test]
    fn refusals_are_counted_in_a_row() {
        let t0 = Instant::now();
        let mut table = Buckets::new(BucketShape { rate: 1.0, ceiling: 1.0, floor: 0.0 }, 8);
        assert_eq!(table.take(&"a", t0), Take::Allowed);
        assert_eq!(table.take(&"a", t0), Take::Refused { in_a_row: 1 });
        assert_eq!(table.take(&"a", t0), Take::Refused { in_a_row: 2 });
        assert_eq!(table.take(&"a", t0 + Duration::from_secs(2)), Take::Allowed);
        assert_eq!(table.take(&"a", t0 + Duration::from_secs(2)), Take::Refused { in_a_row: 1 });
    }

    #[test]
    fn the_table_forgets_its_oldest_key_when_full() {
        let t0 = Instant::now();
        let mut table = Buckets::new(BURST_OF_3, 2);
        for _ in 0..3 {
            allowed(&mut table, 1, t0);
        }
        assert!(!allowed(&mut table, 1, t0), "1 spent its burst");
        allowed(&mut table, 2, t0);
        allowed(&mut table, 3, t0);
        assert_eq!(table.len(), 2);
        assert!(allowed(&mut table, 1, t0), "1 was forgotten, and starts again full");
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn a_flood_of_keys_stays_within_the_capacity() {
        let t0 = Instant::now();
        let mut table = Buckets::new(BURST_OF_3, 100);
        for key in 0..10_000u32 {
            assert!(allowed(&mut table, key, t0));
        }
        assert_eq!(table.len(), 100);
        assert_eq!(table.order.len(), 100);
    }
}
