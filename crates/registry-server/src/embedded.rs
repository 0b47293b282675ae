//! The default backend: the state machine driven by one writer thread over a `redb` file.
//!
//! **Writes.** Every change goes to the writer thread through a channel. The thread takes all
//! that is waiting (up to [`BATCH`]), applies it to the [`State`], expires due leases, appends
//! the changed records to the [`journal`](crate::journal) as one record and syncs it, and only
//! then answers and tells the watchers: one `fdatasync` covers a whole batch (group commit), and
//! an acknowledged write, or an event a watcher saw, is on disk. The redb file takes the
//! journalled changes in one durable commit when the journal is full (a checkpoint) and when
//! the store opens (after a crash: the replay).
//!
//! **Reads.** `lookup`, `list` and `snapshot` read a [`View`] that the writer updates after each
//! commit, so they never wait for a write and never see one that is not yet durable.
//!
//! **Restarts.** Names, endpoints, leases (their TTL and owner) and the revision are stored;
//! a name's record is stored under its case-folded key, and its spelling, where it is not
//! that key, in a table of its own (so stores written before names had case load as they are);
//! lease deadlines and the event history are not. After a restart every
//! lease has a full TTL from the restart (as etcd gives leases after a leader change), and
//! watches resume from the stored revision onwards (older ones get `Compacted`).
//!
//! **Failure.** A failed append or commit stops the writer: what it had applied is not acknowledged, and
//! every later write answers `Unavailable` (as etcd stops on a failed fsync).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::{broadcast, oneshot};
use warren_registry::backend::{Backend, Counts, Lease, Watch};
use warren_registry::model::{Endpoint, Entry, Error, Event, LeaseId, Name, Revision, TokenKey, fold_prefix};

use crate::datadir;
use crate::journal::{self, Journal};
use crate::state::{Config, Dirty, LeaseRecord, NameRecord, State};

/// Name records, by the name's case-folded key.
const NAMES: TableDefinition<&str, &[u8]> = TableDefinition::new("names");
/// The spelling of each name that is not spelt as its key (`HelloServer` under `helloserver`).
/// Added beside `NAMES` rather than into its records, so that the layout stays `FORMAT` 2: a
/// store from before has no such table and all its names are lowercase, and an older warren
/// reading a newer store shows every name in lowercase.
const SPELLINGS: TableDefinition<&str, &str> = TableDefinition::new("spellings");
const LEASES: TableDefinition<u128, &[u8]> = TableDefinition::new("leases");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The store's layout, kept in `META`: 2 has keyed token hashes and 128-bit lease ids. A store
/// without it was written with plain SHA-256 hashes, which cannot be carried over.
const FORMAT: u64 = 2;

/// The most commands one commit covers.
const BATCH: usize = 512;
/// Batches of events buffered per watcher before it must catch up from the history.
const WATCH_BUFFER: usize = 1024;

type Reply<T> = oneshot::Sender<Result<T, Error>>;
/// A watch's start: the history after its revision, and the live batches from then on.
type Subscription = (Vec<Event>, broadcast::Receiver<Arc<[Event]>>);

enum Command {
    Bind(Name, String, Vec<Endpoint>, Reply<Revision>),
    Rebind(Name, String, Vec<Endpoint>, Reply<Revision>),
    Unbind(Name, String, Reply<Revision>),
    Register(Name, String, Endpoint, Duration, Reply<Lease>),
    Renew(LeaseId, String, Reply<Duration>),
    Release(LeaseId, String, Reply<Revision>),
    Authorize(Name, String, Reply<()>),
    Watch(String, Revision, Reply<Subscription>),
}

/// What readers see: the state as of the last commit.
#[derive(Debug, Default)]
struct View {
    revision: Revision,
    names: BTreeMap<Name, Vec<Endpoint>>,
    leases: usize,
}

