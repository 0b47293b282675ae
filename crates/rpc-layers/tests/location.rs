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
