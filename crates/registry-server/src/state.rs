//! The registry as a sans-IO state machine: names, leases, the revision counter and the event
//! history. No I/O, no clock: every verb that depends on time takes `now`, and the driver calls
//! [`State::expire`] at [`State::poll_timeout`].
//!
//! **Sweep bound.** Lease deadlines are rounded up to a grid of `Config::sweep` (measured from the
//! state's creation), so one sweep removes every lease that ran out in that slot, in one batch. A
//! lease last renewed at `t` is therefore removed at some time in `[t + ttl, t + ttl + sweep)`,
//! given a driver that calls `expire` when `poll_timeout` says.
//!
//! **Persistence hooks.** A durable driver takes the records changed since its last commit with
//! [`State::take_dirty`] and rebuilds the machine with [`State::restore`]. Renewals dirty nothing:
//! a lease's deadline is soft state, and a restored lease gets a full TTL from the restart.
//!
//! **Credentials.** Tokens are kept as keyed hashes ([`TokenKey`]): every write names its token,
//! and so do renewals and releases of a lease (the token that registered it, or the admin's), so
//! that nobody keeps alive or ends an endpoint that is not theirs. Lease ids are random.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use warren_registry::model::{
    Endpoint, EndpointKey, Entry, Error, Event, EventKind, LeaseId, MAX_TTL, MIN_TTL, Name, Revision, TokenHash,
    TokenKey, check_endpoints, fold_prefix,
};

/// Tunables of the state machine, with the defaults a deployment gets.
#[derive(Clone, Debug)]
pub struct Config {
    /// Most endpoints under one name (64).
    pub max_endpoints: usize,
    /// Events kept for watches that resume (10,000); older revisions answer `Compacted`.
    pub history: usize,
    /// The expiry sweep's granularity (100 ms): a lease lapses at most this long after its TTL.
    pub sweep: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config { max_endpoints: 64, history: 10_000, sweep: Duration::from_millis(100) }
    }
}

/// A name as stored: its owner and its endpoints, each static (`None`) or under a lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRecord {
    pub owner: TokenHash,
    pub endpoints: Vec<(Endpoint, Option<LeaseId>)>,
}

/// A lease as stored: its TTL and owner. Its deadline is not stored (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub ttl_ms: u64,
    pub owner: TokenHash,
}

/// What changed since the last `take_dirty`: `None` records were deleted.
#[derive(Debug, Default)]
pub struct Dirty {
    pub names: Vec<(Name, Option<NameRecord>)>,
    pub leases: Vec<(LeaseId, Option<LeaseRecord>)>,
    pub revision: Revision,
}

impl Dirty {
    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.leases.is_empty()
    }
}

#[derive(Debug)]
struct Lease {
    record: LeaseRecord,
    deadline: Instant,
    attached: BTreeSet<(Name, EndpointKey)>,
}

/// The registry. See the module documentation.
#[derive(Debug)]
pub struct State {
    config: Config,
    key: TokenKey,
    admin: Option<TokenHash>,
    epoch: Instant,
    names: BTreeMap<Name, NameRecord>,
    leases: BTreeMap<LeaseId, Lease>,
    deadlines: BTreeSet<(Instant, LeaseId)>,
    revision: Revision,
    history: VecDeque<Event>,
    /// Watches may start from this revision or later; earlier events are gone.
    oldest: Revision,
    dirty_names: BTreeSet<Name>,
    dirty_leases: BTreeSet<LeaseId>,
    outbox: Vec<Event>,
}

impl State {
    /// An empty registry whose tokens are hashed with `key`. The `admin` token may change or
    /// remove any name and lease.
    pub fn new(config: Config, key: TokenKey, admin: Option<&str>, now: Instant) -> Result<State, Error> {
        let admin = admin.map(|token| key.hash(token)).transpose()?;
        Ok(State {
            config,
            key,
            admin,
            epoch: now,
            names: BTreeMap::new(),
            leases: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            revision: Revision(0),
            history: VecDeque::new(),
            oldest: Revision(0),
            dirty_names: BTreeSet::new(),
            dirty_leases: BTreeSet::new(),
            outbox: Vec::new(),
        })
    }

