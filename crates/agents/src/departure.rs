//! What a host does with an agent's resources when the agent leaves ([`Host::dispatch`]: each
//! resource handled per its cell of the binding table) and when one arrives (its resources
//! checked against what the host offers, then bound: rebound by name, a moved bucket installed,
//! the agent's own copy given a store of its own, a reference kept).

use crate::agent::AgentState;
use crate::binding::{Action, Attachment, FileAt, KvAt, Overrides, Reference, Resource, actions};
use crate::file::{FileHeld, FileStore};
use crate::kv::{Kv, KvHeld, KvStore};
use crate::reference::{References, Target};
use crate::{Grants, Host, Snapshot};

/// A snapshot ready to leave, and what its leaving changed here: the references issued for it
/// and the buckets it takes away.
#[derive(Debug, Clone)]
pub struct Departure {
    /// The snapshot to send.
    pub snapshot: Snapshot,
    issued: Vec<[u8; 32]>,
    moved: Vec<String>,
}

impl Host {
    /// Sets the address other hosts reach this host's agent protocol at (`ADDR:PORT`), which
    /// the global references it issues name; the first address set stays.
    pub fn set_address(&self, address: String) {
        let _ = self.address.set(address);
    }

    /// The address its references name, if one was set.
    pub fn address(&self) -> Option<&str> {
        self.address.get().map(String::as_str)
    }

    /// The global references it issued.
    pub fn references(&self) -> &References {
        &self.references
    }

    /// `snapshot` as it leaves this host, each resource it holds here handled as its cell of
    /// the binding table says: the action `asked` (an order's), else the agent's own choice,
    /// else the cell's default. A clone never takes a resource away from the agent that stays:
    /// where the action is move, the clone gets a copy if its cell has one, else a reference.
    pub fn dispatch(&self, snapshot: &Snapshot, asked: &Overrides, clone: bool) -> Result<Departure, String> {
        let mut departure = Departure { snapshot: snapshot.clone(), issued: Vec::new(), moved: Vec::new() };
        let result = self.dispatch_into(&mut departure, asked, clone);
        if let Err(reason) = result {
            self.withdraw(&departure);
            return Err(reason);
        }
        Ok(departure)
    }

    fn dispatch_into(&self, departure: &mut Departure, asked: &Overrides, clone: bool) -> Result<(), String> {
        for resource in &mut departure.snapshot.resources {
            match resource {
                Resource::Clock | Resource::Log => {}
                Resource::Kv { bucket, write, bind, attachment, at } => {
                    let action =
                        bind.action(*attachment, asked.kv).map_err(|e| format!("kv bucket {bucket:?}: {e}"))?;
                    let action = if clone && action == Action::Move {
                        let cell = actions(bind.binding, *attachment);
                        if cell.contains(&Action::Copy) { Action::Copy } else { Action::Reference }
                    } else {
                        action
                    };
                    *at = match (std::mem::replace(at, KvAt::Here), action) {
                        // The agent's own copy always goes with it; a reference is kept unless
                        // the agent is to be rebound where it goes.
                        (KvAt::Own(entries), _) => KvAt::Own(entries),
                        (KvAt::Remote(_) | KvAt::Moving(_), Action::Rebind) => KvAt::Here,
                        (KvAt::Remote(reference), _) => KvAt::Remote(reference),
                        (KvAt::Moving(entries), _) => KvAt::Moving(entries),
                        (KvAt::Here, Action::Rebind) => KvAt::Here,
                        (KvAt::Here, Action::Copy) => KvAt::Own(self.kv.entries(bucket)),
                        (KvAt::Here, Action::Move) => {
                            departure.moved.push(bucket.clone());
                            KvAt::Moving(self.kv.entries(bucket))
                        }
                        (KvAt::Here, Action::Reference) => {
                            let target = Target::Kv { bucket: bucket.clone(), write: *write };
                            KvAt::Remote(self.issue(target, &mut departure.issued)?)
                        }
                    };
                }
                Resource::File { name, bind, at } => {
                    let action =
                        bind.action(Attachment::Fixed, asked.file).map_err(|e| format!("file {name:?}: {e}"))?;
                    *at = match (std::mem::replace(at, FileAt::Here), action) {
                        (_, Action::Rebind) => FileAt::Here,
                        (FileAt::Remote(reference), _) => FileAt::Remote(reference),
                        (FileAt::Here, _) => {
                            FileAt::Remote(self.issue(Target::File(name.clone()), &mut departure.issued)?)
                        }
                    };
                }
            }
        }
        Ok(())
    }

