//! Choosing each connection's destination from outside a session: the cluster switch's seam.
//!
//! A relay or a hand-off front goes either to one fixed destination or asks a [`Pick`] for
//! each connection. The pick returns a [`Lease`] that the session holds for as long as the
//! connection to that destination lasts: it reports whether the connection was made, and
//! dropping it says the connection ended, so a chooser that counts open connections
//! (least-connections) or ejects failing backends sees every one, whichever way the session
//! ends. The policy itself lives outside this crate (`warren-balance`).

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// Chooses where each new connection goes.
pub trait Pick<T>: Send + Sync + fmt::Debug {
    /// The destination for a connection from `peer`, whose first bytes are `head` (empty when
    /// the choice comes before any byte is read, as a relay's does), at `now`. `None`: no
    /// destination can take it, and the connection is closed.
    fn pick(&self, peer: Option<SocketAddr>, head: &[u8], now: Instant) -> Option<Box<dyn Lease<T>>>;
}

/// A destination held for one connection; dropping it ends the connection's claim on it.
pub trait Lease<T>: Send + fmt::Debug {
    /// Where the connection goes.
    fn target(&self) -> &T;

    /// Whether the connection to the target was made (`ok`) or failed, at `now`.
    fn report(&mut self, now: Instant, ok: bool);

    /// A new connection to the target was made (not one reused). For counting; by default
    /// nothing.
    fn connected(&mut self) {}

    /// The target failed the connection or request, and why. For counting; by default nothing.
    fn failed(&mut self, _why: Failure) {}

    /// Bytes moved: `to_target` sent to it, `from_target` received from it. For counting; by
    /// default nothing.
    fn moved(&mut self, _to_target: u64, _from_target: u64) {}
}

/// Why a destination failed a connection or a request, as a switch's metrics tell it apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Failure {
    /// The connect was refused: nothing listens there.
    Refused,
    /// The connect did not finish within its timeout.
    Timeout,
    /// The connect failed otherwise (unreachable, reset…).
    Connect,
    /// A request was answered `502`: the backend closed, reset or sent what is not HTTP.
    BadGateway,
    /// A request was answered `504`: the backend stayed silent past the server timeout.
    GatewayTimeout,
}

impl Failure {
    /// The failure a connect's error is.
    pub fn of_connect(kind: std::io::ErrorKind) -> Self {
        match kind {
            std::io::ErrorKind::ConnectionRefused => Failure::Refused,
            std::io::ErrorKind::TimedOut => Failure::Timeout,
            _ => Failure::Connect,
        }
    }
}

/// A session's destination: one fixed, or chosen per connection.
#[derive(Clone, Debug)]
pub enum To<T> {
    /// Every connection goes here.
    Fixed(T),
    /// Each connection asks.
    Picked(Arc<dyn Pick<T>>),
}

/// A lease on a fixed destination: nothing to report, nothing to release.
#[derive(Debug)]
struct FixedLease<T>(T);

impl<T: Send + fmt::Debug> Lease<T> for FixedLease<T> {
    fn target(&self) -> &T {
        &self.0
    }

    fn report(&mut self, _: Instant, _: bool) {}
}

impl<T: Clone + Send + fmt::Debug + 'static> To<T> {
    /// The destination for a new connection (see [`Pick::pick`]); a fixed one always answers.
    pub fn lease(&self, peer: Option<SocketAddr>, head: &[u8], now: Instant) -> Option<Box<dyn Lease<T>>> {
        match self {
            To::Fixed(target) => Some(Box::new(FixedLease(target.clone()))),
            To::Picked(pick) => pick.pick(peer, head, now),
        }
    }

    /// Whether another destination may be tried after a failure (only a picked one).
    pub fn can_retry(&self) -> bool {
        matches!(self, To::Picked(_))
    }
}
