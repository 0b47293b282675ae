//! `prefork`: a fixed set of worker processes, forked at start, each accepting on the one shared
//! listener and serving one connection at a time (Apache's prefork MPM).
//!
//! The parent stays single-threaded and only supervises: it forks the hub process and the
//! workers, replaces a worker that dies, and on SIGINT or SIGTERM stops them. Workers share no
//! memory, so shared state goes through the hub process; two counters for the final report and
//! the activity clock live in a shared anonymous mapping.

use std::collections::HashSet;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::unistd::{ForkResult, Pid};
use warren_proto::Service;

use crate::accept::{Accepted, Acceptor, Listener, refuse};
use crate::activity::{Activity, shared_zeroed};
use crate::blocking::{ConnEnv, serve_connection};
use crate::conn::conn_info;
use crate::hub_process::{self, HubProcess, RemoteLink};
use crate::procs::{
    ParentSignals, child_ready, exit_child, fork_blocking_stop_signals, poll_timeout, reap, stop_children,
};
use crate::run::{ServeConfig, ServeReport};
use crate::shutdown::{Shutdown, trigger_on_signals_in_child};

/// What every worker shares with the parent.
struct Shared<'a, S> {
    service: &'a S,
    listener: &'a Listener,
    hub: &'a HubProcess,
    activity: &'a Activity,
    accepted: &'static AtomicU64,
    refused: &'static AtomicU64,
    /// Connections being served by all workers, for `max_conns`.
    active: &'static AtomicU64,
    parent: Pid,
    config: &'a ServeConfig,
}

pub(crate) fn serve<S: Service>(
    service: S,
    listener: Listener,
    config: &ServeConfig,
    ready: impl FnOnce(),
) -> std::io::Result<ServeReport> {
    let activity = Activity::shared(Instant::now())?;
    let mut signals = Some(ParentSignals::install()?);
    let hub = hub_process::spawn(service.new_hub(Instant::now()), &[listener.as_raw_fd()])?;
    listener.set_nonblocking(true)?;
    crate::fork::share_relro();
    let shared = Shared {
        service: &service,
        listener: &listener,
        hub: &hub,
        activity: &activity,
        accepted: shared_zeroed()?,
        refused: shared_zeroed()?,
        active: shared_zeroed()?,
        parent: nix::unistd::getpid(),
        config,
    };
    let mut workers = HashSet::new();
    let mut report = ServeReport::default();
    let mut ready = Some(ready);
    loop {
        while workers.len() < config.processes.max(1) {
            workers.insert(spawn_worker(&shared, &mut signals)?);
        }
        if let Some(ready) = ready.take() {
            ready();
        }
        let sig = signals.as_ref().expect("parent keeps its signals");
        let idle_at = config.idle_exit.map(|period| activity.idle_at(period));
        let mut fds = [PollFd::new(sig.fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, poll_timeout(idle_at.map(|at| at.saturating_duration_since(Instant::now()))));
        if sig.drain() {
            break;
        }
        for pid in reap(&mut workers) {
            tracing::debug!(target: "warren", "prefork: worker {pid} ended; replacing it");
        }
        if idle_at.is_some_and(|at| Instant::now() >= at) {
            tracing::info!(target: "warren", "idle: shutting down");
            report.idle_exit = true;
            break;
        }
    }
    let sig = signals.take().expect("parent keeps its signals");
    stop_children(&mut workers, &sig);
    report.accepted = shared.accepted.load(Ordering::Relaxed);
    report.refused = shared.refused.load(Ordering::Relaxed);
    report.hub_report = hub_process::finish(&hub);
    Ok(report)
}

fn spawn_worker<S: Service>(shared: &Shared<'_, S>, signals: &mut Option<ParentSignals>) -> std::io::Result<Pid> {
    match fork_blocking_stop_signals()? {
        ForkResult::Child => exit_child(match worker(shared, signals.take().expect("parent keeps its signals")) {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!(target: "warren", "prefork worker: {e}");
                1
            }
        }),
        ForkResult::Parent { child } => Ok(child),
    }
}

/// A worker: accept, serve to the end, repeat, until told to stop.
fn worker<S: Service>(shared: &Shared<'_, S>, signals: ParentSignals) -> std::io::Result<()> {
    let shutdown = Arc::new(Shutdown::new()?);
    trigger_on_signals_in_child(shutdown.clone())?;
    child_ready(signals, shared.parent)?;
    let env = ConnEnv { shutdown: &shutdown, activity: shared.activity, engine: shared.config.engine() };
    let mut acceptor = Acceptor::with_gate(shared.config.gate.clone());
    while !shutdown.is_triggered() {
        // Every idle worker wakes for a new connection and one wins the accept; with a handful of
        // workers this herd is cheaper than serialising accepts.
        let mut fds =
            [PollFd::new(shared.listener.as_fd(), PollFlags::POLLIN), PollFd::new(shutdown.fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::NONE).is_err() || fds[1].revents().is_some_and(|r| !r.is_empty()) {
            continue;
        }
        match acceptor.accept(shared.listener, shared.service.refusal())? {
            Accepted::Conn(mut incoming) => {
                if shared.active.fetch_add(1, Ordering::SeqCst) >= shared.config.max_conns as u64 {
                    shared.active.fetch_sub(1, Ordering::SeqCst);
                    shared.refused.fetch_add(1, Ordering::Relaxed);
                    refuse(&mut incoming.stream, shared.service.refusal());
                    continue;
                }
                shared.accepted.fetch_add(1, Ordering::Relaxed);
                let info = conn_info(Some(incoming.peer));
                let mut link = RemoteLink::new(shared.hub.connector.clone(), info.id);
                serve_connection(shared.service, incoming, info, &mut link, &env);
                shared.active.fetch_sub(1, Ordering::SeqCst);
            }
            Accepted::Nothing => {}
            Accepted::Exhausted(wait) => {
                shared.refused.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(wait);
            }
        }
    }
    Ok(())
}
