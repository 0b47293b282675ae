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
//! **Group commit.** The hub never writes under its lock: appends run as the hub's jobs, one
//! at a time, each taking every record made while the one before it ran. A record changes the
//! table at once (so later requests see it), but the answers that promise it (`Granted`, and
//! `Noted` for an intent or a change) wait until its append is durable; a failed append turns a
//! grant into no promise (`lease_ms: 0`). Pushes that a crash would only repeat (callbacks,
//! `Welcome`) go at once.
//!
//! The hub reads no clock: wall time (needed because leases outlive the process) is the
//! `(Instant, Unix ms)` base it was made with plus the `now` of each call.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use warren_proto::{Hub, HubOutput, Job, SessionId, Token};

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

/// An append (or a snapshot) done: the journal comes back with the answers that waited for it.
pub struct Appended {
    journal: Box<dyn Journal>,
    result: io::Result<()>,
    answers: Vec<(SessionId, FileMessage)>,
}

impl std::fmt::Debug for Appended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appended").field("result", &self.result).field("answers", &self.answers).finish()
    }
}

/// The file service's hub.
pub struct LeaseHub {
    ttl: Duration,
    base: (Instant, u64),
    /// By path, then client: a change finds its holders in one range.
    leases: BTreeMap<(String, u64), (u64, State)>,
    intents: BTreeSet<String>,
    online: HashMap<u64, BTreeSet<SessionId>>,
    sessions: HashMap<SessionId, u64>,
    /// `None` while an append job has it.
    journal: Option<Box<dyn Journal>>,
    /// Records made since the last append began: the next append.
    queued: Vec<Record>,
    /// Answers that wait for `queued` to be durable.
    answers: Vec<(SessionId, FileMessage)>,
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
            journal: Some(journal),
            queued: Vec::new(),
            answers: Vec::new(),
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
        let snapshot = hub.snapshot();
        if let Some(journal) = hub.journal.as_mut() {
            // Before serving: nothing waits for it. A failure leaves the old journal, still valid.
            let _ = journal.rewrite(&snapshot);
        }
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

    /// Apply `records` and queue them for the next append; `answer`, if any, goes out once
    /// they are durable.
    fn record(&mut self, records: Vec<Record>, answer: Option<(SessionId, FileMessage)>, out: &mut Out) {
        if records.is_empty() {
            out.extend(answer);
            return;
        }
        self.queued.extend(records.iter().cloned());
        records.into_iter().for_each(|r| self.apply(r));
        self.answers.extend(answer);
    }

    /// Start the next append, unless one is running (its completion starts it).
    fn flush(&mut self, out: &mut Out) {
        if self.queued.is_empty() {
            return;
        }
        let Some(mut journal) = self.journal.take() else { return };
        let records = std::mem::take(&mut self.queued);
        let answers = std::mem::take(&mut self.answers);
        // Grown past its live content: the next write is a snapshot of the table, which
        // holds these records too.
        let snapshot = (self.appended + records.len() > 1024 + 4 * self.leases.len()).then(|| self.snapshot());
        self.appended = if snapshot.is_some() { 0 } else { self.appended + records.len() };
        out.job(
            Token(0),
            Job::blocking(move || {
                let result = match snapshot {
                    Some(snapshot) => journal.rewrite(&snapshot),
                    None => journal.append(&records),
                };
                Appended { journal, result, answers }
            }),
        );
    }

    /// The live table, as records.
    fn snapshot(&self) -> Vec<Record> {
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
        records
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
        out.push(from, FileMessage::Welcome { lease_ms: self.ttl_ms() });
        self.record(delivered, None, out);
    }

    fn changed(&mut self, from: SessionId, path: String, now_ms: u64, out: &mut Out) {
        let holders: Vec<u64> =
            self.holders_mut(&path).filter(|(_, (until, _))| *until > now_ms).map(|((_, c), _)| *c).collect();
        let mut records = vec![Record::Changed { path: path.clone() }];
        for client in holders {
            let Some(sessions) = self.online.get(&client).filter(|s| !s.is_empty()) else { continue };
            for &to in sessions {
                out.push(to, FileMessage::Callback { path: path.clone() });
            }
            records.push(Record::Delivered { client, path: path.clone() });
        }
        // Applied in order: the change breaks the leases, then the deliveries clear them.
        self.record(records, Some((from, FileMessage::Noted)), out);
    }
}

impl Hub for LeaseHub {
    type Request = FileRequest;
    type Message = FileMessage;
    type Done = Appended;

    fn handle_request(&mut self, now: Instant, from: SessionId, request: FileRequest, out: &mut Out) {
        let now_ms = self.ms(now);
        self.sweep(now_ms);
        match request {
            FileRequest::Hello { client } => self.hello(from, client, now_ms, out),
            FileRequest::Grant { client, path } => {
                let until_ms = now_ms + self.ttl.as_millis() as u64;
                let granted = FileMessage::Granted { lease_ms: self.ttl_ms() };
                self.record(vec![Record::Grant { client, path, until_ms }], Some((from, granted)), out);
            }
            FileRequest::Intent { path } => {
                self.record(vec![Record::Intent { path }], Some((from, FileMessage::Noted)), out)
            }
            FileRequest::Changed { path } => self.changed(from, path, now_ms, out),
        }
        self.flush(out);
    }

    fn handle_completion(&mut self, _: Instant, _: Token, done: Appended, out: &mut Out) {
        let Appended { journal, result, answers } = done;
        self.journal = Some(journal);
        let failed = result.is_err();
        if let Err(e) = result {
            tracing::error!(target: "warren", "files: the lease journal failed: {e}");
        }
        out.extend(answers.into_iter().map(|(to, msg)| match msg {
            // Not durable: no lease is promised.
            FileMessage::Granted { .. } if failed => (to, FileMessage::Granted { lease_ms: 0 }),
            msg => (to, msg),
        }));
        self.flush(out);
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
