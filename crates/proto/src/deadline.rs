//! Idle and read deadlines shared by every protocol core.

use std::time::{Duration, Instant};

/// Per-connection limits a service applies. Every field has a documented default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Close a connection that has no request in progress after this long without input.
    /// Default 5 minutes.
    pub idle_timeout: Duration,
    /// Close a connection that started a request (a partial line or frame) and has not finished
    /// it within this long: the defence against slow clients. Default 30 seconds.
    pub read_timeout: Duration,
    /// The longest request (a line, a frame) a session accepts. Default 4 KiB.
    pub max_request: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { idle_timeout: Duration::from_secs(300), read_timeout: Duration::from_secs(30), max_request: 4096 }
    }
}

/// Tracks when a connection must be closed for idleness or for a request that never ends.
#[derive(Clone, Debug)]
pub struct Deadline {
    idle: Duration,
    read: Duration,
    last_input: Instant,
    partial_since: Option<Instant>,
}

impl Deadline {
    /// A deadline for a connection opened at `now`.
    pub fn new(limits: &Limits, now: Instant) -> Self {
        Self { idle: limits.idle_timeout, read: limits.read_timeout, last_input: now, partial_since: None }
    }

    /// Input arrived at `now`; `partial` says whether a request is now unfinished.
    pub fn input(&mut self, now: Instant, partial: bool) {
        self.last_input = now;
        match (partial, self.partial_since) {
            (false, _) => self.partial_since = None,
            (true, None) => self.partial_since = Some(now),
            (true, Some(_)) => {}
        }
    }

    /// Restart the idle clock without input (the session itself was busy, say a game hit).
    pub fn touch(&mut self, now: Instant) {
        self.last_input = now;
    }

    /// The instant at which the connection expires.
    pub fn at(&self) -> Instant {
        let idle = self.last_input + self.idle;
        match self.partial_since {
            Some(since) => idle.min(since + self.read),
            None => idle,
        }
    }

    /// Whether the connection has expired at `now`, and why.
    pub fn expired(&self, now: Instant) -> Option<&'static str> {
        if now < self.at() {
            None
        } else if self.partial_since.is_some() && now >= self.partial_since.unwrap() + self.read {
            Some("read timeout")
        } else {
            Some("idle timeout")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_then_read_timeout() {
        let limits =
            Limits { idle_timeout: Duration::from_secs(10), read_timeout: Duration::from_secs(3), max_request: 10 };
        let t0 = Instant::now();
        let mut d = Deadline::new(&limits, t0);
        assert_eq!(d.at(), t0 + Duration::from_secs(10));
        assert_eq!(d.expired(t0 + Duration::from_secs(9)), None);
        assert_eq!(d.expired(t0 + Duration::from_secs(10)), Some("idle timeout"));

        d.input(t0 + Duration::from_secs(1), true);
        d.input(t0 + Duration::from_secs(2), true);
        assert_eq!(d.at(), t0 + Duration::from_secs(4), "read clock starts at the first partial byte");
        assert_eq!(d.expired(t0 + Duration::from_secs(4)), Some("read timeout"));

        d.input(t0 + Duration::from_secs(3), false);
        assert_eq!(d.at(), t0 + Duration::from_secs(13));
    }
}
