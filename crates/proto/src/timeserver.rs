//! The course's TimeServer: on connect it sends the date as one line, then makes a blocking
//! call lasting `delay` ("to reinforce the single-threaded nature"), then closes.
//!
//! The blocking call is a [`Job`](crate::Job) the driver performs, so the same core shows how
//! each server model copes with one: `iterative` stalls every other connection, the
//! thread-based models stall one thread, and `event`, `green` and `hybrid` stall everything
//! unless they have helper threads to run it on.

use std::time::{Duration, Instant};

use crate::answer::AnswerSession;
use crate::daytime::format_daytime;
use crate::{ConnInfo, NoHub, Service};

/// The course's TimeServer.
#[derive(Clone, Debug)]
pub struct TimeServer {
    /// How long the blocking call after each answer lasts. Default 4 seconds, as in the course.
    pub delay: Duration,
}

impl Default for TimeServer {
    fn default() -> Self {
        Self { delay: Duration::from_secs(4) }
    }
}

impl Service for TimeServer {
    type Hub = NoHub;
    type Session = AnswerSession;

    fn name(&self) -> &'static str {
        "timeserver"
    }

    fn new_session(&self, info: &ConnInfo, _: Instant) -> AnswerSession {
        AnswerSession::blocking(format_daytime(info.wall), self.delay)
    }

    fn new_hub(&self, _: Instant) -> NoHub {
        NoHub
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::{Action, Job, Output, Session, SessionId, Token};

    #[test]
    fn answers_then_blocks_then_closes() {
        let info = ConnInfo { id: SessionId(1), peer: None, wall: SystemTime::UNIX_EPOCH, seed: 0 };
        let t0 = Instant::now();
        let mut s = TimeServer { delay: Duration::from_millis(10) }.new_session(&info, t0);
        let mut out = Output::new();
        s.handle_open(t0, &mut out);
        assert_eq!(out.pending(), b"Thursday, January 1, 1970 00:00:00-UTC\r\n");
        assert!(matches!(out.poll_action(), Some(Action::Job(_, Job::Blocking(_)))));
        assert!(!out.is_closed(), "closes once the blocking call is over");
        s.handle_completion(t0, Token(0), (), &mut out);
        assert!(out.is_closed());
    }
}
