//! What `warren status` shows, and the hooks through which others learn of the node's services.

use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;

use warren_models::Shutdown;

use crate::config::Service;

/// Told when services start and stop listening: `warren up` prints readiness lines here and
/// registers each service with a lease, released on close. Also the way in for builtins that
/// live outside this crate.
pub trait Hooks: Send + 'static {
    /// `service` listens on `addr`.
    fn listening(&mut self, service: &Service, addr: SocketAddr);
    /// The service called `name` stopped listening (removed by a reload, or the node stops).
    fn closed(&mut self, name: &str);
    /// Run builtin `service` (the registry, the object server or the switch, whose code this
    /// crate does not carry) on
    /// `listener` until `shutdown` triggers; `None` if these hooks cannot.
    fn host(
        &mut self,
        service: &Service,
        listener: TcpListener,
        shutdown: Arc<Shutdown>,
    ) -> Option<std::io::Result<JoinHandle<()>>> {
        let _ = (service, listener, shutdown);
        None
    }
}

/// Hooks that do nothing.
#[derive(Debug, Default)]
pub struct NoHooks;

impl Hooks for NoHooks {
    fn listening(&mut self, _: &Service, _: SocketAddr) {}
    fn closed(&mut self, _: &str) {}
}

/// A snapshot of the node.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// One row per service.
    pub services: Vec<ServiceStatus>,
    /// Children running, all services together.
    pub children: usize,
}

/// One service's row.
#[derive(Clone, Debug)]
pub struct ServiceStatus {
    /// Its name.
    pub name: String,
    /// `exec nowait`, `exec wait`, `redirect` or `builtin <protocol> (<model>)`.
    pub kind: String,
    /// `tcp` or `udp`.
    pub transport: &'static str,
    /// The bound address.
    pub addr: SocketAddr,
    /// Children or relays running now.
    pub running: u32,
    /// Started since the node started.
    pub spawned: u64,
    /// Refused since the node started.
    pub refused: u64,
    /// Spawns in the last complete second counted (services with `cps`).
    pub rate: u32,
    /// `listening`, `handed to <pid>`, `paused` …
    pub state: String,
}

impl Status {
    /// Find a service's row.
    pub fn service(&self, name: &str) -> Option<&ServiceStatus> {
        self.services.iter().find(|s| s.name == name)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<16} {:<26} {:<4} {:<22} {:>7} {:>9} {:>8} {:>6}  state",
            "service", "kind", "", "address", "running", "spawned", "refused", "rate/s"
        )?;
        for s in &self.services {
            writeln!(
                f,
                "{:<16} {:<26} {:<4} {:<22} {:>7} {:>9} {:>8} {:>6}  {}",
                s.name,
                s.kind,
                s.transport,
                s.addr.to_string(),
                s.running,
                s.spawned,
                s.refused,
                s.rate,
                s.state
            )?;
        }
        writeln!(f, "{} services, {} children", self.services.len(), self.children)
    }
}
