//! Strong mobility: an agent frozen at a safe point with its execution state (linear memory,
//! mutable globals, its call stack, fuel, wall time used and its resource table), carried as a
//! [`Snapshot`], and resumed on another host where it stopped.
//!
//! The call stack is captured with Binaryen's Asyncify ([`prepare`]): the agent calls
//! `warren.migrate(dptr, dlen)`, the host starts an unwind, every frame on the way out saves
//! its locals into linear memory, and the entry returns to the host. On the other host the
//! same transformed code is instantiated, memory and globals are put back, a rewind is started
//! and the entry called again; the frames restore their locals on the way in, and `migrate`
//! returns there, telling the agent which copy it is ([`Role`]).
//!
//! Safe points are the agent's own: a loop header that reads its exported mutable global
//! `migrate_requested` and calls `migrate` only when it is set, which costs a `global.get` and
//! a branch per iteration. The host sets the flag when asked through a [`Freezer`], at the next
//! epoch tick. docs/agents.md gives the guest's side of the contract.

pub mod prepare;
mod run;
pub mod snapshot;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use prepare::{MobileModule, PrepareError};
pub(crate) use run::{Mobile, migrate};
pub use snapshot::{Resource, Snapshot, SnapshotError};

use crate::{Grants, ModuleId, Outcome, RunError};

/// The exported global a guest's safe points read.
pub const FLAG: &str = "migrate_requested";

/// The longest destination name `migrate` takes, in bytes.
pub const MAX_DEST: usize = 255;

/// Asks a running agent to freeze at its next safe point; cloning shares the request.
#[derive(Debug, Clone, Default)]
pub struct Freezer(Arc<AtomicBool>);

impl Freezer {
    /// No request yet.
    pub fn new() -> Freezer {
        Freezer::default()
    }

    /// Asks for the freeze: the agent's flag is set at the next epoch tick (or at once, if it
    /// has not started), and the agent stops at the next safe point after that.
    pub fn freeze(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether a freeze was asked for.
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Which copy a resumed agent is: what `migrate` returns to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The agent itself, moved (or resumed where it was): `migrate` returns 0.
    Original,
    /// A copy made from the same snapshot: `migrate` returns 1, as `fork` tells its child.
    Clone,
    /// The host chose not to move it and resumed it where it was: `migrate` returns -1, as it
    /// does in a run that cannot move at all.
    Stayed,
}

impl Role {
    /// What `migrate` returns.
    pub fn code(self) -> i32 {
        match self {
            Role::Original => 0,
            Role::Clone => 1,
            Role::Stayed => -1,
        }
    }
}

/// How a run that may move ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    /// It returned from its entry.
    Finished(Outcome),
    /// It called `migrate`: where it asked to go is [`Snapshot::dest`]; the caller decides
    /// whether and where to resume it.
    Frozen(Box<Snapshot>),
}

/// How to resume a snapshot.
#[derive(Debug, Clone)]
pub struct Resume {
    /// Which copy this is.
    pub role: Role,
    /// The most the agent may hold here: every entry of the snapshot's resource table must be
    /// covered, or it is refused. The snapshot names its capabilities; this host decides.
    pub allow: Grants,
    /// To freeze it again from outside.
    pub freezer: Freezer,
}

impl Resume {
    /// Resumes as `role`, allowing what `allow` grants.
    pub fn new(role: Role, allow: Grants) -> Resume {
        Resume { role, allow, freezer: Freezer::new() }
    }
}

/// Why a run that may move did not start, was stopped, or could not freeze or resume.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MobileError {
    /// Refused or stopped as any agent is.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The module was not prepared for mobility on this host.
    #[error("module {0} is not prepared for mobility on this host")]
    NotPrepared(ModuleId),
    /// The snapshot was taken from other transformed code (another Asyncify build).
    #[error("module {module} is prepared here as {here}, but the snapshot was taken from {snapshot}")]
    PreparedDifferently {
        /// The original module.
        module: ModuleId,
        /// Its transformed code here.
        here: ModuleId,
        /// The transformed code the snapshot names.
        snapshot: ModuleId,
    },
    /// The snapshot is damaged, forged or inconsistent.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The snapshot holds a capability this resume does not allow.
    #[error("the agent holds the {0} capability, which this host does not allow it")]
    NotAllowed(Resource),
    /// Its resources could not be bound here (a moved bucket into one that is not empty, a
    /// file this host does not offer, a copy over this host's limits).
    #[error("the agent's resources cannot be bound here: {0}")]
    Bind(String),
    /// The freeze itself failed (a call stack too deep for its memory, a global that cannot
    /// be captured).
    #[error("the agent could not be frozen: {0}")]
    Freeze(String),
}
