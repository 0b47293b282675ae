//! The registry server: the binary protocol ([`crate::session`]) served by one of warren's server
//! models in front of any [`Backend`], like every other protocol.
//!
//! Requests are future jobs: under `green` and `hybrid` they run on the model's own runtime,
//! under the others on the futures runtime beside the connection's thread or loop, which takes
//! the answers as they come; so under every in-process model a connection's pipelined requests
//! and its watches are answered concurrently, in the order they finish. `fork` and `prefork`
//! are refused: the store is shared by every connection of one process. `hybrid` is
//! `warren registry`'s default.

use std::future::Future;
use std::sync::Arc;

use warren_models::{Listener, Model, ServeConfig, Shutdown, serve_until};
use warren_registry::backend::Backend;

pub use crate::session::Limits;
use crate::session::Registry;

/// What a server did, for its closing line.
#[derive(Debug, Default)]
pub struct Report {
    pub accepted: u64,
    pub refused: u64,
}

/// Serves `listener` under `model` until `shutdown` completes, then stops accepting, ends every
/// watch, lets answers in progress go out (for up to the models' grace period) and returns.
/// Dropping the returned future stops the server the same way, without waiting for it.
pub async fn serve<B: Backend + ?Sized>(
    backend: Arc<B>,
    listener: impl Into<Listener>,
    limits: Limits,
    model: Model,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<Report> {
    let (listener, trigger) = (listener.into(), Arc::new(Shutdown::new()?));
    let config = ServeConfig {
        max_conns: limits.max_conns,
        write_timeout: limits.write_timeout,
        ..ServeConfig::for_model(model)
    };
    let service = Registry { backend, limits };
    let stop = trigger.clone();
    // The server runs on a blocking thread that only the trigger ends: were this future dropped
    // unfinished (its task aborted, or its runtime shut down), that thread would serve on, and a
    // runtime shutting down waits for its blocking threads without end.
    let _stop_on_drop = StopOnDrop(trigger.clone());
    let mut serving = tokio::task::spawn_blocking(move || serve_until(model, service, listener, &config, stop));
    tokio::pin!(shutdown);
    let report = tokio::select! {
        served = &mut serving => served,
        () = &mut shutdown => {
            trigger.trigger();
            serving.await
        }
    };
    let report = report.map_err(std::io::Error::other)??;
    Ok(Report { accepted: report.accepted, refused: report.refused })
}

/// Triggers a server's shutdown when dropped.
struct StopOnDrop(Arc<Shutdown>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.trigger();
    }
}
