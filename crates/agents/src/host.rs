//! The host: one wasmtime engine, the modules it admitted (compiled once each, by id), and the
//! agents it runs, each in its own store. A thread ticks the engine's epoch every
//! [`EPOCH_TICK`], which is how wall-time limits stop agents that make no host call.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Engine, Func, Instance, Linker, Module, Store, Val};

use crate::ModuleId;
use crate::agent::{AgentState, Job, Outcome, RunError, Value, type_name};
use crate::binding::Offers;
use crate::caps;
use crate::kv::{Kv, KvLimits};
use crate::limits::Limits;
use crate::reference::References;
use crate::trust::{ModuleSignature, Trust, TrustError};

/// How often the engine's epoch advances: the granularity of wall-time limits.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// A host's settings; the default is deployable.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Which modules it admits.
    pub trust: Trust,
    /// The most any job may ask for.
    pub ceiling: Limits,
    /// Agents running at once; more are refused ([`RunError::Busy`]).
    pub max_agents: usize,
    /// The largest module admitted, in bytes.
    pub max_module_bytes: usize,
    /// Compiled modules kept; past it the oldest is forgotten (and must be loaded again).
    pub max_modules: usize,
    /// The key-value store's bounds.
    pub kv: KvLimits,
    /// The buckets and files agents may be granted, and how each is attached.
    pub offers: Offers,
}

impl Default for HostConfig {
    /// Signed modules only, from no key until some are trusted; jobs up to 10 s, 10 billion
    /// fuel, 256 MiB of memory, 100,000 table elements, 16 MiB of output and 4,096 log lines;
    /// 64 agents at once; modules up to 16 MiB, 256 kept.
    fn default() -> HostConfig {
        HostConfig {
            trust: Trust::new(),
            ceiling: Limits {
                fuel: 10_000_000_000,
                wall: Duration::from_secs(10),
                memory: 256 << 20,
                table: 100_000,
                output: 16 << 20,
                log_lines: 4096,
            },
            max_agents: 64,
            max_module_bytes: 16 << 20,
            max_modules: 256,
            kv: KvLimits::default(),
            offers: Offers::default(),
        }
    }
}

/// Why a module was not loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// Larger than the host admits.
    #[error("the module is {size} bytes, over this host's limit of {limit}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not signed as the host requires.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// Not a valid WebAssembly module (or one using a feature the host leaves off).
    #[error("not a valid WebAssembly module: {0}")]
    Invalid(String),
}

/// The agent host.
#[derive(Debug)]
pub struct Host {
    config: HostConfig,
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<AgentState>,
    modules: Mutex<Modules>,
    /// Modules prepared for strong mobility, by original id.
    pub(crate) mobile: Mutex<crate::mobility::prepare::Cache>,
    pub(crate) kv: Kv,
    pub(crate) running: AtomicUsize,
    /// The global references it issued to agents that left.
    pub(crate) references: References,
    /// `ADDR:PORT` where other hosts reach its agent protocol, for the references it issues.
    pub(crate) address: std::sync::OnceLock<String>,
    ticker: Option<Ticker>,
}

#[derive(Debug, Default)]
struct Modules {
    /// Each module compiled, with its bytes: a node hands them to whoever fetches the module
    /// by id (code on demand).
    compiled: HashMap<ModuleId, (Module, Arc<[u8]>)>,
    /// Ids in the order they were first loaded, for forgetting the oldest; installed modules
    /// are not in it, so they stay.
    order: VecDeque<ModuleId>,
}

impl Host {
    /// A host with `config`, its engine built and its epoch ticking.
    pub fn new(config: HostConfig) -> Result<Host, wasmtime::Error> {
        let mut engine_config = Config::new();
        engine_config.consume_fuel(true).epoch_interruption(true);
        let engine = Engine::new(&engine_config)?;
        let mut linker = Linker::new(&engine);
        caps::define(&mut linker)?;
        Ok(Host {
            kv: Kv::new(config.kv),
            config,
            ticker: Some(Ticker::start(engine.clone())),
            engine,
            linker,
            modules: Mutex::default(),
            mobile: Mutex::default(),
            running: AtomicUsize::new(0),
            references: References::default(),
            address: std::sync::OnceLock::new(),
        })
    }

    /// Its settings.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// Its key-value store, shared with the agents granted a bucket.
    pub fn kv(&self) -> &Kv {
        &self.kv
    }

    /// Admits and compiles `bytes` (once per id), and returns its id.
    pub fn load(&self, bytes: &[u8], signature: Option<&ModuleSignature>) -> Result<ModuleId, LoadError> {
        if bytes.len() > self.config.max_module_bytes {
            return Err(LoadError::TooLarge { size: bytes.len(), limit: self.config.max_module_bytes });
        }
        let id = ModuleId::of(bytes);
        self.config.trust.admit(&id, signature)?;
        self.compile(id, bytes, false)
    }

    /// Compiles `bytes` (once per id) without asking for a signature: for modules the operator
    /// installed on the host's own disk, whose file system is their credential. Installed
    /// modules are never forgotten to make room for others.
    pub fn install(&self, bytes: &[u8]) -> Result<ModuleId, LoadError> {
        if bytes.len() > self.config.max_module_bytes {
            return Err(LoadError::TooLarge { size: bytes.len(), limit: self.config.max_module_bytes });
        }
        self.compile(ModuleId::of(bytes), bytes, true)
    }

    /// The bytes of module `id`, if it is loaded.
    pub fn bytes(&self, id: &ModuleId) -> Option<Arc<[u8]>> {
        self.modules().compiled.get(id).map(|(_, bytes)| bytes.clone())
    }

