//! The backend set: who is in rotation, and the policy's choice among them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::health::{ActiveCheck, Change, CheckConfig};
use crate::lard::{Lard, LardConfig};
use crate::maglev::{self, Maglev};
use crate::outlier::{Outlier, OutlierConfig};
use crate::swrr::Swrr;
use crate::{Backend, BackendId, ConfigError, Policy, Request};

/// A weight of 1 in the units policies compare, fine enough for slow start's ramp and a
/// reported load to scale it smoothly.
const UNIT: u64 = 1000;

/// Slow start's first share of a backend's weight (Envoy's `min_weight_percent`, 10 %), so a
/// backend that just came up gets some connections at once.
const SLOW_START_FLOOR: u64 = UNIT / 10;

/// How a pool chooses and watches its backends. [`PoolConfig::default`]: round-robin,
/// HAProxy's active checks, Envoy's outlier ejection, no slow start.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolConfig {
    /// How a backend is chosen. Default round-robin.
    pub policy: Policy,
    /// Active checks; `None` runs none (every backend counts as up).
    pub check: Option<CheckConfig>,
    /// Passive outlier ejection; `None` never ejects.
    pub outlier: Option<OutlierConfig>,
    /// A backend that comes up (added, risen, back from ejection or from draining) ramps its
    /// weight linearly from 10 % to 100 % over this window. Default none, as HAProxy's
    /// `slowstart` and Envoy's `slow_start_window`.
    pub slow_start: Option<Duration>,
    /// The `lard` policy's thresholds and table bound.
    pub lard: LardConfig,
    /// The Maglev table's size: a prime. Default 65,537.
    pub table_size: usize,
    /// Seeds `power-of-two`'s draws, so a run can be replayed.
    pub seed: u64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            policy: Policy::RoundRobin,
            check: Some(CheckConfig::default()),
            outlier: Some(OutlierConfig::default()),
            slow_start: None,
            lard: LardConfig::default(),
            table_size: maglev::DEFAULT_TABLE_SIZE,
            seed: 0,
        }
    }
}

impl PoolConfig {
    /// Refuses what the pool cannot run, with the reason.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(check) = &self.check {
            check.validate()?;
        }
        if let Some(o) = &self.outlier
            && (o.consecutive_failures == 0 || o.base_ejection.is_zero())
        {
            return Err(ConfigError::Outlier);
        }
        if self.slow_start.is_some_and(|w| w.is_zero()) {
            return Err(ConfigError::ZeroSlowStart);
        }
        if !maglev::valid_table_size(self.table_size) {
            return Err(ConfigError::TableSize(self.table_size));
        }
        self.lard.validate()
    }
}

/// Where a backend stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// In rotation.
    Up,
    /// Its active checks failed.
    Down,
    /// Out of rotation for failed connections, until the ejection ends.
    Ejected,
    /// Takes no new connection; `open` are still open. Removed backends drain too.
    Draining {
        /// Connections still open.
        open: u32,
    },
}

#[derive(Debug)]
struct Member {
    backend: Backend,
    check: Option<ActiveCheck>,
    outlier: Outlier,
    draining: bool,
    /// Removed while connections were open: forgotten when the last one is released.
    removed: bool,
    open: u32,
    /// The load it reported, in thousandths.
    load: u64,
    /// When it last came up, for slow start.
    ramp_from: Instant,
}

impl Member {
    fn in_rotation(&self, now: Instant) -> bool {
        !self.draining
            && !self.removed
            && self.backend.weight > 0
            && self.check.as_ref().is_none_or(ActiveCheck::is_up)
            && !self.outlier.is_ejected(now)
    }
}

/// The backend set and its policy. See the crate's documentation.
#[derive(Debug)]
pub struct Pool {
    config: PoolConfig,
    members: BTreeMap<BackendId, Member>,
    next_id: u64,
    swrr: Swrr,
    lard: Lard,
    maglev: Option<Maglev>,
    rng: fastrand::Rng,
    /// Where least-connections starts looking, so ties go in turn.
    cursor: usize,
}

