//! Where an object's replicas are: the one question the replica-aware middleware asks.
//! [`Location`](crate::location::Location) answers it from the registry; [`Fixed`] from a list.

use std::future::Future;
use std::net::SocketAddr;

use warren_rpc::{Code, Failure, RpcError};

use crate::pool::Pool;

/// A source of an object's replicas, and the connections to them.
pub trait Replicas: Clone + Send + Sync + 'static {
    /// The addresses of the servers hosting `object` now (never empty on success).
    fn replicas(&self, object: &str) -> impl Future<Output = Result<Vec<SocketAddr>, Failure>> + Send;

    /// Where connections to those addresses are kept.
    fn pool(&self) -> &Pool;
}

/// The same servers for every object: replicas known in advance, no registry.
#[derive(Clone, Debug)]
pub struct Fixed {
    addrs: Vec<SocketAddr>,
    pool: Pool,
}

impl Fixed {
    pub fn new(addrs: Vec<SocketAddr>) -> Fixed {
        Fixed { addrs, pool: Pool::default() }
    }
}

impl Replicas for Fixed {
    async fn replicas(&self, object: &str) -> Result<Vec<SocketAddr>, Failure> {
        if self.addrs.is_empty() {
            return Err(no_replicas(object));
        }
        Ok(self.addrs.clone())
    }

    fn pool(&self) -> &Pool {
        &self.pool
    }
}

pub(crate) fn no_replicas(object: &str) -> Failure {
    Failure::Rpc(RpcError::new(Code::NoSuchObject, format!("no server hosts {object:?}")))
}
