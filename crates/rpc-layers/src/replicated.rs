//! Replication transparency: several replicas under one name, one call.
//!
//! [`Replicated`] sends each call to one replica, chosen round robin among those its
//! [`Replicas`] source lists (and, with [`outliers`](Replicated::outliers), that are not
//! ejected). On top of that, each optional:
//!
//! - **Hedging** ([`Hedging`], gRFC A6's `hedgingPolicy`; The Tail at Scale's hedged
//!   requests), for methods declared idempotent only: if no answer came after the hedging
//!   delay, the call is sent to another replica, and again after each further delay, up to
//!   [`max_attempts`](Hedging::max_attempts) copies in all (default 2, clamped to 5 as gRPC
//!   clamps it), each to a distinct replica. The delay is learnt, as Finagle's
//!   `BackupRequestFilter` learns it: the [`percentile`](Hedging::percentile) (default p99) of
//!   the latencies of the last 1,000 answers, at least [`min_delay`](Hedging::min_delay) (1 ms);
//!   until 100 answers are known, or with no percentile, it is [`delay`](Hedging::delay) (10
//!   ms, the paper's). The first answer wins; the other copies are dropped, which sends
//!   `Cancel` to their servers. Hedges are paid from a budget: at most
//!   [`max_extra`](Hedging::max_extra) of the calls of the last [`window`](Hedging::window)
//!   (default 5 % over 10 s, brpc's `backup_request_max_ratio` example, the extra load The
//!   Tail at Scale reports for hedging at the p95) may be hedges. A cold client earns its first
//!   hedge after 20 calls.
//! - **Failover** ([`RetryBudget`], Finagle's budget): a copy that failed in a way
//!   [`may_retry`] allows (the connection refused, a code that says the call never ran, or an
//!   idempotent call that met `unavailable` or `internal`) is sent at once to a replica not
//!   tried yet (gRFC A6's "non-fatal codes"), within the retry budget and
//!   [`max_attempts`](RetryBudget::max_attempts).
//! - **Outlier ejection** ([`Outliers`]): every copy's outcome is recorded per replica, and
//!   ejected replicas are not chosen.
//!
//! One deadline covers every copy: each is sent with what remains of the call's timeout.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;
use tower::Service;
use tower::retry::budget::{Budget, TpsBudget};
use warren_rpc::{Code, Failure, RawCall, RpcError};

use crate::outlier::{Outliers, is_server_failure};
use crate::replicas::{Replicas, no_replicas};
use crate::retry::{MAX_ATTEMPTS, RetryBudget, may_retry};

/// When idempotent calls are hedged. Defaults: after the p99 of answers (10 ms until 100 are
/// known), at least 1 ms; 2 copies; 5 % extra over 10 s.
#[derive(Clone, Copy, Debug)]
pub struct Hedging {
    /// The delay before a hedge while fewer than [`LEARN_AFTER`] answers are known, and always
    /// when `percentile` is `None`.
    pub delay: Duration,
    /// Hedge a call once it is later than this share of recent answers (0.99: the p99), as
    /// Finagle's `BackupRequestFilter` does; `None` keeps `delay` fixed. Only answers are
    /// timed, each copy from its own sending: a stalled copy that lost to its hedge is never
    /// counted, so the stalls hedging removes do not raise the delay that catches them.
    pub percentile: Option<f32>,
    /// The shortest learnt delay: below it, hedges would race answers already on their way.
    pub min_delay: Duration,
    pub max_attempts: u32,
    /// Hedges as a fraction of calls: 0.05 is 5 %.
    pub max_extra: f32,
    pub window: Duration,
}

impl Default for Hedging {
    fn default() -> Self {
        Hedging {
            delay: Duration::from_millis(10),
            percentile: Some(0.99),
            min_delay: Duration::from_millis(1),
            max_attempts: 2,
            max_extra: 0.05,
            window: Duration::from_secs(10),
        }
    }
}

