//! Each instance's own copy of the names, for answers that must not wait (DNS): loaded with one
//! read, then kept current by a watch from the revision of that read. If the watch ends (etcd
//! restarted, the revision was compacted) the copy is loaded again and followed from there.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use etcd_client::{Client, GetOptions, WatchOptions};
use warren_registry::model::{Endpoint, EndpointKey, Error, EventKind, Name};

use crate::keys::{Keys, Stored};
use crate::unavailable;

/// How long to wait before loading the copy again after etcd was unreachable.
const RETRY: Duration = Duration::from_millis(500);

/// The names as last seen.
#[derive(Debug, Default)]
pub struct Cache {
    names: RwLock<HashMap<Name, BTreeMap<EndpointKey, Endpoint>>>,
    /// Moves with every change of `names`, so that DNS can tell without taking its lock.
    generation: AtomicU64,
}

impl Cache {
    pub fn get(&self, name: &Name) -> Option<Vec<Endpoint>> {
        let names = self.names.read().expect("no panics while held");
        names.get(name).map(|endpoints| endpoints.values().cloned().collect())
    }

    /// See [`Backend::snapshot_generation`](warren_registry::backend::Backend::snapshot_generation).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn replace(&self, names: HashMap<Name, BTreeMap<EndpointKey, Endpoint>>) {
        let mut held = self.names.write().expect("no panics while held");
        *held = names;
        // Under the lock: whoever reads the new number then reads the new names.
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn apply(&self, kind: EventKind, name: Name, endpoint: Endpoint) {
        let mut names = self.names.write().expect("no panics while held");
        self.generation.fetch_add(1, Ordering::Release);
        match kind {
            EventKind::Put => {
                names.entry(name).or_default().insert(endpoint.key(), endpoint);
            }
            EventKind::Delete => {
                if let Some(endpoints) = names.get_mut(&name) {
                    endpoints.remove(&endpoint.key());
                    if endpoints.is_empty() {
                        names.remove(&name);
                    }
                }
            }
        }
    }
}

/// Loads every name into `cache`; the revision it was read at.
pub async fn load(client: &mut Client, keys: &Keys, cache: &Cache) -> Result<i64, Error> {
    let got =
        client.get(keys.names_with_prefix(""), Some(GetOptions::new().with_prefix())).await.map_err(unavailable)?;
    let mut names: HashMap<Name, BTreeMap<EndpointKey, Endpoint>> = HashMap::new();
    for kv in got.kvs() {
        let stored = Stored::decode(kv.value())?;
        names.entry(keys.name_of(kv.key(), &stored)?).or_default().insert(stored.endpoint.key(), stored.endpoint);
    }
    cache.replace(names);
    Ok(got.header().map_or(0, |h| h.revision()))
}

/// Follows changes after `loaded` forever (the task is aborted when the backend is dropped).
pub async fn follow(mut client: Client, keys: Keys, cache: std::sync::Arc<Cache>, mut loaded: i64) {
    loop {
        if let Err(e) = follow_from(&mut client, &keys, &cache, loaded).await {
            tracing::warn!("registry copy: {e}; loading it again");
        }
        loop {
            match load(&mut client, &keys, &cache).await {
                Ok(revision) => {
                    loaded = revision;
                    break;
                }
                Err(e) => {
                    tracing::warn!("registry copy: {e}");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }
}

async fn follow_from(client: &mut Client, keys: &Keys, cache: &Cache, loaded: i64) -> Result<(), Error> {
    let options = WatchOptions::new().with_prefix().with_prev_key().with_start_revision(loaded + 1);
    let mut stream = client.watch(keys.names_with_prefix(""), Some(options)).await.map_err(unavailable)?;
    while let Some(answer) = stream.message().await.map_err(unavailable)? {
        for event in crate::watch::events(keys, &answer)? {
            cache.apply(event.kind, event.name, event.endpoint);
        }
    }
    Err(Error::Unavailable("etcd ended the watch".into()))
}
