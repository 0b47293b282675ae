//! `warren up` and the registry: the node hosts the registry as a builtin, and keeps every
//! service it hosts registered under a lease for as long as the service listens, so clients find
//! services by name (`warren lookup`, DNS, the HTTP API).
//!
//! Each registration is one task running [`crate::registry_register::keep`], the loop behind
//! `warren register`: renewed at a third of the TTL, registered again if the lease was lost,
//! released when the service closes (reload) or the node stops. A node killed outright leaves
//! the registry within one TTL.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use warren_models::Shutdown;
use warren_node::config::{BuiltinOptions, Kind, Protocol, RegistryLink, Service, Transport};
use warren_registry::{Endpoint, Name};

use crate::registry_cmd::{self, Conn};

/// How long the node waits for its services' leases to be released when it stops.
const RELEASE_WITHIN: Duration = Duration::from_secs(5);

/// One service's registration, running until stopped.
struct Held {
    name: Name,
    endpoint: Endpoint,
    /// What is registered now: `endpoint` with the load last reported in its metadata.
    live: watch::Sender<Endpoint>,
    /// The service's `instances`: the connections (or children) that make its load 1.
    capacity: Option<u32>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// The node's registry as a builtin registers through it: its address (once known), the
/// node's token and the TTL.
pub struct Link {
    pub target: watch::Receiver<Option<SocketAddr>>,
    pub token: String,
    pub ttl: Duration,
}

/// The registrations of one node.
pub struct Registrar {
    runtime: tokio::runtime::Runtime,
    /// The registry's address: the configured one, or the hosted registry's once it listens.
    target: watch::Sender<Option<SocketAddr>>,
    token: String,
    ttl: Duration,
    tasks: Mutex<Tasks>,
}

#[derive(Default)]
struct Tasks {
    /// Per service: what it is registered as, and how to stop that registration.
    held: HashMap<String, Held>,
    /// Registrations told to stop, releasing their lease.
    stopping: Vec<tokio::task::JoinHandle<()>>,
}

impl Registrar {
    /// Registrations for `link`, owned by `token`.
    pub fn new(link: RegistryLink, token: String) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("warren-registrar")
            .enable_all()
            .build()?;
        let (target, _) = watch::channel(link.addr);
        Ok(Self { runtime, target, token, ttl: link.ttl, tasks: Mutex::new(Tasks::default()) })
    }

    /// `service` listens on `addr`: register it. A reload tells this again of every service it
    /// kept; one registered as before keeps its lease, so a reload never makes it leave the
    /// registry even for a moment. A changed one is released and registered anew.
    pub fn listening(&self, service: &Service, addr: SocketAddr) {
        let reachable = reachable(addr);
        if is_registry(service) && self.target.borrow().is_none() {
            self.target.send_replace(Some(reachable));
        }
        let registration = service.register.as_ref().map(|name| {
            let mut endpoint = Endpoint::tcp(reachable);
            if service.listen.transport == Transport::Udp {
                endpoint.transport = warren_registry::Transport::Udp;
            }
            (Name::new(name.clone()), endpoint)
        });
        let capacity = service.limits.instances.filter(|n| *n > 0);
        let unchanged = |held: &Held| matches!(&registration, Some((Ok(name), endpoint)) if *name == held.name && *endpoint == held.endpoint && held.capacity == capacity);
        if self.lock().held.get(&service.name).is_some_and(unchanged) {
            return;
        }
        self.closed(&service.name);
        let (name, endpoint) = match registration {
            None => return,
            Some((Ok(name), endpoint)) => (name, endpoint),
            Some((Err(e), _)) => {
                eprintln!("warren: {}: not registered: {e}", service.name);
                return;
            }
        };
        let (stop, stopped) = oneshot::channel();
        let (target, token, ttl) = (self.target.subscribe(), self.token.clone(), self.ttl);
        let (live, updates) = watch::channel(endpoint.clone());
        let held_name = name.clone();
        let task = self.runtime.spawn(async move {
            if let Err(e) = keep_once_known(target, &token, &name, updates, ttl, stopped).await {
                eprintln!("warren: {name}: {e:#}");
            }
        });
        let held = Held { name: held_name, endpoint, live, capacity, stop, task };
        self.lock().held.insert(service.name.clone(), held);
    }

    /// Puts each registered service's load in its metadata (`load=`, what the switch's `load`
    /// policy reads): its connections or children in flight (`status`) over its `instances`,
    /// in steps of [`LOAD_STEP`], so that only a real change registers it again. A service
    /// without `instances` has no capacity to be full of, and reports none.
    pub fn report_loads(&self, status: &warren_node::Status) {
        for (service, held) in &self.lock().held {
            let (Some(capacity), Some(row)) = (held.capacity, status.service(service)) else { continue };
            let load = load_text(row.running, capacity);
            held.live.send_if_modified(|endpoint| {
                let before = endpoint.meta.insert("load".into(), load.clone());
                before.as_ref() != Some(&load)
            });
        }
    }

    /// What a builtin needs to register names of its own (the object server's objects) in
    /// the node's registry, with the node's token.
    pub fn link(&self) -> Link {
        Link { target: self.target.subscribe(), token: self.token.clone(), ttl: self.ttl }
    }

    /// The service called `name` stopped listening: release its lease.
    pub fn closed(&self, name: &str) {
        let mut tasks = self.lock();
        if let Some(held) = tasks.held.remove(name) {
            let _ = held.stop.send(());
            tasks.stopping.push(held.task);
        }
    }

