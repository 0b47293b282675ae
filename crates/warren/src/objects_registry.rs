//! Objects' names in the registry: while `warren objects serve --registry ADDR` runs, or the
//! `objects` builtin of a node that registers its services, every object it hosts is registered
//! under its name with the server's address, each on a lease kept by the loop `warren register`
//! uses; an object removed is released at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use warren_objects::Objects;
use warren_objects::table::RESERVED_PREFIX;
use warren_registry::{Endpoint, Name};

use crate::registry_register::fixed;
use crate::up_registry::keep_once_known;

/// Registers the objects of one server until dropped.
pub struct Registrar {
    changes: mpsc::UnboundedSender<Change>,
    thread: Option<std::thread::JoinHandle<()>>,
}

enum Change {
    Added {
        name: String,
        interface: String,
    },
    Removed {
        name: String,
    },
    /// The server stops: release everything.
    Stop,
}

impl Registrar {
    /// Keep `objects`' names registered with endpoint `addr` (and `http` in its metadata) in
    /// the registry `registry` names: a node's own registry may listen only after the object
    /// server does, so registrations wait for its address. `token` owns the names (default:
    /// the node's).
    pub fn start(
        objects: &Arc<Objects>,
        registry: watch::Receiver<Option<SocketAddr>>,
        token: Option<String>,
        addr: SocketAddr,
        http: Option<SocketAddr>,
        ttl: Duration,
    ) -> anyhow::Result<Registrar> {
        let token = match token {
            Some(token) => token,
            None => crate::up_registry::node_token()?,
        };
        let (changes, mut changed) = mpsc::unbounded_channel::<Change>();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let thread = std::thread::Builder::new().name("objects-registrar".into()).spawn(move || {
            runtime.block_on(async move {
                let mut held: HashMap<String, oneshot::Sender<()>> = HashMap::new();
                let mut leases = tokio::task::JoinSet::new();
                while let Some(change) = changed.recv().await {
                    let (name, interface) = match change {
                        Change::Stop => break,
                        Change::Removed { name } => {
                            if let Some(stop) = held.remove(&name.to_ascii_lowercase()) {
                                let _ = stop.send(());
                            }
                            continue;
                        }
                        Change::Added { name, interface } => (name, interface),
                    };
                    let registered = match Name::new(name.clone()) {
                        Ok(registered) => registered,
                        Err(e) => {
                            eprintln!("warren: objects: {name} is not registered: {e}");
                            continue;
                        }
                    };
                    let mut endpoint = Endpoint::tcp(addr);
                    endpoint.meta.insert("interface".into(), interface);
                    if let Some(http) = http {
                        endpoint.meta.insert("http".into(), http.to_string());
                    }
                    let (stop, stopped) = oneshot::channel();
                    if let Some(old) = held.insert(name.to_ascii_lowercase(), stop) {
                        let _ = old.send(());
                    }
                    let (registry, token) = (registry.clone(), token.clone());
                    leases.spawn(async move {
                        let kept = keep_once_known(registry, &token, &registered, fixed(endpoint), ttl, stopped).await;
                        if let Err(e) = kept {
                            eprintln!("warren: objects: registering {registered}: {e:#}");
                        }
                    });
                }
                // Release every lease (each loop does on its stop), waiting a little for them.
                drop(held);
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), async { while leases.join_next().await.is_some() {} })
                        .await;
            });
        })?;
        let sender = changes.clone();
        objects.watch(Box::new(move |info, added| {
            if info.name.to_ascii_lowercase().starts_with(RESERVED_PREFIX) {
                return;
            }
            let name = info.name.clone();
            let _ = sender.send(if added {
                Change::Added { name, interface: format!("{}/{}", info.interface, info.version) }
            } else {
                Change::Removed { name }
            });
        }));
        Ok(Registrar { changes, thread: Some(thread) })
    }
}

impl Drop for Registrar {
    fn drop(&mut self) {
        let _ = self.changes.send(Change::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
