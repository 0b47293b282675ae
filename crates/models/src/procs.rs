//! What the `fork` and `prefork` parents share: signals through a self-pipe (the parents stay
//! single-threaded, so that forking is safe), reaping, and stopping children.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use signal_hook::SigId;
use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM};

pub(crate) use crate::run::GRACE;

/// The parent's signal handling: every signal writes a byte to a socket the parent polls.
pub(crate) struct ParentSignals {
    read: UnixStream,
    term: Arc<AtomicBool>,
    ids: Vec<SigId>,
}

impl ParentSignals {
    pub(crate) fn install() -> io::Result<Self> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let term = Arc::new(AtomicBool::new(false));
        let mut ids = Vec::new();
        for signal in [SIGINT, SIGTERM] {
            ids.push(signal_hook::flag::register(signal, term.clone())?);
        }
        for signal in [SIGINT, SIGTERM, SIGCHLD] {
            ids.push(signal_hook::low_level::pipe::register(signal, write.try_clone()?)?);
        }
        Ok(Self { read, term, ids })
    }

    /// The descriptor to poll.
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Empty the pipe; return whether SIGINT or SIGTERM arrived.
    pub(crate) fn drain(&self) -> bool {
        let mut sink = [0u8; 64];
        while matches!((&self.read).read(&mut sink), Ok(n) if n > 0) {}
        self.term.load(Ordering::SeqCst)
    }

    /// Whether SIGINT or SIGTERM has arrived.
    pub(crate) fn stopping(&self) -> bool {
        self.term.load(Ordering::SeqCst)
    }

    /// In a new child: stop reacting as the parent does. SIGINT and SIGTERM get the child's own
    /// handlers (`trigger_on_signals_in_child`), SIGCHLD its default action; the parent's
    /// signal-hook registrations are left in place rather than unregistered, since each change
    /// copies signal-hook's table on the heap the child shares with its parent.
    pub(crate) fn forget_in_child(self) -> io::Result<()> {
        use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
        let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
        // SAFETY: restoring the default action installs no handler.
        unsafe { sigaction(Signal::SIGCHLD, &default) }?;
        let Self { read, term, ids } = self;
        drop(read);
        std::mem::forget((term, ids));
        Ok(())
    }
}

/// Reap every child that has ended; remove them from `children`.
pub(crate) fn reap(children: &mut HashSet<Pid>) -> Vec<Pid> {
    let mut ended = Vec::new();
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return ended,
            Ok(status) => {
                if let Some(pid) = status.pid() {
                    children.remove(&pid);
                    ended.push(pid);
                }
            }
        }
    }
}

/// SIGTERM every child, wait up to [`GRACE`] for them, then SIGKILL the rest.
pub(crate) fn stop_children(children: &mut HashSet<Pid>, signals: &ParentSignals) {
    for &pid in children.iter() {
        let _ = kill(pid, Signal::SIGTERM);
    }
    let until = Instant::now() + GRACE;
    while !children.is_empty() {
        reap(children);
        let left = until.saturating_duration_since(Instant::now());
        if children.is_empty() || left.is_zero() {
            break;
        }
        wait_readable(signals, Some(left.min(Duration::from_millis(100))));
        signals.drain();
    }
    for pid in children.drain() {
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
    }
}

/// Fork with SIGINT and SIGTERM blocked, so that a child never loses a stop signal in the window
/// before it has installed its own handlers; the parent unblocks them at once, the child calls
/// [`child_ready`] once its handlers are in place.
pub(crate) fn fork_blocking_stop_signals() -> io::Result<nix::unistd::ForkResult> {
    let stop = stop_signals();
    stop.thread_block()?;
    // SAFETY: the callers' processes are single-threaded (see `fork.rs` and `prefork.rs`).
    let forked = unsafe { nix::unistd::fork() };
    if !matches!(forked, Ok(nix::unistd::ForkResult::Child)) {
        stop.thread_unblock()?;
    }
    forked.map_err(io::Error::from)
}

/// In a child made by [`fork_blocking_stop_signals`], once its handlers are installed: drop the
/// parent's handlers, die with the parent, and let pending stop signals in.
pub(crate) fn child_ready(signals: ParentSignals, parent: nix::unistd::Pid) -> io::Result<()> {
    signals.forget_in_child()?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
    if nix::unistd::getppid() != parent {
        // The parent died before PDEATHSIG was armed.
        exit_child(1);
    }
    stop_signals().thread_unblock()?;
    Ok(())
}

fn stop_signals() -> nix::sys::signal::SigSet {
    [Signal::SIGINT, Signal::SIGTERM].into_iter().collect()
}

/// Wait until the signal pipe is readable or `timeout` passes.
pub(crate) fn wait_readable(signals: &ParentSignals, timeout: Option<Duration>) {
    let mut fds = [PollFd::new(signals.fd(), PollFlags::POLLIN)];
    let _ = poll(&mut fds, poll_timeout(timeout));
}

/// A `poll` timeout, rounded up to whole milliseconds.
pub(crate) fn poll_timeout(timeout: Option<Duration>) -> PollTimeout {
    match timeout {
        Some(d) => {
            PollTimeout::try_from(d.as_millis().min(i32::MAX as u128 - 1) as i32 + 1).unwrap_or(PollTimeout::MAX)
        }
        None => PollTimeout::NONE,
    }
}

/// End a forked child without running the parent's destructors or atexit handlers twice.
pub(crate) fn exit_child(code: i32) -> ! {
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // SAFETY: _exit ends the process at once; nothing after it runs.
    unsafe { nix::libc::_exit(code) }
}
