//! The session of protocols that answer once and close: daytime, time and the course's
//! TimeServer. The answer is computed when the connection opens; input is ignored.
//!
//! The TimeServer's blocking call after its answer is a [`Job`] that sleeps: the thread-based
//! models make it on the connection's thread, `event`, `green` and `hybrid` on a helper thread
//! (or, with no helpers, on the loop itself, stalling every connection: the chapter's lesson).

use std::time::{Duration, Instant};

use crate::{Job, Nothing, Output, Session, Token};

/// Sends `answer` as soon as the connection opens, optionally makes a blocking call, closes.
#[derive(Debug)]
pub struct AnswerSession {
    answer: Vec<u8>,
    block: Option<Duration>,
}

impl AnswerSession {
    /// A session that sends `answer` and closes.
    pub fn new(answer: impl Into<Vec<u8>>) -> Self {
        Self { answer: answer.into(), block: None }
    }

    /// The same, with a blocking call of `block` between the answer and the close.
    pub fn blocking(answer: impl Into<Vec<u8>>, block: Duration) -> Self {
        Self { answer: answer.into(), block: Some(block).filter(|d| !d.is_zero()) }
    }
}

impl Session for AnswerSession {
    type Request = Nothing;
    type Message = Nothing;
    type Done = ();

    fn handle_open(&mut self, _: Instant, out: &mut Output<Nothing, ()>) {
        out.send(&self.answer);
        match self.block {
            Some(block) => out.job(Token(0), Job::blocking(move || std::thread::sleep(block))),
            None => out.close(),
        }
    }

    fn handle_completion(&mut self, _: Instant, _: Token, (): (), out: &mut Output<Nothing, ()>) {
        out.close();
    }

    fn handle_input(&mut self, _: Instant, _: &[u8], _: &mut Output<Nothing, ()>) {}

    fn handle_read_closed(&mut self, _: Instant, out: &mut Output<Nothing, ()>) {
        out.close();
    }

    fn handle_message(&mut self, _: Instant, msg: Nothing, _: &mut Output<Nothing, ()>) {
        match msg {}
    }

    fn handle_timeout(&mut self, _: Instant, _: &mut Output<Nothing, ()>) {}

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}
