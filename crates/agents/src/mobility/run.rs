//! Runs that may move: preparing a module, running a job so that it can freeze, resuming a
//! snapshot, and the `migrate` import that does the freezing and the arriving.

use std::sync::{Arc, MutexGuard, PoisonError};

use wasmtime::{
    Caller, Extern, Instance, Memory, Module, Mutability, Store, StoreContextMut, UpdateDeadline, Val, WasmParams,
    WasmResults, format_err,
};

use super::prepare::{self, Cache, PAGE, Prepared, WASM_PAGE};
use super::{
    Ended, FLAG, Freezer, MAX_DEST, MobileError, MobileModule, PrepareError, Resource, Resume, Role, Snapshot,
};
use crate::agent::AgentState;
use crate::host::{Slot, entry};
use crate::{EPOCH_TICK, Host, Job, ModuleId, ModuleSignature, Outcome, RunError, SnapshotError, Value, caps};

/// Where the Asyncify data lives while a stack is unwound or rewound: from address 0, over
/// the agent's own bytes, which the host puts back before the agent runs again (on the way out
/// they were captured before the unwind; on the way in they are restored when `migrate`
/// returns). Asyncify writes nothing elsewhere, and no guest code runs meanwhile.
const DATA: i32 = 0;

/// The Asyncify data's header: the current end of the saved stack and its limit, two `u32`s.
const HEADER: usize = 8;

/// What a run that may move keeps in its store.
#[derive(Debug)]
pub(crate) struct Mobile {
    prepared: Arc<Prepared>,
    freezer: Freezer,
    /// The guest's `migrate_requested`, if it exports one.
    flag: Option<wasmtime::Global>,
    /// Epoch ticks of wall time used, across hops.
    ticks: u64,
    /// Set by `migrate` on the way out.
    frozen: Option<Frozen>,
    /// Set before a rewind; taken by `migrate` on the way in.
    rewinding: Option<Rewinding>,
}

#[derive(Debug)]
struct Frozen {
    dest: String,
    memory_pages: u32,
    dirty: Vec<u32>,
    pages: Vec<u8>,
}

#[derive(Debug)]
struct Rewinding {
    /// The agent's bytes under the Asyncify data.
    region: Vec<u8>,
    role: Role,
}

/// The `warren.migrate(dptr, dlen) -> i32` import.
pub(crate) fn migrate(mut caller: Caller<'_, AgentState>, ptr: i32, len: i32) -> wasmtime::Result<i32> {
    let Some(mobile) = caller.data_mut().mobile.as_mut() else {
        // A plain run cannot move: the host declines, and the agent carries on.
        return Ok(Role::Stayed.code());
    };
    if let Some(rewinding) = mobile.rewinding.take() {
        // Arrived: the stack is whole again, so the agent's bytes go back under the data.
        call::<(), ()>(&mut caller, "asyncify_stop_rewind", ())?;
        let memory = caps::memory(&mut caller)?;
        memory.data_mut(&mut caller)[..rewinding.region.len()].copy_from_slice(&rewinding.region);
        return Ok(rewinding.role.code());
    }
    let (flag, prepared) = (mobile.flag, mobile.prepared.clone());
    if !usize::try_from(len).is_ok_and(|len| len <= MAX_DEST) {
        return Err(format_err!("migrate's destination is longer than {MAX_DEST} bytes"));
    }
    let memory = caps::memory(&mut caller)?;
    let dest = std::str::from_utf8(caps::slice(memory.data(&caller), ptr, len, "migrate")?)
        .map_err(|_| format_err!("migrate's destination is not UTF-8"))?
        .to_owned();
    if let Some(flag) = flag {
        flag.set(&mut caller, Val::I32(0))?;
    }
    // Memory is captured now, before the unwind writes over its first bytes.
    let data = memory.data(&caller);
    let (dirty, pages) = dirty_pages(data, &prepared.image);
    let size = data.len();
    if size < HEADER {
        return Err(format_err!("the agent has no memory to unwind its stack into"));
    }
    let end = u32::try_from(size).unwrap_or(u32::MAX);
    let header = [(HEADER as u32).to_le_bytes(), end.to_le_bytes()].concat();
    memory.data_mut(&mut caller)[..HEADER].copy_from_slice(&header);
    let memory_pages = (size / WASM_PAGE) as u32;
    let mobile = caller.data_mut().mobile.as_mut().expect("checked above");
    mobile.frozen = Some(Frozen { dest, memory_pages, dirty, pages });
    call::<i32, ()>(&mut caller, "asyncify_start_unwind", DATA)?;
    Ok(0)
}

