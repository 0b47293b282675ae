//! The resource-binding table: how an agent is bound to a resource ([`Binding`]: by identifier,
//! by value, by type) against how the resource is attached to its host ([`Attachment`]:
//! unattached, fastened, fixed), and what happens to the binding when the agent moves
//! ([`Action`]: move, copy, global reference, rebind). [`actions`] is the textbook's table, the
//! default first; docs/agents.md prints it with what warren does in each cell.
//!
//! An agent's resources travel in its snapshot as [`Resource`]s, each saying where it is held
//! now: on the agent's host by name, as the agent's own value, moving with it, or through a
//! global reference back to its origin. [`crate::Host::dispatch`] applies each cell's action
//! when the agent leaves; [`crate::Host::resume`] binds them on arrival.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::caps::{Access, Grants, KvGrant};

/// How the agent is bound to the resource.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Binding {
    /// It needs that very resource (a named bucket, a named file).
    #[default]
    Identifier,
    /// It needs the resource's value, not the resource (a copy will do).
    Value,
    /// It needs a resource of that kind, wherever it is (the local one will do).
    Type,
}

/// How the resource is attached to its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Attachment {
    /// It can move with the agent at little cost (a small bucket).
    Unattached,
    /// It could move, at a cost the host would rather not pay (a large or shared bucket).
    Fastened,
    /// It cannot leave its host (a local file, the clock, the log).
    Fixed,
}

/// What happens to a binding when the agent moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    /// The resource goes with the agent and leaves its origin.
    Move,
    /// The agent takes a copy of the resource's value; the origin keeps the resource.
    Copy,
    /// The resource stays; the agent reaches it through a proxy back to its origin.
    Reference,
    /// The agent is bound again to the destination's resource of the same kind and name.
    Rebind,
}

/// The actions of a cell of the table, the default first (Tanenbaum and van Steen's table).
pub fn actions(binding: Binding, attachment: Attachment) -> &'static [Action] {
    use Action::*;
    match (binding, attachment) {
        (Binding::Identifier, Attachment::Unattached) => &[Move, Reference],
        (Binding::Identifier, Attachment::Fastened) => &[Reference, Move],
        (Binding::Identifier, Attachment::Fixed) => &[Reference],
        (Binding::Value, Attachment::Unattached) => &[Copy, Move, Reference],
        (Binding::Value, Attachment::Fastened) => &[Reference, Copy],
        (Binding::Value, Attachment::Fixed) => &[Reference],
        (Binding::Type, Attachment::Unattached) => &[Rebind, Move, Copy],
        (Binding::Type, Attachment::Fastened) => &[Rebind, Reference, Copy],
        (Binding::Type, Attachment::Fixed) => &[Rebind, Reference],
    }
}

impl Binding {
    /// Its name, as flags and errors give it.
    pub fn name(self) -> &'static str {
        match self {
            Binding::Identifier => "identifier",
            Binding::Value => "value",
            Binding::Type => "type",
        }
    }
}

impl std::str::FromStr for Binding {
    type Err = String;
    fn from_str(text: &str) -> Result<Binding, String> {
        match text {
            "identifier" | "id" => Ok(Binding::Identifier),
            "value" => Ok(Binding::Value),
            "type" => Ok(Binding::Type),
            _ => Err(format!("{text:?} is not a binding: identifier, value or type")),
        }
    }
}

impl Attachment {
    /// Its name, as config keys and errors give it.
    pub fn name(self) -> &'static str {
        match self {
            Attachment::Unattached => "unattached",
            Attachment::Fastened => "fastened",
            Attachment::Fixed => "fixed",
        }
    }
}

impl std::str::FromStr for Attachment {
    type Err = String;
    fn from_str(text: &str) -> Result<Attachment, String> {
        match text {
            "unattached" => Ok(Attachment::Unattached),
            "fastened" => Ok(Attachment::Fastened),
            "fixed" => Ok(Attachment::Fixed),
            _ => Err(format!("{text:?} is not an attachment: unattached, fastened or fixed")),
        }
    }
}

impl Action {
    /// Its name, as `--bind` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Action::Move => "move",
            Action::Copy => "copy",
            Action::Reference => "ref",
            Action::Rebind => "rebind",
        }
    }
}

impl std::str::FromStr for Action {
    type Err = String;
    fn from_str(text: &str) -> Result<Action, String> {
        match text {
            "move" => Ok(Action::Move),
            "copy" => Ok(Action::Copy),
            "ref" | "reference" => Ok(Action::Reference),
            "rebind" => Ok(Action::Rebind),
            _ => Err(format!("{text:?} is not an action: move, copy, ref or rebind")),
        }
    }
}

/// How an agent holds one resource: its binding, and the action it asks for when it moves (the
/// cell's default when `None`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bind {
    /// By identifier, value or type.
    pub binding: Binding,
    /// The action asked for, one of the cell's; `None` takes the default.
    pub action: Option<Action>,
}

impl Bind {
    /// The action for a move of a resource `attachment`ed, `asked` overriding the agent's own
    /// choice; refused if it is not one of the cell's.
    pub fn action(&self, attachment: Attachment, asked: Option<Action>) -> Result<Action, String> {
        let cell = actions(self.binding, attachment);
        match asked.or(self.action) {
            None => Ok(cell[0]),
            Some(action) if cell.contains(&action) => Ok(action),
            Some(action) => Err(format!(
                "a resource bound by {} and {} cannot {}: its actions are {}",
                self.binding.name(),
                attachment.name(),
                action.name(),
                cell.iter().map(|a| a.name()).collect::<Vec<_>>().join(", ")
            )),
        }
    }
}