    /// Release every lease, waiting up to [`RELEASE_WITHIN`] for the registry to hear of it.
    pub fn release_all(&self) {
        let names: Vec<String> = self.lock().held.keys().cloned().collect();
        names.iter().for_each(|name| self.closed(name));
        let stopping = std::mem::take(&mut self.lock().stopping);
        self.runtime.block_on(async {
            let all = futures_util::future::join_all(stopping);
            if tokio::time::timeout(RELEASE_WITHIN, all).await.is_err() {
                eprintln!("warren: the registry did not hear of every release; those leases lapse after their TTL");
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tasks> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The steps a reported load moves in: finer would register again at every connection.
pub const LOAD_STEP: f64 = 0.05;

/// `running` over `capacity`, at most 1, to the nearest [`LOAD_STEP`], as the registry's
/// metadata spells it (`0.75`).
fn load_text(running: u32, capacity: u32) -> String {
    let load = (f64::from(running) / f64::from(capacity)).min(1.0);
    format!("{:.2}", (load / LOAD_STEP).round() * LOAD_STEP)
}

/// Keep `name` registered as `endpoint`, owned by `token`, until `stop` (the loop of `warren
/// register`), once `target` knows the registry's address: a hosted registry may listen after
/// the services before it in the configuration.
pub async fn keep_once_known(
    mut target: watch::Receiver<Option<SocketAddr>>,
    token: &str,
    name: &Name,
    endpoint: watch::Receiver<Endpoint>,
    ttl: Duration,
    stop: oneshot::Receiver<()>,
) -> anyhow::Result<()> {
    let stopped = async move {
        let _ = stop.await;
    };
    tokio::pin!(stopped);
    let registry = tokio::select! {
        found = target.wait_for(Option::is_some) => match found {
            Ok(addr) => *addr,
            Err(_) => return Ok(()),
        },
        () = &mut stopped => return Ok(()),
    };
    let conn = Conn { registry, token: Some(token.to_owned()), timeout: Duration::from_secs(5) };
    crate::registry_register::keep(&conn, name, token, endpoint, ttl, stopped, true).await
}

/// Whether `service` is the registry builtin.
pub fn is_registry(service: &Service) -> bool {
    matches!(&service.kind, Kind::Builtin(b) if b.protocol == Protocol::Registry)
}

/// `addr` as a client reaches it: an unspecified address (all interfaces) through loopback.
pub fn reachable(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(reachable_ip(addr.ip()), addr.port())
}

fn reachable_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

/// The token the node's registrations are owned by: `$WARREN_TOKEN`, else one kept in
/// `$XDG_STATE_HOME/warren/node.token` (made on first use, mode 0600), so that a restarted node
/// owns the names it registered before.
pub fn node_token() -> anyhow::Result<String> {
    if let Ok(token) = std::env::var("WARREN_TOKEN") {
        return Ok(token);
    }
    let dir = registry_cmd::state_dir()?;
    std::fs::create_dir_all(&dir)?;
    registry_cmd::token_file(&dir.join("node.token"))
}

/// Run the registry builtin `service` on `listener` until `shutdown`, on a thread of its own.
pub fn host(service: &Service, listener: TcpListener, shutdown: Arc<Shutdown>) -> Option<io::Result<JoinHandle<()>>> {
    let Kind::Builtin(builtin) = &service.kind else { return None };
    if builtin.protocol != Protocol::Registry {
        return None;
    }
    let args = match server_args(&builtin.options) {
        Ok(args) => args,
        Err(e) => return Some(Err(io::Error::other(format!("{e:#}")))),
    };
    let name = service.name.clone();
    let threads = builtin.options.threads.unwrap_or(1).max(1);
    Some(std::thread::Builder::new().name(format!("warren-{name}")).spawn(move || {
        let served = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(format!("warren-{name}"))
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| {
                runtime.block_on(async {
                    let (stop, mut stopped) = watch::channel(false);
                    shutdown.on_trigger(move || {
                        let _ = stop.send(true);
                    });
                    let stopped = async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    };
                    registry_cmd::serve(args, Some(listener), stopped).await
                })
            });
        if let Err(e) = served {
            eprintln!("warren: {name}: the registry stopped: {e:#}");
        }
    }))
}

/// `warren registry`'s settings from the builtin's: its store defaults to
/// `$XDG_STATE_HOME/warren/node-registry`, apart from a `warren registry` run beside the node.
fn server_args(options: &BuiltinOptions) -> anyhow::Result<registry_cmd::ServerArgs> {
    let mut args: registry_cmd::ServerArgs = crate::cli::defaults();
    args.data = Some(match &options.data {
        Some(dir) => dir.clone(),
        None => registry_cmd::state_dir()?.join("node-registry"),
    });
    args.dns = options.dns;
    args.http = options.api;
    if let Some(max) = options.max_conns {
        args.max_conns = max;
    }
    if let Some(idle) = options.idle_timeout {
        args.idle_timeout = idle;
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_load_is_running_over_capacity_in_steps_and_at_most_one() {
        assert_eq!(super::load_text(0, 4), "0.00");
        assert_eq!(super::load_text(3, 4), "0.75");
        assert_eq!(super::load_text(1, 3), "0.35");
        assert_eq!(super::load_text(9, 4), "1.00");
    }
}
