//! The embedded store: durability across reopening, restart semantics of leases, and watches.

mod common;

use std::time::{Duration, Instant};

use common::{TempDir, ep, name, open};
use warren_registry::backend::Backend;
use warren_registry::{Error, EventKind, Revision};

#[tokio::test]
async fn acknowledged_writes_survive_reopening() {
    let dir = TempDir::new();
    let lease = {
        let store = open(&dir);
        store.bind(&name("web"), "alice", vec![ep(1), ep(2)]).await.unwrap();
        store.rebind(&name("web"), "alice", vec![ep(2), ep(3)]).await.unwrap();
        store.bind(&name("gone"), "alice", vec![ep(4)]).await.unwrap();
        store.unbind(&name("gone"), "alice").await.unwrap();
        store.register(&name("api"), "svc", ep(5), Duration::from_secs(60)).await.unwrap()
    };
    let store = open(&dir);
    let (revision, entries) = store.list("").await.unwrap();
    assert_eq!(revision, lease.revision, "the revision counter continues");
    let listed: Vec<(String, Vec<u16>)> =
        entries.into_iter().map(|e| (e.name.to_string(), e.endpoints.iter().map(|e| e.port).collect())).collect();
    assert_eq!(listed, [("api".into(), vec![5]), ("web".into(), vec![2, 3])]);
    assert_eq!(store.rebind(&name("web"), "bob", vec![ep(9)]).await, Err(Error::Forbidden("web".into())));
    assert_eq!(store.renew(lease.id, "svc").await, Ok(Duration::from_secs(60)), "the lease was kept");
    assert_eq!(
        store.renew(lease.id, "bob").await,
        Err(Error::Forbidden(format!("lease {}", lease.id))),
        "and its holder"
    );
    assert_eq!(store.release(lease.id, "svc").await, Ok(Revision(lease.revision.0 + 1)));
    let next = store.register(&name("api"), "svc", ep(5), Duration::from_secs(60)).await.unwrap();
    assert_ne!(next.id, lease.id, "lease ids are not reused after a restart");
}

/// Names as listed: their spellings.
async fn spellings(store: &impl Backend) -> Vec<String> {
    store.list("").await.unwrap().1.into_iter().map(|e| e.name.to_string()).collect()
}

#[tokio::test]
async fn names_keep_their_spelling_across_reopening_under_one_record() {
    let dir = TempDir::new();
    {
        let store = open(&dir);
        store.bind(&name("HelloServer"), "alice", vec![ep(1)]).await.unwrap();
        store.register(&name("HELLOSERVER"), "alice", ep(2), Duration::from_secs(60)).await.unwrap();
        store.bind(&name("ComputeEngine"), "bob", vec![ep(3)]).await.unwrap();
        store.unbind(&name("computeengine"), "bob").await.unwrap();
        store.bind(&name("computeengine"), "bob", vec![ep(4)]).await.unwrap();
        store.bind(&name("web"), "carol", vec![ep(5)]).await.unwrap();
    }
    let store = open(&dir);
    assert_eq!(spellings(&store).await, ["computeengine", "HelloServer", "web"], "ordered by the folded name");
    let (_, entry) = store.lookup(&name("helloSERVER")).await.unwrap();
    assert_eq!((entry.name.as_str(), entry.endpoints.len()), ("HelloServer", 2));
    assert_eq!(store.snapshot(&name("helloserver")).map(|e| e.len()), Some(2));
}