/// The actions asked for one move, by resource kind (an order's `--bind kv=copy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overrides {
    /// For the kv bucket.
    pub kv: Option<Action>,
    /// For the file.
    pub file: Option<Action>,
}

impl Overrides {
    /// Parses `KIND=ACTION` (KIND `kv` or `file`) into these overrides.
    pub fn set(&mut self, text: &str) -> Result<(), String> {
        let (kind, action) = text.split_once('=').ok_or_else(|| format!("{text:?} is not KIND=ACTION"))?;
        let action = Some(action.parse()?);
        match kind {
            "kv" => self.kv = action,
            "file" => self.file = action,
            _ => return Err(format!("{kind:?} is not a resource kind: kv or file")),
        }
        Ok(())
    }

    /// As text, for the signed order message: empty when there are none.
    pub fn describe(&self) -> String {
        let parts = [("kv", self.kv), ("file", self.file)];
        parts.into_iter().filter_map(|(kind, a)| Some(format!("{kind}={}", a?.name()))).collect::<Vec<_>>().join(",")
    }
}

/// What a host offers agents beyond the clock and the log: key-value buckets with their
/// attachment, and read-only files by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offers {
    /// Buckets an agent may be granted, by name: unattached or fastened.
    pub buckets: BTreeMap<String, Attachment>,
    /// Files an agent may be granted, by name, and where each is. Files are fixed.
    pub files: BTreeMap<String, PathBuf>,
}

impl Offers {
    /// A bucket's attachment; a bucket the host does not list (a library caller's own) is
    /// fastened: it lives here.
    pub fn attachment(&self, bucket: &str) -> Attachment {
        self.buckets.get(bucket).copied().unwrap_or(Attachment::Fastened)
    }
}

/// A key-value bucket's entries, as they travel.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// A global reference: the origin's agent host and a token it handed out for one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    /// `ADDR:PORT` of the origin's agent host.
    pub origin: String,
    /// Unguessable: the origin serves only tokens it issued.
    pub token: [u8; 32],
}

/// Where an agent's bucket is held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvAt {
    /// The bucket of that name on the agent's host (on arrival: the destination's, rebound).
    Here,
    /// The agent's own copy, which travels with it.
    Own(Entries),
    /// Moving: these entries become the destination's bucket of that name, and the origin's
    /// is emptied once the destination took the agent.
    Moving(Entries),
    /// The origin's bucket, through a global reference.
    Remote(Reference),
}

/// Where an agent's file is held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileAt {
    /// The file of that name on the agent's host.
    Here,
    /// The origin's file, through a global reference.
    Remote(Reference),
}

/// One entry of an agent's resource table, as its snapshot carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resource {
    /// The wall clock: by type, fixed; rebound to the destination's.
    Clock,
    /// Log lines: by type, fixed; rebound to the destination's.
    Log,
    /// A key-value bucket.
    Kv {
        /// Its name.
        bucket: String,
        /// Whether the agent may change it.
        write: bool,
        /// How the agent is bound to it.
        bind: Bind,
        /// How it is attached to the host it came from.
        attachment: Attachment,
        /// Where it is held.
        at: KvAt,
    },
    /// A read-only file (fixed).
    File {
        /// Its name.
        name: String,
        /// How the agent is bound to it.
        bind: Bind,
        /// Where it is held.
        at: FileAt,
    },
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resource::Clock => write!(f, "clock"),
            Resource::Log => write!(f, "log"),
            Resource::Kv { bucket, write, .. } => {
                write!(f, "kv bucket {bucket:?} ({})", if *write { "read-write" } else { "read" })
            }
            Resource::File { name, .. } => write!(f, "file {name:?}"),
        }
    }
}

/// What `Resource::admit` found: the grants the imports are checked against.
pub(crate) fn grants_of(table: &[Resource]) -> Grants {
    let mut grants = Grants::default();
    for resource in table {
        match resource {
            Resource::Clock => grants.clock = true,
            Resource::Log => grants.log = true,
            Resource::Kv { bucket, write, bind, .. } => {
                let access = if *write { Access::ReadWrite } else { Access::Read };
                grants.kv = Some(KvGrant { bucket: bucket.clone(), access });
                grants.kv_bind = *bind;
            }
            Resource::File { name, bind, .. } => {
                grants.file = Some(crate::caps::FileGrant { name: name.clone(), bind: *bind })
            }
        }
    }
    grants
}

impl Resource {
    /// Checks `table` against what a host allows (`allowed` for the clock and the log,
    /// `offers` for buckets and files held by name): the grants it gives, or the first entry
    /// refused. Entries held as the agent's own or through a reference need no offer.
    pub fn admit(table: &[Resource], allowed: &Grants, offers: &Offers) -> Result<Grants, Resource> {
        let (mut kv, mut file) = (false, false);
        for resource in table {
            let ok = match resource {
                Resource::Clock => allowed.clock,
                Resource::Log => allowed.log,
                Resource::Kv { bucket, at, .. } => {
                    let named = matches!(at, KvAt::Here | KvAt::Moving(_));
                    !std::mem::replace(&mut kv, true) && (!named || offers.buckets.contains_key(bucket))
                }
                Resource::File { name, at, .. } => {
                    let named = matches!(at, FileAt::Here);
                    !std::mem::replace(&mut file, true) && (!named || offers.files.contains_key(name))
                }
            };
            if !ok {
                return Err(resource.clone());
            }
        }
        Ok(grants_of(table))
    }
}
