//! The agents a node holds that may move: each gets an id on this host, runs on a thread of its
//! own, and is followed until it ends here or leaves. When one freezes (it called `migrate`, or
//! an order from outside raised its flag) the roster sends its snapshot to the destination
//! ([`Request::Arrive`]) and remembers where it went and its id there; if the destination
//! refuses, the agent is resumed here as [`Role::Stayed`] (`migrate` returns -1 to it).

mod staging;

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use self::staging::Staging;
use crate::binding::Overrides;
use crate::client::Connection;
use crate::trust::order_message_bound;
use crate::wire::{AgentInfo, Arrival, End, Order, PART, Part, Request, Response, signature_of, signature_to};
use crate::{Ended, Freezer, Grants, Host, Job, ModuleId, ModuleSignature, Outcome, Resume, Role, Snapshot};

/// How many agents a roster remembers, running or ended; past it the oldest ended is forgotten,
/// and if none has ended a new one is refused.
pub const MAX_HELD: usize = 1024;

/// How long a destination may take to answer an arrival (it may compile the module first).
const HOP_WITHIN: Duration = Duration::from_secs(30);

/// The largest snapshot a roster takes by default: an agent with the host's most memory
/// (256 MiB), all of it dirty, and room for the rest.
pub const MAX_SNAPSHOT: usize = 260 << 20;

/// Turns a destination named by `migrate` or an order into an address.
pub type Resolve = Arc<dyn Fn(&str) -> Result<SocketAddr, String> + Send + Sync>;

/// `ADDR:PORT`, or `HOST:PORT` through the system's resolver.
pub fn resolve_address(dest: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = dest.parse() {
        return Ok(addr);
    }
    dest.to_socket_addrs()
        .map_err(|error| format!("{dest:?} is not ADDR:PORT or HOST:PORT: {error}"))?
        .next()
        .ok_or_else(|| format!("{dest:?} resolves to no address"))
}

/// A node's moving agents.
pub struct Roster {
    host: Arc<Host>,
    /// The most an arriving agent may hold here.
    allow: Grants,
    resolve: Resolve,
    table: Mutex<Table>,
    /// Signalled whenever an agent's state changes.
    changed: Condvar,
    /// Snapshots arriving in parts.
    staging: Mutex<Staging>,
    /// The largest snapshot taken, in bytes.
    max_snapshot: AtomicUsize,
}

impl std::fmt::Debug for Roster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Roster").field("allow", &self.allow).finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Table {
    next: u64,
    agents: BTreeMap<u64, Held>,
}

struct Held {
    module: ModuleId,
    /// The module's signature, sent on with the agent so the next host can check it.
    signature: Option<ModuleSignature>,
    hops: u32,
    fuel_used: u64,
    state: State,
    freezer: Freezer,
    /// An order from outside not yet carried out: where to, and whether as a clone.
    order: Option<(String, bool)>,
    /// The actions that order asks for the agent's resources.
    order_bind: Overrides,
    /// Why the last move failed, shown beside its state.
    note: Option<String>,
}

enum State {
    Running,
    Moving(String),
    Moved { to: String, id: u64 },
    Finished(Outcome),
    Failed(String),
}

impl State {
    fn ended(&self) -> bool {
        !matches!(self, State::Running | State::Moving(_))
    }
}

/// What a runner does next.
enum Step {
    Start(Box<Job>),
    Resume(Box<Snapshot>, Role),
}

impl Roster {
    /// A roster over `host`: arriving agents may hold what `allow` grants; destinations are
    /// found with `resolve`.
    pub fn new(host: Arc<Host>, allow: Grants, resolve: Resolve) -> Arc<Roster> {
        Arc::new(Roster {
            host,
            allow,
            resolve,
            table: Mutex::default(),
            changed: Condvar::new(),
            staging: Mutex::default(),
            max_snapshot: AtomicUsize::new(MAX_SNAPSHOT),
        })
    }

    /// Takes snapshots of at most `bytes` (else [`MAX_SNAPSHOT`]); larger ones are refused at
    /// their first part.
    pub fn limit_snapshots(&self, bytes: usize) {
        self.max_snapshot.store(bytes, Ordering::Relaxed);
    }

    /// Stages a part of a snapshot that comes in parts: how many bytes of it are here.
    pub fn part(&self, part: Part) -> Response {
        let limit = self.max_snapshot.load(Ordering::Relaxed);
        let mut staging = self.staging.lock().unwrap_or_else(PoisonError::into_inner);
        match staging.add(part, limit, Instant::now()) {
            Ok(held) => Response::Staged(held),
            Err(reason) => Response::Refused(format!("snapshot refused: {reason}")),
        }
    }