impl Pool {
    /// An empty pool, or the reason `config` cannot run.
    pub fn new(config: PoolConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let rng = fastrand::Rng::with_seed(config.seed);
        Ok(Self {
            config,
            members: BTreeMap::new(),
            next_id: 0,
            swrr: Swrr::default(),
            lard: Lard::default(),
            maglev: None,
            rng,
            cursor: 0,
        })
    }

    /// The configuration the pool runs.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// Adds a backend at `now`: in rotation at once (its first check is due now), ramping up
    /// under slow start.
    pub fn add(&mut self, backend: Backend, now: Instant) -> BackendId {
        let id = BackendId(self.next_id);
        self.next_id += 1;
        let member = Member {
            backend,
            check: self.config.check.map(|c| ActiveCheck::new(c, now)),
            outlier: Outlier::default(),
            draining: false,
            removed: false,
            open: 0,
            load: 0,
            ramp_from: now,
        };
        self.members.insert(id, member);
        id
    }

    /// Removes a backend: at once if it has no open connection, otherwise it drains and goes
    /// when the last one is released. False if there is no such backend.
    pub fn remove(&mut self, id: BackendId) -> bool {
        let Some(member) = self.members.get_mut(&id) else { return false };
        member.removed = true;
        self.forget_if_gone(id);
        true
    }

    /// Changes a backend's weight and services (its name stays). False if unknown or removed.
    pub fn reconfigure(&mut self, id: BackendId, weight: u32, services: Vec<String>) -> bool {
        match self.members.get_mut(&id) {
            Some(m) if !m.removed => {
                m.backend.weight = weight;
                m.backend.services = services;
                true
            }
            _ => false,
        }
    }

    /// Drains a backend: no new connection goes to it; open ones finish. False if unknown.
    pub fn drain(&mut self, id: BackendId) -> bool {
        self.members.get_mut(&id).map(|m| m.draining = true).is_some()
    }

    /// Puts a drained backend back in rotation at `now` (ramping under slow start).
    pub fn undrain(&mut self, id: BackendId, now: Instant) -> bool {
        match self.members.get_mut(&id) {
            Some(m) if !m.removed => {
                if m.draining {
                    m.draining = false;
                    m.ramp_from = now;
                }
                true
            }
            _ => false,
        }
    }

    /// Whether a draining backend has no connection left.
    pub fn is_drained(&self, id: BackendId) -> bool {
        self.members.get(&id).is_none_or(|m| (m.draining || m.removed) && m.open == 0)
    }

