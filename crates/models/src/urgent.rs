//! TCP urgent data ("out-of-band"), for services that opt in with [`ServeConfig::urgent`].
//!
//! Linux reports a new urgent pointer with SIGURG to the socket's owner (`F_SETOWN`), also while
//! the receive window is full and the urgent byte itself cannot arrive; `EPOLLPRI` fires only
//! once the byte is in. So SIGURG is the notification. It does not say which socket, so:
//!
//! 1. [`arm`] makes this process the owner of an accepted socket and sets `SO_OOBINLINE` as
//!    configured.
//! 2. One thread per process ([`Watch`]) waits for SIGURG, counts it in a generation number and
//!    calls every subscriber: the event loop, the pool's poller, each blocking connection thread.
//! 3. The thread that owns a connection at that moment asks its socket ([`Tracker::check`]):
//!    a pointer is pending when `recv(MSG_OOB | MSG_PEEK)` says the byte is there or on its way
//!    (`EAGAIN`). With `SO_OOBINLINE` set that call always fails, so the option is cleared around
//!    it; only that thread reads the socket, so no read sees the option half-way.
//! 4. The session hears [`Urgent::Pointer`] and keeps getting the bytes sent before the urgent
//!    byte (reads never cross the mark); at the mark (`SIOCATMARK`) the driver takes the byte,
//!    out of line with `MSG_OOB` or inline as the next byte, and reports [`Urgent::Mark`].
//!
//! Linux caps the pointer 64 KiB ahead of each segment, so a pointer far ahead is first reported
//! at a place short of the real byte and then moves: a session may hear `Pointer` more than once
//! for one byte, and only `Mark` says where the byte really was.
//!
//! [`ServeConfig::urgent`]: crate::ServeConfig::urgent

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use nix::libc;
use warren_proto::Urgent;

use crate::local_hub::lock;

/// How a server treats TCP urgent data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UrgentMode {
    /// Not armed: the kernel drops the urgent byte from the stream and nobody is told (Linux's
    /// default with `SO_OOBINLINE` off). Sessions never get `handle_urgent`.
    #[default]
    Off,
    /// Armed, `SO_OOBINLINE` off: the byte is taken out of line with `recv(MSG_OOB)`.
    OutOfLine,
    /// Armed, `SO_OOBINLINE` on (what RFC 6093 asks of applications that still use urgent
    /// data): the byte stays in the stream and the driver takes it at the mark.
    Inline,
}

type Callback = Box<dyn Fn() + Send + Sync>;

/// The process's SIGURG watcher: a generation number and the subscribers to wake.
pub(crate) struct Watch {
    generation: AtomicU64,
    subscribers: Mutex<HashMap<u64, Callback>>,
    next: AtomicU64,
}

/// Removes its callback from the watch when dropped.
pub(crate) struct Subscription(u64);

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(watch) = WATCH.get() {
            lock(&watch.subscribers).remove(&self.0);
        }
    }
}

static WATCH: OnceLock<Arc<Watch>> = OnceLock::new();

impl Watch {
    /// The watch of this process, started on first use (in the process that serves: a `fork`
    /// child starts its own).
    pub(crate) fn get() -> io::Result<&'static Arc<Watch>> {
        if let Some(watch) = WATCH.get() {
            return Ok(watch);
        }
        let watch = Arc::new(Watch {
            generation: AtomicU64::new(0),
            subscribers: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
        });
        let mut signals = signal_hook::iterator::Signals::new([libc::SIGURG])?;
        if WATCH.set(watch.clone()).is_err() {
            // Another thread won the race; its thread serves us too.
            signals.handle().close();
            return Ok(WATCH.get().expect("set"));
        }
        std::thread::Builder::new().name("warren-sigurg".into()).spawn(move || {
            for _ in signals.forever() {
                watch.generation.fetch_add(1, Ordering::SeqCst);
                for callback in lock(&watch.subscribers).values() {
                    callback();
                }
            }
        })?;
        Ok(WATCH.get().expect("set"))
    }

    /// How many SIGURG have arrived so far.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Call `wake` after every SIGURG until the subscription is dropped.
    pub(crate) fn subscribe(&self, wake: impl Fn() + Send + Sync + 'static) -> Subscription {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.subscribers).insert(id, Box::new(wake));
        Subscription(id)
    }
}

