//! `fork`: a process per connection, the chapter's multiprocess server (and inetd's `nowait`).
//!
//! The parent stays single-threaded, so every fork copies a consistent process: it forks the
//! hub process first, then one child per accepted connection. A child serves its connection with
//! the blocking driver and reaches the shared state through the hub process, since it shares no
//! memory with its siblings. With `max_active` the parent stops accepting while that many
//! children run; beyond `max_conns` it refuses.

use std::collections::HashSet;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::time::Instant;

use nix::poll::{PollFd, PollFlags, poll};
use nix::unistd::ForkResult;
use warren_proto::Service;

use crate::accept::{Accepted, Acceptor, Listener, refuse};
use crate::activity::Activity;
use crate::blocking::{ConnEnv, serve_connection};
use crate::conn::conn_info;
use crate::hub_process::{self, RemoteLink};
use crate::procs::{
    ParentSignals, child_ready, exit_child, fork_blocking_stop_signals, poll_timeout, reap, stop_children,
};
use crate::run::{ServeConfig, ServeReport};
use crate::shutdown::{Shutdown, trigger_on_signals_in_child};

pub(crate) fn serve<S: Service>(
    service: S,
    listener: Listener,
    config: &ServeConfig,
    ready: impl FnOnce(),
) -> std::io::Result<ServeReport> {
    let activity = Activity::shared(Instant::now())?;
    let signals = ParentSignals::install()?;
    let hub = hub_process::spawn(service.new_hub(Instant::now()), &[listener.as_raw_fd()])?;
    listener.set_nonblocking(true)?;
    let parent = nix::unistd::getpid();
    share_relro();
    // Every child starts with the parent's heap mapped; what setting up freed is handed back to
    // the kernel first, so that each child's page tables (and its RSS) do not carry it.
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory; the process is single-threaded here.
    unsafe {
        nix::libc::malloc_trim(0)
    };
    ready();
    let mut children = HashSet::new();
    let mut report = ServeReport::default();
    let mut acceptor = Acceptor::with_gate(config.gate.clone());
    loop {
        let accepting = config.max_active.is_none_or(|max| children.len() < max);
        let idle_at = config.idle_exit.map(|period| activity.idle_at(period));
        let timeout = idle_at.map(|at| at.saturating_duration_since(Instant::now()));
        let mut fds = vec![PollFd::new(signals.fd(), PollFlags::POLLIN)];
        if accepting {
            fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
        }
        let _ = poll(&mut fds, poll_timeout(timeout));
        let listener_ready = accepting && fds[1].revents().is_some_and(|r| !r.is_empty());
        drop(fds);
        if signals.drain() {
            break;
        }
        reap(&mut children);
        if idle_at.is_some_and(|at| Instant::now() >= at) && children.is_empty() {
            tracing::info!(target: "warren", "idle: shutting down");
            report.idle_exit = true;
            break;
        }
        while listener_ready && config.max_active.is_none_or(|max| children.len() < max) {
            match acceptor.accept(&listener, service.refusal())? {
                Accepted::Conn(mut incoming) => {
                    if children.len() >= config.max_conns {
                        // Children that ended since the last wake-up still count until reaped.
                        reap(&mut children);
                    }
                    if children.len() >= config.max_conns {
                        report.refused += 1;
                        refuse(&mut incoming.stream, service.refusal());
                        continue;
                    }
                    activity.touch(Instant::now());
                    let info = conn_info(Some(incoming.peer));
                    match fork_blocking_stop_signals() {
                        Ok(ForkResult::Child) => {
                            let _ = nix::unistd::close(listener.as_raw_fd());
                            let code = match child(&service, incoming, info, &hub, &activity, config, signals, parent) {
                                Ok(()) => 0,
                                Err(_) => 1,
                            };
                            exit_child(code);
                        }
                        Ok(ForkResult::Parent { child }) => {
                            report.accepted += 1;
                            children.insert(child);
                        }
                        Err(e) => {
                            tracing::error!(target: "warren", "fork: {e}; refusing a connection");
                            report.refused += 1;
                            refuse(&mut incoming.stream, service.refusal());
                        }
                    }
                }
                Accepted::Nothing => break,
                Accepted::Exhausted(wait) => {
                    report.refused += 1;
                    std::thread::sleep(wait);
                    break;
                }
            }
        }
    }
    drop(listener);
    stop_children(&mut children, &signals);
    report.hub_report = hub_process::finish(&hub);
    Ok(report)
}

/// A connection's process: its own shutdown trigger first, then the connection.
#[allow(clippy::too_many_arguments)]
fn child<S: Service>(
    service: &S,
    incoming: crate::accept::Incoming,
    info: warren_proto::ConnInfo,
    hub: &hub_process::HubProcess,
    activity: &Activity,
    config: &ServeConfig,
    signals: ParentSignals,
    parent: nix::unistd::Pid,
) -> std::io::Result<()> {
    let shutdown = Arc::new(Shutdown::new()?);
    trigger_on_signals_in_child(shutdown.clone())?;
    child_ready(signals, parent)?;
    let mut link = RemoteLink::new(hub.connector.clone(), info.id);
    let env = ConnEnv { shutdown: &shutdown, activity, engine: config.engine() };
    serve_connection(service, incoming, info, &mut link, &env);
    Ok(())
}

/// Before the first fork: the executable's relocated read-only data becomes shared file pages,
/// so that a child maps only what it reads of it (see `relro.rs`). A failure costs memory only.
pub(crate) fn share_relro() {
    if let Err(e) = crate::relro::share() {
        tracing::debug!(target: "warren", "RELRO stays private to each process: {e}");
    }
}
