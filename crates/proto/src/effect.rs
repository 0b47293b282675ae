//! Effects that finish later: jobs, outbound connections and hand-offs.
//!
//! A session never waits. When it needs something that takes time (a file opened on a slow
//! disk, an `fsync`, an answer from an asynchronous store, a connection to another server) it
//! describes the work as a value, names it with a [`Token`], and goes on; the driver performs
//! it in its model's way and hands the result back through a `handle_*` call carrying the same
//! token. The thread-based models run a job on the connection's own thread; `event`, `green`
//! and `hybrid` run it on a bounded pool of helper threads (as nginx's thread pools do for
//! blocking file I/O), so one slow disk stalls only the connections that wait for it.
//!
//! Building a job performs nothing: the closure or future runs only when the driver runs it.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

/// Names one effect started by a session (or a hub); its completion carries it back. Chosen by
/// whoever started the effect, so that it can tell its answers apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub u64);

/// Work that may wait, with its result of type `D`.
pub enum Job<D> {
    /// A blocking call: a file opened, written or synced, a directory read, a sleep.
    Blocking(Box<dyn FnOnce() -> D + Send>),
    /// An asynchronous computation (a call on an async store), polled on a tokio runtime.
    Future(Pin<Box<dyn Future<Output = D> + Send>>),
}

impl<D> Job<D> {
    /// A job that makes blocking calls.
    pub fn blocking(f: impl FnOnce() -> D + Send + 'static) -> Self {
        Job::Blocking(Box::new(f))
    }

    /// A job that awaits `future` on a tokio runtime.
    pub fn future(future: impl Future<Output = D> + Send + 'static) -> Self {
        Job::Future(Box::pin(future))
    }
}

impl<D> fmt::Debug for Job<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Job::Blocking(_) => "Job::Blocking",
            Job::Future(_) => "Job::Future",
        })
    }
}

/// Names one of a session's streams. The connection the server accepted is
/// [`StreamId::CLIENT`]; streams the session opens with `Output::connect` get the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u32);

impl StreamId {
    /// The accepted connection.
    pub const CLIENT: StreamId = StreamId(0);
}

/// Where a connection is handed: a datagram Unix socket on which another process (or worker)
/// receives connections with `SCM_RIGHTS` (see `warren_models::handoff`). A path starting with
/// `@` names a socket in the abstract namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HandOffTarget(pub PathBuf);

impl HandOffTarget {
    /// A target at `path` (`@name` for the abstract namespace).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self(path.into())
    }
}

impl fmt::Display for HandOffTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.display().fmt(f)
    }
}
