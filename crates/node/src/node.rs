//! The superserver loop: one mio poller on one thread watching every exec and redirect
//! listener, every child's pidfd, the status socket and a command channel.
//!
//! mio rather than tokio: the loop's work is readiness, accept, spawn and reaping, all
//! non-blocking system calls; a runtime would add threads to a process that spawns children
//! and tasks to code that has nothing to await. Builtins run on threads of their own under
//! their model, with a clone of the listener the node bound.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use warren_models::accept::Acceptor;

mod children;
mod inherited;
mod sockets;

pub use inherited::Inherited;

use self::sockets::{Socket, StatusSocket, bind};
use crate::builtin::{self, Running};
use crate::config::{Config, Kind, Service, StatusAddr};
use crate::exec::Counters;
use crate::sandbox::{Cgroups, Prepared};
use crate::status::{Hooks, Status};

const WAKER: Token = Token(0);
const STATUS: Token = Token(1);
const FIRST_LISTENER: usize = 16;
/// Children's pidfds are registered as this plus the pid.
const CHILD_BASE: usize = 1 << 40;
/// Connections accepted per readiness event, so that one busy service cannot starve the rest.
const ACCEPT_BATCH: usize = 64;

/// Asks the loop to do something; answered through the enclosed sender.
enum Command {
    Reload(Box<Config>, Sender<Result<(), String>>),
    Status(Sender<Status>),
    Drain(Duration, Duration),
    RelayDone { service: String, peer: IpAddr, bytes: (u64, u64), started: Instant },
}

/// The running node, owned by whoever started it.
#[derive(Debug)]
pub struct NodeHandle {
    tx: Sender<Command>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl NodeHandle {
    /// Replace the configuration: listeners that did not change stay open, running children and
    /// connections carry on. On error the old configuration stays in force.
    pub fn reload(&self, config: Config) -> Result<(), String> {
        let (tx, rx) = channel();
        self.send(Command::Reload(Box::new(config), tx))?;
        rx.recv().map_err(|_| "the node stopped".to_string())?
    }

    /// A snapshot of the services and their counters.
    pub fn status(&self) -> Result<Status, String> {
        let (tx, rx) = channel();
        self.send(Command::Status(tx))?;
        rx.recv().map_err(|_| "the node stopped".to_string())
    }

    /// Stop accepting, shut builtins down and wait up to `grace` for children to finish; then
    /// SIGTERM those left, SIGKILL them `kill_after` later, and return once they are reaped (or
    /// [`REAP_WAIT`] after the SIGKILL, whatever is left).
    pub fn drain(mut self, grace: Duration, kill_after: Duration) {
        let _ = self.send(Command::Drain(grace, kill_after));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    fn send(&self, command: Command) -> Result<(), String> {
        self.tx.send(command).map_err(|_| "the node stopped".to_string())?;
        self.waker.wake().map_err(|e| e.to_string())
    }
}

/// What a listener is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watch {
    Watching,
    /// A `wait` child has the socket.
    Handed(u32),
    /// cps tripped or descriptors ran out: accept again at this instant.
    Paused(Instant),
    /// Served by a builtin thread, not by this loop.
    Builtin,
}

#[derive(Debug)]
struct Entry {
    service: Arc<Service>,
    socket: Socket,
    addr: SocketAddr,
    counters: Counters,
    watch: Watch,
    builtin: Option<Running>,
}

#[derive(Debug)]
struct Child {
    service: String,
    pidfd: OwnedFd,
    peer: Option<IpAddr>,
    started: Instant,
    sandbox: Option<Prepared>,
}

/// Bind every service of `config`, start the builtins and run the loop on a thread of its own.
/// `hooks` hears of every service once it listens.
pub fn start(config: Config, hooks: Box<dyn Hooks>) -> io::Result<NodeHandle> {
    start_with(config, hooks, Inherited::default())
}

/// [`start`], with listeners a service manager passed (socket activation): a service whose
/// socket is among them serves on it instead of binding its own, at start and at any reload.
pub fn start_with(config: Config, hooks: Box<dyn Hooks>, inherited: Inherited) -> io::Result<NodeHandle> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = channel();
    let status = match &config.status {
        Some(StatusAddr::Unix(path)) => {
            crate::toml_config::private_socket_dir(path)?;
            if std::os::unix::net::UnixStream::connect(path).is_err() {
                let _ = std::fs::remove_file(path);
            }
            let listener = UnixListener::bind(path)
                .map_err(|e| io::Error::new(e.kind(), format!("status socket {}: {e}", path.display())))?;
            Some(StatusSocket::Unix(listener))
        }
        Some(StatusAddr::Tcp(addr)) => Some(StatusSocket::Tcp(TcpListener::bind(addr)?)),
        None => None,
    };
    let cgroups = Cgroups::detect();
    crate::sandbox::remove_stale(cgroups);
    let mut node = Node {
        poll,
        entries: Vec::new(),
        children: HashMap::new(),
        acceptor: Acceptor::new(),
        hooks,
        tx: tx.clone(),
        waker: waker.clone(),
        cgroups,
        status,
        rx,
        draining: None,
        inherited,
    };
    if let Some(s) = &node.status {
        s.set_nonblocking()?;
        node.poll.registry().register(&mut SourceFd(&s.raw()), STATUS, Interest::READABLE)?;
    }
    node.apply(config).map_err(io::Error::other)?;
    if !node.inherited.is_empty() {
        tracing::warn!(target: "warren::node", "passed listeners no service uses (kept for a reload): {}", node.inherited.unused().join(", "));
    }
    let thread = std::thread::Builder::new().name("warren-node".into()).spawn(move || node.run())?;
    Ok(NodeHandle { tx, waker, thread: Some(thread) })
}

