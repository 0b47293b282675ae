//! The objects a server hosts, by name (case-insensitive, case-preserving): each with its id,
//! class, policy and lifespan, its executor, and its servant (made at once, or at the first
//! call for `on-demand`). Persistent objects are in the store; transient ones and exported
//! ones (references a method handed out) live as long as the server.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use warren_rpc::wire::{Call, Outcome};
use warren_rpc::{Code, Context, Dispatch, Exporter, ObjectRef, RpcError};

use crate::class::{Classes, Incarnation};
use crate::metrics::{Ended, ObjectMeters};
use crate::policy::{Executor, Policy};
use crate::store::{Record, Store, StoreError};

/// Names starting so are the server's own (its admin object).
pub const RESERVED_PREFIX: &str = "warren.";
/// Exported objects a server keeps at most; beyond, `export` fails `Overloaded`.
pub const MAX_EXPORTS: usize = 10_000;
/// An exported object not called for this long is forgotten (RMI's distributed GC works by
/// leases the same way).
pub const EXPORT_LEASE: Duration = Duration::from_secs(10 * 60);
/// An exported object's thread ends after this long without a call (the object stays).
const EXPORT_IDLE: Duration = Duration::from_secs(30);
/// How many times a call on a persistent object runs when its save keeps losing the race to
/// other servers; then it is answered `conflict`. Each lost race means another writer's save
/// won; two servers writing at once lose about half their races, so 16 tries fail together
/// about once in 65,000 calls.
pub const CONFLICT_ATTEMPTS: u32 = 16;
/// The longest pause before running a call again after a lost race, drawn at random up to this
/// (times the attempt, capped at 8×): servers that raced in step leave each other a window.
const CONFLICT_PAUSE: Duration = Duration::from_micros(500);

/// Whether an object outlives the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifespan {
    /// Gone after a restart (CORBA's TRANSIENT).
    Transient,
    /// Its record and state are in the store (PERSISTENT).
    Persistent,
    /// Made by a method and handed out as a reference; forgotten after its lease.
    Exported,
}

/// What `add` takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectSpec {
    pub name: String,
    pub class: String,
    /// As `Policy` parses it: `per-object`, `pool:4:64`, `on-demand:30s`…
    pub policy: String,
    pub persistent: bool,
}

/// What `ls` tells of an object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectInfo {
    pub id: String,
    pub name: String,
    pub class: String,
    pub interface: String,
    pub version: u32,
    pub policy: String,
    pub lifespan: Lifespan,
    /// Whether its servant exists now (an `on-demand` object may be deactivated).
    pub active: bool,
    pub calls: u64,
}

/// One hosted object.
pub struct Hosted {
    pub id: String,
    pub name: String,
    pub class: String,
    pub policy: Policy,
    pub lifespan: Lifespan,
    interface: &'static warren_rpc::Interface,
    executor: Executor,
    servant: Arc<Mutex<Option<Arc<Live>>>>,
    /// How to make the servant, from the stored state (on demand, or when the store's is newer).
    incarnate: Incarnate,
    /// Where a persistent object's state is; `None` for the others.
    store: Option<Arc<dyn Store>>,
    meters: Arc<ObjectMeters>,
    last_call: Mutex<Instant>,
}

/// A call's end as the meters see it, at its drop: answered, or dropped unrun.
struct Ending {
    meters: Arc<ObjectMeters>,
    submitted: Instant,
    ended: Ended,
}

impl Drop for Ending {
    fn drop(&mut self) {
        self.meters.finished(self.ended, self.submitted.elapsed());
    }
}

/// Makes a servant, fresh (`None`) or from saved state.
type Incarnate = Box<dyn Fn(Option<&[u8]>) -> Result<Incarnation, RpcError> + Send + Sync>;

/// A servant and the stored state it started from. The version belongs to the servant, not to
/// the object: a call still running on a servant that a newer one replaced saves against the
/// version that servant read, so its save loses the race instead of overwriting newer state.
struct Live {
    incarnation: Incarnation,
    /// The version of the stored state this servant holds, and the bytes saved last.
    saved: Mutex<(u64, Option<Vec<u8>>)>,
}

impl Live {
    fn version(&self) -> u64 {
        self.saved.lock().unwrap_or_else(|e| e.into_inner()).0
    }
}

/// Why a save failed.
enum SaveError {
    /// Another server saved first; this servant is dropped, and the call may run again.
    Lost,
    Failed(RpcError),
}

