//! Circuit breaking, Finagle's failure accrual: after
//! [`consecutive_failures`](Breaker::consecutive_failures) server failures in a row (default
//! 5) the circuit opens and calls fail at once, without being sent, with `overloaded` ("the
//! circuit is open"; the call never ran, so a retry elsewhere is safe). After the open time
//! one call is let through as a probe (half-open): its success closes the circuit, its failure
//! opens it again for twice as long. The open time starts at
//! [`open_for`](Breaker::open_for) (default 5 s) and is at most
//! [`max_open_for`](Breaker::max_open_for) (default 300 s), with equal jitter (between half
//! and all of it), Finagle's `equalJittered(5 s, 300 s)`.
//!
//! A server failure is what outlier ejection counts ([`is_server_failure`]); any other
//! outcome (an answer, the method's own error, `no_such_object`…) counts as a success. Wrap
//! one replica's connection to break per replica, or the whole stack to fail fast while the
//! object is down everywhere (then a [`ServeStale`](crate::stale::ServeStale) above it answers).

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::{Layer, Service};
use warren_rpc::{Code, Failure, RawCall, RpcError};

use crate::outlier::is_server_failure;

/// When the circuit opens and for how long. Defaults are Finagle's.
#[derive(Clone, Debug)]
pub struct Breaker {
    pub consecutive_failures: u32,
    pub open_for: Duration,
    pub max_open_for: Duration,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker { consecutive_failures: 5, open_for: Duration::from_secs(5), max_open_for: Duration::from_secs(300) }
    }
}

/// Where a circuit is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Circuit {
    Closed,
    Open,
    /// The open time is over: the next call is the probe.
    HalfOpen,
}

#[derive(Debug)]
struct State {
    failures: u32,
    /// Set while open: calls fail fast until then.
    open_until: Option<Instant>,
    /// How long the next opening lasts (before jitter).
    next_open: Duration,
    probing: bool,
}

/// Wraps services in one shared circuit.
#[derive(Clone, Debug)]
pub struct CircuitBreakerLayer {
    policy: Arc<Breaker>,
    state: Arc<Mutex<State>>,
}

impl CircuitBreakerLayer {
    pub fn new(policy: Breaker) -> Self {
        let state = State { failures: 0, open_until: None, next_open: policy.open_for, probing: false };
        CircuitBreakerLayer { policy: Arc::new(policy), state: Arc::new(Mutex::new(state)) }
    }

    /// Where the circuit is now.
    pub fn circuit(&self) -> Circuit {
        let state = self.state.lock().expect("circuit");
        match state.open_until {
            None => Circuit::Closed,
            Some(until) if Instant::now() < until || state.probing => Circuit::Open,
            Some(_) => Circuit::HalfOpen,
        }
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> CircuitBreaker<S> {
        CircuitBreaker { inner, layer: self.clone() }
    }
}

/// A service behind a circuit breaker.
#[derive(Clone, Debug)]
pub struct CircuitBreaker<S> {
    inner: S,
    layer: CircuitBreakerLayer,
}

/// Whether a call may go, and whether it is the probe.
fn admit(state: &mut State) -> Result<bool, Duration> {
    let Some(until) = state.open_until else { return Ok(false) };
    let now = Instant::now();
    if now < until {
        return Err(until - now);
    }
    if state.probing {
        return Err(Duration::ZERO);
    }
    state.probing = true;
    Ok(true)
}

fn settle(policy: &Breaker, state: &mut State, probe: bool, failed: bool) {
    if probe {
        state.probing = false;
    }
    if !failed {
        if probe || state.open_until.is_none() {
            *state = State { failures: 0, open_until: None, next_open: policy.open_for, probing: false };
        }
        return;
    }
    state.failures += 1;
    let trips = state.open_until.is_none() && state.failures >= policy.consecutive_failures;
    if probe || trips {
        let open = state.next_open;
        let jittered = open / 2 + open.mul_f64(fastrand::f64() / 2.0);
        state.open_until = Some(Instant::now() + jittered);
        state.next_open = (open * 2).min(policy.max_open_for);
    }
}

/// Settles the probe as a failure if the caller drops it before it ends.
struct Probe {
    state: Option<Arc<Mutex<State>>>,
}

impl Probe {
    /// The probe ended: `settle` says how.
    fn disarm(&mut self) {
        self.state = None;
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            state.lock().expect("circuit").probing = false;
        }
    }
}

