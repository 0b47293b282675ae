//! warren's agent host: WebAssembly modules run in wasmtime, each agent in its own store,
//! sandboxed by fuel (CPU), epoch deadlines (wall time), memory and table limits, and
//! capabilities (it imports only what it was granted). docs/agents.md tells how to use it.
//!
//! - [`module`]: modules by content (SHA-256); [`trust`]: which modules a host admits
//!   (ed25519 signatures from trusted keys); [`keys`]: keys and signatures as text files.
//! - [`host`]: the engine, the compiled modules and the run of one agent.
//! - [`caps`]: the host functions and the grants that open them; [`kv`]: the key-value store
//!   behind the `kv` capability.
//! - [`limits`]: per-agent limits and the store's resource limiter; [`agent`]: a job, its
//!   outcome and why it stopped.
//! - [`mobility`]: strong mobility; an agent frozen at a safe point with its call stack
//!   (Binaryen's Asyncify), carried as a [`Snapshot`] and resumed on another host.
//! - [`wire`] and [`session`]: the agent protocol (remote evaluation, code on demand, moving
//!   agents) and its server side, a session on the spine like every warren protocol;
//!   [`client`]: its blocking client side.
//! - [`roster`]: a node's moving agents, by id: run, frozen, sent on, followed.
//! - [`binding`]: the resource-binding table, and what each move does with an agent's bucket
//!   and file; [`reference`]: global references back to a resource's origin.

pub mod agent;
pub mod binding;
pub mod caps;
pub mod client;
mod departure;
mod file;
pub mod host;
pub mod keys;
pub mod kv;
pub mod limits;
pub mod mobility;
pub mod module;
pub mod reference;
pub mod roster;
pub mod session;
pub mod trust;
pub mod wire;

pub use agent::{Job, Outcome, RunError, Value};
pub use binding::{Action, Attachment, Bind, Binding, Offers, Overrides};
pub use caps::{Access, FileGrant, Grants, ImportError, KvGrant, MAX_LOG_LINE, Need};
pub use host::{EPOCH_TICK, Host, HostConfig, LoadError};
pub use kv::{Kv, KvLimits, KvRefusal};
pub use limits::Limits;
pub use mobility::{
    Ended, Freezer, MobileError, MobileModule, PrepareError, Resource, Resume, Role, Snapshot, SnapshotError,
};
pub use module::{BadModuleId, ModuleId};
pub use trust::{ModuleSignature, Trust, TrustError, Unsigned};

/// ed25519 keys, for signing modules.
pub use ed25519_dalek::SigningKey;
