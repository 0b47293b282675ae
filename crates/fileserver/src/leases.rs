//! The lease and callback table: the hub of the file service, shared by every connection.
//!
//! A client that fetched a file holds a **lease** on it for [`LeaseHub::ttl`]: until then it may
//! serve its cached copy without asking. When the file changes, the hub **calls back** every
//! holder (AFS callbacks): a connected client gets a `Callback` push at once; one that is away
//! is **owed** the callback, delivered when it says `Hello` again, and forgotten when its lease
//! runs out (after which the client revalidates anyway). Leases are soft state with a bound: a
//! client that hears nothing serves a stale copy at most until its lease ends.
//!
//! **Crash recovery.** Every grant, change and delivery is journaled ([`Journal`]) before anyone
//! relies on it, so after kill -9 the new hub knows who holds what and who is owed what. A
//! change is journaled twice: an `Intent` before the file is renamed into place and `Changed`
//! after. A crash between the two leaves an intent behind, and recovery treats it as a change:
//! the holders are owed callbacks (at worst for a file that did not change, which costs them a
//! fetch). Leases granted between the two are broken by `Changed`, so none outlives the change.
//!
//! The hub reads no clock: wall time (needed because leases outlive the process) is the
//! `(Instant, Unix ms)` base it was made with plus the `now` of each call.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use warren_proto::{Hub, HubOutput, SessionId};

use crate::journal::{Journal, Record};

/// What a session asks the lease table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileRequest {
    /// This connection speaks for `client`: deliver what it is owed, then `Welcome`.
    Hello { client: u64 },
    /// `client` is about to read `path`: lease it (journaled), then `Granted`.
    Grant { client: u64, path: String },
    /// `path` is about to change: journal the intent, then `Noted`.
    Intent { path: String },
    /// `path` changed: call back its holders, then `Noted`.
    Changed { path: String },
}

/// What the lease table tells a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileMessage {
    Welcome {
        lease_ms: u32,
    },
    /// The client's copy of `path` is stale: pushed at any time.
    Callback {
        path: String,
    },
    /// The lease is recorded for this long (0: the journal failed, so no lease is promised).
    Granted {
        lease_ms: u32,
    },
    Noted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Held,
    /// The file changed while the client was away: a callback is owed.
    Owed,
}

/// How often expired leases are swept out.
const SWEEP: u64 = 1_000;

/// The file service's hub.
pub struct LeaseHub {
    ttl: Duration,
    base: (Instant, u64),
    /// By path, then client: a change finds its holders in one range.
    leases: BTreeMap<(String, u64), (u64, State)>,
    intents: BTreeSet<String>,
    online: HashMap<u64, BTreeSet<SessionId>>,
    sessions: HashMap<SessionId, u64>,
    journal: Box<dyn Journal>,
    /// Records appended since the last snapshot.
    appended: usize,
    next_sweep: u64,
}

impl std::fmt::Debug for LeaseHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseHub").field("leases", &self.leases.len()).field("online", &self.online.len()).finish()
    }
}

type Out = HubOutput<LeaseHub>;

impl LeaseHub {
    /// A hub recovering from `records` (what the journal held), with leases of `ttl`, whose
    /// wall clock reads `base.1` (Unix ms) at `base.0`.
    pub fn new(journal: Box<dyn Journal>, records: Vec<Record>, ttl: Duration, base: (Instant, u64)) -> Self {
        let mut hub = Self {
            ttl,
            base,
            leases: BTreeMap::new(),
            intents: BTreeSet::new(),
            online: HashMap::new(),
            sessions: HashMap::new(),
            journal,
            appended: 0,
            next_sweep: 0,
        };
        records.into_iter().for_each(|r| hub.apply(r));
        // A change that crashed half-way may have happened: its holders are owed callbacks.
        for path in std::mem::take(&mut hub.intents) {
            hub.apply(Record::Changed { path });
        }
        let now = hub.base.1;
        hub.leases.retain(|_, (until, _)| *until > now);
        hub.snapshot();
        hub
    }

    /// How long a lease lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Leases held and callbacks owed, for reports and tests.
    pub fn counts(&self) -> (usize, usize) {
        let owed = self.leases.values().filter(|(_, s)| *s == State::Owed).count();
        (self.leases.len() - owed, owed)
    }

    fn ms(&self, now: Instant) -> u64 {
        self.base.1 + now.saturating_duration_since(self.base.0).as_millis() as u64
    }

    fn ttl_ms(&self) -> u32 {
        self.ttl.as_millis().min(u32::MAX as u128) as u32
    }