    /// Records the load a backend reports, from 0 (idle) to 1 (full), for the `load` policy.
    pub fn set_load(&mut self, id: BackendId, load: f64) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&load) {
            return Err(ConfigError::Load(load));
        }
        if let Some(m) = self.members.get_mut(&id) {
            m.load = (load * UNIT as f64).round() as u64;
        }
        Ok(())
    }

    /// The load a backend last reported, from 0 to 1 (0 until it reports one).
    pub fn load(&self, id: BackendId) -> Option<f64> {
        self.members.get(&id).map(|m| m.load as f64 / UNIT as f64)
    }

    /// The configured backend.
    pub fn backend(&self, id: BackendId) -> Option<&Backend> {
        self.members.get(&id).map(|m| &m.backend)
    }

    /// Every backend's id, in the order they were added.
    pub fn ids(&self) -> impl Iterator<Item = BackendId> + '_ {
        self.members.keys().copied()
    }

    /// The connections open to a backend (picked and not yet released).
    pub fn open(&self, id: BackendId) -> Option<u32> {
        self.members.get(&id).map(|m| m.open)
    }

    /// Where a backend stands at `now`.
    pub fn state(&self, id: BackendId, now: Instant) -> Option<State> {
        let m = self.members.get(&id)?;
        Some(if m.draining || m.removed {
            State::Draining { open: m.open }
        } else if m.check.as_ref().is_some_and(|c| !c.is_up()) {
            State::Down
        } else if m.outlier.is_ejected(now) {
            State::Ejected
        } else {
            State::Up
        })
    }

    /// Chooses the backend for a new connection at `now` and counts it open, or `None` if no
    /// backend is in rotation. Every pick must be followed by one [`Pool::release`].
    pub fn pick(&mut self, request: &Request<'_>, now: Instant) -> Option<BackendId> {
        let id = self.choose(request, now)?;
        self.members.get_mut(&id).expect("chosen from members").open += 1;
        Some(id)
    }

    /// A connection [`Pool::pick`] counted has closed.
    pub fn release(&mut self, id: BackendId) {
        if let Some(m) = self.members.get_mut(&id) {
            m.open = m.open.saturating_sub(1);
        }
        self.forget_if_gone(id);
    }

    /// How a connection to a backend went at `now` (`ok`: it connected; not: refused, reset or
    /// timed out), for outlier ejection. True if this ejected the backend.
    pub fn report(&mut self, id: BackendId, now: Instant, ok: bool) -> bool {
        let Some(config) = self.config.outlier else { return false };
        let live = self.members.values().filter(|m| !m.removed).count();
        let ejected = self.members.values().filter(|m| !m.removed && m.outlier.is_ejected(now)).count();
        let may_eject = ejected < config.max_ejected(live);
        let Some(m) = self.members.get_mut(&id) else { return false };
        let out = m.outlier.record(&config, now, ok, may_eject);
        if out {
            m.ramp_from = m.outlier.ejected_until().expect("just ejected");
        }
        out
    }

    /// The next active check due at `now`, marked running: the caller performs it (within
    /// `inter`) and gives the result to [`Pool::check_done`]. Call until `None`.
    pub fn poll_check(&mut self, now: Instant) -> Option<BackendId> {
        let mut due = self.members.iter_mut().filter(|(_, m)| !m.removed);
        due.find_map(|(id, m)| m.check.as_mut().is_some_and(|c| c.start(now)).then_some(*id))
    }

    /// A check [`Pool::poll_check`] started ended at `now`; `ok` if the backend answered.
    /// Returns the change of state it caused.
    pub fn check_done(&mut self, id: BackendId, now: Instant, ok: bool) -> Option<Change> {
        let m = self.members.get_mut(&id)?;
        let change = m.check.as_mut()?.finish(now, ok);
        if change == Some(Change::Up) {
            m.ramp_from = now;
        }
        change
    }

    /// The next time [`Pool::handle_timeout`] or [`Pool::poll_check`] has work: a check due or
    /// overdue.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let checks = self.members.values().filter(|m| !m.removed).filter_map(|m| m.check.as_ref());
        checks.filter_map(|c| c.due_at().or(c.deadline())).min()
    }

    /// Fails the checks that have run longer than `inter` by `now`; returns the changes.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<(BackendId, Change)> {
        let mut changes = Vec::new();
        for (id, m) in &mut self.members {
            if let Some(change) = m.check.as_mut().and_then(|c| c.expire(now)) {
                if change == Change::Up {
                    m.ramp_from = now;
                }
                changes.push((*id, change));
            }
        }
        changes
    }

    fn forget_if_gone(&mut self, id: BackendId) {
        if self.members.get(&id).is_some_and(|m| m.removed && m.open == 0) {
            self.members.remove(&id);
            self.swrr.forget(id);
            self.lard.forget(id);
        }
    }

    /// A member's weight at `now` in [`UNIT`]s, after slow start; `configured` false counts
    /// every weight as 1 (round-robin).
    fn weight(&self, m: &Member, now: Instant, configured: bool) -> u64 {
        let weight = if configured { u64::from(m.backend.weight) } else { 1 };
        let ramp = match self.config.slow_start {
            Some(window) => {
                let elapsed = now.saturating_duration_since(m.ramp_from);
                let share = (elapsed.as_nanos() * u128::from(UNIT) / window.as_nanos()).min(u128::from(UNIT)) as u64;
                share.max(SLOW_START_FLOOR)
            }
            None => UNIT,
        };
        weight * ramp
    }

    fn choose(&mut self, request: &Request<'_>, now: Instant) -> Option<BackendId> {
        let in_rotation: Vec<(BackendId, &Member)> =
            self.members.iter().filter(|(_, m)| m.in_rotation(now)).map(|(id, m)| (*id, m)).collect();
        if in_rotation.is_empty() {
            return None;
        }
        let weighted = |pool: &Self, configured| -> Vec<(BackendId, u64)> {
            in_rotation.iter().map(|(id, m)| (*id, pool.weight(m, now, configured))).collect()
        };
        match self.config.policy {
            Policy::RoundRobin => {
                let w = weighted(self, false);
                self.swrr.pick(w)
            }
            Policy::Weighted => {
                let w = weighted(self, true);
                self.swrr.pick(w)
            }
            Policy::Service => {
                let w: Vec<_> = in_rotation
                    .iter()
                    .filter(|(_, m)| request.service.is_none_or(|s| m.backend.serves(s)))
                    .map(|(id, m)| (*id, self.weight(m, now, true)))
                    .collect();
                self.swrr.pick(w)
            }
            Policy::Load => {
                let scaled: Vec<_> = in_rotation
                    .iter()
                    .map(|(id, m)| (*id, self.weight(m, now, true) * (UNIT - m.load) / UNIT))
                    .collect();
                // Everyone full: share by weight rather than refuse (HAProxy's agent cannot
                // drive a server's weight below 1 either).
                let w = if scaled.iter().all(|(_, w)| *w == 0) { weighted(self, true) } else { scaled };
                self.swrr.pick(w)
            }
            Policy::LeastConnections => {
                let n = in_rotation.len();
                let start = self.cursor % n;
                self.cursor = self.cursor.wrapping_add(1);
                let rotated = in_rotation.iter().cycle().skip(start).take(n);
                let cost = |m: &Member| (u64::from(m.open) + 1, self.weight(m, now, true));
                rotated.min_by(|(_, a), (_, b)| fewer_per_weight(cost(a), cost(b))).map(|(id, _)| *id)
            }
            Policy::PowerOfTwo => {
                let n = in_rotation.len();
                let first = self.rng.usize(..n);
                if n == 1 {
                    return Some(in_rotation[first].0);
                }
                let second = (first + 1 + self.rng.usize(..n - 1)) % n;
                let cost = |i: usize| (u64::from(in_rotation[i].1.open) + 1, self.weight(in_rotation[i].1, now, true));
                let better = if fewer_per_weight(cost(second), cost(first)).is_lt() { second } else { first };
                Some(in_rotation[better].0)
            }
            Policy::Lard => match request.target {
                Some(target) => {
                    let loads: Vec<_> = in_rotation.iter().map(|(id, m)| (*id, m.open)).collect();
                    self.lard.pick(&self.config.lard, target, &loads)
                }
                None => {
                    let w = weighted(self, true);
                    self.swrr.pick(w)
                }
            },
            Policy::Maglev => match request.key.or(request.target) {
                Some(key) => {
                    let ids: Vec<BackendId> = in_rotation.iter().map(|(id, _)| *id).collect();
                    if self.maglev.as_ref().is_none_or(|t| t.members() != ids) {
                        let names: Vec<(BackendId, &[u8])> =
                            in_rotation.iter().map(|(id, m)| (*id, m.backend.name.as_bytes())).collect();
                        match &mut self.maglev {
                            Some(table) => table.update(&names),
                            None => self.maglev = Some(Maglev::build(&names, self.config.table_size)),
                        }
                    }
                    self.maglev.as_ref().and_then(|t| t.lookup(key))
                }
                None => {
                    let w = weighted(self, true);
                    self.swrr.pick(w)
                }
            },
        }
    }
}

/// Compares two (connections, weight) pairs by connections per unit of weight.
fn fewer_per_weight((open_a, w_a): (u64, u64), (open_b, w_b): (u64, u64)) -> std::cmp::Ordering {
    (u128::from(open_a) * u128::from(w_b)).cmp(&(u128::from(open_b) * u128::from(w_a)))
}
