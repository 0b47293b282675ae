//! Capabilities: the host functions an agent may import, all from the module `warren`. An agent
//! gets only what its [`Grants`] allow; the host checks every import of the module against them
//! before instantiating it, so an ungranted import is refused with its name and the capability
//! it needs, and no code of that agent runs.
//!
//! Pointers and lengths are `i32`s into the agent's exported `memory`. The functions:
//!
//! | import | needs | does |
//! |---|---|---|
//! | `input_len() -> i32` | nothing | the length of the input the agent was started with |
//! | `input_read(ptr, len) -> i32` | nothing | copies up to `len` bytes of it to `ptr`; how many |
//! | `output_write(ptr, len) -> i32` | nothing | appends `len` bytes at `ptr` to the agent's output (0); past its limit the agent is stopped |
//! | `clock_ms() -> i64` | `clock` | milliseconds since the Unix epoch |
//! | `log(ptr, len)` | `log` | one log line (UTF-8, cut at 1 KiB) |
//! | `kv_get(kptr, klen, vptr, vcap) -> i32` | `kv` (read) | the value's length, -1 if absent; copies up to `vcap` bytes of it to `vptr` |
//! | `kv_put(kptr, klen, vptr, vlen) -> i32` | `kv` (read-write) | 0; -1 if the key or value is too long, -2 if the bucket is full |
//! | `kv_delete(kptr, klen) -> i32` | `kv` (read-write) | 1 if the key was there, else 0 |
//! | `file_size() -> i64` | `file` | the granted file's size in bytes; -3 if it cannot be reached |
//! | `file_read(offset, ptr, len) -> i32` | `file` | copies up to `len` bytes (64 KiB at most) of the file from `offset` to `ptr`; how many, -3 if it cannot be reached |
//! | `error_read(ptr, len) -> i32` | nothing | copies the last failed call's reason (why -3) to `ptr`; its whole length |
//! | `migrate(dptr, dlen) -> i32` | nothing | asks to move to the destination named at `dptr`; see [`crate::mobility`] |
//!
//! A bucket or a file held through a global reference (see [`crate::binding`]) is reached over
//! the agent protocol on its origin; when the origin cannot be reached, `kv_get`, `kv_put`,
//! `kv_delete`, `file_size` and `file_read` return -3 and `error_read` says why.
//!
//! A new capability is a field of [`Grants`], a [`Need`], rows in [`IMPORTS`] and its functions
//! in [`define`].

use std::time::{SystemTime, UNIX_EPOCH};

use wasmtime::{Caller, Extern, ExternType, Linker, Memory, Module, Result, format_err};

use crate::agent::AgentState;
use crate::binding::Bind;
use crate::limits::Refusal;

/// The module every host import comes from.
pub const IMPORT_MODULE: &str = "warren";

/// The longest log line kept, in bytes; longer ones are cut.
pub const MAX_LOG_LINE: usize = 1024;

/// What an agent may reach beyond its own input and output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// The wall clock (`clock_ms`).
    pub clock: bool,
    /// Log lines, returned with its outcome (`log`).
    pub log: bool,
    /// One bucket of the host's key-value store.
    pub kv: Option<KvGrant>,
    /// How the agent is bound to its bucket, and what its moves do with it.
    pub kv_bind: Bind,
    /// One read-only file the host offers, by name.
    pub file: Option<FileGrant>,
}

/// A file granted to an agent: read-only, by the name the host offers it under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileGrant {
    /// The file's name.
    pub name: String,
    /// How the agent is bound to it.
    pub bind: Bind,
}

/// What a host-function call that reaches a resource returns when it cannot (a reference whose
/// origin is gone, a file that cannot be read); `error_read` tells why.
pub const UNREACHABLE: i32 = -3;

/// The most `file_read` copies in one call.
pub const MAX_FILE_READ: usize = 64 << 10;

/// A key-value bucket granted to an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvGrant {
    /// The bucket's name.
    pub bucket: String,
    /// Whether it may change the bucket.
    pub access: Access,
}

/// Read, or read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `kv_get` only.
    Read,
    /// `kv_get`, `kv_put` and `kv_delete`.
    ReadWrite,
}

/// What an import needs to have been granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: it touches only the agent's own input and output.
    Nothing,
    /// [`Grants::clock`].
    Clock,
    /// [`Grants::log`].
    Log,
    /// A [`KvGrant`] of any access.
    KvRead,
    /// A [`KvGrant`] with [`Access::ReadWrite`].
    KvWrite,
    /// [`Grants::file`].
    File,
}

impl Need {
    /// The capability's name, as docs and errors give it.
    pub fn name(self) -> &'static str {
        match self {
            Need::Nothing => "none",
            Need::Clock => "clock",
            Need::Log => "log",
            Need::KvRead => "kv (read)",
            Need::KvWrite => "kv (read-write)",
            Need::File => "file",
        }
    }
}

