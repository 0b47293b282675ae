//! One behavioural suite every registry backend passes: the embedded store and etcd run the
//! same checks (`embedded.rs`, `etcd.rs`). Orders within a name are not compared (the embedded
//! store keeps insertion order, etcd key order); everything else is.
#![allow(dead_code)]

use std::time::Duration;

use warren_registry::backend::{Backend, Watch};
use warren_registry::model::{Endpoint, Error, Event, EventKind, LeaseId, Name, Revision};

pub const ADMIN: &str = "admin-secret";
/// How long any one awaited event may take before the test gives up.
const T: Duration = Duration::from_secs(15);

pub fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

pub fn ep(addr: &str) -> Endpoint {
    Endpoint::tcp(addr.parse().unwrap())
}

fn sorted(mut endpoints: Vec<Endpoint>) -> Vec<Endpoint> {
    endpoints.sort_by_key(Endpoint::key);
    endpoints
}

async fn lookup(b: &dyn Backend, n: &Name) -> Vec<Endpoint> {
    sorted(b.lookup(n).await.expect("bound").1.endpoints)
}

/// The next events of a watch, bounded in time.
async fn next(w: &mut Box<dyn Watch>) -> Vec<Event> {
    tokio::time::timeout(T, w.next()).await.expect("an event in time").expect("a live watch")
}

fn brief(events: &[Event]) -> Vec<(EventKind, String, String)> {
    events.iter().map(|e| (e.kind, e.name.to_string(), e.endpoint.socket_addr().to_string())).collect()
}

/// bind, lookup, rebind, unbind and their refusals, as the RMI registry has them.
pub async fn rmi_verbs(b: &dyn Backend) {
    let (db, a, c) = (name("db"), ep("127.0.0.1:5432"), ep("127.0.0.2:5432"));
    assert_eq!(b.lookup(&db).await, Err(Error::NotBound(db.clone())));
    let r1 = b.bind(&db, "tok", vec![a.clone()]).await.unwrap();
    assert_eq!(b.bind(&db, "tok", vec![c.clone()]).await, Err(Error::AlreadyBound(db.clone())));
    let (seen, entry) = b.lookup(&db).await.unwrap();
    assert!(seen >= r1);
    assert_eq!((entry.name.as_str(), entry.endpoints), ("db", vec![a.clone()]));

    let r2 = b.rebind(&db, "tok", vec![a.clone(), c.clone()]).await.unwrap();
    assert!(r2 > r1, "a rebind that changes something takes a new revision");
    assert_eq!(lookup(b, &db).await, sorted(vec![a.clone(), c.clone()]));
    let r3 = b.rebind(&db, "tok", vec![a.clone(), c.clone()]).await.unwrap();
    assert_eq!(r3, r2, "a rebind that changes nothing takes no revision");

    assert!(matches!(b.rebind(&db, "thief", vec![a.clone()]).await, Err(Error::Forbidden(_))));
    assert!(matches!(b.unbind(&db, "thief").await, Err(Error::Forbidden(_))));
    assert_eq!(lookup(b, &db).await.len(), 2, "a refused write changes nothing");

    b.unbind(&db, "tok").await.unwrap();
    assert_eq!(b.lookup(&db).await, Err(Error::NotBound(db.clone())));
    assert_eq!(b.unbind(&db, "tok").await, Err(Error::NotBound(db.clone())));
    // rebind binds a free name; the admin token may change any name.
    b.rebind(&db, "tok", vec![c.clone()]).await.unwrap();
    b.rebind(&db, ADMIN, vec![a.clone()]).await.unwrap();
    assert_eq!(lookup(b, &db).await, vec![a.clone()]);
    b.unbind(&db, ADMIN).await.unwrap();

    assert!(matches!(b.bind(&db, "tok", vec![]).await, Err(Error::Invalid(_))));
    assert!(matches!(b.bind(&db, "tok", vec![a.clone(), a.clone()]).await, Err(Error::Invalid(_))));
    let many: Vec<Endpoint> = (1..=65).map(|i| ep(&format!("127.0.0.1:{i}"))).collect();
    assert!(matches!(b.bind(&db, "tok", many).await, Err(Error::TooLarge(_))));
}

