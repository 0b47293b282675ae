//! One behavioural suite that both stores pass: SQLite (always) and PostgreSQL (a throwaway
//! server from `warren-testkit`; Debian's `postgresql`, installed by scripts/test).

use std::path::PathBuf;

use warren_objects::{PostgresStore, Record, SqliteStore, Store, StoreError};
use warren_testkit::LocalPostgres;
use warren_testkit::postgres::Durability;

fn record(id: &str, name: &str) -> Record {
    Record { id: id.into(), name: name.into(), class: "counter".into(), policy: "per-object:1024".into() }
}

/// What every store must do.
fn contract(store: &dyn Store) {
    assert!(store.records().unwrap().is_empty());
    store.create(&record("a1", "Counter")).unwrap();
    store.create(&record("b2", "other")).unwrap();
    assert!(matches!(store.create(&record("c3", "COUNTER")), Err(StoreError::Exists(_))), "names ignore case");
    assert_eq!(store.records().unwrap(), vec![record("a1", "Counter"), record("b2", "other")], "spelling kept");

    assert_eq!(store.load("a1").unwrap(), None, "no state before the first save");
    assert_eq!(store.save("a1", 0, b"one").unwrap(), 1);
    assert_eq!(store.save("a1", 1, b"two").unwrap(), 2);
    assert!(matches!(store.save("a1", 1, b"stale"), Err(StoreError::Conflict { expected: 1 })), "a lost race");
    assert_eq!(store.load("a1").unwrap(), Some((2, b"two".to_vec())), "the loser changed nothing");
    assert_eq!(store.load_newer("a1", 2).unwrap(), None, "nothing newer than the version held");
    assert_eq!(store.load_newer("a1", 1).unwrap(), Some((2, b"two".to_vec())), "a newer version, with its state");
    assert_eq!(store.load_newer("nobody", 0).unwrap(), None);
    assert!(matches!(store.save("nobody", 0, b"x"), Err(StoreError::Conflict { .. })));

    store.remove("a1").unwrap();
    assert_eq!(store.load("a1").unwrap(), None);
    assert_eq!(store.records().unwrap(), vec![record("b2", "other")]);
    store.create(&record("d4", "counter")).unwrap();
    assert_eq!(store.load("d4").unwrap(), None, "a new object under a freed name starts afresh");
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warren-stores-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn postgres(tag: &str, durability: Durability) -> LocalPostgres {
    LocalPostgres::start_with(tag, durability)
        .expect("PostgreSQL (Debian's postgresql) must be installed: scripts/test installs it")
}

#[test]
fn sqlite_keeps_the_contract() {
    let dir = scratch("sqlite");
    contract(&SqliteStore::open(&dir.join("objects.db")).unwrap());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn postgres_keeps_the_contract() {
    let pg = postgres("objects-contract", Durability::Fast);
    contract(&PostgresStore::open(&pg.url()).unwrap());
}

/// Two servers on one database: the one that read an older version loses its save.
#[test]
fn two_servers_on_one_postgres_conflict_instead_of_losing_a_write() {
    let pg = postgres("objects-two", Durability::Fast);
    let (a, b) = (PostgresStore::open(&pg.url()).unwrap(), PostgresStore::open(&pg.url()).unwrap());
    a.create(&record("x", "shared")).unwrap();
    assert_eq!(b.records().unwrap(), vec![record("x", "shared")]);
    assert_eq!(a.save("x", 0, b"from a").unwrap(), 1);
    assert!(matches!(b.save("x", 0, b"from b"), Err(StoreError::Conflict { expected: 0 })));
    assert_eq!(b.load("x").unwrap(), Some((1, b"from a".to_vec())));
}

/// PostgreSQL killed with SIGKILL and started again: every save that returned is there, and
/// the store connects again by itself.
#[test]
fn saves_survive_a_postgres_kill_9_and_the_store_reconnects() {
    let mut pg = postgres("objects-kill", Durability::Fsync);
    let store = PostgresStore::open(&pg.url()).unwrap();
    store.create(&record("k", "kept")).unwrap();
    for version in 0..20u64 {
        assert_eq!(store.save("k", version, &version.to_le_bytes()).unwrap(), version + 1);
    }
    pg.kill9_and_restart().unwrap();
    // The first call may see the old connection's end; the next one connects again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let loaded = loop {
        match store.load("k") {
            Ok(loaded) => break loaded,
            Err(e) => assert!(std::time::Instant::now() < deadline, "never reconnected: {e}"),
        }
    };
    assert_eq!(loaded, Some((20, 19u64.to_le_bytes().to_vec())));
}