    fn issue(&self, target: Target, issued: &mut Vec<[u8; 32]>) -> Result<Reference, String> {
        let origin = self
            .address()
            .ok_or("this host has no address other hosts reach it at, so it cannot keep a global reference")?;
        let token = self.references.issue(target)?;
        issued.push(token);
        Ok(Reference { origin: origin.to_owned(), token })
    }

    /// The destination took the agent: the buckets it moved leave this host.
    pub fn departed(&self, departure: &Departure) {
        for bucket in &departure.moved {
            self.kv.clear(bucket);
        }
    }

    /// The agent did not leave: the references issued for it are revoked.
    pub fn withdraw(&self, departure: &Departure) {
        for token in &departure.issued {
            self.references.revoke(token);
        }
    }

    /// Whether this host would take an agent holding `table`: the clock and log as `allowed`,
    /// buckets and files held by name only if it offers them, a moved bucket only into an
    /// empty one, the agent's own copy only within its limits.
    pub fn check_resources(&self, table: &[Resource], allowed: &Grants) -> Result<Grants, String> {
        let grants = Resource::admit(table, allowed, &self.config().offers).map_err(|resource| {
            format!("the agent holds the {resource} capability, which this host does not allow it")
        })?;
        for resource in table {
            match resource {
                Resource::Kv { bucket, at: KvAt::Moving(entries), .. } => {
                    self.kv.fits(entries).map_err(|e| format!("the moved kv bucket {bucket:?}: {e}"))?;
                    if !self.kv.is_empty(bucket) {
                        return Err(format!(
                            "the kv bucket {bucket:?} here is not empty, and a moved bucket does not overwrite one"
                        ));
                    }
                }
                Resource::Kv { bucket, at: KvAt::Own(entries), .. } => {
                    self.kv.fits(entries).map_err(|e| format!("the agent's copy of kv bucket {bucket:?}: {e}"))?;
                }
                _ => {}
            }
        }
        Ok(grants)
    }

    /// Binds an arriving agent's bucket and file here (a moved bucket is installed now).
    pub(crate) fn bind_arrival(&self, table: &[Resource]) -> Result<(Option<KvHeld>, Option<FileHeld>), String> {
        let (mut kv, mut file) = (None, None);
        let offers = &self.config().offers;
        for resource in table {
            match resource {
                Resource::Clock | Resource::Log => {}
                Resource::Kv { bucket, write, bind, attachment, at } => {
                    let (store, attachment) = match at {
                        KvAt::Here => (KvStore::Host(self.kv.clone()), offers.attachment(bucket)),
                        KvAt::Moving(entries) => {
                            self.kv.install(bucket, entries)?;
                            (KvStore::Host(self.kv.clone()), offers.attachment(bucket))
                        }
                        KvAt::Own(entries) => {
                            let own = Kv::new(self.kv.limits());
                            own.install(bucket, entries)?;
                            (KvStore::Own(own), Attachment::Unattached)
                        }
                        KvAt::Remote(reference) => (KvStore::Remote(reference.clone()), *attachment),
                    };
                    kv = Some(KvHeld { store, bucket: bucket.clone(), write: *write, bind: *bind, attachment });
                }
                Resource::File { name, bind, at } => {
                    let store = match at {
                        FileAt::Here => FileStore::Local(
                            offers.files.get(name).ok_or_else(|| format!("this host offers no file {name:?}"))?.clone(),
                        ),
                        FileAt::Remote(reference) => FileStore::Remote(reference.clone()),
                    };
                    file = Some(FileHeld { store, name: name.clone(), bind: *bind });
                }
            }
        }
        Ok((kv, file))
    }
}

impl AgentState {
    /// Its resource table now: what `grants` gave it, each where it is held.
    pub(crate) fn resources(&self, grants: &Grants) -> Vec<Resource> {
        let fixed = [grants.clock.then_some(Resource::Clock), grants.log.then_some(Resource::Log)];
        let held = [self.kv.as_ref().map(KvHeld::resource), self.file.as_ref().map(FileHeld::resource)];
        fixed.into_iter().chain(held).flatten().collect()
    }
}