/// Make this process the owner of `socket` (SIGURG comes here) and set `SO_OOBINLINE` for `mode`.
pub(crate) fn arm(socket: BorrowedFd<'_>, mode: UrgentMode) -> io::Result<()> {
    if mode == UrgentMode::Off {
        return Ok(());
    }
    socket2::SockRef::from(&socket).set_out_of_band_inline(mode == UrgentMode::Inline)?;
    // SAFETY: F_SETOWN takes an integer argument; the descriptor is borrowed and open.
    let rc = unsafe { libc::fcntl(socket.as_raw_fd(), libc::F_SETOWN, libc::getpid()) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// One connection's urgent-data state, kept by whichever thread drives it.
#[derive(Debug)]
pub(crate) struct Tracker {
    mode: UrgentMode,
    /// The watch generation last checked.
    seen: u64,
    /// A pointer was reported and its mark not reached yet.
    until_mark: bool,
    /// Stream bytes the driver has taken (reads, and each byte taken out of line), to tell
    /// whether the kernel dropped an urgent byte unseen ([`Tracker::check`]).
    taken: u64,
    /// An urgent byte went by unseen: its `Mark` is still to be reported.
    passed: bool,
}

impl Tracker {
    pub(crate) fn new(mode: UrgentMode) -> Self {
        // Start from the current generation: a fresh socket has had no urgent data.
        let seen = WATCH.get().map_or(0, |w| w.generation());
        Self { mode, seen, until_mark: false, taken: 0, passed: false }
    }

    /// Whether urgent data is tracked at all.
    pub(crate) fn armed(&self) -> bool {
        self.mode != UrgentMode::Off
    }

    /// Whether a pointer was reported and its mark is still ahead: the driver must then look for
    /// the mark before each read ([`Tracker::at_mark`]) and wait for `POLLPRI` too.
    pub(crate) fn until_mark(&self) -> bool {
        self.until_mark
    }

    /// The driver read `n` bytes of the stream.
    pub(crate) fn taken(&mut self, n: usize) {
        self.taken += n as u64;
    }

    /// After a SIGURG (the generation moved): whether `socket` has a new urgent pointer.
    ///
    /// Out of line, one race needs the byte count: a read that *starts* at the mark skips the
    /// urgent byte (`tcp_recvmsg`'s "urg hole") and the kernel forgets it, so if the byte
    /// arrives between [`Tracker::at_mark`] saying "not at a mark" and that read, no pointer is
    /// pending by the time the SIGURG is handled. The kernel has then taken one byte more from
    /// the stream than the driver was given: that is reported as `Pointer`, and `Mark` (of an
    /// unknown byte, 0) right after.
    pub(crate) fn check(&mut self, socket: BorrowedFd<'_>) -> Option<Urgent> {
        if let Some(mark) = self.passed_mark() {
            return Some(mark);
        }
        let now = WATCH.get()?.generation();
        if !self.armed() || now == self.seen {
            return None;
        }
        self.seen = now;
        match pending(socket, self.mode) {
            Ok(true) => {
                self.until_mark = true;
                Some(Urgent::Pointer)
            }
            Ok(false) if self.mode == UrgentMode::OutOfLine && self.skipped(socket) => {
                self.until_mark = true;
                self.passed = true;
                Some(Urgent::Pointer)
            }
            Ok(false) => None,
            Err(e) => {
                tracing::debug!(target: "warren", "urgent data check: {e}");
                None
            }
        }
    }

    /// Before every read of an armed socket: at a mark, report it. A read at the mark would
    /// take the byte as data (inline) or skip it (out of line), so this runs before each read,
    /// not only after SIGURG, which another thread turns into a wake-up a little later. At a
    /// mark not yet reported, `Pointer` comes first; then, with the byte in, `Mark`.
    /// `Ok(None)`: read normally (not at the mark), or wait for the byte if
    /// [`Tracker::waiting_for_byte`] says so.
    pub(crate) fn at_mark(&mut self, socket: BorrowedFd<'_>) -> io::Result<Option<Urgent>> {
        if let Some(mark) = self.passed_mark() {
            return Ok(Some(mark));
        }
        if !self.armed() || !sockatmark(socket)? {
            return Ok(None);
        }
        if !self.until_mark {
            // At the place of a byte already taken out of line the socket still says "at the
            // mark" until the next read: only a pending pointer is news.
            if !pending(socket, self.mode)? {
                return Ok(None);
            }
            self.until_mark = true;
            return Ok(Some(Urgent::Pointer));
        }
        let mut byte = [0u8; 1];
        let flags = if self.mode == UrgentMode::Inline { libc::MSG_DONTWAIT } else { libc::MSG_OOB };
        // SAFETY: a one-byte buffer we own; MSG_OOB never blocks, and the inline read is
        // non-blocking too.
        let n = unsafe { libc::recv(socket.as_raw_fd(), byte.as_mut_ptr().cast(), 1, flags | libc::MSG_DONTWAIT) };
        if n == 1 {
            // Out of line the byte leaves a one-byte hole in the stream, which the kernel
            // counts as taken; inline it is a byte read.
            self.taken += 1;
            self.until_mark = false;
            return Ok(Some(Urgent::Mark(byte[0])));
        }
        let e = io::Error::last_os_error();
        match (n, e.raw_os_error()) {
            // At the mark, the byte not in yet: `POLLPRI` (out of line) or `POLLIN` (inline)
            // says when it is.
            (_, Some(libc::EAGAIN)) => Ok(None),
            // The peer closed before its urgent byte: there is no mark to reach.
            (0, _) | (_, Some(libc::EINVAL)) => {
                self.until_mark = false;
                Ok(None)
            }
            _ => Err(e),
        }
    }

    /// Whether the socket sits at the mark with the byte still to come: a normal read now would
    /// (out of line) skip the byte when it comes, so wait instead.
    pub(crate) fn waiting_for_byte(&self, socket: BorrowedFd<'_>) -> bool {
        self.until_mark && sockatmark(socket).unwrap_or(false)
    }
}

impl Tracker {
    /// The `Mark` of an urgent byte the kernel skipped, once, after its `Pointer`: the byte
    /// itself is gone, so it is reported as 0.
    fn passed_mark(&mut self) -> Option<Urgent> {
        if !std::mem::take(&mut self.passed) {
            return None;
        }
        self.until_mark = false;
        Some(Urgent::Mark(0))
    }

    /// Whether the kernel has taken more of the stream than the driver was given: bytes in
    /// sequence so far (`tcpi_bytes_received`) less those still queued (`SIOCINQ`). Only while
    /// the peer has not closed: its FIN counts as a byte received.
    fn skipped(&mut self, socket: BorrowedFd<'_>) -> bool {
        let Some((received, queued)) = stream_counts(socket) else { return false };
        let consumed = received.saturating_sub(queued);
        if consumed > self.taken {
            self.taken = consumed;
            return true;
        }
        false
    }
}

/// `(bytes received in sequence, bytes queued unread)`, while the peer has not closed.
fn stream_counts(socket: BorrowedFd<'_>) -> Option<(u64, u64)> {
    // SAFETY: tcp_info is plain data; the kernel fills at most `len` bytes of it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the pointer and length describe `info`, which we own.
    let rc = unsafe {
        libc::getsockopt(socket.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, (&raw mut info).cast(), &mut len)
    };
    const ESTABLISHED: u8 = 1;
    const FIN_WAIT1: u8 = 4;
    const FIN_WAIT2: u8 = 5;
    if rc != 0 || !matches!(info.tcpi_state, ESTABLISHED | FIN_WAIT1 | FIN_WAIT2) {
        return None;
    }
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD (SIOCINQ) writes one int through the pointer, which points to ours.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::FIONREAD, &mut queued) } != 0 {
        return None;
    }
    Some((info.tcpi_bytes_received, queued.max(0) as u64))
}