/// The embedded store. Dropping it lets the writer finish its batch, and waits for it to stop
/// (so the file can be opened again at once); open watches then end with `Unavailable`.
#[derive(Debug)]
pub struct Embedded {
    /// Watches hold this weakly, so that they never keep the writer alive.
    commands: Option<Arc<mpsc::Sender<Command>>>,
    view: Arc<RwLock<View>>,
    /// Moves with every change of `view`, so that DNS can tell without taking its lock.
    generation: Arc<AtomicU64>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Embedded {
    fn drop(&mut self) {
        self.commands = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl Embedded {
    /// Opens (or creates) the store `registry.redb` in the private directory `dir` (see
    /// [`datadir`]) and starts its writer thread. The `admin` token may change any name.
    pub fn open(dir: &Path, config: Config, admin: Option<&str>) -> Result<Embedded, Error> {
        Embedded::open_with_journal(dir, config, admin, journal::SIZE)
    }

    /// [`Embedded::open`] with a journal of `journal_size` bytes: a small one checkpoints into
    /// the redb file every few writes (for tests of checkpoints).
    pub fn open_with_journal(
        dir: &Path,
        config: Config,
        admin: Option<&str>,
        journal_size: u64,
    ) -> Result<Embedded, Error> {
        datadir::private_dir(dir).map_err(|e| Error::Unavailable(format!("store: {e}")))?;
        let key = datadir::token_key(dir)?;
        let db = Database::create(dir.join("registry.redb")).map_err(storage)?;
        let journal_path = dir.join("registry.journal");
        let (state, epoch) = load(&db, &journal_path, config, key, admin)?;
        let journal = Journal::open(&journal_path, epoch, journal_size).map_err(storage)?;
        let (revision, entries) = state.list("").expect("the empty prefix is valid");
        let names = entries.into_iter().map(|e| (e.name, e.endpoints)).collect();
        let view = Arc::new(RwLock::new(View { revision, names, leases: state.lease_count() }));
        let (commands, rx) = mpsc::channel();
        let generation = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            state,
            db,
            journal,
            epoch,
            pending: Pending::default(),
            view: view.clone(),
            generation: generation.clone(),
            events: broadcast::channel(WATCH_BUFFER).0,
        };
        let writer = std::thread::Builder::new()
            .name("registry-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| storage(format!("cannot start the writer thread: {e}")))?;
        Ok(Embedded { commands: Some(Arc::new(commands)), view, generation, writer: Some(writer) })
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, Error> {
        call(self.commands.as_ref().expect("set until drop"), make).await
    }
}

async fn call<T>(commands: &mpsc::Sender<Command>, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, Error> {
    let (tx, rx) = oneshot::channel();
    commands.send(make(tx)).map_err(|_| stopped())?;
    rx.await.map_err(|_| stopped())?
}

fn storage(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("store: {e}"))
}

/// A write transaction whose `commit` returns only once the data is on disk, set here rather
/// than left to redb's default, because the registry answers a write as soon as its commit
/// returns. `Immediate` is redb's fsync-at-commit level (`None` would keep the commit in memory
/// until a later durable one). One-phase commit: the new commit slot, checksummed, is written
/// and flipped to, then one fsync; after a crash redb opens the newest slot whose checksum
/// holds, so a commit is either whole or absent. Two-phase commit (a second fsync per commit)
/// only guards against a writer who controls both the data and when the machine crashes.
fn begin_durable(db: &Database) -> Result<WriteTransaction, Error> {
    let mut txn = db.begin_write().map_err(storage)?;
    txn.set_durability(Durability::Immediate).map_err(storage)?;
    txn.set_two_phase_commit(false);
    Ok(txn)
}

fn stopped() -> Error {
    Error::Unavailable("the store has stopped".into())
}

/// Readies the tables, replays the journal into them, and reads the state back; with the epoch
/// the journal is to be written under.
fn load(
    db: &Database,
    journal: &Path,
    config: Config,
    key: TokenKey,
    admin: Option<&str>,
) -> Result<(State, u64), Error> {
    // Create the tables on first use, so that reading never meets a missing one.
    let txn = begin_durable(db)?;
    {
        let mut meta = txn.open_table(META).map_err(storage)?;
        let format = meta.get("format").map_err(storage)?.map(|v| v.value());
        let written = meta.get("revision").map_err(storage)?.is_some();
        match format {
            Some(FORMAT) => {}
            None if !written => _ = meta.insert("format", FORMAT).map_err(storage)?,
            other => {
                return Err(storage(format!(
                    "written by another version of warren (layout {}, this one reads {FORMAT}): its token \
                     hashes cannot be carried over; move the data directory aside and bind the names again",
                    other.unwrap_or(1)
                )));
            }
        }
    }
    txn.open_table(NAMES).map_err(storage)?;
    txn.open_table(SPELLINGS).map_err(storage)?;
    txn.open_table(LEASES).map_err(storage)?;
    let epoch = txn.open_table(META).map_err(storage)?.get(JOURNAL_EPOCH).map_err(storage)?.map_or(0, |v| v.value());
    txn.commit().map_err(storage)?;

    // Acknowledged writes since the last checkpoint: into the file, under a new epoch, before
    // anything reads it. Always a new epoch, so that no record of the old one is ever read again.
    let mut replayed = Pending::default();
    for record in Journal::replay(journal, epoch).map_err(storage)? {
        replayed.add(&Dirty { names: record.names, leases: record.leases, revision: Revision(record.revision) });
    }
    let epoch = epoch + 1;
    store(db, &replayed.take(), epoch)?;

    let txn = db.begin_read().map_err(storage)?;
    let decode_err = |what: &str| storage(format!("corrupt {what} record"));
    let mut names = Vec::new();
    let spellings = txn.open_table(SPELLINGS).map_err(storage)?;
    for row in txn.open_table(NAMES).map_err(storage)?.iter().map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        let spelling = spellings.get(k.value()).map_err(storage)?;
        let name = Name::new(spelling.as_ref().map_or(k.value(), |s| s.value())).map_err(|_| decode_err("name"))?;
        if name.key() != k.value() {
            return Err(decode_err("name"));
        }
        names.push((name, postcard::from_bytes::<NameRecord>(v.value()).map_err(|_| decode_err("name"))?));
    }
    let mut leases = Vec::new();
    for row in txn.open_table(LEASES).map_err(storage)?.iter().map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        leases.push((
            LeaseId(k.value()),
            postcard::from_bytes::<LeaseRecord>(v.value()).map_err(|_| decode_err("lease"))?,
        ));
    }
    let meta = txn.open_table(META).map_err(storage)?;
    let get = |key: &str| meta.get(key).map(|v| v.map(|g| g.value()));
    let revision = Revision(get("revision").map_err(storage)?.unwrap_or(0));
    Ok((State::restore(config, key, admin, Instant::now(), names, leases, revision)?, epoch))
}

/// Where `META` keeps the epoch the journal's records are replayed under.
const JOURNAL_EPOCH: &str = "journal_epoch";

/// Records journalled since the last checkpoint, the latest of each: what the next checkpoint
/// writes to the redb file.
#[derive(Default)]
struct Pending {
    names: BTreeMap<Name, Option<NameRecord>>,
    leases: BTreeMap<LeaseId, Option<LeaseRecord>>,
    revision: Option<Revision>,
}

impl Pending {
    fn add(&mut self, dirty: &Dirty) {
        for (name, record) in &dirty.names {
            // Removed first: `insert` would keep the old key, and with it the old spelling.
            self.names.remove(name);
            self.names.insert(name.clone(), record.clone());
        }
        self.leases.extend(dirty.leases.iter().cloned());
        self.revision = Some(dirty.revision);
    }

    fn take(&mut self) -> Pending {
        std::mem::take(self)
    }
}

/// Writes `pending` and the journal's next `epoch` to the file in one durable commit.
fn store(db: &Database, pending: &Pending, epoch: u64) -> Result<(), Error> {
    let txn = begin_durable(db)?;
    {
        let mut names = txn.open_table(NAMES).map_err(storage)?;
        let mut spellings = txn.open_table(SPELLINGS).map_err(storage)?;
        for (name, record) in &pending.names {
            match record {
                Some(r) => names.insert(name.key(), postcard::to_stdvec(r).expect("encodable").as_slice()),
                None => names.remove(name.key()),
            }
            .map_err(storage)?;
            match record {
                Some(_) if name.as_str() != name.key() => spellings.insert(name.key(), name.as_str()),
                _ => spellings.remove(name.key()),
            }
            .map_err(storage)?;
        }
        let mut leases = txn.open_table(LEASES).map_err(storage)?;
        for (id, record) in &pending.leases {
            match record {
                Some(r) => leases.insert(id.0, postcard::to_stdvec(r).expect("encodable").as_slice()),
                None => leases.remove(id.0),
            }
            .map_err(storage)?;
        }
        let mut meta = txn.open_table(META).map_err(storage)?;
        if let Some(revision) = pending.revision {
            meta.insert("revision", revision.0).map_err(storage)?;
        }
        meta.insert(JOURNAL_EPOCH, epoch).map_err(storage)?;
    }
    txn.commit().map_err(storage)
}

struct Writer {
    state: State,
    db: Database,
    journal: Journal,
    /// The epoch `journal` writes under, stored in `db`.
    epoch: u64,
    /// What the journal holds and the file does not yet.
    pending: Pending,
    view: Arc<RwLock<View>>,
    generation: Arc<AtomicU64>,
    events: broadcast::Sender<Arc<[Event]>>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let wait = self.state.poll_timeout().map(|t| t.saturating_duration_since(Instant::now()));
            let first = match wait {
                Some(wait) => rx.recv_timeout(wait),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match first {
                Ok(cmd) => batch.push(cmd),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    // A clean stop leaves the redb file whole: nothing to replay, and a warren
                    // from before the journal reads every acknowledged write.
                    if let Err(e) = self.checkpoint() {
                        tracing::error!(
                            "registry store: the checkpoint at stop failed ({e}); the next start replays the journal"
                        );
                    }
                    return;
                }
            }
            batch.extend(std::iter::from_fn(|| rx.try_recv().ok()).take(BATCH - batch.len()));
            if let Err(e) = self.step(&mut batch) {
                tracing::error!("registry store: {e}; no further writes are accepted");
                return;
            }
        }
    }

