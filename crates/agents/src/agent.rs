//! One agent's run: what it is started with ([`Job`]), the state its store carries
//! ([`AgentState`]), what it ends with ([`Outcome`]) and why it was stopped ([`RunError`]).

use std::fmt;
use std::time::Duration;

use wasmtime::{Trap, Val, ValType};

use crate::binding::Offers;
use crate::caps::{Access, Grants, ImportError};
use crate::file::{FileHeld, FileStore};
use crate::kv::{KvHeld, KvStore};
use crate::limits::{Budget, Limits, Refusal};
use crate::{Kv, ModuleId};

/// A WebAssembly number: what an entry takes and returns.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Value {
    /// `i32`.
    I32(i32),
    /// `i64`.
    I64(i64),
    /// `f32`.
    F32(f32),
    /// `f64`.
    F64(f64),
}

impl Value {
    pub(crate) fn to_val(self) -> Val {
        match self {
            Value::I32(v) => Val::I32(v),
            Value::I64(v) => Val::I64(v),
            Value::F32(v) => Val::F32(v.to_bits()),
            Value::F64(v) => Val::F64(v.to_bits()),
        }
    }

    pub(crate) fn from_val(val: &Val) -> Option<Value> {
        Some(match *val {
            Val::I32(v) => Value::I32(v),
            Val::I64(v) => Value::I64(v),
            Val::F32(bits) => Value::F32(f32::from_bits(bits)),
            Val::F64(bits) => Value::F64(f64::from_bits(bits)),
            _ => return None,
        })
    }

    pub(crate) fn type_name(self) -> &'static str {
        match self {
            Value::I32(_) => "i32",
            Value::I64(_) => "i64",
            Value::F32(_) => "f32",
            Value::F64(_) => "f64",
        }
    }

    /// Parses `text` as a value of `ty` (an entry's parameter type: i32, i64, f32 or f64).
    pub fn parse(text: &str, ty: &str) -> Option<Value> {
        Some(match ty {
            "i32" => Value::I32(text.parse().ok()?),
            "i64" => Value::I64(text.parse().ok()?),
            "f32" => Value::F32(text.parse().ok()?),
            "f64" => Value::F64(text.parse().ok()?),
            _ => return None,
        })
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::I32(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::F32(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
        }
    }
}

pub(crate) fn type_name(ty: &ValType) -> String {
    ty.to_string()
}

/// What to run: a loaded module's entry, with its arguments, input, grants and limits.
#[derive(Debug, Clone)]
pub struct Job {
    /// The module, loaded in the host.
    pub module: ModuleId,
    /// The exported function to call.
    pub entry: String,
    /// Its arguments.
    pub args: Vec<Value>,
    /// Bytes it reads with `input_read`.
    pub input: Vec<u8>,
    /// The capabilities it may import.
    pub grants: Grants,
    /// Its limits, at most the host's ceiling.
    pub limits: Limits,
}

impl Job {
    /// Calls `entry` of `module` with no arguments, no input, no grants and default limits.
    pub fn new(module: ModuleId, entry: &str) -> Job {
        Job {
            module,
            entry: entry.to_owned(),
            args: Vec::new(),
            input: Vec::new(),
            grants: Grants::default(),
            limits: Limits::default(),
        }
    }
}

/// What a finished agent leaves.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    /// What its entry returned.
    pub results: Vec<Value>,
    /// What it wrote with `output_write`.
    pub output: Vec<u8>,
    /// Its log lines, with the `log` capability.
    pub log: Vec<String>,
    /// Log lines past its limit, not kept.
    pub log_dropped: u64,
    /// The fuel it burnt, instantiation included.
    pub fuel_used: u64,
}