#[tokio::test]
async fn a_store_written_before_names_had_case_loads_as_it_is() {
    let dir = TempDir::new();
    {
        let store = open(&dir);
        store.bind(&name("web"), "alice", vec![ep(1)]).await.unwrap();
        store.bind(&name("Api"), "alice", vec![ep(2)]).await.unwrap();
    }
    // Such a store has no table of spellings (and only lowercase names).
    {
        let db = redb::Database::open(dir.path().join("registry.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.delete_table(redb::TableDefinition::<&str, &str>::new("spellings")).unwrap();
        txn.commit().unwrap();
    }
    let store = open(&dir);
    assert_eq!(spellings(&store).await, ["api", "web"]);
    assert_eq!(store.rebind(&name("API"), "alice", vec![ep(3)]).await.map(|_| ()), Ok(()));
    assert_eq!(store.lookup(&name("api")).await.unwrap().1.name.as_str(), "api", "the spelling it had stays");
}

#[tokio::test]
async fn after_a_restart_a_lease_gets_a_full_ttl_then_lapses() {
    let dir = TempDir::new();
    let ttl = Duration::from_secs(1);
    open(&dir).register(&name("api"), "svc", ep(1), ttl).await.unwrap();
    let restart = Instant::now();
    let store = open(&dir);
    assert_eq!(store.snapshot(&name("api")).map(|e| e.len()), Some(1), "still there after the restart");
    let (revision, _) = store.list("").await.unwrap();
    let mut watch = store.watch("", revision).await.unwrap();
    let events = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.expect("a lapse").unwrap();
    let lapsed = restart.elapsed();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::Delete);
    assert!(lapsed >= ttl, "lapsed {lapsed:?} after the restart, before a full TTL");
    assert_eq!(store.snapshot(&name("api")), None);
}

#[tokio::test]
async fn a_watch_replays_history_then_follows_and_resumes_without_gaps() {
    let dir = TempDir::new();
    let store = open(&dir);
    let r1 = store.bind(&name("a"), "t", vec![ep(1)]).await.unwrap();
    let r2 = store.bind(&name("b"), "t", vec![ep(2)]).await.unwrap();
    let mut all = store.watch("", Revision(0)).await.unwrap();
    let mut only_b = store.watch("b", r1).await.unwrap();
    let r3 = store.rebind(&name("a"), "t", vec![ep(3)]).await.unwrap();
    let r4 = store.unbind(&name("b"), "t").await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 5 {
        seen.extend(all.next().await.unwrap().into_iter().map(|e| (e.revision, e.kind, e.endpoint.port)));
    }
    use EventKind::{Delete, Put};
    assert_eq!(seen, [(r1, Put, 1), (r2, Put, 2), (r3, Delete, 1), (r3, Put, 3), (r4, Delete, 2)]);
    let mut b = Vec::new();
    while b.len() < 2 {
        b.extend(only_b.next().await.unwrap().into_iter().map(|e| (e.revision, e.kind)));
    }
    assert_eq!(b, [(r2, Put), (r4, Delete)]);
    drop((all, only_b));
    drop(store);
    let store = open(&dir);
    assert_eq!(store.watch("", r2).await.err(), Some(Error::Compacted { oldest: r4 }), "history is not stored");
    assert!(store.watch("", r4).await.is_ok());
}

#[tokio::test]
async fn concurrent_writes_all_land_each_with_its_own_revision() {
    let dir = TempDir::new();
    let store = std::sync::Arc::new(open(&dir));
    let tasks: Vec<_> = (0..200u16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.bind(&name(&format!("n{i}")), "t", vec![ep(i + 1)]).await })
        })
        .collect();
    let mut revisions = Vec::new();
    for task in tasks {
        revisions.push(task.await.unwrap().unwrap());
    }
    revisions.sort();
    assert_eq!(revisions, (1..=200).map(Revision).collect::<Vec<_>>(), "one revision per write");
    drop(store);
    assert_eq!(open(&dir).list("n").await.unwrap().1.len(), 200);
}