    /// Rebuilds a registry from stored records: history starts empty at `revision`, and every
    /// lease gets its full TTL from `now`.
    pub fn restore(
        config: Config,
        key: TokenKey,
        admin: Option<&str>,
        now: Instant,
        names: impl IntoIterator<Item = (Name, NameRecord)>,
        leases: impl IntoIterator<Item = (LeaseId, LeaseRecord)>,
        revision: Revision,
    ) -> Result<State, Error> {
        let mut s = State::new(config, key, admin, now)?;
        (s.revision, s.oldest) = (revision, revision);
        for (id, record) in leases {
            let deadline = s.deadline(now, Duration::from_millis(record.ttl_ms));
            s.deadlines.insert((deadline, id));
            s.leases.insert(id, Lease { record, deadline, attached: BTreeSet::new() });
        }
        for (name, mut record) in names {
            // An endpoint whose lease record is missing cannot be renewed: drop it.
            record.endpoints.retain(|(e, lease)| match lease.and_then(|id| s.leases.get_mut(&id)) {
                Some(l) => l.attached.insert((name.clone(), e.key())),
                None => lease.is_none(),
            });
            if !record.endpoints.is_empty() {
                s.names.insert(name, record);
            }
        }
        Ok(s)
    }

    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// Leases held (granted, not yet released or expired).
    pub fn lease_count(&self) -> usize {
        self.leases.len()
    }

    /// The name as it is spelt here if it is bound (its first spelling is kept while it exists,
    /// see `Backend`), else as given.
    fn spelt(&self, name: &Name) -> Name {
        self.names.get_key_value(name).map_or(name, |(stored, _)| stored).clone()
    }

    /// `bind`: the name must be free; it becomes owned by `token`.
    pub fn bind(&mut self, name: &Name, token: &str, endpoints: Vec<Endpoint>) -> Result<Revision, Error> {
        let owner = self.key.hash(token)?;
        check_endpoints(&endpoints, self.config.max_endpoints)?;
        if self.names.contains_key(name) {
            return Err(Error::AlreadyBound(self.spelt(name)));
        }
        let record = NameRecord { owner, endpoints: endpoints.iter().map(|e| (e.clone(), None)).collect() };
        self.names.insert(name.clone(), record);
        let events = endpoints.into_iter().map(|e| (EventKind::Put, name.clone(), e)).collect();
        Ok(self.write(events, [name.clone()]))
    }

    /// `rebind`: replaces the name's endpoints with these static ones (binding it if free).
    pub fn rebind(&mut self, name: &Name, token: &str, endpoints: Vec<Endpoint>) -> Result<Revision, Error> {
        let owner = self.key.hash(token)?;
        check_endpoints(&endpoints, self.config.max_endpoints)?;
        let name = &self.spelt(name);
        let (owner, old) = match self.names.remove(name) {
            Some(record) => {
                if let Err(e) = self.authorize(name, &record.owner, &owner) {
                    self.names.insert(name.clone(), record);
                    return Err(e);
                }
                (record.owner, record.endpoints)
            }
            None => (owner, Vec::new()),
        };
        let mut events = Vec::new();
        for (e, lease) in &old {
            self.detach(*lease, name, e.key());
            if !endpoints.iter().any(|n| n.key() == e.key()) {
                events.push((EventKind::Delete, name.clone(), e.clone()));
            }
        }
        // A Put for every new endpoint and every changed weight or metadata; none for the same.
        for e in &endpoints {
            if !old.iter().any(|(o, _)| o == e) {
                events.push((EventKind::Put, name.clone(), e.clone()));
            }
        }
        let record = NameRecord { owner, endpoints: endpoints.into_iter().map(|e| (e, None)).collect() };
        self.names.insert(name.clone(), record);
        Ok(self.write(events, [name.clone()]))
    }

    /// `unbind`: removes the name and every endpoint under it (leased ones too).
    pub fn unbind(&mut self, name: &Name, token: &str) -> Result<Revision, Error> {
        let caller = self.key.hash(token)?;
        let name = &self.spelt(name);
        let record = self.names.get(name).ok_or_else(|| Error::NotBound(name.clone()))?;
        self.authorize(name, &record.owner, &caller)?;
        let record = self.names.remove(name).expect("present");
        let mut events = Vec::new();
        for (e, lease) in record.endpoints {
            self.detach(lease, name, e.key());
            events.push((EventKind::Delete, name.clone(), e));
        }
        Ok(self.write(events, [name.clone()]))
    }

    /// `lookup`: the name as spelt here and its endpoints, at the current revision.
    pub fn lookup(&self, name: &Name) -> Result<(Revision, Entry), Error> {
        let (name, record) = self.names.get_key_value(name).ok_or_else(|| Error::NotBound(name.clone()))?;
        let endpoints = record.endpoints.iter().map(|(e, _)| e.clone()).collect();
        Ok((self.revision, Entry { name: name.clone(), endpoints }))
    }