/// The 4 KiB pages of `data` that differ from `image`, and their bytes.
fn dirty_pages(data: &[u8], image: &prepare::Image) -> (Vec<u32>, Vec<u8>) {
    let (mut dirty, mut pages) = (Vec::new(), Vec::new());
    for (index, page) in data.chunks(PAGE).enumerate() {
        if page != image.page(index as u32) {
            dirty.push(index as u32);
            pages.extend_from_slice(page);
        }
    }
    (dirty, pages)
}

fn call<P: WasmParams, R: WasmResults>(
    caller: &mut Caller<'_, AgentState>,
    name: &str,
    params: P,
) -> wasmtime::Result<R> {
    let func = caller
        .get_export(name)
        .and_then(Extern::into_func)
        .ok_or_else(|| format_err!("the module exports no {name}: it was not prepared with Asyncify"))?;
    func.typed::<P, R>(&*caller)?.call(caller, params)
}

/// Counts wall time in epoch ticks, stops the agent past its limit, and raises its flag when a
/// freeze was asked for.
fn tick(mut store: StoreContextMut<'_, AgentState>, allowed: u64) -> wasmtime::Result<UpdateDeadline> {
    let mobile = store.data_mut().mobile.as_mut().expect("a run that may move");
    mobile.ticks += 1;
    if mobile.ticks > allowed {
        return Ok(UpdateDeadline::Interrupt);
    }
    if let Some(flag) = mobile.flag.filter(|_| mobile.freezer.requested()) {
        flag.set(&mut store, Val::I32(1))?;
    }
    Ok(UpdateDeadline::Continue(1))
}

/// Where a run starts: from its entry, or from a snapshot.
struct Start<'a> {
    job: Job,
    fuel: u64,
    ticks: u64,
    hops: u32,
    restore: Option<(&'a Snapshot, Role)>,
}

impl Host {
    /// Admits `bytes` (as [`Host::load`] does) and prepares it for strong mobility: checks that
    /// all its state can be captured and applies Asyncify, once per module on this host.
    pub fn prepare(&self, bytes: &[u8], signature: Option<&ModuleSignature>) -> Result<MobileModule, PrepareError> {
        let original = self.load(bytes, signature)?;
        if let Some(prepared) = self.prepared_modules().get(&original) {
            return Ok(prepared.describe());
        }
        let image = prepare::check(bytes)?;
        let transformed = prepare::asyncify(bytes)?;
        let module = Module::new(&self.engine, &transformed)
            .map_err(|error| PrepareError::Asyncify(format!("its output does not compile: {error:#}")))?;
        let prepared = Prepared {
            original,
            id: ModuleId::of(&transformed),
            module,
            image,
            sizes: (bytes.len(), transformed.len()),
        };
        Ok(self.prepared_modules().insert(Arc::new(prepared), self.config().max_modules).describe())
    }

    /// The id of `original`'s transformed code, if it is prepared for mobility on this host.
    pub fn prepared_id(&self, original: &ModuleId) -> Option<ModuleId> {
        self.prepared_modules().get(original).map(|prepared| prepared.id)
    }

    /// Runs `job` so that it can freeze: it ends [`Ended::Frozen`] when it calls `migrate`
    /// (on its own, or at a safe point after `freezer` asked), else as [`Host::run`] would.
    pub fn run_mobile(&self, job: &Job, freezer: &Freezer) -> Result<Ended, MobileError> {
        let start = Start { job: job.clone(), fuel: job.limits.fuel, ticks: 0, hops: 0, restore: None };
        self.start(start, AgentState::new(job, self.kv(), &self.config().offers)?, freezer)
    }

