//! The storage interface the server, the CLI and the DNS front end program against.
//!
//! It speaks only the registry's own terms (names, endpoints, leases, revisions), so that more
//! than one engine can stand behind it: the embedded store (`warren_registry_server::embedded`)
//! and, past one machine, etcd (`warren-registry-etcd`), where a lease is an etcd lease, a watch
//! an etcd watch and a revision an etcd revision. It lives here, beside the model, so that a
//! store depends on this crate only. Every backend gives the semantics of the registry's state
//! machine (`warren_registry_server::state`):
//!
//! - a write is acknowledged only once it is durable, and takes one revision for all its events;
//! - reads (`lookup`, `list`, `snapshot`) see acknowledged writes only;
//! - `watch(prefix, from)` yields every event after `from`, in revision order, never one twice,
//!   or `Compacted` if the backend no longer holds the history from `from` (list again, then
//!   watch from the revision the list returned);
//! - an endpoint under a lease that is not renewed is removed between its TTL and its TTL plus
//!   the backend's sweep bound, and watchers see a `Delete`;
//! - names are case-insensitive and case-preserving ([`Name`]): every spelling of a name reaches
//!   one record, and a name shows (in `lookup`, `list`, events and errors) the spelling it was
//!   bound or first registered with, for as long as it exists. A write spelt otherwise changes
//!   the name's endpoints, not its spelling; once the name is gone (its last endpoint removed),
//!   the next write that creates it chooses the spelling again. So DNS keeps an owner name's
//!   case, and Consul a service name's.

use std::time::Duration;

use async_trait::async_trait;

use crate::model::{Endpoint, Entry, Error, Event, LeaseId, Name, Revision};

/// A lease granted by `register`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: LeaseId,
    pub ttl: Duration,
    /// The revision of the write that put the endpoint.
    pub revision: Revision,
}

/// What a store holds, for its metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Names bound.
    pub names: usize,
    /// Leases held: registered, not yet released or expired.
    pub leases: usize,
}

/// A registry store. Calls may come from many tasks at once.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Binds a free name to static endpoints, owned by `token`; `AlreadyBound` if it is taken.
    async fn bind(&self, name: &Name, token: &str, endpoints: Vec<Endpoint>) -> Result<Revision, Error>;
    /// Replaces a name's endpoints with static ones (binding it if free).
    async fn rebind(&self, name: &Name, token: &str, endpoints: Vec<Endpoint>) -> Result<Revision, Error>;
    /// Removes a name and all its endpoints; `NotBound` if it is free.
    async fn unbind(&self, name: &Name, token: &str) -> Result<Revision, Error>;
    /// The name (as it is spelt in the store) with its endpoints, and the revision they were
    /// read at.
    async fn lookup(&self, name: &Name) -> Result<(Revision, Entry), Error>;
    /// Every name starting with `prefix` ("" for all), in name order.
    async fn list(&self, prefix: &str) -> Result<(Revision, Vec<Entry>), Error>;
    /// Puts an endpoint under a name with a new lease of `ttl` (1 s to 24 h).
    async fn register(&self, name: &Name, token: &str, endpoint: Endpoint, ttl: Duration) -> Result<Lease, Error>;
    /// Extends a lease by its full TTL from now; returns that TTL. Needs the token that
    /// registered it (or the admin's): `Forbidden` for another, `Unauthenticated` for none.
    async fn renew(&self, lease: LeaseId, token: &str) -> Result<Duration, Error>;
    /// Ends a lease now, removing its endpoints; needs the token that registered it.
    async fn release(&self, lease: LeaseId, token: &str) -> Result<Revision, Error>;
    /// Whether `token` may change `name`: its owner's or the admin's. `NotBound` if it is free,
    /// `Forbidden` for another token. Changes nothing (a TTL check's pass asks it).
    async fn authorize(&self, name: &Name, token: &str) -> Result<(), Error>;
    /// Events after `from` for names starting with `prefix`.
    async fn watch(&self, prefix: &str, from: Revision) -> Result<Box<dyn Watch>, Error>;
    /// The name's endpoints from the backend's in-memory copy, without waiting: what a DNS
    /// answer is built from. `None` if the name is not bound.
    fn snapshot(&self, name: &Name) -> Option<Vec<Endpoint>>;
    /// A number that moves whenever `snapshot` may answer differently for any name, or `None`
    /// if the backend cannot tell. DNS keeps the answers it built for a name until it moves, so
    /// it must move no later than the snapshot changes, and be cheap to read (an atomic load).
    fn snapshot_generation(&self) -> Option<u64> {
        None
    }
    /// The names and leases held as of the last commit, or `None` if the backend cannot tell
    /// without a round trip. Read at each metrics scrape, so it must not wait.
    fn counts(&self) -> Option<Counts> {
        None
    }
}

/// A stream of events from [`Backend::watch`].
#[async_trait]
pub trait Watch: Send {
    /// The next events, in revision order; a revision's events never straddle two calls.
    /// An error ends the stream (`Compacted` if the watcher fell behind the history,
    /// `Unavailable` if the backend stopped).
    async fn next(&mut self) -> Result<Vec<Event>, Error>;
}
