//! The cluster switch's backend set, sans-IO: which backend a new connection goes to, and
//! which backends are in rotation.
//!
//! A [`Pool`] holds the backends, the [`Policy`] that chooses among them, and each backend's
//! health: active checks ([`health`], HAProxy's `inter`/`rise`/`fall`), passive outlier
//! ejection ([`outlier`], Envoy's consecutive failures), slow start and draining. It performs no
//! I/O and reads no clock: the caller passes the time in, performs the checks the pool asks for
//! and reports how connections went, as every core of `warren-proto` is driven.
//!
//! ```
//! use std::time::Instant;
//! use warren_balance::{Backend, Policy, Pool, PoolConfig, Request};
//!
//! let now = Instant::now();
//! let mut pool = Pool::new(PoolConfig { policy: Policy::RoundRobin, ..PoolConfig::default() }).unwrap();
//! let a = pool.add(Backend::new("127.0.0.1:8001"), now);
//! let b = pool.add(Backend::new("127.0.0.1:8002"), now);
//! assert_eq!(pool.pick(&Request::default(), now), Some(a));
//! assert_eq!(pool.pick(&Request::default(), now), Some(b));
//! pool.drain(a); // no new connection; the open one finishes
//! assert_eq!(pool.pick(&Request::default(), now), Some(b));
//! pool.release(a); // the connection to `a` closed
//! assert!(pool.is_drained(a));
//! ```
//!
//! The policies' tables live in their own modules: [`swrr`] (smooth weighted round-robin),
//! [`lard`] (locality-aware request distribution) and [`maglev`] (consistent hashing).

#![warn(missing_docs)]

pub mod hash;
pub mod health;
pub mod lard;
pub mod maglev;
pub mod outlier;
pub mod policy;
pub mod pool;
pub mod swrr;

use std::fmt;

pub use health::{ActiveCheck, Change, CheckConfig};
pub use lard::LardConfig;
pub use outlier::OutlierConfig;
pub use policy::Policy;
pub use pool::{Pool, PoolConfig, State};

/// A backend's name within one pool; never reused, so a late `release` cannot touch a newer
/// backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendId(pub u64);

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A backend as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// Its address as the caller names it: `127.0.0.1:8001` for a relay, a hand-off socket's
    /// path for a hand-off. The pool only hashes it (it is the backend's Maglev name, so every
    /// switch with the same backends hashes alike) and reads a port number off its end.
    pub name: String,
    /// The relative share of connections under `weighted`, `service` and `load`, and the unit of
    /// `least-connections` and `power-of-two`. Zero takes the backend out of rotation (IPVS's
    /// quiescent weight). Default 1, as nginx and HAProxy.
    pub weight: u32,
    /// The services it serves (protocol names such as `http`), for the `service` policy; the
    /// port number its name ends with always counts as one.
    pub services: Vec<String>,
}

impl Backend {
    /// A backend named `name` with weight 1 and no named service.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), weight: 1, services: Vec::new() }
    }

    /// Whether it serves `service`: one of its services, or the port its name ends with.
    pub fn serves(&self, service: &str) -> bool {
        let port = self.name.rsplit_once(':').map(|(_, port)| port);
        self.services.iter().any(|s| s == service) || (port == Some(service) && !service.is_empty())
    }
}

/// What the policies may look at in a new connection. Every field is optional; a policy whose
/// field is missing falls back to weighted round-robin (HAProxy's hash policies do the same).
#[derive(Clone, Copy, Debug, Default)]
pub struct Request<'a> {
    /// The key `maglev` hashes: the client's address, or a URL. Without one, the target.
    pub key: Option<&'a [u8]>,
    /// The target `lard` keeps on one backend: the request's URL.
    pub target: Option<&'a [u8]>,
    /// The service `service` routes by: a protocol name or a port number.
    pub service: Option<&'a str>,
}

/// A configuration the pool refuses.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A policy name that is not one of [`Policy::ALL`].
    #[error(
        "unknown policy {0:?}: expected round-robin, weighted, least-connections, power-of-two, service, load, lard or maglev"
    )]
    UnknownPolicy(String),
    /// A Maglev table size that is not a prime in range.
    #[error("Maglev table size {0} is not a prime between 2 and 16777216 (the default is 65537)")]
    TableSize(usize),
    /// `inter` of zero.
    #[error("the health check interval must be above zero")]
    ZeroCheckInterval,
    /// `rise` or `fall` of zero.
    #[error("rise and fall must be at least 1")]
    ZeroRiseOrFall,
    /// LARD's thresholds out of order.
    #[error("LARD needs t_low < t_high (got t_low {t_low}, t_high {t_high})")]
    LardThresholds {
        /// The lower threshold given.
        t_low: u32,
        /// The upper threshold given.
        t_high: u32,
    },
    /// A LARD table bound of zero.
    #[error("LARD's target table must hold at least one target")]
    ZeroLardTargets,
    /// Outlier ejection after zero failures or for no time.
    #[error("outlier ejection needs at least one failure and a base ejection time above zero")]
    Outlier,
    /// A reported load outside 0 to 1 (or not a number).
    #[error("a reported load must be between 0 and 1 (got {0})")]
    Load(f64),
    /// A slow start window of zero.
    #[error("slow start's window must be above zero")]
    ZeroSlowStart,
}
