//! Active health checks as a state machine: the pool says when a check is due, the caller
//! performs it (a TCP connect, an HTTP request) and reports the result with the time.
//!
//! HAProxy's model and defaults (`doc/configuration.txt`, `server … check`): a check every
//! `inter` (2 s); a server is marked down after `fall` (3) consecutive failures and up again
//! after `rise` (2) consecutive successes; a check that has not answered within `inter` has
//! failed (HAProxy uses `inter` when `timeout check` is unset). A server starts up, but "will
//! fall down at first failure" (HAProxy's `cfgparse.c`, where a server's health starts at
//! `rise`): until its first success one failed check is enough, so a switch serves at once
//! without sending many connections to a backend that was never there.

use std::time::{Duration, Instant};

use crate::ConfigError;

/// How active checks run. [`CheckConfig::default`] is HAProxy's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckConfig {
    /// Time between the starts of two checks, and the longest a check may take. Default 2 s.
    pub inter: Duration,
    /// Consecutive successes that bring a down backend up. Default 2.
    pub rise: u32,
    /// Consecutive failures that take an up backend down. Default 3.
    pub fall: u32,
}

impl Default for CheckConfig {
    fn default() -> Self {
        Self { inter: Duration::from_secs(2), rise: 2, fall: 3 }
    }
}

impl CheckConfig {
    /// Refuses a zero `inter`, `rise` or `fall`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.inter.is_zero() {
            return Err(ConfigError::ZeroCheckInterval);
        }
        if self.rise == 0 || self.fall == 0 {
            return Err(ConfigError::ZeroRiseOrFall);
        }
        Ok(())
    }
}

/// A state change a check result caused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The backend was down and is up now.
    Up,
    /// The backend was up and is down now.
    Down,
}

/// One backend's active check.
#[derive(Clone, Debug)]
pub struct ActiveCheck {
    config: CheckConfig,
    up: bool,
    /// Consecutive results against the current state (failures while up, successes while down).
    streak: u32,
    /// At least one check succeeded since the backend was added.
    proven: bool,
    /// When the next check is due; `None` while one runs.
    next_at: Option<Instant>,
    started_at: Instant,
}

impl ActiveCheck {
    /// A check for a backend added at `now`: up (unproven), first check due at once.
    pub fn new(config: CheckConfig, now: Instant) -> Self {
        Self { config, up: true, streak: 0, proven: false, next_at: Some(now), started_at: now }
    }

    /// Whether the backend is up.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// When the next check is due, or `None` while one is running.
    pub fn due_at(&self) -> Option<Instant> {
        self.next_at
    }

    /// When the running check has taken too long (`inter`), or `None` if none runs.
    pub fn deadline(&self) -> Option<Instant> {
        self.next_at.is_none().then(|| self.started_at + self.config.inter)
    }

    /// Starts a check if one is due at `now`; true if the caller should now perform it.
    pub fn start(&mut self, now: Instant) -> bool {
        match self.next_at {
            Some(at) if at <= now => {
                self.next_at = None;
                self.started_at = now;
                true
            }
            _ => false,
        }
    }

    /// The running check ended at `now`: `ok` if the backend answered. The next check is due
    /// `inter` after this one started. A result when no check runs is ignored.
    pub fn finish(&mut self, now: Instant, ok: bool) -> Option<Change> {
        if self.next_at.is_some() {
            return None;
        }
        self.next_at = Some((self.started_at + self.config.inter).max(now));
        self.record(ok)
    }

    /// Fails the running check if it has outlived its deadline.
    pub fn expire(&mut self, now: Instant) -> Option<Change> {
        match self.deadline() {
            Some(at) if at <= now => self.finish(now, false),
            _ => None,
        }
    }

    fn record(&mut self, ok: bool) -> Option<Change> {
        if ok {
            self.proven = true;
        }
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = match (self.up, self.proven) {
            (true, false) => 1,
            (true, true) => self.config.fall,
            (false, _) => self.config.rise,
        };
        if self.streak < needed {
            return None;
        }
        self.up = !self.up;
        self.streak = 0;
        Some(if self.up { Change::Up } else { Change::Down })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(check: &mut ActiveCheck, now: &mut Instant, ok: bool) -> Option<Change> {
        *now = check.due_at().unwrap().max(*now);
        assert!(check.start(*now));
        check.finish(*now, ok)
    }

    #[test]
    fn falls_after_three_and_rises_after_two_as_haproxy() {
        let mut now = Instant::now();
        let mut c = ActiveCheck::new(CheckConfig::default(), now);
        assert_eq!(run(&mut c, &mut now, true), None);
        assert_eq!(run(&mut c, &mut now, false), None);
        assert_eq!(run(&mut c, &mut now, false), None);
        assert_eq!(run(&mut c, &mut now, true), None, "a success resets the streak");
        assert_eq!(run(&mut c, &mut now, false), None);
        assert_eq!(run(&mut c, &mut now, false), None);
        assert_eq!(run(&mut c, &mut now, false), Some(Change::Down));
        assert_eq!(run(&mut c, &mut now, true), None);
        assert_eq!(run(&mut c, &mut now, true), Some(Change::Up));
    }

    #[test]
    fn an_unproven_backend_falls_at_its_first_failure() {
        let mut now = Instant::now();
        let mut c = ActiveCheck::new(CheckConfig::default(), now);
        assert_eq!(run(&mut c, &mut now, false), Some(Change::Down));
    }

    #[test]
    fn checks_are_inter_apart_and_a_slow_one_fails() {
        let t0 = Instant::now();
        let mut c = ActiveCheck::new(CheckConfig::default(), t0);
        assert!(c.start(t0) && !c.start(t0));
        assert_eq!(c.deadline(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(c.expire(t0 + Duration::from_secs(1)), None);
        assert_eq!(c.expire(t0 + Duration::from_secs(2)), Some(Change::Down));
        assert_eq!(c.due_at(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(c.finish(t0, true), None, "no check runs");
    }
}
