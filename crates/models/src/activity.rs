//! The time of the last activity on any connection, for `--idle-exit` (the course's chat server
//! "self-destructs after 3 minutes idle").
//!
//! The `fork` and `prefork` models keep this one word in a shared anonymous mapping made before
//! the first fork: with a server's metrics counters ([`shared_slots`]), it is the only memory
//! their processes share. Rooms and counters need ordering
//! and mutual exclusion and go through the hub process instead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When anything last happened, as milliseconds since the server started.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    last_ms: &'static AtomicU64,
}

impl Activity {
    /// A clock private to this process.
    pub fn new(start: Instant) -> Self {
        Self { start, last_ms: Box::leak(Box::new(AtomicU64::new(0))) }
    }

    /// A clock shared with every process forked after this call.
    pub fn shared(start: Instant) -> std::io::Result<Self> {
        Ok(Self { start, last_ms: shared_zeroed()? })
    }

    /// Something happened at `now`.
    pub fn touch(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.start).as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// When the server becomes idle for `period` unless something happens first.
    pub fn idle_at(&self, period: Duration) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + period
    }
}

/// A zeroed counter in an anonymous mapping shared with every process forked afterwards.
pub(crate) fn shared_zeroed() -> std::io::Result<&'static AtomicU64> {
    Ok(&shared_slots(1)?[0])
}

/// `n` zeroed counters in an anonymous mapping shared with every process forked afterwards: what
/// a server's metrics count in under `fork` and `prefork`, so that a scrape answered by any of
/// its processes sees them all.
pub fn shared_slots(n: usize) -> std::io::Result<&'static [AtomicU64]> {
    use std::num::NonZeroUsize;

    use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous};

    let len = NonZeroUsize::new(n.max(1) * std::mem::size_of::<AtomicU64>()).expect("non-zero size");
    // SAFETY: a fresh anonymous mapping is page-aligned and zero-filled, which is a valid array
    // of AtomicU64; it is never unmapped, so the 'static slice stays valid.
    unsafe {
        let ptr = mmap_anonymous(None, len, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_SHARED)
            .map_err(std::io::Error::from)?;
        Ok(std::slice::from_raw_parts(ptr.as_ptr().cast::<AtomicU64>(), n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_deadline_moves_with_activity() {
        let t0 = Instant::now();
        let a = Activity::new(t0);
        assert_eq!(a.idle_at(Duration::from_secs(5)), t0 + Duration::from_secs(5));
        a.touch(t0 + Duration::from_secs(2));
        a.touch(t0 + Duration::from_secs(1));
        assert_eq!(a.idle_at(Duration::from_secs(5)), t0 + Duration::from_secs(7));
    }

    #[test]
    fn shared_clock_is_seen_by_a_child_process() {
        let t0 = Instant::now();
        let a = Activity::shared(t0).unwrap();
        // A real child process writes; the parent reads through the same mapping.
        // SAFETY: the child only touches an atomic and calls _exit.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                a.touch(t0 + Duration::from_secs(9));
                // SAFETY: _exit is async-signal-safe and skips the test harness's destructors.
                unsafe { nix::libc::_exit(0) };
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(a.idle_at(Duration::ZERO), t0 + Duration::from_secs(9));
            }
        }
    }
}