    /// Applies a batch, makes it durable, answers it, then publishes it to the watchers.
    fn step(&mut self, batch: &mut Vec<Command>) -> Result<(), Error> {
        let now = Instant::now();
        let answers: Vec<Box<dyn FnOnce()>> = batch.drain(..).map(|cmd| self.apply(cmd, now)).collect();
        self.state.expire(now);
        let dirty = self.state.take_dirty();
        if !dirty.is_empty() {
            // On failure the answers are dropped: their callers see `Unavailable`.
            self.persist(&dirty)?;
            let mut view = self.view.write().expect("view lock");
            view.revision = dirty.revision;
            view.leases = self.state.lease_count();
            for (name, record) in dirty.names {
                // Removed first: `insert` would keep the old key, and with it the old spelling.
                view.names.remove(&name);
                if let Some(r) = record {
                    view.names.insert(name, r.endpoints.into_iter().map(|(e, _)| e).collect());
                }
            }
            // Under the lock: whoever reads the new number then reads the new view.
            self.generation.fetch_add(1, Ordering::Release);
        }
        // The writers first: waking every watcher takes time that grows with their number.
        answers.into_iter().for_each(|answer| answer());
        let events = self.state.poll_events();
        if !events.is_empty() {
            // No receivers is fine: nobody is watching.
            let _ = self.events.send(events.into());
        }
        Ok(())
    }