impl std::fmt::Debug for Hosted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hosted").field("id", &self.id).field("name", &self.name).field("policy", &self.policy).finish()
    }
}

impl Hosted {
    /// Run `call` under the object's policy; the outcome goes to `answer`. Refused at once
    /// (`Overloaded`) when the policy's queue is full.
    pub fn submit(
        self: &Arc<Self>,
        ctx: Context,
        call: Call,
        answer: oneshot::Sender<Outcome>,
    ) -> Result<(), RpcError> {
        let submitted = Instant::now();
        self.meters.started();
        *self.last_call.lock().unwrap_or_else(|e| e.into_inner()) = submitted;
        let object = self.clone();
        // Dropped unrun (refused, or the executor stopping), the call still ends for the meters.
        let ending = Ending { meters: self.meters.clone(), submitted, ended: Ended::Platform };
        self.executor.submit(Box::new(move || {
            // The whole guard moves in (not only the field set below), so it drops here.
            let mut ending = ending;
            let outcome = object.run(&ctx, &call);
            ending.ended = match &outcome {
                Outcome::Ok(_) => Ended::Ok,
                Outcome::App(_) => Ended::Application,
                Outcome::Err(_) => Ended::Platform,
            };
            let _ = answer.send(outcome);
        }))
    }

    /// Whether calls run on the thread that submits them (policy `inline`): the outcome is in
    /// the answer when [`Self::submit`] returns.
    pub fn runs_inline(&self) -> bool {
        self.policy.inline()
    }

    /// Run the call on the servant; for a persistent object, on the stored state as it is now
    /// (a read after a write acknowledged by any server sees it), saved before the answer. A
    /// save that lost the race to another server changed nothing: the call runs again on the
    /// state that won, up to [`CONFLICT_ATTEMPTS`] times, while the caller still waits.
    fn run(&self, ctx: &Context, call: &Call) -> Outcome {
        for attempt in 0..CONFLICT_ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(jitter(CONFLICT_PAUSE * attempt.min(8)));
            }
            if ctx.is_cancelled() {
                return Outcome::Err(RpcError::new(Code::Cancelled, "the caller gave up before the call ran"));
            }
            let live = match self.servant() {
                Ok(live) => live,
                Err(e) => return Outcome::Err(e),
            };
            let outcome = warren_rpc::client::invoke(Some(&*live.incarnation.object), ctx, call);
            if self.lifespan != Lifespan::Persistent || matches!(outcome, Outcome::Err(_)) {
                return outcome;
            }
            match self.persist(&live) {
                Ok(()) => return outcome,
                Err(SaveError::Lost) => continue,
                Err(SaveError::Failed(e)) => return Outcome::Err(e),
            }
        }
        Outcome::Err(RpcError::new(
            Code::Conflict,
            format!("other servers changed the object first {CONFLICT_ATTEMPTS} times in a row: call again"),
        ))
    }

    /// The servant, made now if the object is not active, or made again if the store holds a
    /// newer state than it (another server saved since): one query that returns the state only
    /// when its version moved.
    fn servant(&self) -> Result<Arc<Live>, RpcError> {
        let mut slot = self.servant.lock().unwrap_or_else(|e| e.into_inner());
        let stored = match (&*slot, &self.store) {
            (Some(live), None) => return Ok(live.clone()),
            (Some(live), Some(_)) if live.incarnation.snapshot.is_none() => return Ok(live.clone()),
            (Some(live), Some(store)) => match store.load_newer(&self.id, live.version()) {
                Ok(None) => return Ok(live.clone()),
                Ok(Some(newer)) => Some(newer),
                Err(e) => return Err(RpcError::new(Code::Internal, e.to_string())),
            },
            (None, Some(store)) => store.load(&self.id).map_err(|e| RpcError::new(Code::Internal, e.to_string()))?,
            (None, None) => None,
        };
        let (version, state) = stored.map_or((0, None), |(v, s)| (v, Some(s)));
        let incarnation = (self.incarnate)(state.as_deref())?;
        let saved = incarnation.snapshot.as_ref().map(|s| s());
        let live = Arc::new(Live { incarnation, saved: Mutex::new((version, saved)) });
        *slot = Some(live.clone());
        self.meters.activated();
        Ok(live)
    }

    /// Save the servant's state if a call changed it, before the call is answered: nothing
    /// acknowledged is lost. A save that lost a race (another server changed the state) drops
    /// the servant, so the next attempt starts from the stored state.
    fn persist(&self, live: &Arc<Live>) -> Result<(), SaveError> {
        let (Some(snapshot), Some(store)) = (&live.incarnation.snapshot, &self.store) else { return Ok(()) };
        let mut saved = live.saved.lock().unwrap_or_else(|e| e.into_inner());
        let state = snapshot();
        if saved.1.as_deref() == Some(state.as_slice()) {
            return Ok(());
        }
        match store.save(&self.id, saved.0, &state) {
            Ok(version) => {
                *saved = (version, Some(state));
                Ok(())
            }
            Err(StoreError::Conflict { .. }) => {
                drop(saved);
                let mut slot = self.servant.lock().unwrap_or_else(|e| e.into_inner());
                if slot.as_ref().is_some_and(|current| Arc::ptr_eq(current, live)) {
                    *slot = None;
                    self.meters.deactivated();
                }
                Err(SaveError::Lost)
            }
            Err(e) => Err(SaveError::Failed(RpcError::new(Code::Internal, e.to_string()))),
        }
    }

    pub fn info(&self) -> ObjectInfo {
        ObjectInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            class: self.class.clone(),
            interface: self.interface.name.to_owned(),
            version: self.interface.version,
            policy: self.policy.to_string(),
            lifespan: self.lifespan,
            active: self.servant.lock().unwrap_or_else(|e| e.into_inner()).is_some(),
            calls: self.meters.calls.load(Ordering::Relaxed),
        }
    }
}

