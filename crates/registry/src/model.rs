//! The registry's vocabulary: names, endpoints, revisions, leases, events, tokens and the one
//! error enum.
//!
//! Every type here validates on construction *and* on deserialisation (`try_from`), so a value
//! that came off the wire or out of the store is as valid as one built in code.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

pub use crate::name::{MAX_LABEL, MAX_NAME, Name, fold, fold_prefix};

/// At most this many metadata entries per endpoint.
pub const MAX_META_ENTRIES: usize = 16;
/// The longest metadata key, in bytes.
pub const MAX_META_KEY: usize = 64;
/// The longest metadata value, in bytes.
pub const MAX_META_VALUE: usize = 256;
/// The longest token, in bytes.
pub const MAX_TOKEN: usize = 256;
/// The shortest and longest lease TTL.
pub const MIN_TTL: Duration = Duration::from_secs(1);
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// How clients reach an endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Transport {
    #[default]
    Tcp,
    Udp,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        })
    }
}

/// One place a name can be reached. Its identity within a name is (address, port, transport):
/// putting an endpoint with the same identity replaces its weight and metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawEndpoint")]
pub struct Endpoint {
    pub addr: IpAddr,
    pub port: u16,
    pub transport: Transport,
    /// Relative share for weighted choice (DNS SRV weight); 0 means "only if nothing else".
    pub weight: u16,
    pub meta: BTreeMap<String, String>,
}

/// The identity of an endpoint within its name.
pub type EndpointKey = (IpAddr, u16, Transport);

impl Endpoint {
    /// A TCP endpoint of weight 1 with no metadata.
    pub fn tcp(addr: SocketAddr) -> Endpoint {
        Endpoint { addr: addr.ip(), port: addr.port(), transport: Transport::Tcp, weight: 1, meta: BTreeMap::new() }
    }