/// list by prefix, in name order.
pub async fn list_by_prefix(b: &dyn Backend) {
    for (n, port) in [("web", 1), ("web.eu", 2), ("web-b", 3), ("db", 4)] {
        b.bind(&name(n), "tok", vec![ep(&format!("127.0.0.1:{port}"))]).await.unwrap();
    }
    let names = |entries: Vec<warren_registry::model::Entry>| {
        entries.into_iter().map(|e| e.name.to_string()).collect::<Vec<_>>()
    };
    assert_eq!(names(b.list("web").await.unwrap().1), ["web", "web-b", "web.eu"]);
    assert_eq!(names(b.list("").await.unwrap().1), ["db", "web", "web-b", "web.eu"]);
    assert!(b.list("zzz").await.unwrap().1.is_empty());
    assert!(matches!(b.list("Bad/Prefix").await, Err(Error::Invalid(_))));
}

/// register, renew and release; the lease's owner rules: renewing or releasing needs the token
/// that registered it, and ids are random.
pub async fn leases(b: &dyn Backend) {
    let (svc, a, c) = (name("svc"), ep("127.0.0.1:80"), ep("127.0.0.1:81"));
    let la = b.register(&svc, "tok", a.clone(), Duration::from_secs(30)).await.unwrap();
    let lc = b.register(&svc, "tok", c.clone(), Duration::from_secs(30)).await.unwrap();
    assert!(lc.revision > la.revision && la.id != lc.id);
    assert!(la.ttl >= Duration::from_secs(30));
    assert_eq!(lookup(b, &svc).await, sorted(vec![a.clone(), c.clone()]));
    assert!(b.renew(la.id, "tok").await.unwrap() >= Duration::from_secs(30));
    assert!(b.renew(la.id, ADMIN).await.unwrap() >= Duration::from_secs(30), "the admin may");
    assert_eq!(b.renew(la.id, "thief").await, Err(Error::Forbidden(format!("lease {}", la.id))));
    assert!(matches!(b.renew(la.id, "").await, Err(Error::Unauthenticated(_))));
    assert!(la.id.0.abs_diff(lc.id.0) > 1 << 32, "two ids in a row are far apart: {} {}", la.id, lc.id);
    assert_eq!(b.authorize(&svc, "tok").await, Ok(()));
    assert!(matches!(b.authorize(&svc, "thief").await, Err(Error::Forbidden(_))));
    assert_eq!(b.authorize(&name("free"), "tok").await, Err(Error::NotBound(name("free"))));
    assert!(matches!(
        b.register(&svc, "thief", ep("127.0.0.9:1"), Duration::from_secs(30)).await,
        Err(Error::Forbidden(_))
    ));
    assert!(matches!(b.release(la.id, "thief").await, Err(Error::Forbidden(_))));

    b.release(la.id, "tok").await.unwrap();
    assert_eq!(lookup(b, &svc).await, vec![c.clone()]);
    assert_eq!(b.renew(la.id, "tok").await, Err(Error::LeaseNotFound(la.id)));
    assert_eq!(b.release(la.id, "tok").await, Err(Error::LeaseNotFound(la.id)));
    // The name goes with its last endpoint.
    b.release(lc.id, ADMIN).await.unwrap();
    assert_eq!(b.lookup(&svc).await, Err(Error::NotBound(svc.clone())));
    assert_eq!(b.renew(LeaseId(0x7777_0000_1234), "tok").await, Err(Error::LeaseNotFound(LeaseId(0x7777_0000_1234))));
    let beyond = LeaseId(u128::MAX);
    assert_eq!(b.renew(beyond, "tok").await, Err(Error::LeaseNotFound(beyond)));
    assert!(matches!(b.register(&svc, "tok", a.clone(), Duration::from_millis(10)).await, Err(Error::Invalid(_))));
}