    /// Takes an agent whose snapshot was staged in parts as `upload`, as [`Roster::arrive`].
    pub fn arrive_parts(self: &Arc<Self>, upload: u64, mut arrival: Arrival) -> Response {
        let taken = self.staging.lock().unwrap_or_else(PoisonError::into_inner).take(upload);
        arrival.snapshot = match taken {
            Ok(bytes) => bytes,
            Err(reason) => return Response::Refused(format!("snapshot refused: {reason}")),
        };
        match self.admit(&arrival) {
            Ok(Response::NeedModule) => {
                // The sender sends the arrival again with its module: keep the snapshot for it.
                let bytes = std::mem::take(&mut arrival.snapshot);
                self.staging.lock().unwrap_or_else(PoisonError::into_inner).put_back(upload, bytes, Instant::now());
                Response::NeedModule
            }
            Ok(response) => response,
            Err(reason) => Response::Refused(reason),
        }
    }

    /// Its host.
    pub fn host(&self) -> &Arc<Host> {
        &self.host
    }

    /// Starts `job` (its module prepared on this host) as a moving agent: its id.
    pub fn start(self: &Arc<Self>, job: Job, signature: Option<ModuleSignature>) -> Result<u64, String> {
        let module = job.module;
        self.spawn(Step::Start(Box::new(job)), module, signature, 0, 0)
    }

    /// Takes an agent arriving from another node: checks the snapshot, the module and its
    /// signature, and everything the resume would refuse, then starts it.
    pub fn arrive(self: &Arc<Self>, arrival: Arrival) -> Response {
        self.admit(&arrival).unwrap_or_else(Response::Refused)
    }

    fn admit(self: &Arc<Self>, arrival: &Arrival) -> Result<Response, String> {
        let limit = self.max_snapshot.load(Ordering::Relaxed);
        if arrival.snapshot.len() > limit {
            return Err(format!(
                "snapshot refused: it is {} bytes, over this host's limit of {limit} (max_snapshot_mib)",
                arrival.snapshot.len()
            ));
        }
        let snapshot = Snapshot::decode(&arrival.snapshot).map_err(|error| format!("snapshot refused: {error}"))?;
        let signature = signature_of(&arrival.signature)?;
        match &arrival.module {
            Some(bytes) => {
                let sent = ModuleId::of(bytes);
                if sent != snapshot.module {
                    return Err(format!(
                        "the module sent is {sent}, but the snapshot was taken from {}",
                        snapshot.module
                    ));
                }
                self.host.prepare(bytes, signature.as_ref()).map_err(|error| error.to_string())?;
            }
            None if self.host.prepared_id(&snapshot.module).is_none() => return Ok(Response::NeedModule),
            None => self.host.config().trust.admit(&snapshot.module, signature.as_ref()).map_err(|e| e.to_string())?,
        }
        // What `Host::resume` would refuse is refused now, so that the sender keeps the agent.
        let here = self.host.prepared_id(&snapshot.module).expect("prepared above");
        if here != snapshot.prepared {
            return Err(format!(
                "module {} is prepared here as {here}, but the snapshot was taken from {}",
                snapshot.module, snapshot.prepared
            ));
        }
        if let Some(limit) = snapshot.limits.above(&self.host.config().ceiling) {
            return Err(format!("the agent's {limit} limit is above this host's ceiling"));
        }
        self.host.check_resources(&snapshot.resources, &self.allow)?;
        let role = if arrival.clone { Role::Clone } else { Role::Original };
        let (module, hops) = (snapshot.module, snapshot.hops);
        let fuel_used = snapshot.limits.fuel.saturating_sub(snapshot.fuel);
        self.spawn(Step::Resume(Box::new(snapshot), role), module, signature, hops, fuel_used).map(Response::Started)
    }

