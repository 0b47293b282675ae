//! The server's configuration, checked once: a [`Zone`] that is a valid domain name and a TTL that
//! cannot be zero.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::rr::Name;

use crate::rrl::RateLimit;

/// What the server answers for and how, with its limits. `Default` is a deployable configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The zone answered for; everything else is REFUSED. Default `warren.`.
    pub zone: Zone,
    /// TTL of every record, and the SOA minimum that negative answers are cached for. Non-zero
    /// because a zero TTL (Consul's default) makes every lookup a round trip. Default 5 s: short
    /// enough that an endpoint that stops being healthy leaves caches quickly.
    pub ttl: NonZeroU32,
    /// The EDNS UDP payload size this server advertises and accepts at most, whatever a client
    /// advertises; read as 512 below 512. Default 1232, the DNS Flag Day 2020 size that avoids IP
    /// fragmentation.
    pub max_udp_payload: u16,
    /// A TCP connection is closed when its next query has not fully arrived this long after the
    /// last answer (or the accept), and when an answer cannot be written in this time. Default 10 s.
    pub tcp_idle_timeout: Duration,
    /// TCP connections served at once; one more is accepted and closed at once, so the client
    /// sees a clear refusal rather than a hang. Default 512.
    pub max_tcp_connections: usize,
    /// Response-rate limiting of UDP answers per source prefix (BIND's RRL). Default: 20 answers
    /// a second per /24 or /56, every second refused answer sent truncated, a 15 s window.
    pub rate_limit: RateLimit,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            zone: Zone::default(),
            ttl: NonZeroU32::new(5).expect("5 is not zero"),
            max_udp_payload: 1232,
            tcp_idle_timeout: Duration::from_secs(10),
            max_tcp_connections: 512,
            rate_limit: RateLimit::default(),
        }
    }
}

/// A zone: a fully qualified domain name of at least one label, kept lowercase.
#[derive(Clone, PartialEq, Eq)]
pub struct Zone {
    name: Name,
    /// `addr.<zone>`, the parent of SRV target names.
    addr: Name,
}

/// Why a zone was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ZoneError {
    #[error("not a domain name: {0}")]
    Invalid(String),
    #[error("the root zone is not served: give a zone such as `warren.`")]
    Root,
}

impl Zone {
    /// Parses `warren`, `warren.` or `svc.example.` (case-insensitive).
    pub fn new(zone: &str) -> Result<Zone, ZoneError> {
        let mut name = Name::from_ascii(zone).map_err(|e| ZoneError::Invalid(format!("{zone:?}: {e}")))?;
        name.set_fqdn(true);
        if name.is_root() {
            return Err(ZoneError::Root);
        }
        let name = name.to_lowercase();
        let addr = name.prepend_label("addr").map_err(|e| ZoneError::Invalid(format!("{zone:?}: {e}")))?;
        Ok(Zone { name, addr })
    }

    pub(crate) fn name(&self) -> &Name {
        &self.name
    }

    pub(crate) fn addr(&self) -> &Name {
        &self.addr
    }
}

impl Default for Zone {
    fn default() -> Self {
        Zone::new("warren.").expect("`warren.` is a valid zone")
    }
}

impl FromStr for Zone {
    type Err = ZoneError;

    fn from_str(zone: &str) -> Result<Zone, ZoneError> {
        Zone::new(zone)
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.name, f)
    }
}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Zone({})", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_are_fully_qualified_and_lowercase() {
        assert_eq!(Zone::new("warren").unwrap().to_string(), "warren.");
        assert_eq!(Zone::new("Svc.Example.").unwrap().to_string(), "svc.example.");
        assert_eq!(Zone::default().addr().to_string(), "addr.warren.");
        assert_eq!("svc.example".parse::<Zone>().unwrap(), Zone::new("svc.example.").unwrap());
    }

    #[test]
    fn bad_zones_are_refused() {
        assert_eq!(Zone::new("."), Err(ZoneError::Root));
        assert!(matches!(Zone::new("a..b"), Err(ZoneError::Invalid(_))));
        assert!(matches!(Zone::new(&"x".repeat(64)), Err(ZoneError::Invalid(_))));
    }
}
