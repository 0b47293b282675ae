//! Replication transparency through real connections: hedged idempotent calls cut the tail
//! that a stalling replica makes, within the hedging budget; other calls are never hedged.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{ReplicaClient, Servant, Server, eventually};
use warren_rpc::{Caller, Target};
use warren_rpc_layers::{Fixed, Hedging, Replicated};

const STALL: Duration = Duration::from_millis(300);
const CALLS: u64 = 90;

/// Three replicas of "obj"; the third stalls on every 5th call it serves.
async fn three_replicas() -> Vec<Server> {
    let mut servers = Vec::new();
    for label in ["a", "b", "c"] {
        servers.push(Server::start("obj", Servant::new(label)).await);
    }
    servers[2].servant.stall(5, STALL);
    servers
}

fn served(servers: &[Server]) -> u64 {
    servers.iter().map(|s| s.servant.served.load(Ordering::SeqCst)).sum()
}

/// `CALLS` idempotent calls one after the other; how many took the stall's time.
async fn slow_calls(hello: &ReplicaClient) -> u64 {
    let mut slow = 0;
    for _ in 0..CALLS {
        let started = Instant::now();
        hello.whoami().await.unwrap();
        if started.elapsed() >= STALL {
            slow += 1;
        }
    }
    slow
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedged_calls_cut_the_tail_a_stalling_replica_makes_within_the_budget() {
    let servers = three_replicas().await;
    let addrs = servers.iter().map(|s| s.addr).collect();
    let plain = Replicated::new(Fixed::new(addrs));
    let hello = ReplicaClient::new(Target::new(Caller::new(plain), "obj"));
    let slow_without = slow_calls(&hello).await;
    let stalls = servers[2].servant.stalled.load(Ordering::SeqCst);
    assert!(stalls > 0 && slow_without == stalls, "every stall is a slow call: {slow_without} of {stalls}");
    assert_eq!(served(&servers), CALLS, "no extra calls without hedging");

    let servers = three_replicas().await;
    let addrs = servers.iter().map(|s| s.addr).collect();
    let budget = Hedging { delay: Duration::from_millis(20), percentile: None, max_extra: 0.2, ..Hedging::default() };
    let hedged = Replicated::new(Fixed::new(addrs)).hedging(budget);
    let hello = ReplicaClient::new(Target::new(Caller::new(hedged.clone()), "obj"));
    let slow_with = slow_calls(&hello).await;
    let stalls = servers[2].servant.stalled.load(Ordering::SeqCst);
    let counts = hedged.counts();
    assert!(stalls > 0);
    assert_eq!(slow_with, 0, "no call waited for a stall ({stalls} stalls, {counts:?})");
    assert!(counts.hedges >= stalls, "every stalled call was hedged: {counts:?}, {stalls} stalls");
    assert!(counts.hedges <= CALLS / 5, "hedges stay within 20 % of calls: {counts:?}");
    eventually("every copy reached its server", || served(&servers) == CALLS + counts.hedges).await;
    // The losers were cancelled: the stalled calls heard it and stopped.
    eventually("the stalled copies were cancelled", || servers[2].servant.cancelled.load(Ordering::SeqCst) == stalls)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_caps_hedges_and_calls_not_idempotent_are_never_hedged() {
    let servers = three_replicas().await;
    servers[2].servant.stall(1, Duration::from_millis(30));
    let addrs = servers.iter().map(|s| s.addr).collect();
    let hedged = Replicated::new(Fixed::new(addrs)).hedging(Hedging {
        delay: Duration::from_millis(5),
        percentile: None,
        ..Hedging::default()
    });
    let hello = ReplicaClient::new(Target::new(Caller::new(hedged.clone()), "obj"));
    for _ in 0..60 {
        hello.bump().await.unwrap();
    }
    assert_eq!(hedged.counts().hedges, 0, "a call not declared idempotent is sent once");
    let bumps: u64 = servers.iter().map(|s| s.servant.bumps.load(Ordering::SeqCst)).sum();
    assert_eq!(bumps, 60);
    // A third of the calls land on the stalling replica, but the default budget is 5 %.
    for _ in 0..60 {
        hello.whoami().await.unwrap();
    }
    let counts = hedged.counts();
    assert!(counts.hedges <= counts.calls / 20, "at most 5 % extra calls: {counts:?}");
    assert!(counts.hedges >= 1, "the budget earned over 120 calls was spent: {counts:?}");
}

/// With a fixed delay longer than the stall nothing would be hedged in time; the learnt delay
/// (the p90 of answers, from healthy calls) catches every stall once enough answers are known.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_learnt_delay_follows_the_answers_not_the_fixed_one() {
    let servers = three_replicas().await;
    servers[2].servant.stall(0, STALL);
    let addrs = servers.iter().map(|s| s.addr).collect();
    let policy =
        Hedging { delay: Duration::from_secs(60), percentile: Some(0.9), max_extra: 0.2, ..Hedging::default() };
    let hedged = Replicated::new(Fixed::new(addrs)).hedging(policy);
    let hello = ReplicaClient::new(Target::new(Caller::new(hedged.clone()), "obj"));
    assert_eq!(hedged.hedge_delay(), Some(Duration::from_secs(60)), "the fixed delay until answers are known");
    for _ in 0..warren_rpc_layers::LEARN_AFTER {
        hello.whoami().await.unwrap();
    }
    let learnt = hedged.hedge_delay().unwrap();
    assert!(learnt >= Duration::from_millis(1) && learnt < STALL / 2, "learnt {learnt:?}");
    servers[2].servant.stall(5, STALL);
    let slow = slow_calls(&hello).await;
    let stalls = servers[2].servant.stalled.load(Ordering::SeqCst);
    assert!(stalls > 0);
    assert_eq!(slow, 0, "every stall was hedged after the learnt delay ({stalls} stalls, {:?})", hedged.counts());
}