/// Answers timed before the learnt hedging delay replaces [`Hedging::delay`].
pub const LEARN_AFTER: usize = 100;
/// Answers the learnt delay is taken over (the most recent ones).
const LEARN_WINDOW: usize = 1000;
/// The learnt delay is worked out again after this many answers.
const LEARN_EVERY: u64 = 50;

/// The latencies of the last [`LEARN_WINDOW`] answers, and the delay learnt from them.
#[derive(Debug, Default)]
struct Learnt {
    /// Microseconds, a ring.
    latencies: std::sync::Mutex<Vec<u32>>,
    answers: AtomicU64,
    /// The learnt delay in microseconds; 0 until [`LEARN_AFTER`] answers.
    delay_us: AtomicU64,
}

impl Learnt {
    fn record(&self, latency: Duration, percentile: f32) {
        let n = self.answers.fetch_add(1, Ordering::Relaxed);
        let us = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        let mut ring = self.latencies.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() < LEARN_WINDOW {
            ring.push(us);
        } else {
            ring[n as usize % LEARN_WINDOW] = us;
        }
        if ring.len() == LEARN_AFTER || (ring.len() > LEARN_AFTER && n.is_multiple_of(LEARN_EVERY)) {
            let mut sorted = ring.clone();
            drop(ring);
            // The nearest rank; the thousandth keeps 0.99 in f32 (0.9900000095) from rounding up.
            let share = f64::from(percentile.clamp(0.0, 1.0));
            let rank = ((sorted.len() as f64 * share - 1e-3).ceil() as usize).clamp(1, sorted.len());
            let (_, at, _) = sorted.select_nth_unstable(rank - 1);
            self.delay_us.store(u64::from(*at), Ordering::Relaxed);
        }
    }
}

/// What a [`Replicated`] did, since it was made (shared by its clones).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub calls: u64,
    /// Copies sent because an answer was late.
    pub hedges: u64,
    /// Copies sent because another failed.
    pub failovers: u64,
}

#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    hedges: AtomicU64,
    failovers: AtomicU64,
}

#[derive(Debug)]
struct Hedger {
    policy: Hedging,
    bucket: TpsBudget,
    learnt: Learnt,
}

impl Hedger {
    fn delay(&self) -> Duration {
        match (self.policy.percentile, self.learnt.delay_us.load(Ordering::Relaxed)) {
            (Some(_), us) if us > 0 => Duration::from_micros(us).max(self.policy.min_delay),
            _ => self.policy.delay,
        }
    }
}

#[derive(Debug)]
struct Failover {
    policy: RetryBudget,
    bucket: Arc<TpsBudget>,
}

/// Calls spread over an object's replicas. Cheap to clone; clones share budgets and counts.
#[derive(Clone, Debug)]
pub struct Replicated<R> {
    replicas: R,
    hedger: Option<Arc<Hedger>>,
    failover: Option<Arc<Failover>>,
    outliers: Option<Arc<Outliers>>,
    next: Arc<AtomicUsize>,
    counters: Arc<Counters>,
}

impl<R: Replicas> Replicated<R> {
    /// One replica per call, round robin; no hedging, no failover, no ejection.
    pub fn new(replicas: R) -> Self {
        Replicated {
            replicas,
            hedger: None,
            failover: None,
            outliers: None,
            next: Arc::default(),
            counters: Arc::default(),
        }
    }

    pub fn hedging(mut self, policy: Hedging) -> Self {
        let window = policy.window.clamp(Duration::from_secs(1), Duration::from_secs(60));
        let bucket = TpsBudget::new(window, 0, policy.max_extra.clamp(0.0, 1000.0));
        self.hedger = Some(Arc::new(Hedger { policy, bucket, learnt: Learnt::default() }));
        self
    }

    pub fn failover(mut self, policy: RetryBudget) -> Self {
        let bucket = policy.bucket();
        self.failover = Some(Arc::new(Failover { policy, bucket }));
        self
    }

    /// Record outcomes in `outliers` and leave its ejected replicas out.
    pub fn outliers(mut self, outliers: Arc<Outliers>) -> Self {
        self.outliers = Some(outliers);
        self
    }

