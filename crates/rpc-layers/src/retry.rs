//! Retries under a budget, Finagle-style: retries may add at most
//! [`percent`](RetryBudget::percent) of the calls made (default 20 %) on top of
//! [`min_per_sec`](RetryBudget::min_per_sec) retries a second (default 10), counted over the
//! last [`ttl`](RetryBudget::ttl) (default 10 s). tower's `TpsBudget` is that budget.
//!
//! A call is sent again only if that is safe ([`may_retry`]): the method is declared
//! idempotent and the failure is one another try can cure (`unavailable`, `internal`), or,
//! for any method, the failure says the call never ran ([`Code::never_ran`]) or the
//! connection could not even be opened. The method's own error is an answer, never retried;
//! neither is `deadline_exceeded` (one deadline covers every attempt, as in gRFC A6).
//!
//! [`RetryLayer`] retries on the same service (around one [`Connection`](warren_rpc::Connection),
//! say), waiting between attempts as gRFC A6 says: attempt *n* waits a random time in
//! `[0, min(initial · multiplier^(n-1), max))` (full jitter), at most
//! [`max_attempts`](RetryBudget::max_attempts) attempts in all (default 3, clamped to 5 as
//! gRPC clamps it). [`Replicated`](crate::replicated::Replicated) uses the same rule and
//! budget to fail over to another replica at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tower::Layer;
use tower::retry::budget::{Budget, TpsBudget};
use tower::retry::{Policy, Retry};
use warren_rpc::{Code, Failure, RawCall};

/// gRPC's clamp on attempts per call.
pub const MAX_ATTEMPTS: u32 = 5;

/// Whether a call that failed so may be sent again.
pub fn may_retry(call: &RawCall, failure: &Failure) -> bool {
    match failure.code() {
        None => false,
        Some(code) if code.never_ran() => true,
        Some(Code::Unavailable | Code::Internal) => call.idempotent,
        Some(_) => false,
    }
}

/// The retry budget and how attempts are spaced. Defaults: Finagle's budget (20 % + 10/s over
/// 10 s), 3 attempts, gRFC A6's example backoff (0.1 s, × 2, at most 1 s).
#[derive(Clone, Debug)]
pub struct RetryBudget {
    pub ttl: Duration,
    pub min_per_sec: u32,
    /// Retries as a fraction of calls: 0.2 is 20 %.
    pub percent: f32,
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub multiplier: f64,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            ttl: Duration::from_secs(10),
            min_per_sec: 10,
            percent: 0.2,
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            multiplier: 2.0,
        }
    }
}

impl RetryBudget {
    /// The token bucket (ttl clamped to tower's 1–60 s).
    pub fn bucket(&self) -> Arc<TpsBudget> {
        let ttl = self.ttl.clamp(Duration::from_secs(1), Duration::from_secs(60));
        Arc::new(TpsBudget::new(ttl, self.min_per_sec, self.percent.clamp(0.0, 1000.0)))
    }

    pub fn attempts(&self) -> u32 {
        self.max_attempts.clamp(1, MAX_ATTEMPTS)
    }

    /// How long to wait before attempt `attempt` (2 for the first retry).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(2).min(64) as i32;
        let ceiling = self.initial_backoff.as_secs_f64() * self.multiplier.powi(exponent);
        let ceiling = ceiling.min(self.max_backoff.as_secs_f64());
        Duration::from_secs_f64(ceiling * fastrand::f64())
    }
}

/// Retries on the service it wraps, within a budget shared by every clone.
#[derive(Clone, Debug)]
pub struct RetryLayer {
    policy: RetryPolicy,
}

impl RetryLayer {
    pub fn new(budget: RetryBudget) -> RetryLayer {
        let bucket = budget.bucket();
        RetryLayer { policy: RetryPolicy { budget: Arc::new(budget), bucket, attempt: 1 } }
    }

    /// The shared bucket (to look at, or to share with a [`Replicated`](crate::replicated::Replicated)).
    pub fn bucket(&self) -> Arc<TpsBudget> {
        self.policy.bucket.clone()
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<RetryPolicy, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::new(self.policy.clone(), inner)
    }
}

/// tower's retry policy for raw calls: [`may_retry`], the budget, full-jitter backoff.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    budget: Arc<RetryBudget>,
    bucket: Arc<TpsBudget>,
    /// The attempt about to be judged: a policy is cloned per call, so this counts per call.
    attempt: u32,
}

impl Policy<RawCall, Vec<u8>, Failure> for RetryPolicy {
    type Future = Pin<Box<dyn Future<Output = ()> + Send>>;

    fn retry(&mut self, call: &mut RawCall, result: &mut Result<Vec<u8>, Failure>) -> Option<Self::Future> {
        if self.attempt == 1 {
            // Every call earns its share of retries once.
            self.bucket.deposit();
        }
        let failure = result.as_ref().err()?;
        if !may_retry(call, failure) || self.attempt >= self.budget.attempts() || !self.bucket.withdraw() {
            return None;
        }
        self.attempt += 1;
        Some(Box::pin(tokio::time::sleep(self.budget.backoff(self.attempt))))
    }

    fn clone_request(&mut self, call: &RawCall) -> Option<RawCall> {
        Some(call.clone())
    }
}