    /// `list`: every name starting with `prefix` (in any case), in order.
    pub fn list(&self, prefix: &str) -> Result<(Revision, Vec<Entry>), Error> {
        let prefix = fold_prefix(prefix)?;
        let entries = self
            .names
            .range::<str, _>((std::ops::Bound::Included(prefix.as_str()), std::ops::Bound::Unbounded))
            .take_while(|(n, _)| n.key().starts_with(&prefix))
            .map(|(n, r)| Entry { name: n.clone(), endpoints: r.endpoints.iter().map(|(e, _)| e.clone()).collect() })
            .collect();
        Ok((self.revision, entries))
    }

    /// `register`: puts `endpoint` under `name` with a new lease of `ttl`. A free name is bound
    /// to `token`; a bound one needs its owner's token (or the admin's).
    pub fn register(
        &mut self,
        name: &Name,
        token: &str,
        endpoint: Endpoint,
        ttl: Duration,
        now: Instant,
    ) -> Result<(LeaseId, Revision), Error> {
        let caller = self.key.hash(token)?;
        endpoint.validate()?;
        if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
            return Err(Error::Invalid(format!("ttl {ttl:?}: must be {MIN_TTL:?} to {MAX_TTL:?}")));
        }
        let name = &self.spelt(name);
        let key = endpoint.key();
        let previous = match self.names.get(name) {
            Some(record) => {
                self.authorize(name, &record.owner, &caller)?;
                let previous = record.endpoints.iter().position(|(e, _)| e.key() == key);
                if previous.is_none() && record.endpoints.len() >= self.config.max_endpoints {
                    return Err(Error::TooLarge(format!("{name}: at most {} endpoints", self.config.max_endpoints)));
                }
                previous
            }
            None => None,
        };
        let id = loop {
            let id = LeaseId::random()?;
            if !self.leases.contains_key(&id) {
                break id;
            }
        };
        let ttl_ms = u64::try_from(ttl.as_millis()).expect("ttl is bounded");
        let deadline = self.deadline(now, ttl);
        let attached = BTreeSet::from([(name.clone(), key)]);
        self.leases.insert(id, Lease { record: LeaseRecord { ttl_ms, owner: caller }, deadline, attached });
        self.deadlines.insert((deadline, id));
        self.dirty_leases.insert(id);
        let record = self.names.entry(name.clone()).or_insert(NameRecord { owner: caller, endpoints: Vec::new() });
        let old_lease = match previous {
            Some(i) => std::mem::replace(&mut record.endpoints[i], (endpoint.clone(), Some(id))).1,
            None => {
                record.endpoints.push((endpoint.clone(), Some(id)));
                None
            }
        };
        self.detach(old_lease, name, key);
        let revision = self.write(vec![(EventKind::Put, name.clone(), endpoint)], [name.clone()]);
        Ok((id, revision))
    }

    /// Whether `token` may change `name` (see `Backend::authorize`).
    pub fn authorize_token(&self, name: &Name, token: &str) -> Result<(), Error> {
        let caller = self.key.hash(token)?;
        let (name, record) = self.names.get_key_value(name).ok_or_else(|| Error::NotBound(name.clone()))?;
        self.authorize(name, &record.owner, &caller)
    }

    /// `renew`: the lease lives another full TTL from `now`. Returns that TTL. Needs the token
    /// that registered it (or the admin's).
    pub fn renew(&mut self, id: LeaseId, token: &str, now: Instant) -> Result<Duration, Error> {
        let ttl = Duration::from_millis(self.lease_of(id, token)?.record.ttl_ms);
        let deadline = self.deadline(now, ttl);
        let lease = self.leases.get_mut(&id).expect("present");
        self.deadlines.remove(&(lease.deadline, id));
        lease.deadline = deadline;
        self.deadlines.insert((deadline, id));
        Ok(ttl)
    }

    /// `release`: ends the lease now and removes its endpoints. Needs the token that registered
    /// it (or the admin's).
    pub fn release(&mut self, id: LeaseId, token: &str) -> Result<Revision, Error> {
        self.lease_of(id, token)?;
        Ok(self.end_lease(id))
    }

    /// The lease `id`, if `token` registered it (or is the admin's).
    fn lease_of(&self, id: LeaseId, token: &str) -> Result<&Lease, Error> {
        let caller = self.key.hash(token)?;
        let lease = self.leases.get(&id).ok_or(Error::LeaseNotFound(id))?;
        if lease.record.owner != caller && self.admin != Some(caller) {
            return Err(Error::Forbidden(format!("lease {id}")));
        }
        Ok(lease)
    }

    /// Removes every lease whose deadline has passed; the events of their removal.
    pub fn expire(&mut self, now: Instant) -> Vec<Event> {
        let start = self.outbox.len();
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.end_lease(id);
        }
        self.outbox[start..].to_vec()
    }

    /// When the driver must next call `expire`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(deadline, _)| deadline)
    }

    /// `watch`: every event after `from` whose name starts with `prefix` (in any case), in
    /// revision order.
    pub fn watch(&self, prefix: &str, from: Revision) -> Result<Vec<Event>, Error> {
        let prefix = fold_prefix(prefix)?;
        if from < self.oldest {
            return Err(Error::Compacted { oldest: self.oldest });
        }
        let first = self.history.partition_point(|e| e.revision <= from);
        Ok(self.history.range(first..).filter(|e| e.name.key().starts_with(&prefix)).cloned().collect())
    }

    /// Every event since the last call, for the driver to publish to its watchers.
    pub fn poll_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.outbox)
    }

    /// The records changed since the last call, with the revision and lease counter to store.
    /// A name comes with its spelling now, which may not be the one it had when it was dirtied
    /// (unbound, then bound spelt otherwise).
    pub fn take_dirty(&mut self) -> Dirty {
        let names = std::mem::take(&mut self.dirty_names).into_iter().map(|n| match self.names.get_key_value(&n) {
            Some((name, record)) => (name.clone(), Some(record.clone())),
            None => (n, None),
        });
        let leases = std::mem::take(&mut self.dirty_leases)
            .into_iter()
            .map(|id| (id, self.leases.get(&id).map(|l| l.record.clone())));
        Dirty { names: names.collect(), leases: leases.collect(), revision: self.revision }
    }

    fn end_lease(&mut self, id: LeaseId) -> Revision {
        let lease = self.leases.remove(&id).expect("caller checked");
        self.deadlines.remove(&(lease.deadline, id));
        self.dirty_leases.insert(id);
        let mut events = Vec::new();
        for (name, key) in &lease.attached {
            let record = self.names.get_mut(name).expect("attached endpoints exist");
            let i = record.endpoints.iter().position(|(e, _)| e.key() == *key).expect("attached endpoint exists");
            let (endpoint, _) = record.endpoints.remove(i);
            if record.endpoints.is_empty() {
                self.names.remove(name);
            }
            events.push((EventKind::Delete, name.clone(), endpoint));
        }
        self.write(events, lease.attached.into_iter().map(|(n, _)| n))
    }

    fn detach(&mut self, lease: Option<LeaseId>, name: &Name, key: EndpointKey) {
        if let Some(lease) = lease.and_then(|id| self.leases.get_mut(&id)) {
            lease.attached.remove(&(name.clone(), key));
        }
    }

    /// Records one write: bumps the revision (if anything changed) and appends its events.
    fn write(&mut self, events: Vec<(EventKind, Name, Endpoint)>, names: impl IntoIterator<Item = Name>) -> Revision {
        self.dirty_names.extend(names);
        if events.is_empty() {
            return self.revision;
        }
        self.revision.0 += 1;
        let revision = self.revision;
        for (kind, name, endpoint) in events {
            let event = Event { revision, kind, name, endpoint };
            self.outbox.push(event.clone());
            self.history.push_back(event);
        }
        while self.history.len() > self.config.history {
            // Drop whole revisions, so that a watch never starts in the middle of one.
            let dropped = self.history.pop_front().expect("non-empty").revision;
            while self.history.front().is_some_and(|e| e.revision == dropped) {
                self.history.pop_front();
            }
            self.oldest = dropped;
        }
        revision
    }

    fn authorize(&self, name: &Name, owner: &TokenHash, caller: &TokenHash) -> Result<(), Error> {
        if owner == caller || self.admin.as_ref() == Some(caller) {
            Ok(())
        } else {
            Err(Error::Forbidden(name.to_string()))
        }
    }

    /// `now + ttl`, rounded up to the sweep grid.
    fn deadline(&self, now: Instant, ttl: Duration) -> Instant {
        let exact = now + ttl;
        let sweep = self.config.sweep.as_nanos().max(1);
        let since = exact.saturating_duration_since(self.epoch).as_nanos();
        let rounded = since.div_ceil(sweep) * sweep;
        self.epoch + Duration::from_nanos(u64::try_from(rounded).expect("deadlines are within centuries"))
    }
}

#[cfg(test)]
mod tests;
