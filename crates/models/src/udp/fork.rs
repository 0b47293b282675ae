//! `fork` and `prefork` for datagrams.
//!
//! `fork` is xinetd's `dgram nowait`: the parent receives a datagram and forks a child that
//! answers it and exits. `prefork` forks `processes` children that each receive on the shared
//! socket. Both parents stay single-threaded, since they fork: SIGINT and SIGTERM reach them
//! through a self-pipe polled with the socket, and SIGCHLD through the same pipe tells them to
//! reap. Each needs a process of its own: the parent reaps any child (`waitpid(-1)`).

use std::io::{self, Read};
use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigHandler, SigSet, Signal, kill, signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use signal_hook::SigId;
use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM};
use warren_proto::DatagramService;

use super::{MAX_DATAGRAM, answer, drain, is_transient};
use crate::run::{Counters, ServeConfig, ServeReport};

/// `fork`: a child per datagram, at most `max_conns` at once; the rest are dropped.
pub(super) fn serve_fork<D: DatagramService>(
    service: &D,
    socket: &UdpSocket,
    config: &ServeConfig,
) -> io::Result<ServeReport> {
    let signals = Signals::new()?;
    socket.set_nonblocking(true)?;
    let counters = Counters::default();
    let mut children = 0usize;
    let (mut buf, mut reply) = (vec![0u8; MAX_DATAGRAM], Vec::new());
    while !signals.stopping() {
        signals.wait_with(socket)?;
        children -= reap(WaitPidFlag::WNOHANG).len();
        drain(
            |buf| socket.recv_from(buf),
            || signals.stopping(),
            &mut buf,
            |input, from| {
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
                        exit(0)
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
) -> io::Result<ServeReport> {
    let signals = Signals::new()?;
    // Children block in `recv_from`; whichever the kernel wakes takes the datagram.
    socket.set_nonblocking(false)?;
    let served = shared_counter()?;
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
            Ok(ForkResult::Child) => worker(service, socket, served, parent, &stop_signals),
            Ok(ForkResult::Parent { child }) => children.push(child),
            Err(e) => {
                tracing::error!(target: "warren", "udp prefork: {e}");
                break;
            }
        }
    }
    stop_signals.thread_unblock()?;

    while !signals.stopping() && !children.is_empty() {
        signals.wait()?;
        for (pid, status) in reap(WaitPidFlag::WNOHANG) {
            tracing::error!(target: "warren", "udp prefork: worker {pid} ended: {status:?}");
            children.retain(|&c| c != pid);
        }
    }
    for &child in &children {
        let _ = kill(child, Signal::SIGTERM);
    }
    reap(WaitPidFlag::empty());
    let report = ServeReport { accepted: served.load(Ordering::Relaxed), ..ServeReport::default() };
    if signals.stopping() { Ok(report) } else { Err(io::Error::other("udp prefork: every worker process ended")) }
}

/// A prefork child: receive and answer until a signal ends the process.
fn worker<D: DatagramService>(service: &D, socket: &UdpSocket, served: &AtomicU64, parent: Pid, stop: &SigSet) -> ! {
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: restoring the default disposition installs no handler.
        let _ = unsafe { signal(sig, SigHandler::SigDfl) };
    }
    // End with the parent even if it is killed outright; it may already be gone.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
    if nix::unistd::getppid() != parent || stop.thread_unblock().is_err() {
        exit(1);
    }
    let (mut buf, mut reply) = (vec![0u8; MAX_DATAGRAM], Vec::new());
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => answer(service, &buf[..n], from, &mut reply, served, |r, to| socket.send_to(r, to)),
            Err(e) if is_transient(&e) => {}
            Err(e) => {
                tracing::error!(target: "warren", "udp prefork worker: {e}");
                exit(1);
            }
        }
    }
}

/// Leave a child process without running the parent's destructors or flushing its buffers.
fn exit(code: i32) -> ! {
    // SAFETY: `_exit` is always safe to call; it ends the process at once.
    unsafe { nix::libc::_exit(code) }
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

/// A counter in memory shared with the children forked after it is made: prefork's only shared
/// memory, so that the parent can report what its children served.
fn shared_counter() -> io::Result<&'static AtomicU64> {
    use std::num::NonZeroUsize;

    use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous};

    let len = NonZeroUsize::new(size_of::<AtomicU64>()).expect("non-zero size");
    // SAFETY: a fresh anonymous mapping, page-aligned and zero-filled, which is a valid
    // AtomicU64; it is never unmapped, so the 'static reference stays valid.
    unsafe {
        let ptr = mmap_anonymous(None, len, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_SHARED)
            .map_err(io::Error::from)?;
        Ok(&*ptr.as_ptr().cast::<AtomicU64>())
    }
}

/// SIGINT, SIGTERM and SIGCHLD delivered to a single-threaded parent: each writes a byte to a
/// self-pipe that the parent polls; SIGINT and SIGTERM also set the stop flag first.
struct Signals {
    pipe: UnixStream,
    stop: Arc<AtomicBool>,
    ids: Vec<SigId>,
}

impl Signals {
    fn new() -> io::Result<Self> {
        let (pipe, write) = UnixStream::pair()?;
        pipe.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut ids = Vec::new();
        // The flags are registered first, so that the flag is set before the pipe wakes us.
        for sig in [SIGINT, SIGTERM] {
            ids.push(signal_hook::flag::register(sig, stop.clone())?);
        }
        for sig in [SIGINT, SIGTERM, SIGCHLD] {
            ids.push(signal_hook::low_level::pipe::register(sig, write.try_clone()?)?);
        }
        Ok(Self { pipe, stop, ids })
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Wait for a signal.
    fn wait(&self) -> io::Result<()> {
        self.poll(None)
    }

    /// Wait for a signal or a datagram on `socket`.
    fn wait_with(&self, socket: &UdpSocket) -> io::Result<()> {
        self.poll(Some(socket))
    }

    fn poll(&self, socket: Option<&UdpSocket>) -> io::Result<()> {
        let mut fds = vec![PollFd::new(self.pipe.as_fd(), PollFlags::POLLIN)];
        fds.extend(socket.map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN)));
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        // Empty the pipe: the signals it stood for are handled by the caller's next look.
        let mut sink = [0u8; 64];
        while matches!((&self.pipe).read(&mut sink), Ok(n) if n > 0) {}
        Ok(())
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for &id in &self.ids {
            signal_hook::low_level::unregister(id);
        }
    }
}
