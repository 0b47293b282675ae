//! Activation policies, deadlines and cancellation through the binary. Overlap is shown by
//! order, not by timing: a call that returns while another on the same object is still in
//! flight proves they ran at once; a call that cannot return before the one ahead of it proves
//! they did not. Elapsed times are only lower bounds, or upper bounds far above what is asked.

mod objects_support;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use objects_support::{Http, Objects, connect, error_code, runtime, target};
use support::{T, eventually};
use warren_objects::examples::{
    AsyncServerClient, ObjectServerClient, ThreadServerClient, WorkError, WorkListener, WorkListenerSkeleton,
    WorkRequest, WorkResult,
};
use warren_rpc::{Code, Target};

/// While a long `whichThread` on `name` is in flight, a short one answers: the calls overlap.
/// The long one is then given up (its future dropped, so a `Cancel` goes out).
fn short_call_passes_a_long_one(objects: &Objects, name: &str) -> String {
    runtime().block_on(async {
        let conn = connect(objects.addr).await;
        let threads = ThreadServerClient::new(target(&conn, name));
        let long = {
            let threads = threads.clone();
            tokio::spawn(async move { threads.which_thread(60_000).await })
        };
        // The long call is running once `calls` counts it (the short one is not sent yet).
        let started = eventually(T, || calls_of(objects, name) >= 1);
        assert!(started, "the long call never arrived");
        let short = threads.which_thread(0).await.unwrap();
        assert!(!long.is_finished(), "the long call ended first");
        long.abort();
        short.name
    })
}

fn calls_of(objects: &Objects, name: &str) -> u64 {
    let (_, info) = Http::connect(objects.http).request("GET", &format!("/v1/objects/{name}"), &[], b"");
    info["calls"].as_u64().unwrap()
}

#[test]
fn per_object_serializes_calls() {
    let objects = Objects::start("per-object", &[]);
    objects.add("Serial", "threads", "per-object", false);
    runtime().block_on(async {
        let conn = connect(objects.addr).await;
        let threads = ThreadServerClient::new(target(&conn, "Serial"));
        let start = Instant::now();
        let (first, second) = tokio::join!(threads.which_thread(300), threads.which_thread(300));
        let (first, second) = (first.unwrap(), second.unwrap());
        // Two 300 ms calls one after the other take at least 600 ms.
        assert!(start.elapsed() >= Duration::from_millis(600), "{:?}: they overlapped", start.elapsed());
        // One thread per object: the same one, named after it.
        assert_eq!(first.name, "Serial-object");
        assert_eq!(first, second);

        // The unsafe read-then-write of update() loses nothing when calls are serialized.
        let updates: Vec<_> = (0..4)
            .map(|_| {
                let threads = threads.clone();
                tokio::spawn(async move { threads.update().await })
            })
            .collect();
        for update in updates {
            update.await.unwrap().unwrap();
        }
        assert_eq!(threads.read().await.unwrap(), 0);
    });
}

#[test]
fn per_invocation_calls_overlap() {
    let objects = Objects::start("per-invocation", &[]);
    objects.add("Parallel", "threads", "per-invocation", false);
    let name = short_call_passes_a_long_one(&objects, "Parallel");
    assert_eq!(name, "Parallel-call");
}

#[test]
fn pool_calls_overlap_on_its_threads() {
    let objects = Objects::start("pool", &[]);
    objects.add("Pooled", "threads", "pool:2:8", false);
    let name = short_call_passes_a_long_one(&objects, "Pooled");
    assert!(name == "Pooled-pool-0" || name == "Pooled-pool-1", "{name}");
}

/// `inline` runs a call on the thread that read it: under `--model thread`, the connection's
/// own thread, one per connection; an inline object can neither call back nor be persistent,
/// and says why.
#[test]
fn inline_calls_run_on_the_connections_own_thread() {
    let objects = Objects::start("inline", &["--model", "thread"]);
    objects.add("Here", "threads", "inline", false);
    objects.add("AsyncHere", "async", "inline", false);
    runtime().block_on(async {
        let (one, two) = (connect(objects.addr).await, connect(objects.addr).await);
        let first = ThreadServerClient::new(target(&one, "Here")).which_thread(0).await.unwrap();
        let again = ThreadServerClient::new(target(&one, "Here")).which_thread(0).await.unwrap();
        let other = ThreadServerClient::new(target(&two, "Here")).which_thread(0).await.unwrap();
        assert_eq!(first.name, "warren-conn", "{first:?}");
        assert_eq!(first, again, "one connection, one thread");
        assert_eq!(other.name, "warren-conn");
        assert_ne!(first.id, other.id, "each connection runs its calls on its own thread");

        let listener = one.export(Arc::new(WorkListenerSkeleton(Deaf)));
        let e = AsyncServerClient::new(target(&one, "AsyncHere"))
            .async_execute(WorkRequest::Squares { n: 4 }, listener)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("inline object cannot wait"), "{e}");
    });
    let args = ["add", "Kept", "--class", "counter", "--policy", "inline", "--persistent"];
    let (status, out, err) = objects.admin(&args);
    assert!(!status.success(), "{out}");
    assert!(err.contains("a persistent object cannot be inline"), "{err}");
    assert!(!objects.names().contains(&"Kept".to_owned()));
}

struct Deaf;

impl WorkListener for Deaf {
    fn work_completed(&self, _: WorkRequest, _: Result<WorkResult, WorkError>) {}
}

