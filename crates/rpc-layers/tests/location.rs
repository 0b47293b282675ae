//! Location transparency through a real registry: a call follows an object that moved to
//! another server, with no client restart and no lookup per call.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Registry, ReplicaClient, Servant, Server};
use warren_registry::{Endpoint, Name};
use warren_rpc::{Caller, Code, Target};
use warren_rpc_layers::Location;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_follows_an_object_that_moved_without_a_lookup_per_call() {
    let registry = Registry::start().await;
    let (a, b) = (Server::start("hello", Servant::new("a")).await, Server::start("hello", Servant::new("b")).await);
    let admin = registry.client().await;
    let name = Name::new("hello").unwrap();
    admin.bind(&name, "owner", vec![Endpoint::tcp(a.addr)]).await.unwrap();

    let location = Location::new(registry.client().await);
    let hello = ReplicaClient::new(Target::new(Caller::new(location.clone()), "hello"));
    for _ in 0..20 {
        assert_eq!(hello.whoami().await.unwrap(), "a");
    }
    assert_eq!(location.lookups(), 1, "one lookup, then the cache");

    // The object moves: unregistered from A, registered on B.
    admin.unbind(&name, "owner").await.unwrap();
    admin.bind(&name, "owner", vec![Endpoint::tcp(b.addr)]).await.unwrap();
    let mut moved = false;
    for _ in 0..5_000 {
        // Calls in the gap between the two writes may find no server; none may hang.
        if hello.whoami().await.is_ok_and(|who| who == "b") {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(moved, "the calls never moved to B");
    let served_by_a = a.servant.served.load(Ordering::SeqCst);
    for _ in 0..20 {
        assert_eq!(hello.whoami().await.unwrap(), "b");
    }
    assert_eq!(a.servant.served.load(Ordering::SeqCst), served_by_a, "A is called no more");
    assert_eq!(location.lookups(), 1, "the watch, not lookups, followed the move");
}

#[tokio::test]
async fn a_name_nobody_registered_fails_as_no_such_object() {
    let registry = Registry::start().await;
    let location = Location::new(registry.client().await);
    let hello = ReplicaClient::new(Target::new(Caller::new(location.clone()), "nobody"));
    assert_eq!(hello.whoami().await.unwrap_err().code(), Some(Code::NoSuchObject));
    let bad = ReplicaClient::new(Target::new(Caller::new(location), "not a name!"));
    assert_eq!(bad.whoami().await.unwrap_err().code(), Some(Code::NoSuchObject));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_registry_gone_calls_use_the_endpoints_last_known() {
    let registry = Registry::start().await;
    let a = Server::start("hello", Servant::new("a")).await;
    let name = Name::new("hello").unwrap();
    registry.client().await.bind(&name, "owner", vec![Endpoint::tcp(a.addr)]).await.unwrap();
    let location = Location::new(registry.client().await);
    let hello = ReplicaClient::new(Target::new(Caller::new(location.clone()), "hello"));
    assert_eq!(hello.whoami().await.unwrap(), "a");
    drop(registry);
    // The watch ends with the registry; the next call tries a lookup, which fails, and the
    // call goes where the name last pointed.
    for _ in 0..5_000 {
        assert_eq!(hello.whoami().await.unwrap(), "a");
        if location.lookups() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(location.lookups(), 2, "the ended watch made the next call look the name up");
    for _ in 0..50 {
        assert_eq!(hello.whoami().await.unwrap(), "a");
    }
    assert!(location.lookups() <= 3, "a registry that is down is not asked on every call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_a_location_skips_endpoints_that_refuse_connections() {
    let registry = Registry::start().await;
    let (a, b) = (Server::start("hello", Servant::new("a")).await, Server::start("hello", Servant::new("b")).await);
    let name = Name::new("hello").unwrap();
    let endpoints = vec![Endpoint::tcp(a.addr), Endpoint::tcp(b.addr)];
    registry.client().await.bind(&name, "owner", endpoints).await.unwrap();
    let location = Location::new(registry.client().await);
    let hello = ReplicaClient::new(Target::new(Caller::new(location), "hello"));
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(hello.whoami().await.unwrap());
    }
    seen.sort();
    assert_eq!(seen, ["a", "a", "b", "b"], "round robin");
    // A fresh client, so that no connection to A was open when it died (a call sent on a
    // connection that then closes may have run: `unavailable`, for a layer above to judge).
    a.kill();
    let location = Location::new(registry.client().await);
    let hello = ReplicaClient::new(Target::new(Caller::new(location), "hello"));
    for _ in 0..6 {
        assert_eq!(hello.bump().await.map(|_| ()), Ok(()), "a refused connection: the next endpoint");
    }
    assert_eq!(b.servant.bumps.load(Ordering::SeqCst), 6);
}
