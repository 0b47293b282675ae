//! How a [`Connection`](super::Connection) is opened and how it waits for answers: the
//! connect timeout and the optional busy-poll budget (docs/rpc.md, "Low latency: busy-polling").

use std::io;
use std::time::Duration;

/// The longest busy-poll budget a connection takes. A budget exists to cover one round trip
/// to a server that answers at once (tens of microseconds on loopback); one of a second would
/// only burn a CPU for as long whenever a server is slow.
pub const MAX_BUSY_POLL: Duration = Duration::from_secs(1);

/// Options of a [`Connection`](super::Connection). The default: a 5 s connect timeout, and no
/// busy-polling (the connection's reader sleeps until the socket is readable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionConfig {
    pub(super) connect_timeout: Duration,
    pub(super) busy_poll: Option<Duration>,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self { connect_timeout: Duration::from_secs(5), busy_poll: None }
    }
}

impl ConnectionConfig {
    /// Give up connecting after `timeout`.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// While calls wait for answers, poll the socket for up to `budget` after each call sent
    /// and each read before sleeping until it is readable: an answer that comes within the
    /// budget is taken without the wake-up of a sleeping thread, at the price of a CPU kept busy
    /// meanwhile (up to `budget` per call). The polling task yields to the runtime between
    /// polls, so the other tasks of its thread keep running. At most [`MAX_BUSY_POLL`]; a zero
    /// budget turns it off.
    pub fn busy_poll(mut self, budget: Duration) -> Self {
        self.busy_poll = (!budget.is_zero()).then_some(budget);
        self
    }

    /// The busy-poll budget, if the connection busy-polls.
    pub fn busy_poll_budget(&self) -> Option<Duration> {
        self.busy_poll
    }

    /// A clear error for settings a connection cannot take.
    pub(super) fn check(&self) -> io::Result<()> {
        match self.busy_poll {
            Some(budget) if budget > MAX_BUSY_POLL => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a busy-poll budget of {budget:?} is over the most a connection takes ({MAX_BUSY_POLL:?})"),
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_polling_is_off_unless_asked_and_bounded() {
        let config = ConnectionConfig::default();
        assert_eq!(config.busy_poll_budget(), None);
        let config = config.busy_poll(Duration::from_micros(50));
        assert_eq!(config.busy_poll_budget(), Some(Duration::from_micros(50)));
        assert!(config.check().is_ok());
        assert_eq!(config.busy_poll(Duration::ZERO).busy_poll_budget(), None);
        let e = config.busy_poll(Duration::from_secs(2)).check().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("busy-poll budget of 2s"), "{e}");
    }
}
