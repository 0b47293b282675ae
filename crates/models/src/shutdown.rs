//! Graceful shutdown: one trigger that every driver can wait on.
//!
//! The trigger is an eventfd that is written once and never read, so it stays readable: any
//! number of threads can include it in `poll` and all of them wake. Drivers that cannot poll a
//! file descriptor (the tokio ones, the mio loop) register a callback instead.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::eventfd::{EfdFlags, EventFd};

type Callback = Box<dyn Fn() + Send + Sync>;

/// A one-way switch from "serving" to "shutting down".
pub struct Shutdown {
    fired: AtomicBool,
    fd: OwnedFd,
    callbacks: Mutex<Vec<Callback>>,
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown").field("fired", &self.is_triggered()).finish()
    }
}

impl Shutdown {
    /// A switch in the "serving" position.
    pub fn new() -> std::io::Result<Self> {
        let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(Self { fired: AtomicBool::new(false), fd: efd.into(), callbacks: Mutex::new(Vec::new()) })
    }

    /// Start shutting down. Idempotent.
    pub fn trigger(&self) {
        if !self.fired.swap(true, Ordering::SeqCst) {
            let _ = nix::unistd::write(&self.fd, &1u64.to_ne_bytes());
            for callback in self.callbacks.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                callback();
            }
        }
    }

    /// Trigger from inside a signal handler: only an atomic store and a `write`, both
    /// async-signal-safe; callbacks are not run (forked children poll the descriptor instead).
    fn trigger_from_signal(&self) {
        if !self.fired.swap(true, Ordering::SeqCst) {
            let _ = nix::unistd::write(&self.fd, &1u64.to_ne_bytes());
        }
    }

    /// Whether `trigger` was called.
    pub fn is_triggered(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    /// A descriptor that becomes readable, and stays so, once triggered.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Run `callback` when triggered (at once if already triggered).
    pub fn on_trigger(&self, callback: impl Fn() + Send + Sync + 'static) {
        let mut callbacks = self.callbacks.lock().unwrap_or_else(|e| e.into_inner());
        if self.is_triggered() {
            callback();
        }
        callbacks.push(Box::new(callback));
    }
}

/// Trigger `shutdown` on SIGINT or SIGTERM, from a small thread. For thread-based models only:
/// the `fork` and `prefork` parents stay single-threaded and use a self-pipe instead.
pub fn trigger_on_signals(shutdown: std::sync::Arc<Shutdown>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new().name("warren-signals".into()).spawn(move || {
        if signals.forever().next().is_some() {
            shutdown.trigger();
        }
    })?;
    Ok(())
}

/// Trigger `shutdown` on SIGINT or SIGTERM from the signal handler itself, without a thread: for
/// the single-threaded children of the `fork` and `prefork` models.
///
/// The handler is installed with a plain `sigaction`, replacing the parent's (see
/// [`crate::procs::ParentSignals::forget_in_child`]), and the call allocates nothing. That is
/// the point: a child shares its heap with the parent copy-on-write, and every allocation takes a
/// free chunk somewhere in that heap and copies its page. Registering through signal-hook copied
/// its handler table once per change, seven times per child, which cost each child about four
/// pages of its own.
pub(crate) fn trigger_on_signals_in_child(shutdown: std::sync::Arc<Shutdown>) -> std::io::Result<()> {
    use std::sync::atomic::AtomicPtr;

    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

    /// The child's one shutdown switch; set once per process and never freed.
    static CHILD_SHUTDOWN: AtomicPtr<Shutdown> = AtomicPtr::new(std::ptr::null_mut());

    extern "C" fn on_stop(_: nix::libc::c_int) {
        let shutdown = CHILD_SHUTDOWN.load(Ordering::SeqCst);
        // SAFETY: the pointer is null or comes from `Arc::into_raw` and is never released.
        if let Some(shutdown) = unsafe { shutdown.as_ref() } {
            shutdown.trigger_from_signal();
        }
    }

    // A second call (none today) would leak the first switch rather than free it under a handler.
    CHILD_SHUTDOWN.store(std::sync::Arc::into_raw(shutdown).cast_mut(), Ordering::SeqCst);
    let action = SigAction::new(SigHandler::Handler(on_stop), SaFlags::SA_RESTART, SigSet::empty());
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only performs an atomic load and swap and a write(2) to an eventfd.
        unsafe { sigaction(signal, &action) }?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

    use super::*;

    #[test]
    fn fd_stays_readable_and_callbacks_run_once() {
        let s = Shutdown::new().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        s.on_trigger(move || {
            h.fetch_add(1, Ordering::SeqCst);
        });
        let mut fds = [PollFd::new(s.fd(), PollFlags::POLLIN)];
        assert_eq!(poll(&mut fds, PollTimeout::ZERO).unwrap(), 0);
        s.trigger();
        s.trigger();
        for _ in 0..2 {
            let mut fds = [PollFd::new(s.fd(), PollFlags::POLLIN)];
            assert_eq!(poll(&mut fds, PollTimeout::ZERO).unwrap(), 1);
        }
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        let h = hits.clone();
        s.on_trigger(move || {
            h.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(hits.load(Ordering::SeqCst), 2, "late callbacks run at once");
    }
}
