//! Choosing a model at run time and the settings every model shares.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use warren_proto::Service;

use crate::accept::Listener;
use crate::activity::Activity;
use crate::engine::EngineConfig;
use crate::shutdown::{Shutdown, trigger_on_signals};
use crate::urgent::UrgentMode;

/// A server model: how connections are mapped onto threads and processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Model {
    /// One connection at a time, blocking: the next client waits in the listen backlog.
    Iterative,
    /// A kernel thread per connection; with `max_active` it stops accepting while that many run.
    Thread,
    /// A fixed pool of kernel threads; one poller hands ready connections to it through a
    /// bounded queue, so a few threads serve any number of connections.
    Pool,
    /// A process per connection, forked before any thread exists; shared state in a hub process.
    Fork,
    /// A fixed set of worker processes accepting on one shared listener; shared state in a hub
    /// process.
    Prefork,
    /// One thread, non-blocking sockets and epoll; each connection a state machine. Optional
    /// worker threads take blocking calls off the loop.
    Event,
    /// User-space tasks on one kernel thread (a current-thread async runtime): a blocking call
    /// stalls every connection.
    Green,
    /// M:N tasks over a work-stealing pool of kernel threads (the light-weight-process model).
    Hybrid,
}

impl Model {
    /// Every model, in the chapter's order.
    pub const ALL: [Model; 8] = [
        Model::Iterative,
        Model::Thread,
        Model::Pool,
        Model::Fork,
        Model::Prefork,
        Model::Event,
        Model::Green,
        Model::Hybrid,
    ];

    /// The model's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Model::Iterative => "iterative",
            Model::Thread => "thread",
            Model::Pool => "pool",
            Model::Fork => "fork",
            Model::Prefork => "prefork",
            Model::Event => "event",
            Model::Green => "green",
            Model::Hybrid => "hybrid",
        }
    }

    /// Whether the model arms TCP urgent data when [`ServeConfig::urgent`] asks. `green` and
    /// `hybrid` do not: their tasks sleep in tokio's reactor, and urgent data needs a look at
    /// the socket before every read (`urgent.rs`).
    pub fn arms_urgent(self) -> bool {
        !matches!(self, Model::Green | Model::Hybrid)
    }

    /// Whether connections are served in processes of their own (`fork`, `prefork`): what they
    /// count together must live in memory they share ([`crate::activity::shared_slots`]).
    pub fn forks(self) -> bool {
        matches!(self, Model::Fork | Model::Prefork)
    }
}

impl std::fmt::Display for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Model {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Model::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| {
            format!("unknown model {s:?}; expected one of iterative, thread, pool, fork, prefork, event, green, hybrid")
        })
    }
}

/// Settings shared by every model. Each field documents which models read it.
///
/// [`ServeConfig::for_model`] gives each model's defaults; `warren serve`, `warren files serve`
/// and the node all start from it.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// `pool`: worker threads. `hybrid`: runtime worker threads.
    pub threads: usize,
    /// `prefork`: worker processes.
    pub processes: usize,
    /// `thread` and `fork`: stop accepting while this many connections are active (the course's
    /// TimeServerImproved blocks before `accept`). Default: no such wait.
    pub max_active: Option<usize>,
    /// Every model: connections beyond this many are refused with the protocol's refusal.
    pub max_conns: usize,
    /// `pool`: ready connections waiting for a worker; a new connection is refused when the
    /// queue is full. Default 1,024.
    pub queue: usize,
    /// `event`, `green`, `hybrid`: helper threads that run jobs (blocking file I/O, fsync, the
    /// TimeServer's delay) off the loop. 0 runs them on the loop itself, so that one blocking
    /// call stalls every connection: the chapter's lesson. Default 4.
    pub helpers: usize,
    /// Every model: exit after this long without any connection activity. Default: never.
    pub idle_exit: Option<Duration>,
    /// Every model: give up on a peer that does not read for this long. Default 30 s.
    pub write_timeout: Duration,
    /// Messages that may wait for one slow session before it is disconnected. Default 4,096.
    pub mailbox: usize,
    /// Every model but `green` and `hybrid`: arm TCP urgent data on every connection (SIGURG,
    /// `F_SETOWN`) and report it through `Session::handle_urgent`. Default off.
    pub urgent: UrgentMode,
    /// Every model: who may connect, asked before a connection is served (the node's access
    /// control for the services it hosts). Default: everyone.
    pub gate: Option<std::sync::Arc<dyn crate::accept::Gate>>,
    /// Datagram services: how often one source address is answered (reflection sources are
    /// never answered). Default 20 a second after a burst of 40, over 16,384 sources.
    pub datagram_rate: crate::udp::SourceRate,
    /// `event`: idle outbound connections the loop keeps for its sessions to reuse
    /// (`Action::Park`, `Action::Reuse`). Default none; the other models keep none.
    pub idle: crate::idle::IdleConfig,
}

