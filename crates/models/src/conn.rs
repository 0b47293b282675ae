//! Small pieces every driver uses for each connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::SystemTime;

use warren_proto::{ConnInfo, Level, SessionId};

/// A session id unique across every process of this server: the pid in the high half, a
/// per-process counter in the low half.
pub(crate) fn next_session_id() -> SessionId {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    SessionId((u64::from(pid()) << 32) | u64::from(n))
}

/// This process's id, without a system call per connection: cached, and forgotten in a child
/// after `fork` (by a handler registered with the first call).
fn pid() -> u32 {
    static PID: AtomicU32 = AtomicU32::new(0);
    static REGISTER: std::sync::Once = std::sync::Once::new();
    extern "C" fn forget() {
        PID.store(0, Ordering::Relaxed);
    }
    REGISTER.call_once(|| {
        // SAFETY: `forget` only stores to an atomic, which is async-signal-safe as a fork
        // handler requires.
        unsafe {
            nix::libc::pthread_atfork(None, None, Some(forget));
        }
    });
    match PID.load(Ordering::Relaxed) {
        0 => {
            let pid = std::process::id();
            PID.store(pid, Ordering::Relaxed);
            pid
        }
        pid => pid,
    }
}

/// What a session learns about its new connection.
pub(crate) fn conn_info(peer: Option<SocketAddr>) -> ConnInfo {
    let id = next_session_id();
    // fastrand's per-thread state is copied by fork, so mix in the (pid-carrying) id.
    let seed = fastrand::u64(..) ^ id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ConnInfo { id, peer, wall: SystemTime::now(), seed }
}

/// The `tracing` target of access-log lines ([`Level::Access`]), which the binary routes to the
/// access log.
pub const ACCESS_TARGET: &str = "warren::access";

/// Write a session's log line through `tracing`.
pub(crate) fn log_line(level: Level, line: &str) {
    match level {
        Level::Error => tracing::error!(target: "warren", "{line}"),
        Level::Info => tracing::info!(target: "warren", "{line}"),
        Level::Debug => tracing::debug!(target: "warren", "{line}"),
        Level::Access => tracing::info!(target: ACCESS_TARGET, "{line}"),
    }
}
