//! Server-model drivers for warren: eight ways to serve any `warren_proto::Service`.
//!
//! Each model is a thin driver over the same sans-IO interface, so comparing models measures
//! the models, not eight protocol implementations:
//!
//! | model | concurrency | shared state lives |
//! |---|---|---|
//! | [`Model::Iterative`] | one connection at a time, blocking | in the process (mutex) |
//! | [`Model::Thread`] | a kernel thread per connection | in the process (mutex) |
//! | [`Model::Pool`] | N threads, connections handed over by one poller, bounded queue | in the process |
//! | [`Model::Fork`] | a process per connection | in a hub process, over a Unix socket |
//! | [`Model::Prefork`] | N processes accepting on one listener | in a hub process, over a Unix socket |
//! | [`Model::Event`] | one thread, epoll, each connection a state machine | in the process |
//! | [`Model::Green`] | user-space tasks on one kernel thread | in the process |
//! | [`Model::Hybrid`] | M:N tasks over a work-stealing pool of kernel threads | in the process |
//!
//! Every model: graceful shutdown on SIGINT and SIGTERM ([`Shutdown`]), the protocol's idle and
//! read timeouts, a connection limit with a clear refusal, and `accept` running out of file
//! descriptors handled without spinning ([`accept`]).

pub mod accept;
pub mod activity;
mod blocking;
mod conn;
mod engine;
mod event;
mod fork;
mod green;
pub mod handoff;
mod helpers;
mod hub_process;
mod idle;
mod iterative;
mod local_hub;
mod pool;
mod prefork;
mod procs;
mod relro;
mod run;
pub mod shutdown;
mod thread;
pub mod udp;
mod urgent;

#[doc(hidden)]
pub mod fuzzing {
    pub use crate::hub_process::{Down, FrameError, MAX_FRAME, Up, decode_frame, encode_frame};
}

pub use accept::{AsyncAcceptor, Listener};
pub use activity::Activity;
pub use conn::ACCESS_TARGET;
pub use idle::IdleConfig;
pub use run::{GRACE, Model, ServeConfig, ServeReport, serve, serve_until};
pub use shutdown::Shutdown;
pub use urgent::UrgentMode;