/// How long shutdown waits for connections to say goodbye (and children to exit) before it
/// closes (or kills) what is left.
pub const GRACE: Duration = Duration::from_secs(5);

impl ServeConfig {
    /// The defaults of `model`: four pool workers and prefork processes, one hybrid runtime
    /// thread per CPU, four helpers for the loop-based models, and 512 connections for `fork`
    /// (each is a process) against 10,000 for the others.
    pub fn for_model(model: Model) -> Self {
        let threads = match model {
            Model::Hybrid => std::thread::available_parallelism().map_or(2, |n| n.get()),
            _ => 4,
        };
        let max_conns = if model == Model::Fork { 512 } else { 10_000 };
        Self {
            threads,
            processes: 4,
            max_active: None,
            max_conns,
            queue: 1024,
            helpers: 4,
            idle_exit: None,
            write_timeout: Duration::from_secs(30),
            mailbox: 4096,
            urgent: UrgentMode::Off,
            gate: None,
            datagram_rate: crate::udp::SourceRate::default(),
            idle: crate::idle::IdleConfig::default(),
        }
    }

    /// Set the model's threads, as `--threads` and the node's `threads` say: `pool`'s workers,
    /// `hybrid`'s runtime threads, `event`'s helpers; the other models have no such threads.
    pub fn with_threads(mut self, model: Model, threads: usize) -> Self {
        match model {
            Model::Event => self.helpers = threads,
            _ => self.threads = threads,
        }
        self
    }

    /// What every connection's engine needs.
    pub(crate) fn engine(&self) -> EngineConfig {
        EngineConfig { write_timeout: self.write_timeout, urgent: self.urgent }
    }
}

/// What a server did, reported when it stops.
#[derive(Clone, Debug, Default)]
pub struct ServeReport {
    /// Connections accepted and served.
    pub accepted: u64,
    /// Connections refused for lack of capacity.
    pub refused: u64,
    /// Whether the server stopped because it was idle for `idle_exit`.
    pub idle_exit: bool,
    /// The hub's summary (the chat server's statistics).
    pub hub_report: Option<String>,
}

/// Counters shared by a server's threads.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub active: AtomicU64,
}

impl Counters {
    pub(crate) fn report(&self, hub_report: Option<String>) -> ServeReport {
        ServeReport {
            accepted: self.accepted.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            idle_exit: false,
            hub_report,
        }
    }
}

/// What the in-process drivers receive besides the service and the listener.
#[derive(Clone, Debug)]
pub(crate) struct Env {
    pub shutdown: Arc<Shutdown>,
    pub activity: Arc<Activity>,
    pub counters: Arc<Counters>,
}

/// Serve `service` on `listener` under `model` until SIGINT, SIGTERM or `idle_exit`.
///
/// `ready` runs once the server handles SIGINT and SIGTERM gracefully: announce the server
/// there, so that nobody stops it before it can stop cleanly.
///
/// `fork` and `prefork` fork: call them before this process starts any thread.
pub fn serve<S: Service>(
    model: Model,
    service: S,
    listener: impl Into<Listener>,
    config: &ServeConfig,
    ready: impl FnOnce(),
) -> std::io::Result<ServeReport> {
    let listener = listener.into();
    crate::accept::prepare(&listener, defers_accept(model, service.client_speaks_first()));
    match model {
        Model::Fork => return crate::fork::serve(service, listener, config, ready),
        Model::Prefork => return crate::prefork::serve(service, listener, config, ready),
        _ => {}
    }
    let shutdown = Arc::new(Shutdown::new()?);
    trigger_on_signals(shutdown.clone())?;
    ready();
    serve_prepared(model, service, listener, config, shutdown)
}