    fn compile(&self, id: ModuleId, bytes: &[u8], pinned: bool) -> Result<ModuleId, LoadError> {
        if self.module(&id).is_some() {
            return Ok(id);
        }
        // Compiled outside the lock: compiling takes milliseconds and other agents must start
        // meanwhile. Two loads of one new module may both compile it; the second is dropped.
        let module = Module::new(&self.engine, bytes).map_err(|error| LoadError::Invalid(format!("{error:#}")))?;
        let mut modules = self.modules();
        if !modules.compiled.contains_key(&id) {
            while modules.compiled.len() >= self.config.max_modules.max(1) {
                let Some(oldest) = modules.order.pop_front() else { break };
                modules.compiled.remove(&oldest);
            }
            modules.compiled.insert(id, (module, bytes.into()));
            if !pinned {
                modules.order.push_back(id);
            }
        }
        Ok(id)
    }

    /// Whether module `id` is loaded.
    pub fn has(&self, id: &ModuleId) -> bool {
        self.module(id).is_some()
    }

    /// How many compiled modules it keeps.
    pub fn loaded(&self) -> usize {
        self.modules().compiled.len()
    }

    /// The parameter types of `module`'s exported function `entry` (`i32`, `i64`, …), to parse
    /// arguments given as text.
    pub fn params(&self, module: &ModuleId, entry: &str) -> Result<Vec<String>, RunError> {
        let compiled = self.module(module).ok_or(RunError::UnknownModule(*module))?;
        match compiled.get_export(entry) {
            Some(wasmtime::ExternType::Func(ty)) => Ok(ty.params().map(|param| type_name(&param)).collect()),
            _ => Err(RunError::NoEntry(entry.to_owned())),
        }
    }

    /// Runs `job` to its end on this thread, in a new store, and says how it ended.
    pub fn run(&self, job: &Job) -> Result<Outcome, RunError> {
        if let Some(limit) = job.limits.above(&self.config.ceiling) {
            return Err(RunError::AboveCeiling(limit));
        }
        let _slot = Slot::take(&self.running, self.config.max_agents)?;
        let module = self.module(&job.module).ok_or(RunError::UnknownModule(job.module))?;
        caps::check(&module, &job.grants)?;

        let mut store = Store::new(&self.engine, AgentState::new(job, &self.kv, &self.config.offers)?);
        store.limiter(|state| &mut state.budget);
        store.set_fuel(job.limits.fuel).expect("the engine consumes fuel");
        // One tick more than the limit's worth: the first may come at once.
        store.set_epoch_deadline(job.limits.wall.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64 + 1);

        let instance = match self.linker.instantiate(&mut store, &module) {
            Ok(instance) => instance,
            Err(error) => return Err(store.data().stopped(error, true)),
        };
        let entry = entry(&instance, &mut store, job)?;
        let args: Vec<Val> = job.args.iter().map(|arg| arg.to_val()).collect();
        let mut results = vec![Val::I32(0); entry.ty(&store).results().len()];
        if let Err(error) = entry.call(&mut store, &args, &mut results) {
            return Err(store.data().stopped(error, false));
        }
        let fuel_used = job.limits.fuel - store.get_fuel().expect("the engine consumes fuel");
        let state = store.into_data();
        Ok(Outcome {
            results: results.iter().filter_map(Value::from_val).collect(),
            output: state.output,
            log: state.log,
            log_dropped: state.log_dropped,
            fuel_used,
        })
    }

    pub(crate) fn module(&self, id: &ModuleId) -> Option<Module> {
        self.modules().compiled.get(id).map(|(module, _)| module.clone())
    }

    fn modules(&self) -> std::sync::MutexGuard<'_, Modules> {
        // Every change to the table is a single map or queue call, so a poisoned lock still
        // guards a consistent table.
        self.modules.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.stop();
        }
    }
}

/// `job`'s entry in `instance`, if it takes the job's arguments and returns only numbers.
pub(crate) fn entry(instance: &Instance, store: &mut Store<AgentState>, job: &Job) -> Result<Func, RunError> {
    let entry = instance.get_func(&mut *store, &job.entry).ok_or_else(|| RunError::NoEntry(job.entry.clone()))?;
    let ty = entry.ty(&*store);
    let params: Vec<String> = ty.params().map(|param| type_name(&param)).collect();
    let given: Vec<&str> = job.args.iter().map(|arg| arg.type_name()).collect();
    let numeric = ty.results().all(|result| ["i32", "i64", "f32", "f64"].contains(&type_name(&result).as_str()));
    if params != given || !numeric {
        let results: Vec<String> = ty.results().map(|result| type_name(&result)).collect();
        return Err(RunError::EntryType {
            entry: job.entry.clone(),
            expected: format!("({}) -> ({})", params.join(", "), results.join(", ")),
            given: given.join(", "),
        });
    }
    Ok(entry)
}

/// One of the host's `max_agents` places, given back when dropped.
pub(crate) struct Slot<'a>(&'a AtomicUsize);

impl<'a> Slot<'a> {
    pub(crate) fn take(running: &'a AtomicUsize, max: usize) -> Result<Slot<'a>, RunError> {
        running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .map(|_| Slot(running))
            .map_err(|_| RunError::Busy(max))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The thread that advances the engine's epoch; it ends when its channel closes.
#[derive(Debug)]
struct Ticker {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Ticker {
    fn start(engine: Engine) -> Ticker {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("agents-epoch".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(EPOCH_TICK) {
                    engine.increment_epoch();
                }
            })
            .expect("spawn the epoch thread");
        Ticker { stop, thread }
    }

    fn stop(self) {
        drop(self.stop);
        // The thread only ticks; if it panicked there is nothing left to clean up.
        let _ = self.thread.join();
    }
}