/// Who a hosted object is and how it runs.
struct Placement {
    id: String,
    name: String,
    class: String,
    policy: Policy,
    lifespan: Lifespan,
}

/// The objects of one server.
pub struct Objects {
    by_name: RwLock<HashMap<String, Arc<Hosted>>>,
    classes: Classes,
    store: Option<Arc<dyn Store>>,
    /// This server's address, for references to exported objects.
    addr: RwLock<Option<String>>,
    next_export: AtomicU64,
    /// Told of every named object added (`true`) or removed (`false`): the registrar.
    watcher: RwLock<Option<Watcher>>,
}

/// What is told of objects added and removed.
pub type Watcher = Box<dyn Fn(&ObjectInfo, bool) + Send + Sync>;

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Objects").field("count", &self.by_name.read().map(|m| m.len()).unwrap_or(0)).finish()
    }
}

/// The key of a name: names are case-insensitive.
fn key(name: &str) -> String {
    name.to_ascii_lowercase()
}

fn check_name(name: &str) -> Result<(), RpcError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(RpcError::new(Code::BadArguments, format!("object name {name:?}: 1-253 letters, digits, '-', '_', '.'")))
    }
}

/// A random pause up to `max`.
fn jitter(max: Duration) -> Duration {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).expect("the kernel's random numbers");
    max.mul_f64(f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX))
}

