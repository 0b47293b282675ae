//! The registry as the DNS front end's [`Directory`].
//!
//! DNS answers from [`Backend::snapshot`], the backend's in-memory copy: a synchronous read that
//! never waits for a write or a round trip, as the DNS server's thread requires. Any backend
//! will do (the embedded store, etcd, either behind health checks), so this needs only the
//! `Backend` trait, not a store.

use std::sync::Arc;

use warren_registry::backend::Backend;
use warren_registry::model::Name;

use crate::{Directory, Resolution, Target};

/// A handle on any backend that the DNS server can ask.
#[derive(Debug)]
pub struct RegistryDirectory<B: ?Sized>(pub Arc<B>);

impl<B: Backend + ?Sized> Directory for RegistryDirectory<B> {
    fn resolve(&self, name: &str) -> Resolution {
        // A query for something that cannot be a registry name cannot be bound either.
        let Ok(name) = Name::new(name) else { return Resolution::NoSuchName };
        match self.0.snapshot(&name) {
            None => Resolution::NoSuchName,
            Some(endpoints) => Resolution::Targets(
                endpoints.iter().map(|e| Target { addr: e.addr, port: e.port, weight: e.weight }).collect(),
            ),
        }
    }

    fn generation(&self) -> Option<u64> {
        self.0.snapshot_generation()
    }
}