/// A lease that is not renewed lapses: its endpoint goes, watchers hear of it, the name is free.
pub async fn lease_lapses(b: &dyn Backend, bound: Duration) {
    let svc = name("lapse");
    let stays = b.register(&svc, "tok", ep("127.0.0.1:2"), Duration::from_secs(60)).await.unwrap();
    let lease = b.register(&svc, "tok", ep("127.0.0.1:1"), Duration::from_secs(1)).await.unwrap();
    let mut watch = b.watch("lapse", lease.revision).await.unwrap();
    let started = tokio::time::Instant::now();
    let events = next(&mut watch).await;
    let took = started.elapsed();
    assert_eq!(brief(&events), [(EventKind::Delete, "lapse".into(), "127.0.0.1:1".into())]);
    assert!(took <= lease.ttl + bound, "lapsed after {took:?}, TTL {:?} + bound {bound:?}", lease.ttl);
    assert_eq!(b.renew(lease.id, "tok").await, Err(Error::LeaseNotFound(lease.id)));
    assert_eq!(lookup(b, &svc).await, vec![ep("127.0.0.1:2")]);
    b.release(stays.id, "tok").await.unwrap();
}

/// A watch from a revision yields exactly the events after it, in order, each once, and a
/// watch from the middle of the history yields exactly the tail.
pub async fn watch_from_a_revision(b: &dyn Backend) {
    let start = b.list("").await.unwrap().0;
    let (x, y) = (name("w.x"), name("w.y"));
    let mut everything = b.watch("w.", start).await.unwrap();
    let r1 = b.bind(&x, "tok", vec![ep("127.0.0.1:1")]).await.unwrap();
    b.rebind(&x, "tok", vec![ep("127.0.0.1:2")]).await.unwrap();
    b.bind(&name("other"), "tok", vec![ep("127.0.0.1:9")]).await.unwrap();
    let lease = b.register(&y, "tok", ep("127.0.0.1:3"), Duration::from_secs(60)).await.unwrap();
    b.release(lease.id, "tok").await.unwrap();
    b.unbind(&x, "tok").await.unwrap();

    let want = [
        (EventKind::Put, "w.x", "127.0.0.1:1"),
        (EventKind::Delete, "w.x", "127.0.0.1:1"),
        (EventKind::Put, "w.x", "127.0.0.1:2"),
        (EventKind::Put, "w.y", "127.0.0.1:3"),
        (EventKind::Delete, "w.y", "127.0.0.1:3"),
        (EventKind::Delete, "w.x", "127.0.0.1:2"),
    ];
    let want: Vec<(EventKind, String, String)> =
        want.iter().map(|(k, n, a)| (*k, n.to_string(), a.to_string())).collect();
    let mut got = Vec::new();
    while got.len() < want.len() {
        got.extend(next(&mut everything).await);
    }
    // Within one revision (the rebind) the order of a delete and a put is the backend's.
    let revisions: Vec<Revision> = got.iter().map(|e| e.revision).collect();
    assert!(revisions.windows(2).all(|w| w[0] <= w[1]), "revisions in order: {revisions:?}");
    let (mut g, mut w) = (brief(&got), want.clone());
    g[1..3].sort_by_key(|(k, n, a)| (*k == EventKind::Put, n.clone(), a.clone()));
    w[1..3].sort_by_key(|(k, n, a)| (*k == EventKind::Put, n.clone(), a.clone()));
    assert_eq!(g, w);

    let mut tail = b.watch("w.", r1).await.unwrap();
    let mut resumed = Vec::new();
    while resumed.len() < want.len() - 1 {
        resumed.extend(next(&mut tail).await);
    }
    assert_eq!(resumed, got[1..].to_vec(), "resuming from a revision repeats and misses nothing");
}