#[test]
fn a_flooded_pool_sheds_with_overloaded_then_serves_again() {
    let objects = Objects::start("shed", &[]);
    objects.add("Tiny", "threads", "pool:1:1", false);
    runtime().block_on(async {
        let conn = connect(objects.addr).await;
        let threads = ThreadServerClient::new(target(&conn, "Tiny"));
        // One thread, one place in the queue: of 20 long calls, at most two are taken.
        let calls: Vec<_> = (0..20)
            .map(|_| {
                let threads = threads.clone();
                tokio::spawn(async move { threads.which_thread(60_000).await })
            })
            .collect();
        // The shed ones are answered at once; the taken ones would take a minute.
        let start = Instant::now();
        let settled = tokio::time::timeout(T, async {
            while calls.iter().filter(|c| c.is_finished()).count() < 18 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(settled.is_ok(), "more than two calls were taken");
        assert!(start.elapsed() < T, "shedding is immediate: {:?}", start.elapsed());
        let mut shed = 0;
        for call in calls {
            if call.is_finished() {
                let e = call.await.unwrap().unwrap_err();
                assert_eq!(e.code(), Some(Code::Overloaded), "{e}");
                assert!(e.to_string().contains("shed"), "{e}");
                shed += 1;
            } else {
                call.abort();
            }
        }
        assert!((18..20).contains(&shed), "{shed} shed of 20");
        // Given up, the taken calls end; the object serves again.
        let served = tokio::time::timeout(T, async {
            loop {
                match threads.which_thread(0).await {
                    Ok(info) => return info,
                    Err(e) => assert_eq!(e.code(), Some(Code::Overloaded), "{e}"),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the pool serves again");
        assert_eq!(served.name, "Tiny-pool-0");
    });
}

#[test]
fn on_demand_objects_activate_at_the_first_call_and_deactivate_when_idle() {
    let objects = Objects::start("on-demand", &[]);
    objects.add("Lazy", "counter", "on-demand:2s", false);
    assert!(!objects.active("Lazy"), "not active before its first call");
    let started = Instant::now();
    let (status, body) = objects.post("Lazy", "add", "[3]");
    assert_eq!((status, body.as_i64()), (200, Some(3)));
    assert!(objects.active("Lazy") || started.elapsed() >= Duration::from_secs(2), "active after a call");
    assert!(eventually(T, || !objects.active("Lazy")), "never deactivated");
    assert!(started.elapsed() >= Duration::from_secs(2), "deactivated before its idle time");
    // A transient servant starts afresh: its state went with it.
    let (status, body) = objects.post("Lazy", "get", "[]");
    assert_eq!((status, body.as_i64()), (200, Some(0)));
    assert!(objects.active("Lazy"));
}

// ---- 3. Deadlines and cancellation ------------------------------------------------------------

/// `execute(Squares)` on a per-object object answers within `within`: nothing is still running
/// ahead of it in the mailbox.
async fn free_again(nifty: &ObjectServerClient, within: Duration) {
    let start = Instant::now();
    let answer = nifty.execute(WorkRequest::Squares { n: 3 }).await.unwrap();
    assert_eq!(answer, WorkResult::Squares(vec![0, 1, 4]));
    assert!(start.elapsed() < within, "the object was still busy: {:?}", start.elapsed());
}

#[test]
fn a_deadline_ends_the_call_and_the_method_hears_it() {
    let objects = Objects::start("deadline", &[]);
    objects.add("Busy", "nifty", "per-object", false);
    runtime().block_on(async {
        let conn = connect(objects.addr).await;
        let short = ObjectServerClient::new(Target::on(&conn, "Busy").with_timeout(Duration::from_millis(200)));
        let start = Instant::now();
        let e = short.execute(WorkRequest::Sleep { ms: 60_000 }).await.unwrap_err();
        assert_eq!(e.code(), Some(Code::DeadlineExceeded), "{e}");
        assert!(start.elapsed() < Duration::from_secs(5), "not prompt: {:?}", start.elapsed());
        // Had the sleep gone on, this would wait a minute.
        free_again(&ObjectServerClient::new(target(&conn, "Busy")), Duration::from_secs(5)).await;
    });
}

#[test]
fn a_dropped_call_is_cancelled_on_the_server() {
    let objects = Objects::start("cancel", &[]);
    objects.add("Busy", "nifty", "per-object", false);
    runtime().block_on(async {
        let conn = connect(objects.addr).await;
        // No deadline on the wire: only the Cancel sent when the future is dropped can stop it.
        let nifty = ObjectServerClient::new(Target::on(&conn, "Busy"));
        let gave_up =
            tokio::time::timeout(Duration::from_millis(200), nifty.execute(WorkRequest::Sleep { ms: 60_000 }));
        assert!(gave_up.await.is_err(), "a minute's sleep answered");
        free_again(&nifty, Duration::from_secs(5)).await;
        assert!(!conn.is_closed());
    });
}

#[test]
fn http_calls_take_a_deadline_header() {
    let objects = Objects::start("http-deadline", &[]);
    objects.add("Busy", "nifty", "per-object", false);
    let mut http = Http::connect(objects.http);
    let path = "/v1/objects/Busy/execute";
    let start = Instant::now();
    let (status, body) = http.request("POST", path, &[("Warren-Timeout-Ms", "200")], br#"[{"Sleep":{"ms":60000}}]"#);
    assert_eq!((status, error_code(&body)), (504, "deadline_exceeded"), "{body}");
    assert!(start.elapsed() < Duration::from_secs(5), "not prompt: {:?}", start.elapsed());
    // The same kept-alive connection, and the object free at once.
    let start = Instant::now();
    let (status, body) = http.request("POST", path, &[], br#"[{"Squares":{"n":3}}]"#);
    assert_eq!(status, 200, "{body}");
    assert!(start.elapsed() < Duration::from_secs(5), "the object was still busy: {:?}", start.elapsed());
    let (status, body) = http.request("POST", path, &[("Warren-Timeout-Ms", "soon")], b"[]");
    assert_eq!((status, error_code(&body)), (400, "bad_arguments"), "{body}");
}
