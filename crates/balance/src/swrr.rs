//! Smooth weighted round-robin, as nginx's upstream module does it
//! (`ngx_http_upstream_get_peer`, 2012).
//!
//! Each pick adds every candidate's weight to its running score, takes the highest score, and
//! takes the total weight off the winner. Over any run of `W` picks (the weights' sum) each
//! backend is picked exactly its weight's number of times, and the picks are interleaved
//! (weights 5, 1, 1 give `a a b a c a a`, not `a a a a a b c`), so no backend gets a burst.
//! With equal weights it is plain round-robin.

use std::collections::BTreeMap;

use crate::BackendId;

/// The running scores of smooth weighted round-robin.
#[derive(Clone, Debug, Default)]
pub struct Swrr {
    scores: BTreeMap<BackendId, i64>,
}

impl Swrr {
    /// Picks one of `candidates` (backend, weight); weights of zero are never picked.
    /// `None` if no candidate has a weight.
    pub fn pick(&mut self, candidates: impl IntoIterator<Item = (BackendId, u64)>) -> Option<BackendId> {
        let mut total: i64 = 0;
        let mut best: Option<(BackendId, i64)> = None;
        for (id, weight) in candidates {
            if weight == 0 {
                continue;
            }
            let weight = i64::try_from(weight).unwrap_or(i64::MAX / 1024);
            total += weight;
            let score = self.scores.entry(id).or_insert(0);
            *score += weight;
            if best.is_none_or(|(_, s)| *score > s) {
                best = Some((id, *score));
            }
        }
        let (id, _) = best?;
        *self.scores.get_mut(&id).expect("scored above") -= total;
        Some(id)
    }

    /// Forgets a backend that left the set.
    pub fn forget(&mut self, id: BackendId) {
        self.scores.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaves_as_nginx_does() {
        let (a, b, c) = (BackendId(0), BackendId(1), BackendId(2));
        let mut swrr = Swrr::default();
        let picks: Vec<_> = (0..7).map(|_| swrr.pick([(a, 5), (b, 1), (c, 1)]).unwrap()).collect();
        assert_eq!(picks, [a, a, b, a, c, a, a]);
    }

    #[test]
    fn zero_weights_are_never_picked() {
        let mut swrr = Swrr::default();
        assert_eq!(swrr.pick([(BackendId(0), 0)]), None);
        assert_eq!(swrr.pick([(BackendId(0), 0), (BackendId(1), 3)]), Some(BackendId(1)));
    }
}
