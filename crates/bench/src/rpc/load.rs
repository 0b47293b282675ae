//! The load generator every row shares: `callers` on this thread's runtime, each making one call,
//! waiting for its answer and making the next (a closed loop), for a fixed time. What differs per
//! row is only the [`Caller`]: warren's stub over one multiplexed connection, tonic's over one
//! HTTP/2 connection, a JSON request on the caller's own HTTP/1.1 connection, or warren's stub
//! through the replication middleware.
//!
//! Latency runs from the call made to its answer, as the caller sees it; in a closed loop it
//! shares wrk's coordinated omission (a stall delays the calls that would have followed it).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use crate::hist::Histogram;

/// A call not answered within this counts as an error: far above any tail the bench expects.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Distinct error messages kept; further ones are only counted.
const MESSAGES: usize = 16;

/// One caller's way of making the call under test.
pub trait Caller {
    /// One call; its error, said in words.
    fn call(&mut self) -> impl Future<Output = Result<(), String>>;
}

/// Failed calls, by message.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Errors {
    pub total: u64,
    pub by_message: BTreeMap<String, u64>,
}

impl Errors {
    pub fn add(&mut self, message: String) {
        self.total += 1;
        if self.by_message.len() < MESSAGES || self.by_message.contains_key(&message) {
            *self.by_message.entry(message).or_default() += 1;
        }
    }

    pub fn merge(&mut self, other: &Errors) {
        self.total += other.total;
        for (message, n) in &other.by_message {
            if self.by_message.len() < MESSAGES || self.by_message.contains_key(message) {
                *self.by_message.entry(message.clone()).or_default() += n;
            }
        }
    }

    /// `0`, or the count and each message with its count, the most frequent first.
    pub fn summary(&self) -> String {
        if self.total == 0 {
            return "0".into();
        }
        let mut messages: Vec<_> = self.by_message.iter().collect();
        messages.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let listed: Vec<String> = messages.iter().map(|(m, n)| format!("{n} × {m}")).collect();
        format!("{} ({})", self.total, listed.join("; "))
    }
}

/// What one closed-loop run saw.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Calls answered.
    pub calls: u64,
    pub wall: Duration,
    /// Latency of the answered calls.
    pub latency: Histogram,
    pub errors: Errors,
}

impl Outcome {
    /// Answered calls per second.
    pub fn rate(&self) -> f64 {
        if self.wall.is_zero() { 0.0 } else { self.calls as f64 / self.wall.as_secs_f64() }
    }
}

/// Run every caller in a closed loop for `duration`, all on the current task; each stops at the
/// first deadline check after `duration`, so the run lasts `duration` plus one call.
pub async fn closed_loop<C: Caller>(callers: &mut [C], duration: Duration) -> Outcome {
    let latency = RefCell::new(Histogram::default());
    let errors = RefCell::new(Errors::default());
    let started = Instant::now();
    let deadline = started + duration;
    let loops = callers.iter_mut().map(|caller| {
        let (latency, errors) = (&latency, &errors);
        async move {
            let mut answered = 0u64;
            while Instant::now() < deadline {
                let sent = Instant::now();
                match tokio::time::timeout(CALL_TIMEOUT, caller.call()).await {
                    Ok(Ok(())) => {
                        latency.borrow_mut().record(sent.elapsed());
                        answered += 1;
                    }
                    Ok(Err(e)) => errors.borrow_mut().add(e),
                    Err(_) => errors.borrow_mut().add(format!("no answer within {CALL_TIMEOUT:?}")),
                }
            }
            answered
        }
    });
    let calls = futures_util::future::join_all(loops).await.into_iter().sum();
    Outcome { calls, wall: started.elapsed(), latency: latency.into_inner(), errors: errors.into_inner() }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct EveryThird(u32);

    impl Caller for EveryThird {
        async fn call(&mut self) -> Result<(), String> {
            self.0 += 1;
            tokio::task::yield_now().await;
            if self.0.is_multiple_of(3) { Err("third".into()) } else { Ok(()) }
        }
    }

    #[test]
    fn a_closed_loop_counts_answers_and_errors_apart() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut callers = [EveryThird(0), EveryThird(0)];
        let outcome = rt.block_on(closed_loop(&mut callers, Duration::from_millis(20)));
        let made: u32 = callers.iter().map(|c| c.0).sum();
        assert_eq!(outcome.calls + outcome.errors.total, u64::from(made));
        assert!(outcome.calls > 0 && outcome.errors.total > 0);
        assert_eq!(outcome.errors.by_message.get("third"), Some(&outcome.errors.total));
        assert!(outcome.rate() > 0.0 && outcome.wall >= Duration::from_millis(20));
    }

    #[test]
    fn errors_keep_a_bounded_list_of_messages() {
        let mut errors = Errors::default();
        assert_eq!(errors.summary(), "0");
        for i in 0..100 {
            errors.add(format!("failure {}", i % 40));
        }
        errors.add("failure 0".into());
        assert_eq!(errors.total, 101);
        assert_eq!(errors.by_message.len(), MESSAGES);
        assert!(errors.summary().starts_with("101 (4 × failure 0; 3 × failure 1;"), "{}", errors.summary());
        let mut both = errors.clone();
        both.merge(&errors);
        assert_eq!((both.total, both.by_message["failure 0"]), (202, 8));
    }
}