    fn apply(&mut self, record: Record) {
        match record {
            Record::Grant { client, path, until_ms } => {
                self.leases.insert((path, client), (until_ms, State::Held));
            }
            Record::Owed { client, path, until_ms } => {
                self.leases.insert((path, client), (until_ms, State::Owed));
            }
            Record::Intent { path } => {
                self.intents.insert(path);
            }
            Record::Changed { path } => {
                self.intents.remove(&path);
                for (_, lease) in self.holders_mut(&path) {
                    lease.1 = State::Owed;
                }
            }
            Record::Delivered { client, path } => {
                self.leases.remove(&(path, client));
            }
        }
    }

    fn holders_mut(&mut self, path: &str) -> impl Iterator<Item = (&(String, u64), &mut (u64, State))> {
        self.leases.range_mut((path.to_owned(), 0)..=(path.to_owned(), u64::MAX))
    }

    /// Journal `records`; only once they are durable are they applied.
    fn record(&mut self, records: Vec<Record>) -> bool {
        if self.journal.append(&records).is_err() {
            return false;
        }
        self.appended += records.len();
        records.into_iter().for_each(|r| self.apply(r));
        if self.appended > 1024 + 4 * self.leases.len() {
            self.snapshot();
        }
        true
    }

    /// Rewrite the journal as the live table.
    fn snapshot(&mut self) {
        let mut records: Vec<Record> = self
            .leases
            .iter()
            .map(|((path, client), (until_ms, state))| {
                let (client, path, until_ms) = (*client, path.clone(), *until_ms);
                match state {
                    State::Held => Record::Grant { client, path, until_ms },
                    State::Owed => Record::Owed { client, path, until_ms },
                }
            })
            .collect();
        records.extend(self.intents.iter().map(|path| Record::Intent { path: path.clone() }));
        if self.journal.rewrite(&records).is_ok() {
            self.appended = 0;
        }
    }

    fn sweep(&mut self, now_ms: u64) {
        if now_ms >= self.next_sweep {
            self.next_sweep = now_ms + SWEEP;
            self.leases.retain(|_, (until, _)| *until > now_ms);
        }
    }

    fn hello(&mut self, from: SessionId, client: u64, now_ms: u64, out: &mut Out) {
        self.sessions.insert(from, client);
        self.online.entry(client).or_default().insert(from);
        let owed: Vec<String> = self
            .leases
            .iter()
            .filter(|((_, c), (until, state))| *c == client && *state == State::Owed && *until > now_ms)
            .map(|((path, _), _)| path.clone())
            .collect();
        let delivered = owed.iter().map(|path| Record::Delivered { client, path: path.clone() }).collect();
        // Delivered before it is journaled: a crash now only repeats a callback.
        out.extend(owed.into_iter().map(|path| (from, FileMessage::Callback { path })));
        self.record(delivered);
        out.push(from, FileMessage::Welcome { lease_ms: self.ttl_ms() });
    }

    fn changed(&mut self, from: SessionId, path: String, now_ms: u64, out: &mut Out) {
        let holders: Vec<u64> =
            self.holders_mut(&path).filter(|(_, (until, _))| *until > now_ms).map(|((_, c), _)| *c).collect();
        self.record(vec![Record::Changed { path: path.clone() }]);
        let mut delivered = Vec::new();
        for client in holders {
            let Some(sessions) = self.online.get(&client).filter(|s| !s.is_empty()) else { continue };
            for &to in sessions {
                out.push(to, FileMessage::Callback { path: path.clone() });
            }
            delivered.push(Record::Delivered { client, path: path.clone() });
        }
        self.record(delivered);
        out.push(from, FileMessage::Noted);
    }
}

impl Hub for LeaseHub {
    type Request = FileRequest;
    type Message = FileMessage;
    type Done = warren_proto::Nothing;

    fn handle_request(&mut self, now: Instant, from: SessionId, request: FileRequest, out: &mut Out) {
        let now_ms = self.ms(now);
        self.sweep(now_ms);
        match request {
            FileRequest::Hello { client } => self.hello(from, client, now_ms, out),
            FileRequest::Grant { client, path } => {
                let until_ms = now_ms + self.ttl.as_millis() as u64;
                let lease_ms =
                    if self.record(vec![Record::Grant { client, path, until_ms }]) { self.ttl_ms() } else { 0 };
                out.push(from, FileMessage::Granted { lease_ms });
            }
            FileRequest::Intent { path } => {
                self.record(vec![Record::Intent { path }]);
                out.push(from, FileMessage::Noted);
            }
            FileRequest::Changed { path } => self.changed(from, path, now_ms, out),
        }
    }

    fn handle_leave(&mut self, _: Instant, id: SessionId, _: &mut Out) {
        if let Some(client) = self.sessions.remove(&id)
            && let Some(sessions) = self.online.get_mut(&client)
        {
            sessions.remove(&id);
            if sessions.is_empty() {
                self.online.remove(&client);
            }
        }
    }

    fn report(&self, _: Instant) -> Option<String> {
        let (held, owed) = self.counts();
        Some(format!("files: {held} leases held, {owed} callbacks owed (journaled)"))
    }
}

#[cfg(test)]
mod tests;
