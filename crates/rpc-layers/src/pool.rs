//! Connections kept by address: one multiplexed [`Connection`] per object server, opened on
//! first use and opened again when the server closed it.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use warren_rpc::Connection;

/// How long opening a connection may take (a refused connection fails at once on loopback).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Open connections by address. Cheap to clone; clones share the connections.
#[derive(Clone, Debug)]
pub struct Pool {
    connections: Arc<Mutex<HashMap<SocketAddr, Connection>>>,
    connect_timeout: Duration,
}

impl Default for Pool {
    fn default() -> Self {
        Pool::new(CONNECT_TIMEOUT)
    }
}

impl Pool {
    pub fn new(connect_timeout: Duration) -> Pool {
        Pool { connections: Arc::default(), connect_timeout }
    }

    /// The connection to `addr`, opened if there is none or the last one closed.
    pub async fn get(&self, addr: SocketAddr) -> io::Result<Connection> {
        if let Some(open) = self.connections.lock().expect("pool").get(&addr).filter(|c| !c.is_closed()) {
            return Ok(open.clone());
        }
        // Two callers may race here; the loser's connection is dropped, which closes it.
        let fresh = Connection::connect(addr, self.connect_timeout).await?;
        let mut connections = self.connections.lock().expect("pool");
        let kept = connections.entry(addr).or_insert_with(|| fresh.clone());
        if kept.is_closed() {
            *kept = fresh;
        }
        Ok(kept.clone())
    }

    /// Close the connections to addresses not in `keep` (replicas that went away).
    pub fn retain(&self, keep: &[SocketAddr]) {
        self.connections.lock().expect("pool").retain(|addr, _| keep.contains(addr));
    }
}
