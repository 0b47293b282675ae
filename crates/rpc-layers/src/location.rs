//! Location transparency: an object's name resolved through the registry, kept up to date by
//! a watch, so that calls follow an object that moved to another server without restarting
//! the client and without a lookup per call.
//!
//! Objects register under their name (lowercased: registry names are) with the address of
//! the server hosting them (`host:port`) as the endpoint. The first call on a name looks it up
//! and starts a watch on it from the revision of that lookup, so no change slips between the
//! two; afterwards every call reads the cached endpoints, and each watch event edits them (a
//! `Put` adds or replaces an endpoint, a `Delete` removes it). If the watch ends (the registry
//! restarted, the connection dropped), the next call looks the name up again; while the
//! registry cannot be reached, the last endpoints known are used, as Eureka clients keep
//! their last registry, and looked up again at most once a second ([`RETRY_LOOKUP_AFTER`]).
//! At most [`MAX_NAMES`] names are cached and watched at once.
//!
//! [`Location`] is a [`Replicas`] source for the replica-aware middleware, and alone a
//! `Service<RawCall>` that sends each call to one endpoint (round robin, skipping endpoints
//! that refuse connections).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio::time::Instant;
use tower::Service;
use warren_registry::client::{Client, ClientWatch};
use warren_registry::{EndpointKey, Error as RegistryError, EventKind, Name, Transport};
use warren_rpc::{Code, Failure, RawCall, RpcError};

use crate::pool::Pool;
use crate::replicas::{Replicas, no_replicas};

/// How many names are cached and watched at once.
pub const MAX_NAMES: usize = 4096;

/// After the registry failed to answer, how long the endpoints last known are used before
/// the next lookup (so a registry that is down costs one lookup a second, not one per call).
pub const RETRY_LOOKUP_AFTER: Duration = Duration::from_secs(1);

/// Names resolved through a registry, with a watch per name. Cheap to clone; clones share
/// the cache, the watches and the connections.
#[derive(Clone, Debug)]
pub struct Location {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Client,
    names: Arc<Mutex<HashMap<String, Entry>>>,
    /// Misses are resolved one at a time, so concurrent first calls make one lookup.
    resolving: tokio::sync::Mutex<()>,
    pool: Pool,
    lookups: AtomicU64,
    next: AtomicUsize,
}

#[derive(Debug)]
struct Entry {
    endpoints: Vec<EndpointKey>,
    /// The task applying the name's watch events; `None` once the watch ended.
    follower: Option<AbortHandle>,
    /// The registry failed to answer: the endpoints are used as they are until then.
    retry_lookup_at: Option<Instant>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for entry in self.names.lock().expect("names").values_mut() {
            if let Some(follower) = entry.follower.take() {
                follower.abort();
            }
        }
    }
}

impl Location {
    pub fn new(registry: Client) -> Location {
        Location::with_pool(registry, Pool::default())
    }

    /// With `pool` for its connections: connections to servers its names no longer list are
    /// closed, so give it a pool of its own.
    pub fn with_pool(registry: Client, pool: Pool) -> Location {
        let inner = Inner {
            registry,
            names: Arc::default(),
            resolving: tokio::sync::Mutex::new(()),
            pool,
            lookups: AtomicU64::new(0),
            next: AtomicUsize::new(0),
        };
        Location { inner: Arc::new(inner) }
    }

    /// How many lookups the registry has answered so far (calls served from the cache make
    /// none).
    pub fn lookups(&self) -> u64 {
        self.inner.lookups.load(Ordering::Relaxed)
    }

    /// The TCP addresses `object` is registered at now.
    pub async fn resolve(&self, object: &str) -> Result<Vec<SocketAddr>, Failure> {
        let key = object.to_ascii_lowercase();
        if let Some(endpoints) = self.watched(&key) {
            return addrs(object, &endpoints);
        }
        let _one_at_a_time = self.inner.resolving.lock().await;
        if let Some(endpoints) = self.watched(&key) {
            return addrs(object, &endpoints);
        }
        let name = Name::new(key.clone()).map_err(|e| {
            Failure::Rpc(RpcError::new(Code::NoSuchObject, format!("{object:?} is not a registry name: {e}")))
        })?;
        self.inner.lookups.fetch_add(1, Ordering::Relaxed);
        let looked_up = self.inner.registry.lookup(&name).await;
        let (revision, entry) = match looked_up {
            Ok(found) => found,
            Err(RegistryError::NotBound(_)) => return Err(no_replicas(object)),
            Err(e) => return self.last_known(object, &key, e),
        };
        let endpoints: Vec<EndpointKey> = entry.endpoints.iter().map(|e| e.key()).collect();
        let watch = self.inner.registry.watch(&key, revision).await;
        let mut names = self.inner.names.lock().expect("names");
        let follower = watch.ok().map(|watch| {
            let names = Arc::downgrade(&self.inner.names);
            tokio::spawn(follow(watch, key.clone(), names, self.inner.pool.clone())).abort_handle()
        });
        if names.len() >= MAX_NAMES && !names.contains_key(&key) {
            // Bounded: a client that calls ever more names forgets (and stops watching) one.
            let evicted = names.keys().next().cloned().expect("not empty");
            if let Some(follower) = names.remove(&evicted).and_then(|e| e.follower) {
                follower.abort();
            }
        }
        let entry = Entry { endpoints: endpoints.clone(), follower, retry_lookup_at: None };
        let replaced = names.insert(key, entry);
        if let Some(old_follower) = replaced.and_then(|old| old.follower) {
            old_follower.abort();
        }
        drop(names);
        addrs(object, &endpoints)
    }