    /// Waits at most `within` for agent `id` to end here or leave.
    pub fn wait(&self, id: u64, within: Duration) -> End {
        let deadline = Instant::now() + within;
        let mut table = self.lock();
        loop {
            match table.agents.get(&id).map(|held| &held.state) {
                None => return End::Failed(format!("no agent {id} on this host")),
                Some(State::Finished(outcome)) => return End::Finished(outcome.clone()),
                Some(State::Failed(reason)) => return End::Failed(reason.clone()),
                Some(State::Moved { to, id }) => return End::Moved { to: to.clone(), id: *id },
                Some(State::Running | State::Moving(_)) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return End::Running;
            }
            table = self.changed.wait_timeout(table, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// Takes an order to move or clone a running agent, if a key this host trusts signed it:
    /// the agent freezes at its next safe point and goes.
    pub fn order(&self, order: &Order) -> Result<(), String> {
        let signature = signature_of(&order.signature)?;
        let message = order_message_bound(order.id, &order.dest, order.clone, &order.bind);
        self.host.config().trust.admit_order(&message, signature.as_ref())?;
        (self.resolve)(&order.dest)?;
        let mut table = self.lock();
        let held = table.agents.get_mut(&order.id).ok_or_else(|| format!("no agent {} on this host", order.id))?;
        if !matches!(held.state, State::Running) {
            return Err(format!("agent {} is {}: only a running agent can be moved", order.id, describe(held)));
        }
        if held.order.is_some() {
            return Err(format!("agent {} already has an order to move", order.id));
        }
        held.order = Some((order.dest.clone(), order.clone));
        held.order_bind = order.bind;
        held.freezer.freeze();
        Ok(())
    }

    /// The agents held, by id.
    pub fn list(&self) -> Vec<AgentInfo> {
        let table = self.lock();
        table
            .agents
            .iter()
            .map(|(id, held)| AgentInfo {
                id: *id,
                module: held.module.0,
                hops: held.hops,
                state: describe(held),
                fuel_used: held.fuel_used,
            })
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // Every change is a few field writes, so a poisoned lock still guards a whole table.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn spawn(
        self: &Arc<Self>,
        step: Step,
        module: ModuleId,
        signature: Option<ModuleSignature>,
        hops: u32,
        fuel_used: u64,
    ) -> Result<u64, String> {
        let id = {
            let mut table = self.lock();
            if table.agents.len() >= MAX_HELD {
                let oldest = table.agents.iter().find(|(_, held)| held.state.ended()).map(|(id, _)| *id);
                let oldest = oldest.ok_or_else(|| format!("this host already holds {MAX_HELD} running agents"))?;
                table.agents.remove(&oldest);
            }
            table.next += 1;
            let id = table.next;
            let held = Held {
                module,
                signature,
                hops,
                fuel_used,
                state: State::Running,
                freezer: Freezer::new(),
                order: None,
                order_bind: Overrides::default(),
                note: None,
            };
            table.agents.insert(id, held);
            id
        };
        let roster = self.clone();
        let spawned =
            std::thread::Builder::new().name(format!("warren-agent-{id}")).spawn(move || roster.drive(id, step));
        if let Err(error) = spawned {
            self.settle(id, State::Failed(format!("no thread for the agent: {error}")), None);
        }
        Ok(id)
    }

    /// Runs agent `id` until it ends here or leaves.
    fn drive(&self, id: u64, mut step: Step) {
        loop {
            let freezer = Freezer::new();
            {
                let mut table = self.lock();
                let held = table.agents.get_mut(&id).expect("a running agent is never forgotten");
                held.freezer = freezer.clone();
                if held.order.is_some() {
                    freezer.freeze();
                }
            }
            let ended = match &step {
                Step::Start(job) => self.host.run_mobile(job, &freezer),
                Step::Resume(snapshot, role) => {
                    let resume = Resume { role: *role, allow: self.allow.clone(), freezer };
                    self.host.resume(snapshot, &resume)
                }
            };
            let snapshot = match ended {
                Err(error) => return self.settle(id, State::Failed(error.to_string()), None),
                Ok(Ended::Finished(outcome)) => {
                    let fuel = outcome.fuel_used;
                    return self.settle(id, State::Finished(outcome), Some(fuel));
                }
                Ok(Ended::Frozen(snapshot)) => snapshot,
            };
            // The agent's own `migrate` names where it goes; an order from outside counts when
            // it stopped at a safe point, asking for nowhere in particular.
            let own = snapshot.dest.trim().to_owned();
            let (dest, clone, signature, asked) = {
                let mut table = self.lock();
                let held = table.agents.get_mut(&id).expect("a running agent is never forgotten");
                held.hops = snapshot.hops;
                held.fuel_used = snapshot.limits.fuel.saturating_sub(snapshot.fuel);
                let ((dest, clone), asked) = match own.is_empty() {
                    false => ((own, false), Overrides::default()),
                    true => (held.order.take().unwrap_or_default(), std::mem::take(&mut held.order_bind)),
                };
                if !dest.is_empty() {
                    held.state = State::Moving(dest.clone());
                }
                (dest, clone, held.signature, asked)
            };
            if dest.is_empty() {
                step = Step::Resume(snapshot, Role::Stayed);
                continue;
            }
            // Each resource is handled per its cell of the binding table on the way out; a
            // bucket moved away leaves this host only once the destination took the agent.
            let sent = self.host.dispatch(&snapshot, &asked, clone).and_then(|departure| {
                let sent = self.send(&dest, &departure.snapshot, signature, clone);
                match &sent {
                    Ok(_) => self.host.departed(&departure),
                    Err(_) => self.host.withdraw(&departure),
                }
                sent
            });
            let mut table = self.lock();
            let held = table.agents.get_mut(&id).expect("a running agent is never forgotten");
            step = match sent {
                Ok((to, there)) if !clone => {
                    drop(table);
                    return self.settle(id, State::Moved { to, id: there }, None);
                }
                Ok((to, there)) => {
                    held.note = Some(format!("cloned to {there}@{to}"));
                    Step::Resume(snapshot, Role::Original)
                }
                Err(reason) => {
                    held.note = Some(format!("could not move to {dest}: {reason}"));
                    Step::Resume(snapshot, Role::Stayed)
                }
            };
            held.state = State::Running;
            self.changed.notify_all();
        }
    }

    fn settle(&self, id: u64, state: State, fuel_used: Option<u64>) {
        let mut table = self.lock();
        if let Some(held) = table.agents.get_mut(&id) {
            held.state = state;
            held.fuel_used = fuel_used.unwrap_or(held.fuel_used);
        }
        self.changed.notify_all();
    }

    /// Sends `snapshot` to `dest`, with the module's bytes if it asks for them: the address it
    /// went to and its id there. A snapshot larger than a [`PART`] goes ahead in parts on the
    /// same connection, and the arrival that follows names them.
    fn send(
        &self,
        dest: &str,
        snapshot: &Snapshot,
        signature: Option<ModuleSignature>,
        clone: bool,
    ) -> Result<(String, u64), String> {
        let addr = (self.resolve)(dest)?;
        let mut connection = Connection::open(addr, HOP_WITHIN)?;
        let encoded = snapshot.encode();
        let mut arrival =
            Arrival { snapshot: Vec::new(), module: None, signature: signature_to(signature.as_ref()), clone };
        let upload = if encoded.len() > PART { Some(send_parts(&mut connection, &encoded)?) } else { None };
        if upload.is_none() {
            arrival.snapshot = encoded;
        }
        // Twice at most: without the module, then with it if the destination does not have it.
        for _ in 0..2 {
            let request = match upload {
                Some(upload) => Request::ArriveParts { upload, arrival },
                None => Request::Arrive(arrival),
            };
            let answer = connection.ask(&request)?;
            arrival = match request {
                Request::ArriveParts { arrival, .. } | Request::Arrive(arrival) => arrival,
                _ => unreachable!("built above"),
            };
            match answer {
                Response::Started(id) => return Ok((addr.to_string(), id)),
                Response::NeedModule if arrival.module.is_none() => {
                    let bytes = self.host.bytes(&snapshot.module).ok_or("this host no longer holds its module")?;
                    arrival.module = Some(bytes.to_vec());
                }
                Response::NeedModule => break,
                Response::Refused(reason) => return Err(format!("{addr} refused it: {reason}")),
                _ => return Err(format!("{addr} answered an arrival with something else")),
            }
        }
        Err(format!("{addr} asked for the module it was sent"))
    }
}

/// Sends `encoded` in parts on `connection`: the upload's name, taken from the snapshot's own
/// SHA-256 (its last 32 bytes), so two snapshots in flight are never named alike.
fn send_parts(connection: &mut Connection, encoded: &[u8]) -> Result<u64, String> {
    let seal: [u8; 8] = encoded[encoded.len() - 8..].try_into().expect("8 bytes");
    let upload = u64::from_le_bytes(seal);
    let total = encoded.len() as u64;
    for (at, bytes) in encoded.chunks(PART).enumerate() {
        let offset = (at * PART) as u64;
        let part = Part { upload, total, offset, bytes: bytes.to_vec() };
        match connection.ask(&Request::Part(part))? {
            Response::Staged(held) if held == offset + bytes.len() as u64 => {}
            Response::Refused(reason) => return Err(format!("refused: {reason}")),
            _ => return Err("the destination answered a part with something else".into()),
        }
    }
    Ok(upload)
}

/// An agent's state in a word or a line, as `warren agents ls` prints it.
fn describe(held: &Held) -> String {
    let state = match &held.state {
        State::Running => "running".to_owned(),
        State::Moving(dest) => format!("moving to {dest}"),
        State::Moved { to, id } => format!("moved to {id}@{to}"),
        State::Finished(_) => "finished".to_owned(),
        State::Failed(reason) => format!("failed: {reason}"),
    };
    match &held.note {
        Some(note) if !held.state.ended() => format!("{state} ({note})"),
        _ => state,
    }
}
