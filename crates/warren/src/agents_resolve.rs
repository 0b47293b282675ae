//! Where a moving agent goes: `migrate(dest)` and `warren agents move ID DEST` name a node's
//! agent host as `ADDR:PORT`, `HOST:PORT`, or a name in this node's registry (its first TCP
//! endpoint), as the CLI finds NODE.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use warren_agents::roster::{Resolve, resolve_address};
use warren_registry::client::Client;
use warren_registry::{Name, Transport};

use crate::up_registry::Link;

/// How long a lookup may take, connection included: a hop waits for it.
const LOOKUP_WITHIN: Duration = Duration::from_secs(5);

/// A resolver for the node's roster: addresses as they are, names through `registry` (the
/// registry this node registers with, if any).
pub fn resolver(registry: Option<Link>) -> Resolve {
    Arc::new(move |dest: &str| {
        let dest = dest.trim();
        // A registry name has no colon; an address always has one (its port).
        if dest.contains(':') {
            return resolve_address(dest);
        }
        let link = registry.as_ref().ok_or_else(|| {
            format!("{dest:?} is not ADDR:PORT or HOST:PORT, and this node has no registry to look it up in")
        })?;
        let at =
            (*link.target.borrow()).ok_or_else(|| format!("{dest:?}: this node's registry is not listening yet"))?;
        lookup(at, dest)
    })
}

/// The first TCP endpoint registered under `name` in the registry at `at`.
fn lookup(at: SocketAddr, name: &str) -> Result<SocketAddr, String> {
    let registered = Name::new(name.to_owned())
        .map_err(|error| format!("{name:?} is neither ADDR:PORT nor a registry name: {error}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("no runtime for the lookup: {error}"))?;
    let entry = runtime.block_on(async {
        let asked = async {
            let client = Client::connect(at, LOOKUP_WITHIN).await.map_err(|e| e.to_string())?;
            client.lookup(&registered).await.map_err(|e| e.to_string())
        };
        tokio::time::timeout(LOOKUP_WITHIN, asked)
            .await
            .map_err(|_| format!("the registry at {at} did not answer within {LOOKUP_WITHIN:?}"))?
    });
    let (_, entry) = entry.map_err(|error| format!("looking up {name:?} in the registry at {at}: {error}"))?;
    entry
        .endpoints
        .iter()
        .find(|e| e.transport == Transport::Tcp)
        .map(|e| SocketAddr::new(e.addr, e.port))
        .ok_or_else(|| format!("{name:?} has no TCP endpoint in the registry at {at}"))
}