    /// The cached endpoints of `key`, if a watch keeps them current.
    fn watched(&self, key: &str) -> Option<Vec<EndpointKey>> {
        let names = self.inner.names.lock().expect("names");
        let now = Instant::now();
        let current = |e: &&Entry| e.follower.is_some() || e.retry_lookup_at.is_some_and(|at| now < at);
        names.get(key).filter(current).map(|e| e.endpoints.clone())
    }

    /// The registry could not answer: the endpoints last known, if any.
    fn last_known(&self, object: &str, key: &str, e: RegistryError) -> Result<Vec<SocketAddr>, Failure> {
        match self.inner.names.lock().expect("names").get_mut(key) {
            Some(entry) => {
                entry.retry_lookup_at = Some(Instant::now() + RETRY_LOOKUP_AFTER);
                addrs(object, &entry.endpoints)
            }
            None => Err(Failure::Rpc(RpcError::new(
                Code::Unavailable,
                format!("cannot resolve {object:?}: the registry failed: {e}"),
            ))),
        }
    }
}

fn addrs(object: &str, endpoints: &[EndpointKey]) -> Result<Vec<SocketAddr>, Failure> {
    let addrs: Vec<SocketAddr> = endpoints
        .iter()
        .filter(|(_, _, transport)| *transport == Transport::Tcp)
        .map(|&(ip, port, _)| SocketAddr::new(ip, port))
        .collect();
    if addrs.is_empty() { Err(no_replicas(object)) } else { Ok(addrs) }
}

/// Apply `key`'s watch events to its entry until the watch ends, then mark the entry as no
/// longer watched (the next call looks it up again). Connections to servers no name lists any
/// more are let go (calls in flight on them finish first).
async fn follow(
    mut watch: ClientWatch,
    key: String,
    names: std::sync::Weak<Mutex<HashMap<String, Entry>>>,
    pool: Pool,
) {
    loop {
        let next = watch.next().await;
        let Some(names) = names.upgrade() else { return };
        let mut names = names.lock().expect("names");
        let Some(entry) = names.get_mut(&key) else { return };
        let Ok(events) = next else {
            entry.follower = None;
            return;
        };
        // The watch is on a prefix: `key` also matches longer names.
        for event in events.into_iter().filter(|e| e.name.as_str() == key) {
            let changed = event.endpoint.key();
            entry.endpoints.retain(|e| *e != changed);
            if event.kind == EventKind::Put {
                entry.endpoints.push(changed);
            }
        }
        let listed: Vec<SocketAddr> =
            names.values().flat_map(|e| &e.endpoints).map(|&(ip, port, _)| SocketAddr::new(ip, port)).collect();
        pool.retain(&listed);
    }
}

impl Replicas for Location {
    async fn replicas(&self, object: &str) -> Result<Vec<SocketAddr>, Failure> {
        self.resolve(object).await
    }

    fn pool(&self) -> &Pool {
        &self.inner.pool
    }
}

impl Service<RawCall> for Location {
    type Response = Vec<u8>;
    type Error = Failure;
    type Future = warren_rpc::client::CallFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Failure>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: RawCall) -> Self::Future {
        let location = self.clone();
        Box::pin(async move {
            let addrs = location.resolve(&call.object).await?;
            let first = location.inner.next.fetch_add(1, Ordering::Relaxed);
            let mut refused = None;
            // A refused connection means the call never ran: the next endpoint may take it.
            for i in 0..addrs.len() {
                let addr = addrs[(first + i) % addrs.len()];
                match location.inner.pool.get(addr).await {
                    Ok(connection) => return connection.call(call).await,
                    Err(e) => refused = Some(format!("{addr}: {e}")),
                }
            }
            Err(Failure::Rpc(RpcError::new(
                Code::Unavailable,
                format!("no server of {:?} accepts connections ({})", call.object, refused.unwrap_or_default()),
            )))
        })
    }
}