    pub fn key(&self) -> EndpointKey {
        (self.addr, self.port, self.transport)
    }

    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr, self.port)
    }

    /// Checks the metadata bounds (the fields themselves cannot be out of range).
    pub fn validate(&self) -> Result<(), Error> {
        if self.meta.len() > MAX_META_ENTRIES {
            return Err(Error::TooLarge(format!("{} metadata entries (at most {MAX_META_ENTRIES})", self.meta.len())));
        }
        for (k, v) in &self.meta {
            if k.is_empty() || k.len() > MAX_META_KEY {
                return Err(Error::TooLarge(format!("metadata key {k:?}: 1 to {MAX_META_KEY} bytes")));
            }
            if v.len() > MAX_META_VALUE {
                return Err(Error::TooLarge(format!("metadata value of {k:?}: at most {MAX_META_VALUE} bytes")));
            }
        }
        Ok(())
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} weight={}", self.transport, self.socket_addr(), self.weight)?;
        for (k, v) in &self.meta {
            write!(f, " {k}={v}")?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct RawEndpoint {
    addr: IpAddr,
    port: u16,
    transport: Transport,
    weight: u16,
    meta: BTreeMap<String, String>,
}

impl TryFrom<RawEndpoint> for Endpoint {
    type Error = Error;
    fn try_from(r: RawEndpoint) -> Result<Endpoint, Error> {
        let e = Endpoint { addr: r.addr, port: r.port, transport: r.transport, weight: r.weight, meta: r.meta };
        e.validate()?;
        Ok(e)
    }
}

/// Checks the endpoints a name is bound to: at least one, at most `max`, no identity twice, each
/// within its bounds. Every store applies it to `bind` and `rebind`.
pub fn check_endpoints(endpoints: &[Endpoint], max: usize) -> Result<(), Error> {
    if endpoints.is_empty() {
        return Err(Error::Invalid("at least one endpoint is needed".into()));
    }
    if endpoints.len() > max {
        return Err(Error::TooLarge(format!("at most {max} endpoints per name")));
    }
    let distinct: BTreeSet<EndpointKey> = endpoints.iter().map(Endpoint::key).collect();
    if distinct.len() != endpoints.len() {
        return Err(Error::Invalid("the same address, port and transport twice".into()));
    }
    endpoints.iter().try_for_each(Endpoint::validate)
}

/// The registry's logical clock: every acknowledged change (one write, possibly several events)
/// takes the next revision. Revision 0 is the empty registry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Revision(pub u64);

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A lease: endpoints registered under it live while it is renewed within its TTL. Its id is
/// drawn at random by the store (128 bits from the system's generator for the embedded store),
/// so that one lease's id says nothing about another's; renewing or releasing it also needs the
/// token that registered it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LeaseId(pub u128);

impl LeaseId {
    /// A fresh random id (never 0).
    pub fn random() -> Result<LeaseId, Error> {
        loop {
            let mut bytes = [0u8; 16];
            getrandom::fill(&mut bytes)
                .map_err(|e| Error::Unavailable(format!("no randomness for a lease id: {e}")))?;
            let id = u128::from_be_bytes(bytes);
            if id != 0 {
                return Ok(LeaseId(id));
            }
        }
    }

    /// Parses the form [`Display`](fmt::Display) writes: 1 to 32 hex digits.
    pub fn parse(text: &str) -> Result<LeaseId, Error> {
        let bad = || Error::Invalid(format!("lease {text:?}: 1 to 32 hex digits"));
        if text.is_empty() || text.len() > 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        u128::from_str_radix(text, 16).map(LeaseId).map_err(|_| bad())
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change to one endpoint of one name. Events of one write share its revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub revision: Revision,
    pub kind: EventKind,
    pub name: Name,
    pub endpoint: Endpoint,
}

/// A name and its endpoints, as `lookup` and `list` return them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub name: Name,
    pub endpoints: Vec<Endpoint>,
}

/// A token as stored: HMAC-SHA256 of the token under the registry's [`TokenKey`]. Only this is
/// kept, never the token; without the key, a stolen store gives no way to test guesses offline.
pub type TokenHash = [u8; 32];

/// The registry's secret key for token hashes: 32 random bytes, made once per registry and kept
/// beside its store (the embedded store's data directory, mode 0600; etcd for an etcd store).
#[derive(Clone)]
pub struct TokenKey([u8; 32]);

impl TokenKey {
    /// The length of a key, in bytes.
    pub const LEN: usize = 32;

    pub fn new(key: [u8; 32]) -> TokenKey {
        TokenKey(key)
    }

    /// A fresh random key.
    pub fn random() -> Result<TokenKey, Error> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| Error::Unavailable(format!("no randomness for the token key: {e}")))?;
        Ok(TokenKey(key))
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The stored form of `token`, after checking its size.
    pub fn hash(&self, token: &str) -> Result<TokenHash, Error> {
        if token.is_empty() {
            return Err(Error::Unauthenticated("this request".into()));
        }
        if token.len() > MAX_TOKEN {
            return Err(Error::Invalid(format!("token must be 1 to {MAX_TOKEN} bytes")));
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(token.as_bytes());
        Ok(mac.finalize().into_bytes().into())
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

/// Why an operation was refused. Every variant is a clear answer to the client; none closes the
/// connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Error {
    #[error("{0}: not bound")]
    NotBound(Name),
    #[error("{0}: already bound")]
    AlreadyBound(Name),
    #[error("{0}: forbidden (owned by another token)")]
    Forbidden(String),
    #[error("lease {0} not found (expired or released)")]
    LeaseNotFound(LeaseId),
    #[error("revision compacted: history starts after revision {oldest}; list again and watch from there")]
    Compacted { oldest: Revision },
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("registry unavailable: {0}")]
    Unavailable(String),
    /// A credential was needed and none (or an empty one) was given.
    #[error("{0}: needs the owner's token")]
    Unauthenticated(String),
}
