//! Persistent and transient objects across restarts: a clean stop, and SIGKILL while clients
//! add. The store is SQLite (the default) in the server's data directory.
//!
//! What the kill -9 test asserts, precisely: the counter's object is `per-object`, so its calls
//! run one at a time, and each `add` saves the new value (durably) before it is answered. So
//! after a restart the stored value `v` is at least every value an `add` returned, and every
//! acknowledged `add` is counted in it; at most the calls in flight at the kill (one per client
//! loop) may or may not be: `max(acknowledged value) <= v <= before + acknowledged + loops`.
//! With no call in flight at the kill, `v` equals the last acknowledged value exactly.

mod objects_support;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use nix::sys::signal::Signal;
use objects_support::{Objects, connect, runtime, target};
use support::{T, eventually};
use warren_objects::examples::CounterClient;
use warren_rpc::Code;

fn get(objects: &Objects, name: &str) -> i64 {
    let (status, body) = objects.post(name, "get", "[]");
    assert_eq!(status, 200, "get {name}: {body}");
    body.as_i64().unwrap()
}

#[test]
fn a_persistent_object_keeps_its_state_across_a_restart_and_a_transient_one_is_gone() {
    let objects = Objects::start("persist-clean", &[]);
    objects.add("Kept", "counter", "per-object", true);
    objects.add("Lazy", "counter", "on-demand:1h", true);
    objects.add("Fleeting", "counter", "per-object", false);
    assert_eq!(objects.post("Kept", "add", "[5]").1.as_i64(), Some(5));
    assert_eq!(objects.post("Kept", "add", "[7]").1.as_i64(), Some(12));
    assert_eq!(objects.post("Lazy", "add", "[-4]").1.as_i64(), Some(-4));
    assert_eq!(objects.post("Fleeting", "add", "[1]").1.as_i64(), Some(1));
    let data = objects.data.clone();
    objects.server.stop_clean();

    let objects = Objects::start_in(&data, &[]);
    assert_eq!(get(&objects, "Kept"), 12);
    assert!(!objects.active("Lazy"), "an on-demand object waits for its first call");
    assert_eq!(get(&objects, "lazy"), -4);
    let names = objects.names();
    assert!(names.contains(&"Kept".to_owned()) && !names.contains(&"Fleeting".to_owned()), "{names:?}");
    assert_eq!(objects.post("Fleeting", "get", "[]").0, 404);
    let (_, out, _) = objects.admin(&["ls"]);
    let line = out.lines().find(|l| l.starts_with("Kept ")).unwrap();
    assert!(line.contains("persistent") && line.contains("per-object"), "{line}");

    // A removed persistent object does not come back.
    let (status, _, err) = objects.admin(&["rm", "kept"]);
    assert!(status.success(), "{err}");
    objects.server.stop_clean();
    let objects = Objects::start_in(&data, &[]);
    assert!(!objects.names().contains(&"Kept".to_owned()));
    // Its name is free again, and a new object by it starts afresh.
    objects.add("Kept", "counter", "per-object", true);
    assert_eq!(get(&objects, "Kept"), 0);
}

#[test]
fn nothing_acknowledged_is_lost_to_kill_9() {
    const LOOPS: u64 = 4;
    let objects = Objects::start("persist-kill", &[]);
    objects.add("Tally", "counter", "per-object", true);
    let rt = runtime();

    // No call in flight at the kill: the value is exactly the last one acknowledged.
    let quiet = rt.block_on(async {
        let conn = connect(objects.addr).await;
        let tally = CounterClient::new(target(&conn, "Tally"));
        let mut last = 0;
        for _ in 0..50 {
            last = tally.add(1).await.unwrap();
        }
        last
    });
    assert_eq!(quiet, 50);
    let data = objects.data.clone();
    let Objects { server, .. } = objects;
    server.stop_with(Signal::SIGKILL);
    let objects = Objects::start_in(&data, &[]);
    assert_eq!(get(&objects, "Tally"), quiet);

    // Calls in flight at the kill: LOOPS clients each add 1 and wait for the answer, again.
    let acknowledged = Arc::new(AtomicU64::new(0));
    let highest = Arc::new(AtomicI64::new(0));
    let loops = rt.block_on(async {
        let conn = connect(objects.addr).await;
        (0..LOOPS)
            .map(|_| {
                let tally = CounterClient::new(target(&conn, "Tally"));
                let (acknowledged, highest) = (acknowledged.clone(), highest.clone());
                rt.spawn(async move {
                    // Bounded: the server is killed long before.
                    for _ in 0..1_000_000 {
                        match tally.add(1).await {
                            Ok(value) => {
                                highest.fetch_max(value, Ordering::SeqCst);
                                acknowledged.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) => return e.code(),
                        }
                    }
                    None
                })
            })
            .collect::<Vec<_>>()
    });
    assert!(eventually(T * 3, || acknowledged.load(Ordering::SeqCst) >= 200), "the clients are too slow");
    let Objects { server, .. } = objects;
    server.stop_with(Signal::SIGKILL);
    for client in loops {
        let ended = rt.block_on(async { tokio::time::timeout(T, client).await }).expect("the client ends").unwrap();
        assert_eq!(ended, Some(Code::Unavailable), "a client loop ended otherwise");
    }
    let (acked, highest) = (acknowledged.load(Ordering::SeqCst) as i64, highest.load(Ordering::SeqCst));
    let objects = Objects::start_in(&data, &[]);
    let stored = get(&objects, "Tally");
    assert!(stored >= highest, "stored {stored} < acknowledged {highest}");
    assert!(stored >= quiet + acked, "stored {stored} < {quiet} + {acked} acknowledged adds");
    assert!(stored <= quiet + acked + LOOPS as i64, "stored {stored}: more than the calls in flight");
}
