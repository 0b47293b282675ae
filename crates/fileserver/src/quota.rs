//! Upload bytes in flight per client: what each principal has declared in uploads that have
//! not ended. An upload over its principal's allowance is refused before its partial file is
//! made, so nobody can hold the disk with uploads that never finish.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::auth::Principal;

/// The bytes in flight of every principal of one server (of one process, under `fork` and
/// `prefork`).
#[derive(Debug, Default)]
pub struct Quotas {
    in_flight: Mutex<HashMap<Principal, u64>>,
}

impl Quotas {
    /// Reserve `bytes` for `who` if that keeps it within `limit`; the reservation ends when it
    /// is dropped. `Err` holds what `who` has in flight already.
    pub fn reserve(self: &Arc<Self>, who: &Principal, bytes: u64, limit: u64) -> Result<Reservation, u64> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let held = in_flight.get(who).copied().unwrap_or(0);
        if held.saturating_add(bytes) > limit {
            return Err(held);
        }
        in_flight.insert(who.clone(), held + bytes);
        Ok(Reservation { quotas: self.clone(), who: who.clone(), bytes })
    }

    /// What `who` has in flight.
    pub fn in_flight(&self, who: &Principal) -> u64 {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner()).get(who).copied().unwrap_or(0)
    }
}

/// Bytes reserved for one upload, given back when it ends (committed, cancelled, cut off).
#[derive(Debug)]
pub struct Reservation {
    quotas: Arc<Quotas>,
    who: Principal,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut in_flight = self.quotas.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = in_flight.get_mut(&self.who) {
            *held -= self.bytes;
            if *held == 0 {
                in_flight.remove(&self.who);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_count_per_principal_until_dropped() {
        let quotas = Arc::new(Quotas::default());
        let (a, b) = (Principal::Token("a".into()), Principal::Token("b".into()));
        let first = quotas.reserve(&a, 60, 100).unwrap();
        assert_eq!(quotas.reserve(&a, 50, 100).unwrap_err(), 60);
        let other = quotas.reserve(&b, 100, 100).unwrap();
        drop(first);
        assert_eq!(quotas.in_flight(&a), 0);
        let _again = quotas.reserve(&a, 100, 100).unwrap();
        drop(other);
        assert_eq!(quotas.in_flight(&b), 0);
    }
}