    /// Resumes `snapshot` here as `resume.role`. Refused unless this host prepared the same
    /// module into the same code, allows every capability the agent holds, and the snapshot
    /// fits its ceiling and is consistent.
    pub fn resume(&self, snapshot: &Snapshot, resume: &Resume) -> Result<Ended, MobileError> {
        snapshot.check()?;
        let grants = Resource::admit(&snapshot.resources, &resume.allow, &self.config().offers)
            .map_err(MobileError::NotAllowed)?;
        let job = Job {
            module: snapshot.module,
            entry: snapshot.entry.clone(),
            args: snapshot.args.clone(),
            input: snapshot.input.clone(),
            grants,
            limits: snapshot.limits,
        };
        // Bound (a moved bucket installed) only once the code and the limits would be taken:
        // `start` refuses the rest with its own errors before any agent code runs.
        let fits = self.prepared_id(&snapshot.module) == Some(snapshot.prepared)
            && snapshot.limits.above(&self.config().ceiling).is_none();
        let (kv, file) =
            if fits { self.bind_arrival(&snapshot.resources).map_err(MobileError::Bind)? } else { (None, None) };
        let mut state = AgentState::bare(&job, kv, file);
        state.output.clone_from(&snapshot.output);
        state.log.clone_from(&snapshot.log);
        state.log_dropped = snapshot.log_dropped;
        let start = Start {
            job,
            fuel: snapshot.fuel,
            ticks: snapshot.ticks,
            hops: snapshot.hops,
            restore: Some((snapshot, resume.role)),
        };
        self.start(start, state, &resume.freezer)
    }

    fn start(&self, start: Start<'_>, mut state: AgentState, freezer: &Freezer) -> Result<Ended, MobileError> {
        let job = &start.job;
        if let Some(limit) = job.limits.above(&self.config().ceiling) {
            return Err(RunError::AboveCeiling(limit).into());
        }
        let prepared = self.prepared_modules().get(&job.module).ok_or(MobileError::NotPrepared(job.module))?;
        if let Some((snapshot, _)) = start.restore
            && snapshot.prepared != prepared.id
        {
            return Err(MobileError::PreparedDifferently {
                module: job.module,
                here: prepared.id,
                snapshot: snapshot.prepared,
            });
        }
        caps::check(&prepared.module, &job.grants).map_err(RunError::from)?;
        let _slot = Slot::take(&self.running, self.config().max_agents)?;

        state.mobile = Some(Box::new(Mobile {
            prepared: prepared.clone(),
            freezer: freezer.clone(),
            flag: None,
            ticks: start.ticks,
            frozen: None,
            rewinding: None,
        }));
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.budget);
        store.set_fuel(start.fuel).expect("the engine consumes fuel");
        // As in a plain run, one tick more than the limit's worth; counted by `tick` so that
        // a freeze request is seen at every tick and the count travels with the agent.
        let allowed = job.limits.wall.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64 + 1;
        store.epoch_deadline_callback(move |store| tick(store, allowed));
        store.set_epoch_deadline(1);

        let instance = match self.linker.instantiate(&mut store, &prepared.module) {
            Ok(instance) => instance,
            Err(error) => return Err(store.data().stopped(error, true).into()),
        };
        let entry = entry(&instance, &mut store, job)?;
        let flag = instance.get_global(&mut store, FLAG).filter(|flag| {
            let ty = flag.ty(&store);
            ty.mutability() == Mutability::Var && ty.content().is_i32()
        });
        mobile(&mut store).flag = flag;
        match start.restore {
            Some((snapshot, role)) => restore(&mut store, &instance, snapshot, role)?,
            None => {
                if let Some(flag) = flag.filter(|_| freezer.requested()) {
                    flag.set(&mut store, Val::I32(1)).expect("an i32 global");
                }
            }
        }

        let args: Vec<Val> = job.args.iter().map(|arg| arg.to_val()).collect();
        let mut results = vec![Val::I32(0); entry.ty(&store).results().len()];
        let called = entry.call(&mut store, &args, &mut results);
        let frozen = mobile(&mut store).frozen.take();
        match (called, frozen) {
            (Err(error), None) => Err(store.data().stopped(error, false).into()),
            (Err(error), Some(_)) => Err(MobileError::Freeze(store.data().stopped(error, false).to_string())),
            (Ok(()), Some(frozen)) => {
                freeze(store, &instance, &start, frozen).map(|snapshot| Ended::Frozen(Box::new(snapshot)))
            }
            (Ok(()), None) if mobile(&mut store).rewinding.is_some() => {
                Err(SnapshotError::Inconsistent("its stack did not lead back to migrate".into()).into())
            }
            (Ok(()), None) => {
                let fuel_used = job.limits.fuel.saturating_sub(store.get_fuel().expect("the engine consumes fuel"));
                let state = store.into_data();
                Ok(Ended::Finished(Outcome {
                    results: results.iter().filter_map(Value::from_val).collect(),
                    output: state.output,
                    log: state.log,
                    log_dropped: state.log_dropped,
                    fuel_used,
                }))
            }
        }
    }

    fn prepared_modules(&self) -> MutexGuard<'_, Cache> {
        // Each change is one map and one queue call, so a poisoned lock guards a whole table.
        self.mobile.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn mobile(store: &mut Store<AgentState>) -> &mut Mobile {
    store.data_mut().mobile.as_mut().expect("a run that may move")
}