impl<S> Service<RawCall> for CircuitBreaker<S>
where
    S: Service<RawCall, Response = Vec<u8>, Error = Failure> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Vec<u8>;
    type Error = Failure;
    type Future = warren_rpc::client::CallFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Failure>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: RawCall) -> Self::Future {
        let admitted = admit(&mut self.layer.state.lock().expect("circuit"));
        let probe = match admitted {
            Ok(probe) => probe,
            Err(left) => {
                let why = format!("the circuit is open: calls fail fast for {} ms more", left.as_millis());
                return Box::pin(std::future::ready(Err(Failure::Rpc(RpcError::new(Code::Overloaded, why)))));
            }
        };
        let mut guard = Probe { state: probe.then(|| self.layer.state.clone()) };
        let answer = self.inner.call(call);
        let layer = self.layer.clone();
        Box::pin(async move {
            let result = answer.await;
            guard.disarm();
            let failed = result.as_ref().err().is_some_and(is_server_failure);
            settle(&layer.policy, &mut layer.state.lock().expect("circuit"), probe, failed);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use tower::ServiceExt;

    use super::*;

    fn call() -> RawCall {
        RawCall {
            object: "o".into(),
            interface: String::new(),
            version: 0,
            method: "m".into(),
            args: Vec::new(),
            json: false,
            timeout: None,
            idempotent: true,
        }
    }

    /// A service that fails while `down` is set, counting the calls it gets.
    fn flaky(
        down: Arc<AtomicBool>,
        calls: Arc<AtomicU32>,
    ) -> impl Service<RawCall, Response = Vec<u8>, Error = Failure, Future: Send> + Clone + Send + 'static {
        tower::service_fn(move |_: RawCall| {
            calls.fetch_add(1, Ordering::SeqCst);
            let down = down.load(Ordering::SeqCst);
            async move {
                if down { Err(Failure::Rpc(RpcError::new(Code::Unavailable, "down"))) } else { Ok(b"ok".to_vec()) }
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_the_circuit_twice_as_long_and_fast_failures_send_nothing() {
        let (down, calls) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicU32::new(0)));
        let layer = CircuitBreakerLayer::new(Breaker::default());
        let service = layer.layer(flaky(down.clone(), calls.clone()));
        for _ in 0..5 {
            assert!(service.clone().oneshot(call()).await.is_err());
        }
        assert_eq!(layer.circuit(), Circuit::Open);
        let e = service.clone().oneshot(call()).await.unwrap_err();
        assert_eq!((e.code(), calls.load(Ordering::SeqCst)), (Some(Code::Overloaded), 5), "not sent");

        // Open for 2.5 to 5 s (equal jitter of 5 s), then one probe, which fails.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(layer.circuit(), Circuit::HalfOpen);
        assert!(service.clone().oneshot(call()).await.is_err());
        assert_eq!((layer.circuit(), calls.load(Ordering::SeqCst)), (Circuit::Open, 6));
        // Now 5 to 10 s.
        tokio::time::advance(Duration::from_millis(4_999)).await;
        assert_eq!(layer.circuit(), Circuit::Open);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(layer.circuit(), Circuit::HalfOpen);

        // A probe dropped before its answer frees the probe's place.
        let probe = service.clone().call(call());
        assert_eq!(layer.circuit(), Circuit::Open, "while the probe is out, others fail fast");
        drop(probe);
        down.store(false, Ordering::SeqCst);
        assert_eq!(service.clone().oneshot(call()).await.unwrap(), b"ok");
        assert_eq!(layer.circuit(), Circuit::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn only_consecutive_server_failures_count() {
        let (down, calls) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicU32::new(0)));
        let layer = CircuitBreakerLayer::new(Breaker::default());
        let service = layer.layer(flaky(down.clone(), calls));
        for _ in 0..3 {
            for _ in 0..4 {
                let _ = service.clone().oneshot(call()).await;
            }
            down.store(false, Ordering::SeqCst);
            service.clone().oneshot(call()).await.unwrap();
            down.store(true, Ordering::SeqCst);
        }
        assert_eq!(layer.circuit(), Circuit::Closed, "a success in between resets the count");
    }
}