#[tokio::test]
async fn dns_reads_the_committed_snapshot() {
    use warren_dns::{Directory, RegistryDirectory, Resolution, Target};
    let dir = TempDir::new();
    let store = std::sync::Arc::new(open(&dir));
    let mut heavy = ep(2);
    heavy.weight = 10;
    store.bind(&name("web"), "t", vec![ep(1), heavy]).await.unwrap();
    let dns = RegistryDirectory(store.clone());
    let localhost = std::net::IpAddr::from([127, 0, 0, 1]);
    let want = vec![Target { addr: localhost, port: 1, weight: 1 }, Target { addr: localhost, port: 2, weight: 10 }];
    assert_eq!(dns.resolve("web"), Resolution::Targets(want));
    assert_eq!(dns.resolve("api"), Resolution::NoSuchName);
    assert_eq!(dns.resolve("not a name"), Resolution::NoSuchName);
    // DNS keeps what it built from a snapshot until the generation moves: every write moves it.
    let before = dns.generation().expect("the embedded store counts its changes");
    store.unbind(&name("web"), "t").await.unwrap();
    assert!(dns.generation() > Some(before), "an acknowledged unbind moves the generation");
    assert_eq!(dns.resolve("web"), Resolution::NoSuchName, "an acknowledged unbind is visible at once");
    // The DNS front end asks in lowercase (`HelloServer.warren.` as `helloserver`).
    store.bind(&name("HelloServer"), "t", vec![ep(1)]).await.unwrap();
    let one = Resolution::Targets(vec![Target { addr: localhost, port: 1, weight: 1 }]);
    assert_eq!((dns.resolve("helloserver"), dns.resolve("HelloServer")), (one.clone(), one));
}

#[tokio::test]
async fn a_watcher_that_falls_behind_catches_up_from_the_history() {
    let dir = TempDir::new();
    let store = open(&dir);
    let mut watch = store.watch("", Revision(0)).await.unwrap();
    // More commits than the live buffer holds (1,024), while the watcher reads nothing.
    let writes = 1_030u16;
    for i in 0..writes {
        store.rebind(&name("web"), "t", vec![ep(i + 1)]).await.unwrap();
    }
    let mut events = Vec::new();
    while events.last().map(|e: &warren_registry::Event| e.revision) != Some(Revision(u64::from(writes))) {
        let batch = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.unwrap().unwrap();
        events.extend(batch);
    }
    // Revision 1 puts port 1; every later one deletes the previous port and puts the next.
    let want: Vec<(u64, EventKind, u16)> = std::iter::once((1, EventKind::Put, 1))
        .chain((2..=writes).flat_map(|i| [(u64::from(i), EventKind::Delete, i - 1), (u64::from(i), EventKind::Put, i)]))
        .collect();
    let got: Vec<(u64, EventKind, u16)> = events.iter().map(|e| (e.revision.0, e.kind, e.endpoint.port)).collect();
    assert!(got == want, "events missed, repeated or out of order ({} events, {} expected)", got.len(), want.len());
}

#[tokio::test]
async fn writes_survive_checkpoints_of_a_small_journal_and_reopening() {
    let dir = TempDir::new();
    let last = {
        // 4 KiB holds some thirty records: 200 writes make several checkpoints.
        let config = warren_registry_server::state::Config::default();
        let store =
            warren_registry_server::embedded::Embedded::open_with_journal(dir.path(), config, None, 4096).unwrap();
        let mut last = Revision(0);
        for i in 0..200u16 {
            last = store.bind(&name(&format!("n{i}")), "alice", vec![ep(i + 1)]).await.unwrap();
        }
        store.unbind(&name("n7"), "alice").await.unwrap();
        let (revision, entries) = store.list("").await.unwrap();
        assert_eq!(entries.len(), 199);
        assert!(revision > last);
        revision
    };
    let store = open(&dir);
    let (revision, entries) = store.list("").await.unwrap();
    assert_eq!(revision, last, "the revision counter continues");
    let ports: Vec<u16> = entries.iter().map(|e| e.endpoints[0].port).collect();
    let mut expected: Vec<u16> = (0..200u16).filter(|&i| i != 7).map(|i| i + 1).collect();
    let mut got = ports.clone();
    got.sort_unstable();
    expected.sort_unstable();
    assert_eq!(got, expected, "every write is there, and the unbind");
}
