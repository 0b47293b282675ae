//! Failure transparency through real connections: failover and outlier ejection when a
//! replica dies under load, retries within their budget, the circuit breaker, and the cached
//! answer served, marked stale, when every replica is down.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{ReplicaClient, Servant, Server, eventually};
use tokio::time::Instant;
use tower::ServiceBuilder;
use warren_rpc::{Caller, Code, Connection, Target};
use warren_rpc_layers::{
    Breaker, Circuit, CircuitBreakerLayer, Ejection, Fixed, Outliers, Replicated, RetryBudget, RetryLayer,
    ServeStaleLayer, StalePolicy, observe,
};

async fn replicas(labels: &[&str]) -> Vec<Server> {
    let mut servers = Vec::new();
    for label in labels {
        servers.push(Server::start("obj", Servant::new(label)).await);
    }
    servers
}

fn fixed(servers: &[Server]) -> Fixed {
    Fixed::new(servers.iter().map(|s| s.addr).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_replicas_under_load_costs_idempotent_calls_nothing() {
    let servers = replicas(&["a", "b", "c"]).await;
    let outliers = Arc::new(Outliers::new(Ejection::default()));
    let replicated = Replicated::new(fixed(&servers)).failover(RetryBudget::default()).outliers(outliers.clone());
    let hello = ReplicaClient::new(Target::new(Caller::new(replicated.clone()), "obj"));
    let (done, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (hello, done, errors) = (hello.clone(), done.clone(), errors.clone());
            tokio::spawn(async move {
                while done.fetch_add(1, Ordering::SeqCst) < 1_500 {
                    if hello.whoami().await.is_err() {
                        errors.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    eventually("calls are flowing", || done.load(Ordering::SeqCst) >= 300).await;
    servers[1].kill();
    for worker in workers {
        worker.await.unwrap();
    }
    assert_eq!(errors.load(Ordering::SeqCst), 0, "{:?}", replicated.counts());
    assert!(replicated.counts().failovers >= 1, "the calls on the dead replica failed over");
    assert_eq!(outliers.ejected(Instant::now()), vec![servers[1].addr], "the dead replica was ejected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_not_idempotent_fails_over_only_when_it_never_ran() {
    let servers = replicas(&["a", "b"]).await;
    servers[0].kill();
    let replicated = Replicated::new(fixed(&servers)).failover(RetryBudget::default());
    let hello = ReplicaClient::new(Target::new(Caller::new(replicated.clone()), "obj"));
    for _ in 0..4 {
        hello.bump().await.expect("a refused connection means the call never ran");
    }
    assert_eq!(servers[1].servant.bumps.load(Ordering::SeqCst), 4);

    // Sent, then its server died: it may have run, so it is not sent again.
    let servers = replicas(&["a", "b"]).await;
    servers[0].servant.stall(1, Duration::from_secs(5));
    let replicated = Replicated::new(fixed(&servers)).failover(RetryBudget::default());
    let hello = ReplicaClient::new(Target::new(Caller::new(replicated.clone()), "obj"));
    let call = tokio::spawn(async move { hello.bump().await });
    eventually("the call reached the first replica", || servers[0].servant.stalled.load(Ordering::SeqCst) == 1).await;
    servers[0].kill();
    assert_eq!(call.await.unwrap().unwrap_err().code(), Some(Code::Unavailable));
    assert_eq!(servers[1].servant.served.load(Ordering::SeqCst), 0);
    assert_eq!(replicated.counts().failovers, 0);
}

#[tokio::test]
async fn the_retry_layer_retries_what_never_ran_within_its_attempts_and_budget() {
    let servers = replicas(&["a"]).await;
    let servant = servers[0].servant.clone();
    let connection = Connection::connect(servers[0].addr, common::T).await.unwrap();
    let quick = RetryBudget { initial_backoff: Duration::from_millis(1), ..RetryBudget::default() };
    let retrying = ServiceBuilder::new().layer(RetryLayer::new(quick.clone())).service(connection.clone());
    let hello = ReplicaClient::new(Target::new(Caller::new(retrying), "obj"));
    servant.refuse_next.store(2, Ordering::SeqCst);
    assert_eq!(hello.bump().await.unwrap(), 1, "refused twice (overloaded: never ran), then served");
    assert_eq!(servant.served.load(Ordering::SeqCst), 3);
    servant.refuse_next.store(5, Ordering::SeqCst);
    assert_eq!(hello.whoami().await.unwrap_err().code(), Some(Code::Overloaded), "3 attempts at most");
    assert_eq!(servant.served.load(Ordering::SeqCst), 6);

    // An empty budget: no retries at all.
    servant.refuse_next.store(1, Ordering::SeqCst);
    let broke = RetryBudget { min_per_sec: 0, percent: 0.0, ..quick };
    let retrying = ServiceBuilder::new().layer(RetryLayer::new(broke)).service(connection);
    let hello = ReplicaClient::new(Target::new(Caller::new(retrying), "obj"));
    assert_eq!(hello.whoami().await.unwrap_err().code(), Some(Code::Overloaded));
    assert_eq!(servant.served.load(Ordering::SeqCst), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_opens_after_five_failures_and_a_probe_closes_it() {
    let servers = replicas(&["a"]).await;
    let (addr, servant) = (servers[0].addr, servers[0].servant.clone());
    let breaker = CircuitBreakerLayer::new(Breaker {
        open_for: Duration::from_millis(50),
        max_open_for: Duration::from_millis(100),
        ..Breaker::default()
    });
    let service = ServiceBuilder::new().layer(breaker.clone()).service(Replicated::new(fixed(&servers)));
    let hello = ReplicaClient::new(Target::new(Caller::new(service), "obj"));
    assert_eq!(hello.whoami().await.unwrap(), "a");
    servers[0].kill();
    for _ in 0..5 {
        assert_eq!(hello.whoami().await.unwrap_err().code(), Some(Code::Unavailable));
    }
    assert_eq!(breaker.circuit(), Circuit::Open);
    let e = hello.whoami().await.unwrap_err();
    assert_eq!(e.code(), Some(Code::Overloaded), "{e}");

    let _back = Server::start_on(addr, "obj", servant).await;
    eventually("the circuit lets a probe through", || breaker.circuit() == Circuit::HalfOpen).await;
    assert_eq!(hello.whoami().await.unwrap(), "a", "the probe");
    assert_eq!(breaker.circuit(), Circuit::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_replica_down_the_last_answer_is_served_marked_stale() {
    let servers = replicas(&["a", "b"]).await;
    let stale = ServeStaleLayer::new(StalePolicy::default());
    let replicated = Replicated::new(fixed(&servers)).failover(RetryBudget::default());
    let service = ServiceBuilder::new().layer(stale.clone()).service(replicated);
    let hello = ReplicaClient::new(Target::new(Caller::new(service), "obj"));
    let (fresh, marker) = observe(hello.whoami()).await;
    let fresh = fresh.unwrap();
    assert_eq!(marker, None, "a fresh answer is not marked");
    assert_eq!(hello.bump().await.unwrap(), 1);
    for server in &servers {
        server.kill();
    }
    let (answer, marker) = observe(hello.whoami()).await;
    assert_eq!(answer.unwrap(), fresh, "the last answer, from the cache");
    let marker = marker.expect("marked stale");
    assert!(marker.age < common::T, "{marker:?}");
    assert_eq!(stale.cache().served(), 1);
    let e = hello.bump().await.unwrap_err();
    assert_eq!(e.code(), Some(Code::Unavailable), "a call not idempotent is never answered from the cache");
}