fn new_id() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the kernel's random numbers");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Objects {
    /// A server's objects, with the persistent ones of `store` (if any) served again.
    pub fn new(classes: Classes, store: Option<Arc<dyn Store>>) -> Result<Arc<Self>, RpcError> {
        let objects = Arc::new(Self {
            by_name: RwLock::default(),
            classes,
            store: store.clone(),
            addr: RwLock::default(),
            next_export: AtomicU64::new(1),
            watcher: RwLock::default(),
        });
        if let Some(store) = &store {
            let records = store.records().map_err(|e| RpcError::new(Code::Internal, e.to_string()))?;
            for record in records {
                let policy = record.policy.parse().map_err(|e: String| RpcError::new(Code::Internal, e))?;
                let placement = Placement {
                    id: record.id.clone(),
                    name: record.name.clone(),
                    class: record.class.clone(),
                    policy,
                    lifespan: Lifespan::Persistent,
                };
                let hosted = objects.host(placement)?;
                objects.insert(hosted)?;
            }
        }
        Ok(objects)
    }

    /// Tell the table where the server listens, for the references it hands out.
    pub fn set_addr(&self, addr: String) {
        *self.addr.write().unwrap_or_else(|e| e.into_inner()) = Some(addr);
    }

    /// Tell `watcher` of every object there is now (as added), then of each added or removed.
    pub fn watch(&self, watcher: Watcher) {
        let mut slot = self.watcher.write().unwrap_or_else(|e| e.into_inner());
        for info in self.list() {
            watcher(&info, true);
        }
        *slot = Some(watcher);
    }

    fn tell(&self, info: &ObjectInfo, added: bool) {
        if info.lifespan == Lifespan::Exported {
            return;
        }
        if let Some(watcher) = &*self.watcher.read().unwrap_or_else(|e| e.into_inner()) {
            watcher(info, added);
        }
    }

    pub fn classes(&self) -> &Classes {
        &self.classes
    }

    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.store.as_ref()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Hosted>> {
        self.by_name.read().unwrap_or_else(|e| e.into_inner()).get(&key(name)).cloned()
    }

    /// Every object's name, counters and whether a client exported it, by name.
    pub(crate) fn meters(&self) -> Vec<(String, Arc<ObjectMeters>, bool)> {
        let map = self.by_name.read().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> =
            map.values().map(|h| (h.name.clone(), h.meters.clone(), h.lifespan == Lifespan::Exported)).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    pub fn list(&self) -> Vec<ObjectInfo> {
        let mut all: Vec<ObjectInfo> = self
            .by_name
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|h| h.lifespan != Lifespan::Exported)
            .map(|h| h.info())
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Add an object of a known class.
    pub fn add(&self, spec: &ObjectSpec) -> Result<ObjectInfo, RpcError> {
        check_name(&spec.name)?;
        if key(&spec.name).starts_with(RESERVED_PREFIX) {
            return Err(RpcError::new(
                Code::PermissionDenied,
                format!("names starting {RESERVED_PREFIX:?} are the server's"),
            ));
        }
        let policy: Policy = spec.policy.parse().map_err(|e: String| RpcError::new(Code::BadArguments, e))?;
        if self.get(&spec.name).is_some() {
            return Err(RpcError::new(Code::BadArguments, format!("an object named {:?} exists", spec.name)));
        }
        if spec.persistent && policy.inline() {
            return Err(RpcError::new(
                Code::BadArguments,
                "a persistent object cannot be inline: saving its state after each call would write to disk on the \
                 connection's thread; use per-object",
            ));
        }
        let lifespan = if spec.persistent { Lifespan::Persistent } else { Lifespan::Transient };
        let id = new_id();
        let placement =
            Placement { id: id.clone(), name: spec.name.clone(), class: spec.class.clone(), policy, lifespan };
        let hosted = self.host(placement)?;
        if spec.persistent {
            let Some(store) = &self.store else {
                return Err(RpcError::new(Code::BadArguments, "this server has no store for persistent objects"));
            };
            let record = Record { id, name: spec.name.clone(), class: spec.class.clone(), policy: policy.to_string() };
            store.create(&record).map_err(|e| RpcError::new(Code::BadArguments, e.to_string()))?;
        }
        let info = hosted.info();
        self.insert(hosted)?;
        self.tell(&info, true);
        Ok(info)
    }

    /// Install a servant made by the embedding program under `name` (the course's examples,
    /// the admin object): transient, with `policy`.
    pub fn install(&self, name: &str, policy: Policy, object: Arc<dyn Dispatch>) -> Result<(), RpcError> {
        check_name(name)?;
        let placement = Placement {
            id: new_id(),
            name: name.to_owned(),
            class: "builtin".to_owned(),
            policy,
            lifespan: Lifespan::Transient,
        };
        let hosted = self.host_servant(placement, object)?;
        self.insert(hosted)
    }

    /// Remove an object (and its stored state); calls queued for it still run.
    pub fn remove(&self, name: &str) -> Result<ObjectInfo, RpcError> {
        let missing = || RpcError::new(Code::NoSuchObject, format!("no object named {name:?}"));
        let hosted = self.get(name).ok_or_else(missing)?;
        if key(name).starts_with(RESERVED_PREFIX) {
            return Err(RpcError::new(Code::PermissionDenied, "the server's own objects stay"));
        }
        if hosted.lifespan == Lifespan::Persistent
            && let Some(store) = &self.store
        {
            store.remove(&hosted.id).map_err(|e| RpcError::new(Code::Internal, e.to_string()))?;
        }
        self.by_name.write().unwrap_or_else(|e| e.into_inner()).remove(&key(name)).ok_or_else(missing)?;
        let info = hosted.info();
        self.tell(&info, false);
        Ok(info)
    }

    fn insert(&self, hosted: Hosted) -> Result<(), RpcError> {
        let mut map = self.by_name.write().unwrap_or_else(|e| e.into_inner());
        let slot = key(&hosted.name);
        if map.contains_key(&slot) {
            return Err(RpcError::new(Code::BadArguments, format!("an object named {:?} exists", hosted.name)));
        }
        map.insert(slot, Arc::new(hosted));
        Ok(())
    }

    /// A hosted object of `class`.
    fn host(&self, placement: Placement) -> Result<Hosted, RpcError> {
        let class = &placement.class;
        let Some(made_by) = self.classes.get(class).cloned() else {
            let known: Vec<_> = self.classes.info().into_iter().map(|c| c.name).collect();
            return Err(RpcError::new(Code::BadArguments, format!("no class {class:?}; known: {}", known.join(", "))));
        };
        let interface = made_by.interface();
        let incarnate =
            move |state: Option<&[u8]>| made_by.incarnate(state).map_err(|e| RpcError::new(Code::Internal, e));
        self.hosted(placement, interface, Box::new(incarnate))
    }

    /// A hosted object whose servant exists already: activating it hands out that servant.
    fn host_servant(&self, placement: Placement, object: Arc<dyn Dispatch>) -> Result<Hosted, RpcError> {
        let interface = object.interface();
        let incarnate = move |_: Option<&[u8]>| Ok(Incarnation { object: object.clone(), snapshot: None });
        self.hosted(placement, interface, Box::new(incarnate))
    }

    fn hosted(
        &self,
        placement: Placement,
        interface: &'static warren_rpc::Interface,
        incarnate: Incarnate,
    ) -> Result<Hosted, RpcError> {
        let Placement { id, name, class, policy, lifespan } = placement;
        let servant: Arc<Mutex<Option<Arc<Live>>>> = Arc::default();
        let slot = servant.clone();
        let meters = Arc::new(ObjectMeters::default());
        let idle_meters = meters.clone();
        // Deactivation (on-demand, idle): the servant goes; its state is saved after every call.
        let on_idle = Arc::new(move || {
            if slot.lock().unwrap_or_else(|e| e.into_inner()).take().is_some() {
                idle_meters.deactivated();
            }
        });
        let executor = Executor::new(&name, policy, on_idle)
            .map_err(|e| RpcError::new(Code::Internal, format!("cannot start the object's threads: {e}")))?;
        let hosted = Hosted {
            id,
            name,
            class,
            policy,
            lifespan,
            interface,
            executor,
            servant,
            incarnate,
            store: self.store.clone().filter(|_| lifespan == Lifespan::Persistent),
            meters,
            last_call: Mutex::new(Instant::now()),
        };
        // Everything but on-demand objects is active from the start (CORBA's RETAIN).
        if !matches!(policy, Policy::OnDemand { .. }) {
            hosted.servant()?;
        }
        Ok(hosted)
    }

    /// Forget exported objects whose lease ran out.
    fn sweep_exports(&self, now: Instant) -> usize {
        let mut map = self.by_name.write().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, h| {
            h.lifespan != Lifespan::Exported
                || now.duration_since(*h.last_call.lock().unwrap_or_else(|e| e.into_inner())) < EXPORT_LEASE
        });
        map.values().filter(|h| h.lifespan == Lifespan::Exported).count()
    }
}

impl Exporter for Objects {
    /// An exported object gets an unguessable name (it is a capability: only who holds the
    /// reference can call it) and runs calls one at a time, as RMI's exported objects may not.
    fn export(&self, object: Arc<dyn Dispatch>) -> Result<ObjectRef, RpcError> {
        if self.sweep_exports(Instant::now()) >= MAX_EXPORTS {
            return Err(RpcError::new(Code::Overloaded, format!("{MAX_EXPORTS} exported objects are alive")));
        }
        let interface = object.interface();
        let n = self.next_export.fetch_add(1, Ordering::Relaxed);
        let name = format!("ref-{n}-{}", new_id());
        // One call at a time, and no thread kept while it is not called: thousands may be alive.
        let policy = Policy::OnDemand { idle: EXPORT_IDLE, queue: 64 };
        let placement = Placement {
            id: new_id(),
            name: name.clone(),
            class: "exported".to_owned(),
            policy,
            lifespan: Lifespan::Exported,
        };
        let hosted = self.host_servant(placement, object)?;
        self.insert(hosted)?;
        let addr = self.addr.read().unwrap_or_else(|e| e.into_inner()).clone();
        Ok(ObjectRef { addr, object: name, interface: interface.name.to_owned(), version: interface.version })
    }
}