/// Every import the host offers, with what it needs.
pub const IMPORTS: &[(&str, Need)] = &[
    ("input_len", Need::Nothing),
    ("input_read", Need::Nothing),
    ("output_write", Need::Nothing),
    ("clock_ms", Need::Clock),
    ("log", Need::Log),
    ("kv_get", Need::KvRead),
    ("kv_put", Need::KvWrite),
    ("kv_delete", Need::KvWrite),
    ("file_size", Need::File),
    ("file_read", Need::File),
    ("error_read", Need::Nothing),
    ("migrate", Need::Nothing),
];

impl Grants {
    /// Whether these grants cover `need`.
    pub fn allow(&self, need: Need) -> bool {
        match need {
            Need::Nothing => true,
            Need::Clock => self.clock,
            Need::Log => self.log,
            Need::KvRead => self.kv.is_some(),
            Need::KvWrite => self.kv.as_ref().is_some_and(|kv| kv.access == Access::ReadWrite),
            Need::File => self.file.is_some(),
        }
    }
}

/// An import a module may not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// The host offers it, but the agent was not granted the capability.
    #[error("the agent imports warren.{name}, which needs the {} capability, not granted", .need.name())]
    NotGranted {
        /// The import's name in `warren`.
        name: String,
        /// The capability it needs.
        need: Need,
    },
    /// The host offers nothing by that name (or not as a function).
    #[error("the agent imports {module}.{name}, which this host does not offer")]
    Unknown {
        /// The import's module.
        module: String,
        /// Its name.
        name: String,
    },
}