    /// Makes a batch's changes durable: one journal record, or, when the journal is full, a
    /// checkpoint of everything it holds with them.
    fn persist(&mut self, dirty: &Dirty) -> Result<(), Error> {
        let journalled = self.journal.append(dirty).map_err(storage)?;
        self.pending.add(dirty);
        if !journalled {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Writes what the journal holds into the redb file, durably, and starts the journal over
    /// under the next epoch.
    fn checkpoint(&mut self) -> Result<(), Error> {
        let epoch = self.epoch + 1;
        store(&self.db, &self.pending.take(), epoch)?;
        self.journal.restart(epoch);
        self.epoch = epoch;
        Ok(())
    }

    /// Applies one command; the returned closure sends its answer once the batch is durable.
    fn apply(&mut self, cmd: Command, now: Instant) -> Box<dyn FnOnce()> {
        fn answer<T: Send + 'static>(reply: Reply<T>, result: Result<T, Error>) -> Box<dyn FnOnce()> {
            Box::new(move || {
                let _ = reply.send(result);
            })
        }
        let s = &mut self.state;
        match cmd {
            Command::Bind(name, token, eps, reply) => answer(reply, s.bind(&name, &token, eps)),
            Command::Rebind(name, token, eps, reply) => answer(reply, s.rebind(&name, &token, eps)),
            Command::Unbind(name, token, reply) => answer(reply, s.unbind(&name, &token)),
            Command::Register(name, token, ep, ttl, reply) => {
                let result = s.register(&name, &token, ep, ttl, now).map(|(id, revision)| Lease { id, ttl, revision });
                answer(reply, result)
            }
            Command::Renew(id, token, reply) => answer(reply, s.renew(id, &token, now)),
            Command::Release(id, token, reply) => answer(reply, s.release(id, &token)),
            Command::Authorize(name, token, reply) => answer(reply, s.authorize_token(&name, &token)),
            Command::Watch(prefix, from, reply) => {
                // History and subscription are taken together on this thread, so no batch falls
                // between them; events of this batch may come twice and the watch drops them.
                let result = s.watch(&prefix, from).map(|past| (past, self.events.subscribe()));
                answer(reply, result)
            }
        }
    }
}

#[async_trait]
impl Backend for Embedded {
    async fn bind(&self, name: &Name, token: &str, endpoints: Vec<Endpoint>) -> Result<Revision, Error> {
        self.call(|r| Command::Bind(name.clone(), token.into(), endpoints, r)).await
    }

    async fn rebind(&self, name: &Name, token: &str, endpoints: Vec<Endpoint>) -> Result<Revision, Error> {
        self.call(|r| Command::Rebind(name.clone(), token.into(), endpoints, r)).await
    }