/// Names are case-insensitive and case-preserving: every spelling reaches one record, which
/// shows the spelling it was created with until it is gone.
pub async fn names_in_any_case(b: &dyn Backend) {
    let (mixed, lower, upper) = (name("HelloServer"), name("helloserver"), name("HELLOSERVER"));
    let (first, second) = (ep("127.0.0.1:1099"), ep("127.0.0.2:1099"));
    let from = b.bind(&mixed, "tok", vec![first.clone()]).await.unwrap();
    let mut watch = b.watch("hELLO", Revision(from.0 - 1)).await.unwrap();
    let taken = b.bind(&lower, "other", vec![second.clone()]).await.unwrap_err();
    assert_eq!(taken.to_string(), "HelloServer: already bound");
    assert!(matches!(b.register(&upper, "other", second.clone(), T).await, Err(Error::Forbidden(_))), "one owner");
    b.register(&upper, "tok", second.clone(), T).await.unwrap();
    for asked in [&mixed, &lower, &upper] {
        let (_, entry) = b.lookup(asked).await.unwrap();
        assert_eq!(entry.name.as_str(), "HelloServer", "asked {asked}");
        assert_eq!(sorted(entry.endpoints), vec![first.clone(), second.clone()]);
    }
    for prefix in ["hello", "HELLO", "Hello"] {
        let (_, entries) = b.list(prefix).await.unwrap();
        let names: Vec<String> = entries.iter().map(|e| e.name.to_string()).collect();
        assert_eq!(names, ["HelloServer"], "prefix {prefix}");
        assert_eq!(entries[0].endpoints.len(), 2);
    }
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.extend(brief(&next(&mut watch).await));
    }
    let put = |addr: &Endpoint| (EventKind::Put, "HelloServer".to_owned(), addr.socket_addr().to_string());
    assert_eq!(seen, [put(&first), put(&second)], "a prefix in another case watches the name");
    eventually(|| b.snapshot(&lower).map(|e| e.len()) == Some(2)).await;
    b.unbind(&upper, "tok").await.unwrap();
    assert_eq!(b.lookup(&mixed).await, Err(Error::NotBound(mixed.clone())));
    // Gone, so the next bind chooses the spelling again.
    b.bind(&lower, "other", vec![second.clone()]).await.unwrap();
    assert_eq!(b.lookup(&mixed).await.unwrap().1.name.as_str(), "helloserver");
}

/// What the DNS front end reads: the endpoints now, without waiting.
pub async fn snapshot_follows_writes(b: &dyn Backend) {
    let n = name("snap");
    b.bind(&n, "tok", vec![ep("127.0.0.1:1"), ep("127.0.0.1:2")]).await.unwrap();
    eventually(|| b.snapshot(&n).map(sorted) == Some(vec![ep("127.0.0.1:1"), ep("127.0.0.1:2")])).await;
    b.unbind(&n, "tok").await.unwrap();
    eventually(|| b.snapshot(&n).is_none()).await;
}

/// Waits, bounded, for a backend's local copy to catch up (etcd's is fed by a watch).
async fn eventually(done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + T;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "the snapshot never caught up");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// One `#[tokio::test]` per check, each on a fresh backend from `$make` (an async expression
/// giving `(impl Backend, guard)`), with `$bound` the backend's lease-expiry bound.
#[macro_export]
macro_rules! behaviour_suite {
    ($make:expr, $bound:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn rmi_verbs() {
            let (b, _guard) = $make.await;
            suite::rmi_verbs(&b).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn list_by_prefix() {
            let (b, _guard) = $make.await;
            suite::list_by_prefix(&b).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn leases() {
            let (b, _guard) = $make.await;
            suite::leases(&b).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn lease_lapses() {
            let (b, _guard) = $make.await;
            suite::lease_lapses(&b, $bound).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn watch_from_a_revision() {
            let (b, _guard) = $make.await;
            suite::watch_from_a_revision(&b).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn names_in_any_case() {
            let (b, _guard) = $make.await;
            suite::names_in_any_case(&b).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn snapshot_follows_writes() {
            let (b, _guard) = $make.await;
            suite::snapshot_follows_writes(&b).await
        }
    };
}