/// Serve under an in-process model until `shutdown` is triggered (or `idle_exit` passes).
/// For embedding and tests; `fork` and `prefork` are refused here, since they need a process of
/// their own.
pub fn serve_until<S: Service>(
    model: Model,
    service: S,
    listener: impl Into<Listener>,
    config: &ServeConfig,
    shutdown: Arc<Shutdown>,
) -> std::io::Result<ServeReport> {
    let listener = listener.into();
    crate::accept::prepare(&listener, defers_accept(model, service.client_speaks_first()));
    serve_prepared(model, service, listener, config, shutdown)
}

/// [`serve_until`] on a listener [`prepare`](crate::accept::prepare)d already.
fn serve_prepared<S: Service>(
    model: Model,
    service: S,
    listener: Listener,
    config: &ServeConfig,
    shutdown: Arc<Shutdown>,
) -> std::io::Result<ServeReport> {
    let start = Instant::now();
    let env = Env { shutdown, activity: Arc::new(Activity::new(start)), counters: Arc::default() };
    let idled = config.idle_exit.map(|period| watch_idle(&env, period)).transpose()?;
    let service = Arc::new(service);
    let mut report = match model {
        Model::Iterative => crate::iterative::serve(service, listener, config, &env),
        Model::Thread => crate::thread::serve(service, listener, config, &env),
        Model::Pool => crate::pool::serve(service, listener, config, &env),
        Model::Event => crate::event::serve(service, listener, config, &env),
        Model::Green | Model::Hybrid => crate::green::serve(model, service, listener, config, &env),
        Model::Fork | Model::Prefork => {
            return Err(std::io::Error::other("fork and prefork cannot run inside another server"));
        }
    }?;
    report.idle_exit = idled.is_some_and(|flag| flag.load(Ordering::SeqCst) == 1);
    Ok(report)
}

/// Whether a listener holds each connection until its first bytes arrive: when the protocol's
/// clients speak first ([`Service::client_speaks_first`]), except under `thread`. There every
/// accepted connection spawns a thread, and when a burst of connections is let in only with their
/// requests, the acceptor spawns while the threads already serving compete with it for the CPU:
/// wrk with 256 keep-alive HTTP connections measured a p99 of 210–390 ms deferred, 9–12 ms not.
/// The other models gain (fewer system calls per short connection) or do not change.
fn defers_accept(model: Model, client_speaks_first: bool) -> bool {
    client_speaks_first && model != Model::Thread
}

/// Trigger shutdown once nothing has happened for `period`; returns a flag set when it did.
fn watch_idle(env: &Env, period: Duration) -> std::io::Result<Arc<AtomicU64>> {
    let fired = Arc::new(AtomicU64::new(0));
    let (shutdown, activity, flag) = (env.shutdown.clone(), env.activity.clone(), fired.clone());
    std::thread::Builder::new().name("warren-idle".into()).spawn(move || {
        while !shutdown.is_triggered() {
            let at = activity.idle_at(period);
            let now = Instant::now();
            if now >= at {
                tracing::info!(target: "warren", "idle for {period:?}: shutting down");
                flag.store(1, Ordering::SeqCst);
                shutdown.trigger();
                return;
            }
            // A timer, not synchronisation: wake when the idle period could end, or sooner.
            std::thread::sleep((at - now).min(Duration::from_secs(1)));
        }
    })?;
    Ok(fired)
}

#[cfg(test)]
mod tests {
    use super::{Model, defers_accept};

    #[test]
    fn listeners_defer_for_client_first_protocols_except_under_thread() {
        for model in
            [Model::Iterative, Model::Pool, Model::Fork, Model::Prefork, Model::Event, Model::Green, Model::Hybrid]
        {
            assert!(defers_accept(model, true), "{model:?}");
            assert!(!defers_accept(model, false), "{model:?}");
        }
        assert!(!defers_accept(Model::Thread, true));
        assert!(!defers_accept(Model::Thread, false));
    }
}