    /// The delay the next hedge waits (learnt, or fixed); `None` without hedging.
    pub fn hedge_delay(&self) -> Option<Duration> {
        self.hedger.as_ref().map(|h| h.delay())
    }

    pub fn counts(&self) -> Counts {
        Counts {
            calls: self.counters.calls.load(Ordering::Relaxed),
            hedges: self.counters.hedges.load(Ordering::Relaxed),
            failovers: self.counters.failovers.load(Ordering::Relaxed),
        }
    }

    async fn perform(self, call: RawCall) -> Result<Vec<u8>, Failure> {
        let deadline = call.timeout.map(|t| Instant::now() + t);
        let run = self.spread(call, deadline);
        match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, run).await.unwrap_or_else(|_| {
                Err(Failure::Rpc(RpcError::new(Code::DeadlineExceeded, "no replica answered within the deadline")))
            }),
            None => run.await,
        }
    }

    async fn spread(self, call: RawCall, deadline: Option<Instant>) -> Result<Vec<u8>, Failure> {
        let all = self.replicas.replicas(&call.object).await?;
        let mut untried = self.order(&all).into_iter().peekable();
        let Some(first) = untried.next() else { return Err(no_replicas(&call.object)) };
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        let hedger = self.hedger.as_ref().filter(|_| call.idempotent);
        if let Some(hedger) = hedger {
            hedger.bucket.deposit();
        }
        if let Some(failover) = &self.failover {
            failover.bucket.deposit();
        }
        let mut copies = FuturesUnordered::new();
        copies.push(self.copy(first, &call, deadline));
        let mut sent = 1;
        let hedge_delay = hedger.map(|h| h.delay());
        let hedge_timer = tokio::time::sleep(hedge_delay.unwrap_or(Duration::MAX / 4));
        tokio::pin!(hedge_timer);
        let mut hedging = hedger.is_some();
        loop {
            tokio::select! {
                Some((addr, took, result)) = copies.next() => {
                    self.observe(addr, &result, &all);
                    if let (Some(hedger), Some(percentile)) = (hedger, hedger.and_then(|h| h.policy.percentile))
                        && !matches!(result, Err(Attempt::Failed(..)))
                    {
                        hedger.learnt.record(took, percentile);
                    }
                    let (failure, refused) = match result {
                        Ok(answer) => return Ok(answer),
                        // The method's own error is an answer.
                        Err(Attempt::Answered(failure)) => return Err(failure),
                        Err(Attempt::Failed(failure, refused)) => (failure, refused),
                    };
                    let again = self.may_fail_over(&call, &failure, refused, sent);
                    if again && untried.peek().is_some() && self.withdraw_failover() {
                        let addr = untried.next().expect("peeked");
                        copies.push(self.copy(addr, &call, deadline));
                        sent += 1;
                        self.counters.failovers.fetch_add(1, Ordering::Relaxed);
                    } else if copies.is_empty() {
                        return Err(failure);
                    }
                }
                () = &mut hedge_timer, if hedging => {
                    let hedger = hedger.expect("hedging");
                    let allowed = sent < hedger.policy.max_attempts.clamp(1, MAX_ATTEMPTS) && untried.peek().is_some();
                    if allowed && hedger.bucket.withdraw() {
                        let addr = untried.next().expect("peeked");
                        copies.push(self.copy(addr, &call, deadline));
                        sent += 1;
                        self.counters.hedges.fetch_add(1, Ordering::Relaxed);
                        hedge_timer.as_mut().reset(Instant::now() + hedger.delay());
                    } else {
                        hedging = false;
                    }
                }
            }
        }
    }

    /// The replicas to try, in order: not ejected, starting at the next in the rotation.
    fn order(&self, all: &[SocketAddr]) -> Vec<SocketAddr> {
        let admitted = match &self.outliers {
            Some(outliers) => outliers.admit(all, Instant::now()),
            None => all.to_vec(),
        };
        let start = self.next.fetch_add(1, Ordering::Relaxed) % admitted.len().max(1);
        admitted.iter().cycle().skip(start).take(admitted.len()).copied().collect()
    }

    fn may_fail_over(&self, call: &RawCall, failure: &Failure, refused: bool, sent: u32) -> bool {
        let Some(failover) = &self.failover else { return false };
        (refused || may_retry(call, failure)) && sent < failover.policy.attempts()
    }

    fn withdraw_failover(&self) -> bool {
        self.failover.as_ref().is_some_and(|f| f.bucket.withdraw())
    }

    fn observe(&self, addr: SocketAddr, result: &Result<Vec<u8>, Attempt>, all: &[SocketAddr]) {
        if let Some(outliers) = &self.outliers {
            let failed = match result {
                Err(Attempt::Failed(failure, refused)) => *refused || is_server_failure(failure),
                _ => false,
            };
            outliers.record(addr, failed, all, Instant::now());
        }
    }

    /// One copy of `call` to `addr`, with what remains of the deadline.
    fn copy(&self, addr: SocketAddr, call: &RawCall, deadline: Option<Instant>) -> CopyFuture {
        let pool = self.replicas.pool().clone();
        let mut call = call.clone();
        call.timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)));
        Box::pin(async move {
            let sent = Instant::now();
            let connection = match pool.get(addr).await {
                Ok(connection) => connection,
                Err(e) => {
                    let why = format!("cannot connect to {addr}: {e}");
                    let failed = Attempt::Failed(Failure::Rpc(RpcError::new(Code::Unavailable, why)), true);
                    return (addr, sent.elapsed(), Err(failed));
                }
            };
            let result = connection.call(call).await.map_err(|failure| match failure {
                Failure::App(_) => Attempt::Answered(failure),
                Failure::Rpc(_) => Attempt::Failed(failure, false),
            });
            (addr, sent.elapsed(), result)
        })
    }
}

