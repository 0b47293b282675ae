//! The reader's low-latency wait: poll the socket for a bounded time while calls wait for
//! answers, before sleeping until it is readable (as eRPC and Seastar poll, and as
//! `SO_BUSY_POLL` has the kernel do). On loopback a sleeping client's wake-up is about half of
//! a round trip; polling through it costs the CPU instead.

use std::io;
use std::time::{Duration, Instant};

use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::Notify;

/// A connection's busy-poll state, shared by its callers and its reader.
pub(super) struct BusyPoll {
    budget: Duration,
    /// Told of every call sent, so that a reader asleep since its last budget ran out polls
    /// again for the new call.
    sent: Notify,
}

impl BusyPoll {
    pub(super) fn new(budget: Duration) -> Self {
        Self { budget, sent: Notify::new() }
    }

    /// A call was sent: its answer is worth polling for.
    pub(super) fn call_sent(&self) {
        self.sent.notify_one();
    }

    /// Read into `buf`. While `waiting()` (calls wait for answers) and for at most the budget
    /// since this read began or since the last call sent, try the socket, yielding to the
    /// runtime between tries so that the thread's other tasks (the callers, the writer, other
    /// connections) run; after that, sleep until the socket is readable or a call is sent.
    pub(super) async fn read(
        &self,
        socket: &OwnedReadHalf,
        buf: &mut [u8],
        waiting: impl Fn() -> bool,
    ) -> io::Result<usize> {
        let mut until = Instant::now() + self.budget;
        loop {
            match socket.try_read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if waiting() && Instant::now() < until {
                tokio::task::yield_now().await;
                continue;
            }
            // Created before the wait, a `Notified` misses no call sent after it: one sent
            // while nobody waited left a permit, which at worst re-arms the budget once.
            tokio::select! {
                ready = socket.readable() => ready?,
                () = self.sent.notified() => until = Instant::now() + self.budget,
            }
        }
    }
}