/// Puts `snapshot`'s memory, globals and stack into a fresh instance and starts the rewind.
fn restore(
    store: &mut Store<AgentState>,
    instance: &Instance,
    snapshot: &Snapshot,
    role: Role,
) -> Result<(), MobileError> {
    let bad = |why: String| MobileError::Snapshot(SnapshotError::Inconsistent(why));
    let memory: Memory = instance.get_memory(&mut *store, "memory").ok_or_else(|| bad("no memory".into()))?;
    let pages = memory.data_size(&*store) / WASM_PAGE;
    let wanted = snapshot.memory_pages as usize;
    if wanted < pages {
        return Err(bad(format!("{wanted} pages of memory, fewer than the module starts with ({pages})")));
    }
    // Instantiation wrote the initial image; only the pages that differ from it travelled.
    memory
        .grow(&mut *store, (wanted - pages) as u64)
        .map_err(|error| bad(format!("its memory cannot grow to {wanted} pages here: {error}")))?;
    let data = memory.data_mut(&mut *store);
    for (index, page) in snapshot.dirty.iter().zip(snapshot.pages.chunks(PAGE)) {
        let at = *index as usize * PAGE;
        data[at..at + PAGE].copy_from_slice(page);
    }
    let region = data[..snapshot.stack.len()].to_vec();
    data[..snapshot.stack.len()].copy_from_slice(&snapshot.stack);
    for (name, value) in &snapshot.globals {
        let global = instance
            .get_global(&mut *store, name)
            .filter(|global| global.ty(&*store).mutability() == Mutability::Var)
            .ok_or_else(|| bad(format!("the module has no mutable global {name:?}")))?;
        global.set(&mut *store, value.to_val()).map_err(|error| bad(format!("global {name:?}: {error}")))?;
    }
    mobile(store).rewinding = Some(Rewinding { region, role });
    let start_rewind = instance
        .get_typed_func::<i32, ()>(&mut *store, "asyncify_start_rewind")
        .map_err(|error| bad(format!("{error}")))?;
    start_rewind.call(&mut *store, DATA).map_err(|error| bad(format!("the rewind did not start: {error}")))
}

/// The snapshot of an agent whose stack has just been unwound.
fn freeze(
    mut store: Store<AgentState>,
    instance: &Instance,
    start: &Start<'_>,
    frozen: Frozen,
) -> Result<Snapshot, MobileError> {
    let failed = |why: String| MobileError::Freeze(why);
    instance
        .get_typed_func::<(), ()>(&mut store, "asyncify_stop_unwind")
        .and_then(|stop| stop.call(&mut store, ()))
        .map_err(|error| failed(format!("the unwind did not stop: {error}")))?;
    let memory = instance.get_memory(&mut store, "memory").expect("checked when it was prepared");
    let data = memory.data(&store);
    let end = u32::from_le_bytes(data[..4].try_into().expect("4 bytes")) as usize;
    let stack = data.get(..end).ok_or_else(|| failed("the unwound stack ends outside memory".into()))?.to_vec();
    let exported: Vec<(String, wasmtime::Global)> = instance
        .exports(&mut store)
        .filter_map(|export| {
            let name = export.name().to_owned();
            export.into_global().map(|global| (name, global))
        })
        .collect();
    let mut globals = Vec::new();
    for (name, global) in exported {
        if global.ty(&store).mutability() == Mutability::Var {
            let value = Value::from_val(&global.get(&mut store))
                .ok_or_else(|| failed(format!("global {name:?} is not a number")))?;
            globals.push((name, value));
        }
    }
    let fuel = store.get_fuel().expect("the engine consumes fuel");
    let ticks = mobile(&mut store).ticks;
    let state = store.into_data();
    let job = &start.job;
    let resources = state.resources(&job.grants);
    Ok(Snapshot {
        module: job.module,
        prepared: state.mobile.as_ref().expect("a run that may move").prepared.id,
        entry: job.entry.clone(),
        args: job.args.clone(),
        dest: frozen.dest,
        hops: start.hops + 1,
        memory_pages: frozen.memory_pages,
        dirty: frozen.dirty,
        pages: frozen.pages,
        globals,
        stack,
        fuel,
        ticks,
        limits: job.limits,
        resources,
        input: state.input,
        output: state.output,
        log: state.log,
        log_dropped: state.log_dropped,
    })
}
