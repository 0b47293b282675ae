//! The balancing policies, by name.

use std::fmt;
use std::str::FromStr;

use crate::ConfigError;

/// How the pool chooses a backend for a new connection. Every policy chooses only among
/// backends in rotation (up, not ejected, not draining, weight above zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// `round-robin`: each in turn, weights ignored (slow start still applies).
    RoundRobin,
    /// `weighted`: smooth weighted round-robin (nginx's), shares in proportion to weights.
    Weighted,
    /// `least-connections`: fewest open connections per unit of weight (HAProxy's
    /// `leastconn`); ties in turn.
    LeastConnections,
    /// `power-of-two`: two backends drawn at random, the one with fewer connections per unit of
    /// weight (HAProxy's `random(2)`, Envoy's least request, nginx's `random two least_conn`).
    PowerOfTwo,
    /// `service`: only backends that serve the connection's service (its port or protocol),
    /// weighted round-robin among them.
    Service,
    /// `load`: weighted round-robin on weights scaled by the load each backend reports
    /// (weight × (1 − load)), as HAProxy's `agent-check` percentages scale a server's weight.
    Load,
    /// `lard`: content-aware, a target (URL) stays on one backend until its load bound.
    Lard,
    /// `maglev`: consistent hashing of the connection's key through a Maglev table.
    Maglev,
}

impl Policy {
    /// Every policy, in the order of the docs.
    pub const ALL: [Policy; 8] = [
        Policy::RoundRobin,
        Policy::Weighted,
        Policy::LeastConnections,
        Policy::PowerOfTwo,
        Policy::Service,
        Policy::Load,
        Policy::Lard,
        Policy::Maglev,
    ];

    /// The policy's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Policy::RoundRobin => "round-robin",
            Policy::Weighted => "weighted",
            Policy::LeastConnections => "least-connections",
            Policy::PowerOfTwo => "power-of-two",
            Policy::Service => "service",
            Policy::Load => "load",
            Policy::Lard => "lard",
            Policy::Maglev => "maglev",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Policy {
    type Err = ConfigError;

    /// Parses a policy's name; an unknown one is refused with the list of known ones.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        Policy::ALL.into_iter().find(|p| p.name() == s).ok_or_else(|| ConfigError::UnknownPolicy(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_refused() {
        for p in Policy::ALL {
            assert_eq!(p.name().parse::<Policy>().unwrap(), p);
        }
        let err = "random".parse::<Policy>().unwrap_err().to_string();
        assert!(err.contains("random") && err.contains("least-connections"), "{err}");
    }
}