/// Checks every import of `module` against `grants`.
pub fn check(module: &Module, grants: &Grants) -> Result<(), ImportError> {
    for import in module.imports() {
        let offered = (import.module() == IMPORT_MODULE && matches!(import.ty(), ExternType::Func(_)))
            .then(|| IMPORTS.iter().find(|(name, _)| *name == import.name()))
            .flatten();
        match offered {
            None => return Err(ImportError::Unknown { module: import.module().into(), name: import.name().into() }),
            Some((name, need)) if !grants.allow(*need) => {
                return Err(ImportError::NotGranted { name: (*name).into(), need: *need });
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Defines every import of [`IMPORTS`] in `linker`; [`check`] decides which an agent may use.
pub fn define(linker: &mut Linker<AgentState>) -> Result<()> {
    linker.func_wrap(IMPORT_MODULE, "input_len", |caller: Caller<'_, AgentState>| caller.data().input.len() as i32)?;
    linker.func_wrap(IMPORT_MODULE, "input_read", |mut caller: Caller<'_, AgentState>, ptr: i32, len: i32| {
        let memory = memory(&mut caller)?;
        let (data, state) = memory.data_and_store_mut(&mut caller);
        let n = state.input.len().min(len as u32 as usize);
        slice_mut(data, ptr, n as i32, "input_read")?.copy_from_slice(&state.input[..n]);
        Ok(n as i32)
    })?;
    linker.func_wrap(IMPORT_MODULE, "output_write", |mut caller: Caller<'_, AgentState>, ptr: i32, len: i32| {
        let memory = memory(&mut caller)?;
        let (data, state) = memory.data_and_store_mut(&mut caller);
        let bytes = slice(data, ptr, len, "output_write")?;
        let wanted = state.output.len() + bytes.len();
        if wanted > state.limits.output {
            state.budget.refused = Some(Refusal::Output { wanted });
            return Err(format_err!("output over its limit of {} bytes", state.limits.output));
        }
        state.output.extend_from_slice(bytes);
        Ok(0)
    })?;
    linker.func_wrap(IMPORT_MODULE, "clock_ms", || {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as i64)
    })?;
    linker.func_wrap(IMPORT_MODULE, "log", |mut caller: Caller<'_, AgentState>, ptr: i32, len: i32| {
        let memory = memory(&mut caller)?;
        let (data, state) = memory.data_and_store_mut(&mut caller);
        let bytes = slice(data, ptr, len, "log")?;
        if state.log.len() < state.limits.log_lines {
            state.log.push(String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_LOG_LINE)]).into_owned());
        } else {
            state.log_dropped += 1;
        }
        Ok(())
    })?;
    linker.func_wrap(
        IMPORT_MODULE,
        "kv_get",
        |mut caller: Caller<'_, AgentState>, kptr: i32, klen: i32, vptr: i32, vcap: i32| {
            let memory = memory(&mut caller)?;
            let (data, state) = memory.data_and_store_mut(&mut caller);
            let held = state.kv.as_ref().ok_or_else(|| format_err!("kv_get without a kv grant"))?;
            let value = match held.get(slice(data, kptr, klen, "kv_get")?) {
                Ok(Some(value)) => value,
                Ok(None) => return Ok(-1),
                Err(reason) => return Ok(state.failed(reason)),
            };
            let n = value.len().min(vcap as u32 as usize);
            slice_mut(data, vptr, n as i32, "kv_get")?.copy_from_slice(&value[..n]);
            Ok(value.len() as i32)
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "kv_put",
        |mut caller: Caller<'_, AgentState>, kptr: i32, klen: i32, vptr: i32, vlen: i32| {
            let memory = memory(&mut caller)?;
            let (data, state) = memory.data_and_store_mut(&mut caller);
            let held = writable(state, "kv_put")?;
            match held.put(slice(data, kptr, klen, "kv_put")?, slice(data, vptr, vlen, "kv_put")?) {
                Ok(code) => Ok(code),
                Err(reason) => Ok(state.failed(reason)),
            }
        },
    )?;
    linker.func_wrap(IMPORT_MODULE, "kv_delete", |mut caller: Caller<'_, AgentState>, kptr: i32, klen: i32| {
        let memory = memory(&mut caller)?;
        let (data, state) = memory.data_and_store_mut(&mut caller);
        let held = writable(state, "kv_delete")?;
        match held.delete(slice(data, kptr, klen, "kv_delete")?) {
            Ok(was) => Ok(was as i32),
            Err(reason) => Ok(state.failed(reason)),
        }
    })?;
    linker.func_wrap(IMPORT_MODULE, "file_size", |mut caller: Caller<'_, AgentState>| {
        let state = caller.data_mut();
        let held = state.file.as_ref().ok_or_else(|| format_err!("file_size without a file grant"))?;
        match held.size() {
            Ok(size) => Ok(i64::try_from(size).unwrap_or(i64::MAX)),
            Err(reason) => Ok(state.failed(reason) as i64),
        }
    })?;
    linker.func_wrap(
        IMPORT_MODULE,
        "file_read",
        |mut caller: Caller<'_, AgentState>, offset: i64, ptr: i32, len: i32| {
            let memory = memory(&mut caller)?;
            let (data, state) = memory.data_and_store_mut(&mut caller);
            let held = state.file.as_ref().ok_or_else(|| format_err!("file_read without a file grant"))?;
            let len = (len as u32 as usize).min(MAX_FILE_READ);
            let target = slice_mut(data, ptr, len as i32, "file_read")?;
            match held.read(offset.max(0) as u64, len) {
                Ok(bytes) => {
                    target[..bytes.len()].copy_from_slice(&bytes);
                    Ok(bytes.len() as i32)
                }
                Err(reason) => Ok(state.failed(reason)),
            }
        },
    )?;
    linker.func_wrap(IMPORT_MODULE, "error_read", |mut caller: Caller<'_, AgentState>, ptr: i32, len: i32| {
        let memory = memory(&mut caller)?;
        let (data, state) = memory.data_and_store_mut(&mut caller);
        let reason = state.last_error.as_deref().unwrap_or_default().as_bytes();
        let n = reason.len().min(len as u32 as usize);
        slice_mut(data, ptr, n as i32, "error_read")?.copy_from_slice(&reason[..n]);
        Ok(reason.len() as i32)
    })?;
    linker.func_wrap(IMPORT_MODULE, "migrate", crate::mobility::migrate)?;
    Ok(())
}

// The checks below repeat what `check` ensured before instantiation, so that a host function
// never acts on a grant it was not given, whatever the linker holds.
fn writable<'a>(state: &'a AgentState, import: &str) -> Result<&'a crate::kv::KvHeld> {
    state.kv.as_ref().filter(|held| held.write).ok_or_else(|| format_err!("{import} without a read-write kv grant"))
}

pub(crate) fn memory(caller: &mut Caller<'_, AgentState>) -> Result<Memory> {
    caller
        .get_export("memory")
        .and_then(Extern::into_memory)
        .ok_or_else(|| format_err!("the agent calls a host function with a buffer but exports no memory"))
}

fn range(ptr: i32, len: i32, size: usize, import: &str) -> Result<std::ops::Range<usize>> {
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    start
        .checked_add(len)
        .filter(|end| *end <= size)
        .map(|end| start..end)
        .ok_or_else(|| format_err!("the agent passed {import} a buffer outside its memory ({start}+{len})"))
}

pub(crate) fn slice<'a>(data: &'a [u8], ptr: i32, len: i32, import: &str) -> Result<&'a [u8]> {
    Ok(&data[range(ptr, len, data.len(), import)?])
}

fn slice_mut<'a>(data: &'a mut [u8], ptr: i32, len: i32, import: &str) -> Result<&'a mut [u8]> {
    let range = range(ptr, len, data.len(), import)?;
    Ok(&mut data[range])
}
