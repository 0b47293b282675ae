//! `fork` and `prefork` for datagrams.
//!
//! `fork` is xinetd's `dgram nowait`: the parent receives a datagram and forks a child that
//! answers it and exits. `prefork` forks `processes` children that each receive on the shared
//! socket. Both parents stay single-threaded, since they fork: SIGINT and SIGTERM reach them
//! through a self-pipe polled with the socket, and SIGCHLD through the same pipe tells them to
//! reap. Each needs a process of its own: the parent reaps any child (`waitpid(-1)`).
//!
//! The guard runs where datagrams are received: in `fork`'s parent, before it forks (a refused
//! datagram costs no process), and in each `prefork` worker, whose table of sources is its own,
//! so that one source may get up to `processes` times the rate there.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigHandler, SigSet, Signal, kill, signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use warren_proto::DatagramService;

use super::guard::Guard;
use super::{MAX_DATAGRAM, admitted, answer, drain, is_transient};
use crate::activity::shared_zeroed;
use crate::procs::{ParentSignals, exit_child};
use crate::run::{Counters, ServeConfig, ServeReport};

/// `fork`: a child per datagram, at most `max_conns` at once; the rest are dropped.
pub(super) fn serve_fork<D: DatagramService>(
    service: &D,
    socket: &UdpSocket,
    config: &ServeConfig,
    ready: impl FnOnce(),
) -> io::Result<ServeReport> {
    let signals = ParentSignals::install()?;
    socket.set_nonblocking(true)?;
    crate::fork::share_relro();
    ready();
    let counters = Counters::default();
    let guard = Guard::new(socket.local_addr()?, config.datagram_rate, config.gate.clone());
    let mut children = 0usize;
    let (mut buf, mut reply) = (vec![0u8; MAX_DATAGRAM], Vec::new());
    while !signals.stopping() {
        wait(&signals, Some(socket))?;
        children -= reap(WaitPidFlag::WNOHANG).len();
        drain(
            |buf| socket.recv_from(buf),
            || signals.stopping(),
            &mut buf,
            |input, from| {
                if !admitted(&guard, from, &counters.refused) {
                    return;
                }
                if children >= config.max_conns {
                    children -= reap(WaitPidFlag::WNOHANG).len();
                }
                if children >= config.max_conns {
                    counters.refused.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                // SAFETY: this process is single-threaded (the documented precondition of
                // `serve_udp`), so the child may run any code; it leaves through `_exit`.
                match unsafe { fork() } {
                    Ok(ForkResult::Child) => {
                        answer(service, input, from, &mut reply, &counters.accepted, |r, to| socket.send_to(r, to));
                        exit_child(0)
                    }
                    Ok(ForkResult::Parent { .. }) => {
                        children += 1;
                        counters.accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tracing::warn!(target: "warren", "udp fork: {e}; datagram from {from} dropped");
                        counters.refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            },
        )?;
    }
    // Children answer one datagram each and exit: wait for them.
    reap(WaitPidFlag::empty());
    Ok(counters.report(None))
}

/// `prefork`: `processes` children receiving on the shared socket until the parent is told to
/// stop; then it sends them SIGTERM and reaps them.
pub(super) fn serve_prefork<D: DatagramService>(
    service: &D,
    socket: &UdpSocket,
    config: &ServeConfig,
    ready: impl FnOnce(),
) -> io::Result<ServeReport> {
    let signals = ParentSignals::install()?;
    // Children block in `recv_from`; whichever the kernel wakes takes the datagram.
    socket.set_nonblocking(false)?;
    crate::fork::share_relro();
    let served = shared_zeroed()?;
    let refused = shared_zeroed()?;
    let guard = Guard::new(socket.local_addr()?, config.datagram_rate, config.gate.clone());
    let parent = nix::unistd::getpid();
    // Blocked across `fork` so that a child is never stopped while it still runs the parent's
    // handlers: it restores the defaults first, then receives what is pending.
    let stop_signals: SigSet = [Signal::SIGINT, Signal::SIGTERM].into_iter().collect();
    stop_signals.thread_block()?;
    let mut children = Vec::new();
    for _ in 0..config.processes.max(1) {
        // SAFETY: this process is single-threaded (the documented precondition of
        // `serve_udp`); the child never returns from `worker`.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                let counts = Counts { guard: &guard, served, refused };
                worker(service, socket, counts, parent, &stop_signals)
            }
            Ok(ForkResult::Parent { child }) => children.push(child),
            Err(e) => {
                tracing::error!(target: "warren", "udp prefork: {e}");
                break;
            }
        }
    }
    stop_signals.thread_unblock()?;
    ready();

    while !signals.stopping() && !children.is_empty() {
        wait(&signals, None)?;
        for (pid, status) in reap(WaitPidFlag::WNOHANG) {
            tracing::error!(target: "warren", "udp prefork: worker {pid} ended: {status:?}");
            children.retain(|&c| c != pid);
        }
    }
    for &child in &children {
        let _ = kill(child, Signal::SIGTERM);
    }
    reap(WaitPidFlag::empty());
    let report = ServeReport {
        accepted: served.load(Ordering::Relaxed),
        refused: refused.load(Ordering::Relaxed),
        ..ServeReport::default()
    };
    if signals.stopping() { Ok(report) } else { Err(io::Error::other("udp prefork: every worker process ended")) }
}

/// A prefork worker's guard, and the counters it shares with the parent.
struct Counts<'a> {
    guard: &'a Guard,
    served: &'a AtomicU64,
    refused: &'a AtomicU64,
}

/// A prefork child: receive and answer until a signal ends the process.
fn worker<D: DatagramService>(service: &D, socket: &UdpSocket, counts: Counts<'_>, parent: Pid, stop: &SigSet) -> ! {
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: restoring the default disposition installs no handler.
        let _ = unsafe { signal(sig, SigHandler::SigDfl) };
    }
    // End with the parent even if it is killed outright; it may already be gone.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
    if nix::unistd::getppid() != parent || stop.thread_unblock().is_err() {
        exit_child(1);
    }
    let (mut buf, mut reply) = (vec![0u8; MAX_DATAGRAM], Vec::new());
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) if admitted(counts.guard, from, counts.refused) => {
                answer(service, &buf[..n], from, &mut reply, counts.served, |r, to| socket.send_to(r, to))
            }
            Ok(_) => {}
            Err(e) if is_transient(&e) => {}
            Err(e) => {
                tracing::error!(target: "warren", "udp prefork worker: {e}");
                exit_child(1);
            }
        }
    }
}

/// Reap children that have ended: all of them, blocking, or those already ended (WNOHANG).
fn reap(flags: WaitPidFlag) -> Vec<(Pid, WaitStatus)> {
    let mut reaped = Vec::new();
    loop {
        match waitpid(None, Some(flags)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return reaped,
            Ok(status) => reaped.extend(status.pid().map(|pid| (pid, status))),
            Err(Errno::EINTR) => {}
            Err(e) => {
                tracing::warn!(target: "warren", "waitpid: {e}");
                return reaped;
            }
        }
    }
}

/// Wait for a signal, or also for a datagram on `socket`; then empty the signal pipe.
fn wait(signals: &ParentSignals, socket: Option<&UdpSocket>) -> io::Result<()> {
    let mut fds = vec![PollFd::new(signals.fd(), PollFlags::POLLIN)];
    fds.extend(socket.map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN)));
    match poll(&mut fds, PollTimeout::NONE) {
        Ok(_) | Err(Errno::EINTR) => {}
        Err(e) => return Err(e.into()),
    }
    signals.drain();
    Ok(())
}