struct Node {
    poll: Poll,
    entries: Vec<Option<Entry>>,
    children: HashMap<u32, Child>,
    acceptor: Acceptor,
    hooks: Box<dyn Hooks>,
    tx: Sender<Command>,
    waker: Arc<Waker>,
    cgroups: Cgroups,
    status: Option<StatusSocket>,
    rx: Receiver<Command>,
    /// Set once draining: what the next step is and when it is due.
    draining: Option<Draining>,
    /// Listeners passed by a service manager that no service has taken yet.
    inherited: Inherited,
}

/// How long a drain waits for children to be reaped after SIGKILL before the node returns anyway
/// (a child stuck in the kernel, in uninterruptible sleep, cannot be waited for forever).
pub const REAP_WAIT: Duration = Duration::from_secs(1);

/// The steps of a drain, each due at its instant: children first get `grace` to finish.
#[derive(Clone, Copy, Debug)]
struct Draining {
    next: DrainStep,
    at: Instant,
    kill_after: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DrainStep {
    /// Ask the children left to stop.
    Term,
    /// Stop them: SIGTERM may be ignored, and a pid namespace's init ignores it by design.
    Kill,
    /// Give up waiting for the children left.
    GiveUp,
}

impl Node {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let now = Instant::now();
            let wake = self.entries.iter().flatten().filter_map(|e| match e.watch {
                Watch::Paused(at) => Some(at),
                _ => None,
            });
            let drain_at = self.draining.map(|d| d.at);
            let timeout = wake.chain(drain_at).min().map(|at| at.saturating_duration_since(now));
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != io::ErrorKind::Interrupted
            {
                tracing::error!("node: poll: {e}");
                return;
            }
            for event in events.iter() {
                match event.token() {
                    WAKER => self.commands(),
                    STATUS => self.serve_status(),
                    Token(t) if t >= CHILD_BASE => self.reap((t - CHILD_BASE) as u32),
                    Token(t) => self.ready(t - FIRST_LISTENER),
                }
            }
            self.resume(Instant::now());
            if let Some(draining) = self.draining {
                if self.children.is_empty() {
                    return;
                }
                let now = Instant::now();
                if now >= draining.at && !self.drain_step(draining, now) {
                    return;
                }
            }
        }
    }

    fn commands(&mut self) {
        while let Ok(command) = self.rx.try_recv() {
            match command {
                Command::Reload(config, reply) => {
                    let result = self.apply(*config);
                    if let Err(e) = &result {
                        tracing::error!("reload refused, old configuration kept: {e}");
                    }
                    let _ = reply.send(result);
                }
                Command::Status(reply) => {
                    let _ = reply.send(self.snapshot());
                }
                Command::Drain(grace, kill_after) => self.drain(grace, kill_after),
                Command::RelayDone { service, peer, bytes, started } => {
                    let entry = self.entries.iter_mut().flatten().find(|e| e.service.name == service);
                    if let Some(entry) = entry {
                        entry.counters.release(Some(peer));
                        if entry.service.log.traffic {
                            tracing::info!(target: "warren::node", service, from = %peer, in_bytes = bytes.0, out_bytes = bytes.1, duration = ?started.elapsed(), "EXIT: redirect");
                        }
                    }
                }
            }
        }
    }

    /// The sockets of services that have none yet: a passed one where the service manager gave
    /// it, else freshly bound. All or none: on a failure, what was bound is closed and what was
    /// passed is kept for a later configuration.
    fn bind_new<'a>(
        &mut self,
        services: impl Iterator<Item = &'a Arc<Service>>,
    ) -> Result<Vec<(Socket, SocketAddr)>, String> {
        let mut bound: Vec<(&Arc<Service>, Socket, SocketAddr, bool)> = Vec::new();
        for s in services {
            let (transport, addr) = (s.listen.transport.name(), s.listen.addr);
            let result = match self.inherited.take(s) {
                Some(passed) => passed.map(|(socket, at)| (socket, at, true)),
                None => bind(s).map(|(socket, at)| (socket, at, false)),
            };
            match result {
                Ok((socket, at, passed)) => bound.push((s, socket, at, passed)),
                Err(e) => {
                    for (s, socket, at, passed) in bound {
                        if passed {
                            self.inherited.give_back(s, socket, at);
                        }
                    }
                    return Err(format!("service {}: cannot listen on {transport} {addr}: {e}", s.name));
                }
            }
        }
        Ok(bound.into_iter().map(|(_, socket, at, _)| (socket, at)).collect())
    }

    /// Make the services of `config` the node's: keep the sockets (and counters) of services
    /// whose listener is unchanged, bind the new ones first so a failure changes nothing.
    fn apply(&mut self, config: Config) -> Result<(), String> {
        let mut old: Vec<Entry> = self.entries.drain(..).flatten().collect();
        let mut next: Vec<(Arc<Service>, Option<Entry>)> = Vec::new();
        for service in config.services {
            let same = old.iter().position(|e| e.service.name == service.name && e.service.listen == service.listen);
            let same =
                same.or_else(|| old.iter().position(|e| e.service.listen == service.listen && e.addr.port() != 0));
            next.push((Arc::new(service), same.map(|i| old.swap_remove(i))));
        }
        let bound = self.bind_new(next.iter().filter(|(_, kept)| kept.is_none()).map(|(s, _)| s));
        let bound = match bound {
            Ok(bound) => bound,
            Err(e) => {
                self.entries = next.into_iter().filter_map(|(_, e)| e).chain(old).map(Some).collect();
                self.reregister_all();
                return Err(e);
            }
        };
        for gone in old {
            self.close(gone);
        }
        let mut bound = bound.into_iter();
        for (index, (service, kept)) in next.into_iter().enumerate() {
            let mut replaced = None;
            let entry = match kept {
                Some(mut entry) => {
                    let builtin_changed = entry.service.kind != service.kind || entry.service.limits != service.limits;
                    if entry.builtin.is_some() && builtin_changed {
                        if overlaps(&entry.service) && overlaps(&service) {
                            replaced = entry.builtin.take();
                        } else {
                            stop_builtin(entry.builtin.take());
                        }
                    }
                    if entry.service.name != service.name {
                        self.hooks.closed(&entry.service.name);
                        entry.counters = Counters::default();
                    }
                    let _ = self.poll.registry().deregister(&mut SourceFd(&entry.socket.raw()));
                    entry.service = service;
                    if entry.builtin.is_none() && !matches!(entry.watch, Watch::Handed(_)) {
                        entry.watch = Watch::Watching;
                    }
                    entry
                }
                None => {
                    let (socket, addr) = bound.next().expect("one socket was bound per new service");
                    Entry {
                        service,
                        socket,
                        addr,
                        counters: Counters::default(),
                        watch: Watch::Watching,
                        builtin: None,
                    }
                }
            };
            self.entries.push(Some(entry));
            if let Err(e) = self.activate(index) {
                tracing::error!("service {}: {e}", self.entries[index].as_ref().map_or("?", |e| &e.service.name));
            }
            // Stopped once its successor accepts on the same socket: the old one finishes the
            // connections it took, so none waits in the backlog for the whole grace.
            stop_builtin(replaced);
        }
        Ok(())
    }

    /// Start watching entry `index` (or start its builtin) and tell the hooks.
    fn activate(&mut self, index: usize) -> io::Result<()> {
        let Some(entry) = self.entries[index].as_mut() else { return Ok(()) };
        if let Kind::Builtin(b) = &entry.service.kind {
            if entry.builtin.is_none() {
                let socket = match &entry.socket {
                    Socket::Tcp(l) => builtin::Socket::Tcp(l.try_clone()?),
                    Socket::Udp(u) => builtin::Socket::Udp(u.try_clone()?),
                };
                entry.builtin = Some(builtin::start(&entry.service, b, socket, &mut *self.hooks)?);
            }
            entry.watch = Watch::Builtin;
        } else if entry.watch == Watch::Watching {
            self.poll.registry().register(
                &mut SourceFd(&entry.socket.raw()),
                Token(FIRST_LISTENER + index),
                Interest::READABLE,
            )?;
        }
        self.hooks.listening(&entry.service, entry.addr);
        Ok(())
    }

    fn reregister_all(&mut self) {
        for (index, entry) in self.entries.iter().enumerate() {
            if let Some(entry) = entry
                && entry.watch == Watch::Watching
            {
                let _ = self.poll.registry().reregister(
                    &mut SourceFd(&entry.socket.raw()),
                    Token(FIRST_LISTENER + index),
                    Interest::READABLE,
                );
            }
        }
    }

    fn close(&mut self, mut entry: Entry) {
        let _ = self.poll.registry().deregister(&mut SourceFd(&entry.socket.raw()));
        stop_builtin(entry.builtin.take());
        self.hooks.closed(&entry.service.name);
    }

    fn drain(&mut self, grace: Duration, kill_after: Duration) {
        for entry in std::mem::take(&mut self.entries).into_iter().flatten() {
            self.close(entry);
        }
        tracing::info!(target: "warren::node", children = self.children.len(), "draining");
        self.draining = Some(Draining { next: DrainStep::Term, at: Instant::now() + grace, kill_after });
    }

    /// Take the drain's step that is due; false once the node should stop waiting.
    fn drain_step(&mut self, draining: Draining, now: Instant) -> bool {
        use nix::sys::signal::{SIGKILL, SIGTERM, kill};
        let signal = |children: &HashMap<u32, Child>, signal| {
            for pid in children.keys() {
                let _ = kill(nix::unistd::Pid::from_raw(*pid as i32), signal);
            }
        };
        let (next, at) = match draining.next {
            DrainStep::Term => {
                tracing::info!(target: "warren::node", children = self.children.len(), "grace over: SIGTERM");
                signal(&self.children, SIGTERM);
                (DrainStep::Kill, now + draining.kill_after)
            }
            DrainStep::Kill => {
                tracing::warn!(target: "warren::node", children = self.children.len(), "still running: SIGKILL");
                signal(&self.children, SIGKILL);
                (DrainStep::GiveUp, now + REAP_WAIT)
            }
            DrainStep::GiveUp => {
                let pids: Vec<_> = self.children.keys().collect();
                tracing::error!(target: "warren::node", ?pids, "children not reaped after SIGKILL; leaving them");
                return false;
            }
        };
        self.draining = Some(Draining { next, at, ..draining });
        true
    }

    fn resume(&mut self, now: Instant) {
        for index in 0..self.entries.len() {
            let Some(entry) = self.entries[index].as_mut() else { continue };
            if let Watch::Paused(at) = entry.watch
                && now >= at
            {
                entry.watch = Watch::Watching;
                entry.counters.reset_window();
                tracing::info!(target: "warren::node", service = %entry.service.name, "accepting again");
                let fd = entry.socket.raw();
                let _ = self.poll.registry().register(
                    &mut SourceFd(&fd),
                    Token(FIRST_LISTENER + index),
                    Interest::READABLE,
                );
            }
        }
    }

    fn pause(&mut self, index: usize, until: Instant) {
        if let Some(entry) = self.entries[index].as_mut() {
            let _ = self.poll.registry().deregister(&mut SourceFd(&entry.socket.raw()));
            entry.watch = Watch::Paused(until);
        }
    }
}

/// Whether a reload may start `service`'s new builtin before the old one stops, both accepting on
/// the one socket for a moment: the switch, which keeps no state a second instance would fight
/// over (a registry or an object server holds its store's lock).
fn overlaps(service: &Service) -> bool {
    matches!(&service.kind, Kind::Builtin(b) if b.protocol == crate::config::Protocol::Switch)
}

fn stop_builtin(running: Option<Running>) {
    if let Some(running) = running {
        running.shutdown.trigger();
        let _ = running.thread.join();
    }
}