/// How one copy failed: with an answer (the method's own error), or not; `true` when the
/// connection could not be opened, so the call never ran.
enum Attempt {
    Answered(Failure),
    Failed(Failure, bool),
}

/// A copy's replica, how long it took, and its outcome.
type CopyFuture = Pin<Box<dyn Future<Output = (SocketAddr, Duration, Result<Vec<u8>, Attempt>)> + Send>>;

impl<R: Replicas> Service<RawCall> for Replicated<R> {
    type Response = Vec<u8>;
    type Error = Failure;
    type Future = warren_rpc::client::CallFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Failure>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: RawCall) -> Self::Future {
        Box::pin(self.clone().perform(call))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_learnt_delay_is_the_percentile_of_the_last_thousand_answers() {
        let learnt = Learnt::default();
        for us in 1..LEARN_AFTER as u64 {
            learnt.record(Duration::from_micros(us), 0.99);
        }
        assert_eq!(learnt.delay_us.load(Ordering::Relaxed), 0, "nothing learnt before {LEARN_AFTER} answers");
        // 1,100 answers in all: the ring keeps the last 1,000, 101..=1100 µs.
        for us in LEARN_AFTER as u64..=1100 {
            learnt.record(Duration::from_micros(us), 0.99);
        }
        // Learnt at the 1,050th answer (every 50th) over 51..=1050 plus older ones overwritten:
        // the p99 of what the ring held then lies in the top 2 % of it.
        let delay = learnt.delay_us.load(Ordering::Relaxed);
        assert!((1030..=1050).contains(&delay), "{delay}");
        // Answers getting faster move it down; stalls in half a percent of answers do not move
        // it up.
        for _ in 0..2000 {
            learnt.record(Duration::from_micros(200), 0.99);
        }
        assert_eq!(learnt.delay_us.load(Ordering::Relaxed), 200);
        for i in 0..1000 {
            let us = if i % 200 == 0 { 50_000 } else { 200 };
            learnt.record(Duration::from_micros(us), 0.99);
        }
        assert_eq!(learnt.delay_us.load(Ordering::Relaxed), 200, "half a percent of stalls stay above the p99");
    }
}