/// Whether `socket` has an urgent pointer whose byte is not read yet.
fn pending(socket: BorrowedFd<'_>, mode: UrgentMode) -> io::Result<bool> {
    let sock = socket2::SockRef::from(&socket);
    if mode == UrgentMode::Inline {
        sock.set_out_of_band_inline(false)?;
    }
    let mut byte = [0u8; 1];
    // SAFETY: a one-byte buffer we own; MSG_OOB never blocks.
    let n = unsafe { libc::recv(socket.as_raw_fd(), byte.as_mut_ptr().cast(), 1, libc::MSG_OOB | libc::MSG_PEEK) };
    let e = io::Error::last_os_error();
    if mode == UrgentMode::Inline {
        sock.set_out_of_band_inline(true)?;
    }
    match (n, e.raw_os_error()) {
        (1, _) => Ok(true),
        // The pointer is known and the byte still on its way: the full-window case.
        (_, Some(libc::EAGAIN)) => Ok(true),
        // No urgent data, or already read.
        (_, Some(libc::EINVAL)) | (0, _) => Ok(false),
        _ => Err(e),
    }
}

/// `sockatmark(3)`: whether the next byte to read is the urgent byte.
fn sockatmark(socket: BorrowedFd<'_>) -> io::Result<bool> {
    /// `SIOCATMARK` from `<asm-generic/sockios.h>`; libc does not export it.
    const SIOCATMARK: libc::c_ulong = 0x8905;
    let mut at: libc::c_int = 0;
    // SAFETY: SIOCATMARK writes one int through the pointer, which points to ours.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCATMARK, &mut at) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(at != 0) }
}

#[cfg(test)]
mod tests;
