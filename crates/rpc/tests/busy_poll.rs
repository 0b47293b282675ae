//! A connection that busy-polls for its answers (`ConnectionConfig::busy_poll`): calls are
//! answered one at a time and 64 at once on a current-thread runtime, a late answer still comes
//! while the thread sleeps rather than spins, the thread's other tasks run while it polls, and
//! deadlines and cancellation work as without it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;
use warren_rpc::{Code, Connection, ConnectionConfig, Context, Dispatch, Target, interface};

#[interface(name = "Probe", version = 1)]
pub trait Probe: Send + Sync + 'static {
    fn echo(&self, n: u64) -> u64;
    /// Waits `ms`, or until the call is cancelled; answers `ms`.
    fn sleep(&self, ctx: &Context, ms: u64) -> u64;
    /// Says it started, then waits (at most 10 s) to be let go; answers whether it was.
    fn held(&self) -> bool;
}

struct Servant {
    started: UnboundedSender<()>,
    release: Mutex<mpsc::Receiver<()>>,
    cancelled: AtomicU64,
}

impl Probe for Servant {
    fn echo(&self, n: u64) -> u64 {
        n
    }

    fn sleep(&self, ctx: &Context, ms: u64) -> u64 {
        let until = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < until {
            if ctx.is_cancelled() {
                self.cancelled.fetch_add(1, Ordering::SeqCst);
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        ms
    }

    fn held(&self) -> bool {
        let _ = self.started.send(());
        self.release.lock().unwrap().recv_timeout(Duration::from_secs(10)).is_ok()
    }
}

/// What a test holds: the stub over a busy-polling connection, and the servant's handles.
struct Rig {
    probe: ProbeClient,
    conn: Connection,
    servant: Arc<ProbeSkeleton<Arc<Servant>>>,
    started: tokio::sync::mpsc::UnboundedReceiver<()>,
    release: mpsc::Sender<()>,
}

impl<T: Probe> Probe for Arc<T> {
    fn echo(&self, n: u64) -> u64 {
        (**self).echo(n)
    }
    fn sleep(&self, ctx: &Context, ms: u64) -> u64 {
        (**self).sleep(ctx, ms)
    }
    fn held(&self) -> bool {
        (**self).held()
    }
}

async fn rig(budget: Duration) -> Rig {
    let (started_tx, started) = tokio::sync::mpsc::unbounded_channel();
    let (release, release_rx) = mpsc::channel();
    let servant =
        Arc::new(Servant { started: started_tx, release: Mutex::new(release_rx), cancelled: AtomicU64::new(0) });
    let skeleton = Arc::new(ProbeSkeleton(servant));
    let mut objects: HashMap<String, Arc<dyn Dispatch>> = HashMap::new();
    objects.insert("probe".into(), skeleton.clone());
    let addr = warren_rpc::testing::serve(Arc::new(objects)).await;
    let config = ConnectionConfig::default().busy_poll(budget);
    let conn = Connection::connect_with(addr, config).await.unwrap();
    let probe = ProbeClient::new(Target::on(&conn, "probe").with_timeout(Duration::from_secs(5)));
    Rig { probe, conn, servant: skeleton, started, release }
}

/// CPU time this thread has run, from the scheduler's own account (nanoseconds, not ticks).
fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    Duration::from_nanos(text.split_whitespace().next().and_then(|n| n.parse().ok()).expect("a number"))
}

#[tokio::test]
async fn calls_one_at_a_time_are_answered() {
    let rig = rig(Duration::from_micros(200)).await;
    for n in 0..300 {
        assert_eq!(rig.probe.echo(n).await.unwrap(), n);
    }
}

#[tokio::test]
async fn sixty_four_calls_in_flight_on_one_thread_are_answered() {
    let rig = rig(Duration::from_micros(200)).await;
    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..64u64 {
        let probe = rig.probe.clone();
        callers.spawn(async move {
            for i in 0..50 {
                let n = caller * 1000 + i;
                assert_eq!(probe.echo(n).await.unwrap(), n);
            }
        });
    }
    let mut finished = 0;
    while let Some(done) = callers.join_next().await {
        done.unwrap();
        finished += 1;
    }
    assert_eq!(finished, 64);
}

#[tokio::test]
async fn a_late_answer_comes_while_the_thread_sleeps_past_the_budget() {
    let rig = rig(Duration::from_millis(1)).await;
    let (cpu, started) = (thread_cpu(), Instant::now());
    assert_eq!(rig.probe.sleep(200).await.unwrap(), 200);
    let (cpu, took) = (thread_cpu() - cpu, started.elapsed());
    assert!(took >= Duration::from_millis(200), "answered in {took:?}");
    // Polling for the whole wait would cost about 200 ms (less on a busy machine, never this
    // little): the budget, the call and the runtime's work are a few milliseconds.
    assert!(cpu < Duration::from_millis(40), "the thread ran {cpu:?} over a {took:?} wait");

    // Idle, with nothing in flight, it does not poll at all.
    let cpu = thread_cpu();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let idle = thread_cpu() - cpu;
    assert!(idle < Duration::from_millis(20), "an idle connection ran {idle:?} in 100 ms");
    assert!(!rig.conn.is_closed());
}

#[tokio::test]
async fn other_tasks_of_the_thread_run_while_it_polls() {
    // A budget far longer than the test: were the polling reader to keep the thread, nothing
    // else would run (not even the test server, which shares it) until the budget ran out.
    let mut rig = rig(warren_rpc::client::MAX_BUSY_POLL).await;
    let begun = Instant::now();
    let release = rig.release.clone();
    let (held, ()) = tokio::join!(rig.probe.held(), async {
        rig.started.recv().await.expect("the held call started");
        release.send(()).unwrap();
    });
    assert!(held.unwrap(), "the call was let go");
    let took = begun.elapsed();
    assert!(took < Duration::from_millis(500), "the thread's tasks waited {took:?} for the polling reader");
}

#[tokio::test]
async fn deadlines_and_cancellation_work_while_polling() {
    let rig = rig(Duration::from_millis(1)).await;
    let short = ProbeClient::new(Target::on(&rig.conn, "probe").with_timeout(Duration::from_millis(50)));
    let started = Instant::now();
    assert_eq!(short.sleep(5_000).await.unwrap_err().code(), Some(Code::DeadlineExceeded));
    assert!(started.elapsed() < Duration::from_secs(2), "the deadline took {:?}", started.elapsed());

    // A caller that gives up (its future dropped) cancels the call at the server.
    let patient = ProbeClient::new(Target::on(&rig.conn, "probe"));
    assert!(tokio::time::timeout(Duration::from_millis(20), patient.sleep(5_000)).await.is_err());
    let deadline = Instant::now() + Duration::from_secs(5);
    // The deadline-exceeded call above was cancelled too: two in all.
    while rig.servant.0.cancelled.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(rig.servant.0.cancelled.load(Ordering::SeqCst), 2, "both calls heard their cancellation");
    assert_eq!(rig.probe.echo(7).await.unwrap(), 7, "the connection still serves");
}