    async fn unbind(&self, name: &Name, token: &str) -> Result<Revision, Error> {
        self.call(|r| Command::Unbind(name.clone(), token.into(), r)).await
    }

    async fn lookup(&self, name: &Name) -> Result<(Revision, Entry), Error> {
        let view = self.view.read().expect("view lock");
        let (name, endpoints) = view.names.get_key_value(name).ok_or_else(|| Error::NotBound(name.clone()))?;
        Ok((view.revision, Entry { name: name.clone(), endpoints: endpoints.clone() }))
    }

    async fn list(&self, prefix: &str) -> Result<(Revision, Vec<Entry>), Error> {
        let prefix = fold_prefix(prefix)?;
        let view = self.view.read().expect("view lock");
        let entries = view
            .names
            .range::<str, _>((std::ops::Bound::Included(prefix.as_str()), std::ops::Bound::Unbounded))
            .take_while(|(n, _)| n.key().starts_with(&prefix))
            .map(|(n, eps)| Entry { name: n.clone(), endpoints: eps.clone() });
        Ok((view.revision, entries.collect()))
    }

    async fn register(&self, name: &Name, token: &str, endpoint: Endpoint, ttl: Duration) -> Result<Lease, Error> {
        self.call(|r| Command::Register(name.clone(), token.into(), endpoint, ttl, r)).await
    }

    async fn renew(&self, lease: LeaseId, token: &str) -> Result<Duration, Error> {
        self.call(|r| Command::Renew(lease, token.into(), r)).await
    }

    async fn release(&self, lease: LeaseId, token: &str) -> Result<Revision, Error> {
        self.call(|r| Command::Release(lease, token.into(), r)).await
    }

    async fn authorize(&self, name: &Name, token: &str) -> Result<(), Error> {
        self.call(|r| Command::Authorize(name.clone(), token.into(), r)).await
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<Box<dyn Watch>, Error> {
        let (past, live) = self.call(|r| Command::Watch(prefix.into(), from, r)).await?;
        let commands = Arc::downgrade(self.commands.as_ref().expect("set until drop"));
        let prefix = fold_prefix(prefix)?;
        let mut watch = EmbeddedWatch { commands, prefix, last: from, live, past };
        let past = std::mem::take(&mut watch.past);
        watch.past = watch.keep(&past);
        Ok(Box::new(watch))
    }

    fn snapshot(&self, name: &Name) -> Option<Vec<Endpoint>> {
        self.view.read().expect("view lock").names.get(name).cloned()
    }

    fn snapshot_generation(&self) -> Option<u64> {
        Some(self.generation.load(Ordering::Acquire))
    }

    fn counts(&self) -> Option<Counts> {
        let view = self.view.read().expect("view lock");
        Some(Counts { names: view.names.len(), leases: view.leases })
    }
}

/// A watch on the embedded store: first the history after `from`, then live batches.
struct EmbeddedWatch {
    commands: std::sync::Weak<mpsc::Sender<Command>>,
    /// Case-folded, as name keys are.
    prefix: String,
    /// Every event up to this revision has been delivered (or filtered out).
    last: Revision,
    live: broadcast::Receiver<Arc<[Event]>>,
    past: Vec<Event>,
}

impl EmbeddedWatch {
    /// The events of `batch` this watch has not yet passed on; moves `last` past the batch.
    fn keep(&mut self, batch: &[Event]) -> Vec<Event> {
        let fresh = batch.iter().filter(|e| e.revision > self.last);
        let kept = fresh.filter(|e| e.name.key().starts_with(&self.prefix)).cloned().collect();
        if let Some(top) = batch.last() {
            self.last = self.last.max(top.revision);
        }
        kept
    }
}

#[async_trait]
impl Watch for EmbeddedWatch {
    async fn next(&mut self) -> Result<Vec<Event>, Error> {
        if !self.past.is_empty() {
            return Ok(std::mem::take(&mut self.past));
        }
        loop {
            match self.live.recv().await {
                Ok(batch) => {
                    let kept = self.keep(&batch);
                    if !kept.is_empty() {
                        return Ok(kept);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Fell behind the live buffer: catch up from the history, as a new watch.
                    let commands = self.commands.upgrade().ok_or_else(stopped)?;
                    let (prefix, last) = (self.prefix.clone(), self.last);
                    let (past, live) = call(&commands, |r| Command::Watch(prefix, last, r)).await?;
                    self.live = live;
                    let kept = self.keep(&past);
                    if !kept.is_empty() {
                        return Ok(kept);
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return Err(stopped()),
            }
        }
    }
}
