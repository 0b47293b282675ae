//! Locality-aware request distribution (LARD; Pai, Aron, Banga, Svendsen, Druschel,
//! Zwaenepoel, Nahum, ASPLOS 1998): each target (a URL) is served by one backend, so that
//! backend's cache holds it, until that backend is overloaded.
//!
//! The paper's basic rule, with a backend's load its open connections:
//!
//! ```text
//! if target has no server, or its server is out of rotation:
//!     server[target] = the least loaded backend
//! else if (load(server) > T_high and some backend's load < T_low) or load(server) ≥ 2·T_high:
//!     server[target] = the least loaded backend
//! send to server[target]
//! ```
//!
//! `T_low` 25 and `T_high` 65 are the paper's values. Ties for least loaded go by the target's
//! hash, so an idle cluster spreads new targets instead of giving them all to the first backend.
//!
//! The target table is bounded: targets are kept as 64-bit hashes in two generations; when
//! the current one holds `max_targets`, it becomes the previous one and the older generation is
//! dropped, so the least recently used targets are forgotten first and the table never holds
//! more than `2 × max_targets` entries (16 bytes each).

use std::collections::HashMap;

use crate::BackendId;
use crate::ConfigError;
use crate::hash::hash;

const TARGET_SEED: u64 = 0x6c61_7264; // "lard"

/// LARD's thresholds, in open connections, and its table's bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LardConfig {
    /// A backend below this load is lightly loaded. Default 25.
    pub t_low: u32,
    /// A backend above this load gives its targets away to a lightly loaded one; at twice
    /// this, to any less loaded one. Default 65.
    pub t_high: u32,
    /// Targets remembered per generation. Default 65,536.
    pub max_targets: usize,
}

impl Default for LardConfig {
    fn default() -> Self {
        Self { t_low: 25, t_high: 65, max_targets: 65_536 }
    }
}

impl LardConfig {
    /// Refuses `t_low ≥ t_high` and an empty table.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.t_low >= self.t_high {
            return Err(ConfigError::LardThresholds { t_low: self.t_low, t_high: self.t_high });
        }
        if self.max_targets == 0 {
            return Err(ConfigError::ZeroLardTargets);
        }
        Ok(())
    }
}

/// The target → backend table.
#[derive(Clone, Debug, Default)]
pub struct Lard {
    current: HashMap<u64, BackendId>,
    previous: HashMap<u64, BackendId>,
}

impl Lard {
    /// The backend for `target` among `candidates` (each with its load), assigning or
    /// reassigning by LARD's rule. `None` if there is no candidate.
    pub fn pick(&mut self, config: &LardConfig, target: &[u8], candidates: &[(BackendId, u32)]) -> Option<BackendId> {
        let key = hash(TARGET_SEED, target);
        let assigned = self.current.get(&key).or_else(|| self.previous.get(&key)).copied();
        let load_of = |id| candidates.iter().find(|(c, _)| *c == id).map(|&(_, load)| load);
        let keep = assigned.and_then(|id| Some((id, load_of(id)?))).filter(|&(_, load)| {
            let lightly_loaded_elsewhere = candidates.iter().any(|&(_, l)| l < config.t_low);
            !((load > config.t_high && lightly_loaded_elsewhere) || load >= 2 * config.t_high)
        });
        let chosen = match keep {
            Some((id, _)) => id,
            None => least_loaded(key, candidates)?,
        };
        self.remember(config, key, chosen);
        Some(chosen)
    }

    /// Forgets every target of a backend that left the set.
    pub fn forget(&mut self, id: BackendId) {
        self.current.retain(|_, b| *b != id);
        self.previous.retain(|_, b| *b != id);
    }

    /// Targets remembered (both generations).
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// Whether no target is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn remember(&mut self, config: &LardConfig, key: u64, id: BackendId) {
        if !self.current.contains_key(&key) && self.current.len() >= config.max_targets {
            self.previous = std::mem::take(&mut self.current);
        }
        self.previous.remove(&key);
        self.current.insert(key, id);
    }
}

/// The least loaded candidate; ties go by `key`.
fn least_loaded(key: u64, candidates: &[(BackendId, u32)]) -> Option<BackendId> {
    let min = candidates.iter().map(|&(_, load)| load).min()?;
    let tied: Vec<BackendId> = candidates.iter().filter(|&&(_, l)| l == min).map(|&(id, _)| id).collect();
    Some(tied[(key % tied.len() as u64) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: BackendId = BackendId(0);
    const B: BackendId = BackendId(1);

    #[test]
    fn a_target_stays_until_its_backend_is_overloaded() {
        let config = LardConfig::default();
        let mut lard = Lard::default();
        let first = lard.pick(&config, b"/a", &[(A, 0), (B, 0)]).unwrap();
        let other = if first == A { B } else { A };
        assert_eq!(lard.pick(&config, b"/a", &[(first, 65), (other, 0)]), Some(first));
        assert_eq!(lard.pick(&config, b"/a", &[(first, 66), (other, 24)]), Some(other));
        assert_eq!(lard.pick(&config, b"/a", &[(first, 30), (other, 129)]), Some(other), "below 2·T_high");
        assert_eq!(lard.pick(&config, b"/a", &[(first, 30), (other, 130)]), Some(first));
    }

    #[test]
    fn the_table_is_bounded() {
        let config = LardConfig { max_targets: 4, ..LardConfig::default() };
        let mut lard = Lard::default();
        for i in 0..100u32 {
            lard.pick(&config, &i.to_be_bytes(), &[(A, 0)]);
        }
        assert!(lard.len() <= 8);
        assert!(LardConfig { t_low: 65, t_high: 65, max_targets: 1 }.validate().is_err());
    }
}