/// Why an agent did not run, or was stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    /// No module with that id is loaded.
    #[error("no module {0} is loaded on this host")]
    UnknownModule(ModuleId),
    /// The job asks for more than the host allows.
    #[error("the job's {0} limit is above this host's ceiling")]
    AboveCeiling(&'static str),
    /// The host runs as many agents as it may.
    #[error("this host already runs its maximum of {0} agents")]
    Busy(usize),
    /// The module imports something it may not have.
    #[error(transparent)]
    Import(#[from] ImportError),
    /// The module exports no function by the entry's name.
    #[error("the module exports no function {0:?}")]
    NoEntry(String),
    /// The entry's parameters or results are not what the job gives.
    #[error("entry {entry:?} is {expected}, the job gives ({given})")]
    EntryType {
        /// The entry.
        entry: String,
        /// Its type, as `(params) -> (results)`.
        expected: String,
        /// The argument types given.
        given: String,
    },
    /// Instantiation failed for another reason (an import of the wrong type, a trapping start).
    #[error("the agent could not be instantiated: {0}")]
    Instantiate(String),
    /// It burnt all its fuel.
    #[error("the agent ran out of fuel ({0} units)")]
    OutOfFuel(u64),
    /// It ran past its wall-time limit.
    #[error("the agent ran past its wall-time limit ({0:?})")]
    Deadline(Duration),
    /// It asked for more memory than its limit and stopped on the refusal.
    #[error("the agent asked for {wanted} bytes of memory, over its limit of {limit}")]
    MemoryLimit {
        /// The bytes asked for.
        wanted: usize,
        /// Its limit.
        limit: usize,
    },
    /// It asked for a larger table than its limit and stopped on the refusal.
    #[error("the agent asked for {wanted} table elements, over its limit of {limit}")]
    TableLimit {
        /// The elements asked for.
        wanted: usize,
        /// Its limit.
        limit: usize,
    },
    /// It wrote more output than its limit.
    #[error("the agent wrote {wanted} bytes of output, over its limit of {limit}")]
    OutputLimit {
        /// The bytes it would have had.
        wanted: usize,
        /// Its limit.
        limit: usize,
    },
    /// It recursed past the host's stack limit.
    #[error("the agent exhausted its call stack")]
    StackOverflow,
    /// It trapped (unreachable, division by zero, an out-of-bounds access or buffer).
    #[error("the agent trapped: {0}")]
    Trap(String),
    /// It asks for a resource this host does not offer.
    #[error("this host offers no {0}")]
    NotOffered(String),
}

/// The data of an agent's store: its limits, input, output, log and granted resources.
#[derive(Debug)]
pub struct AgentState {
    pub(crate) limits: Limits,
    pub(crate) budget: Budget,
    pub(crate) input: Vec<u8>,
    pub(crate) output: Vec<u8>,
    pub(crate) log: Vec<String>,
    pub(crate) log_dropped: u64,
    pub(crate) kv: Option<KvHeld>,
    pub(crate) file: Option<FileHeld>,
    /// Why the last host call that could not reach its resource failed (`error_read`).
    pub(crate) last_error: Option<String>,
    /// What a run that may move keeps (`None` in a plain run, where `migrate` returns -1).
    pub(crate) mobile: Option<Box<crate::mobility::Mobile>>,
}

impl AgentState {
    /// The state of `job` starting here: its bucket is the host's of that name, its file the
    /// one the host offers by that name.
    pub(crate) fn new(job: &Job, kv: &Kv, offers: &Offers) -> Result<AgentState, RunError> {
        let file = match &job.grants.file {
            None => None,
            Some(grant) => {
                let path = offers
                    .files
                    .get(&grant.name)
                    .ok_or_else(|| RunError::NotOffered(format!("file {:?}", grant.name)))?;
                Some(FileHeld { store: FileStore::Local(path.clone()), name: grant.name.clone(), bind: grant.bind })
            }
        };
        let kv = job.grants.kv.as_ref().map(|grant| KvHeld {
            store: KvStore::Host(kv.clone()),
            bucket: grant.bucket.clone(),
            write: grant.access == Access::ReadWrite,
            bind: job.grants.kv_bind,
            attachment: offers.attachment(&grant.bucket),
        });
        Ok(AgentState::bare(job, kv, file))
    }

    /// The state of `job` holding `kv` and `file` as they are.
    pub(crate) fn bare(job: &Job, kv: Option<KvHeld>, file: Option<FileHeld>) -> AgentState {
        AgentState {
            limits: job.limits,
            budget: Budget::new(&job.limits),
            input: job.input.clone(),
            output: Vec::new(),
            log: Vec::new(),
            log_dropped: 0,
            kv,
            file,
            last_error: None,
            mobile: None,
        }
    }

    /// Remembers why a call could not reach its resource: what the call returns to the agent.
    pub(crate) fn failed(&mut self, reason: String) -> i32 {
        self.last_error = Some(reason);
        crate::caps::UNREACHABLE
    }

    /// Why the agent stopped with `error`: a fuel or wall-time stop first, then a limit it ran
    /// into, then the trap itself. `instantiating` tells a failed instantiation from a trap.
    pub(crate) fn stopped(&self, error: wasmtime::Error, instantiating: bool) -> RunError {
        match error.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => return RunError::OutOfFuel(self.limits.fuel),
            Some(Trap::Interrupt) => return RunError::Deadline(self.limits.wall),
            Some(Trap::StackOverflow) => return RunError::StackOverflow,
            _ => {}
        }
        match self.budget.refused {
            Some(Refusal::Memory { wanted }) => RunError::MemoryLimit { wanted, limit: self.limits.memory },
            Some(Refusal::Table { wanted }) => RunError::TableLimit { wanted, limit: self.limits.table },
            Some(Refusal::Output { wanted }) => RunError::OutputLimit { wanted, limit: self.limits.output },
            None if instantiating => RunError::Instantiate(format!("{error:#}")),
            None => RunError::Trap(format!("{error:#}")),
        }
    }
}
