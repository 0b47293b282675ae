//! The registry's DNS interface: `<name>.<zone>` answered with every healthy endpoint of `name`.
//!
//! - **A** and **AAAA**: every healthy address of that family; **SRV**: one record per endpoint
//!   (priority 0, its weight and port) whose target, `<hex address>.addr.<zone>`, has its A or
//!   AAAA record in the additional section (and answers for itself when queried).
//! - The records are **rotated** from query to query, so that clients taking the first address
//!   spread over all of them.
//! - An answer that does not fit in 512 bytes, or in the size the client advertises with EDNS, is
//!   cut at a whole record with the **TC** bit set; the client then asks over TCP and gets them
//!   all. Nothing is ever dropped silently (Consul's `udp_answer_limit` did that).
//! - A configurable, non-zero **TTL**; negative answers carry the zone's SOA with the TTL as
//!   minimum, so resolvers cache them for the same time.
//! - **Response-rate limiting** over UDP per source prefix, as BIND's RRL: answers beyond the
//!   rate are dropped, every `slip`th sent truncated so that real clients retry over TCP.
//!
//! [`answer`] is the whole protocol as a pure function of the query bytes, the [`Directory`], the
//! [`Config`] and a [`Rotation`]; [`Server`] is the thin UDP and TCP driver around it; `docs/dns.md`
//! describes what goes on the wire. [`RegistryDirectory`] answers from any registry backend.

mod answer;
mod config;
mod encode;
mod metrics;
mod names;
mod prepared;
mod registry;
mod rotation;
mod rrl;
mod server;
mod tcp;
#[cfg(test)]
mod test_names;
mod udp;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;

pub use answer::{MAX_QUERY, Transport, answer};
pub use config::{Config, Zone, ZoneError};
pub use metrics::DnsMetrics;
pub use prepared::PreparedAnswers;
pub use registry::RegistryDirectory;
pub use rotation::Rotation;
pub use rrl::RateLimit;
pub use server::Server;

/// What the DNS server asks the registry: the current healthy endpoints of a name, synchronously
/// and without blocking (an in-memory snapshot).
///
/// `name` is the registry name: the query name with the zone stripped, lowercased, without a
/// trailing dot (`web.warren.` asks for `web`, `Db.Eu.warren.` for `db.eu`). It is called once for
/// every query that reaches a registry name, on the server's thread, so it must not block.
pub trait Directory: Send + Sync + 'static {
    /// The healthy endpoints of `name`, or that the name is not bound.
    fn resolve(&self, name: &str) -> Resolution;

    /// A number that moves whenever what `resolve` answers for any name may have changed, or
    /// `None` when the directory cannot tell. With a number, the UDP loop keeps the answers it
    /// built for a name until the number moves, and asks `resolve` only then; with `None` it
    /// asks on every query. It is read on every query, so it must be cheap (an atomic load).
    fn generation(&self) -> Option<u64> {
        None
    }
}

/// The answer of a [`Directory`] about one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The name is not bound: the DNS answer is NXDOMAIN.
    NoSuchName,
    /// The name is bound; these are its healthy endpoints, possibly none (then every query type
    /// gets NOERROR with no records, which resolvers cache as "exists, nothing of that type").
    Targets(Vec<Target>),
}

/// One healthy endpoint of a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    pub addr: IpAddr,
    pub port: u16,
    /// The SRV weight (RFC 2782): relative share among the endpoints of the name.
    pub weight: u16,
}

/// A fixed table, for tests, examples and benches: a name is bound iff it is a key.
impl<S: BuildHasher + Send + Sync + 'static> Directory for HashMap<String, Vec<Target>, S> {
    fn resolve(&self, name: &str) -> Resolution {
        match self.get(name) {
            Some(targets) => Resolution::Targets(targets.clone()),
            None => Resolution::NoSuchName,
        }
    }

    /// Behind the `Arc` a server holds, the table cannot change.
    fn generation(&self) -> Option<u64> {
        Some(0)
    }
}
