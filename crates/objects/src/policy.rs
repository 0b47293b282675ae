//! Activation policies, named as CORBA's POA names them, and the executors that carry them out.
//!
//! | policy | CORBA / Orleans | calls run | bound |
//! |---|---|---|---|
//! | `per-object` | SINGLE_THREAD_MODEL, a POA per object | one at a time on the object's own thread (a serialized mailbox) | the mailbox holds `queue` calls |
//! | `per-invocation` | ORB_CTRL_MODEL, thread per request | each on a new thread, concurrently | `max` threads at once |
//! | `pool:N:Q` | ORB_CTRL_MODEL, a thread pool | on one of N threads, concurrently | Q queued; beyond, shed |
//! | `on-demand:IDLE` | ServantActivator / a virtual actor | like `per-object`, the servant made at the first call and dropped after IDLE without one | the mailbox holds `queue` calls |
//! | `inline` | MAIN_THREAD_MODEL; Java RMI's thread per connection | on the thread that read the call (the connection's driver), concurrently across connections | none: the call runs before the next is read |
//!
//! `inline` is for short methods that never wait: no hand-off to another thread, so a call
//! costs no context switch, but a method that blocks stalls every connection its driver serves
//! (the `event` model's lesson). It cannot call back to the client (the thread that would send
//! the call back is the one waiting), nor save a persistent object's state (a disk write on the
//! connection's thread); both are refused with the reason.
//!
//! Whatever the policy, a call that finds its queue full is answered `Overloaded` at once (load
//! shedding, the seed's defence against a client that floods an object): it never ran.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use warren_rpc::{Code, RpcError};

/// Calls a mailbox or a pool's queue holds by default.
pub const DEFAULT_QUEUE: usize = 1024;
/// Threads `per-invocation` runs at once by default.
pub const DEFAULT_MAX_THREADS: usize = 256;
/// How long an `on-demand` object stays active without a call by default (Orleans 7+: 15 min).
pub const DEFAULT_IDLE: Duration = Duration::from_secs(15 * 60);

/// How an object's calls are run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    PerObject { queue: usize },
    PerInvocation { max: usize },
    Pool { threads: usize, queue: usize },
    OnDemand { idle: Duration, queue: usize },
    Inline,
}

impl Policy {
    /// Whether calls on one object may run at the same time (its servant must then be
    /// thread-safe, as CORBA's ORB_CTRL_MODEL demands).
    pub fn concurrent(self) -> bool {
        matches!(self, Policy::PerInvocation { .. } | Policy::Pool { .. } | Policy::Inline)
    }

    /// Whether calls run on the thread that read them, before it reads the next.
    pub fn inline(self) -> bool {
        self == Policy::Inline
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::PerObject { queue: DEFAULT_QUEUE }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Policy::PerObject { queue } => write!(f, "per-object:{queue}"),
            Policy::PerInvocation { max } => write!(f, "per-invocation:{max}"),
            Policy::Pool { threads, queue } => write!(f, "pool:{threads}:{queue}"),
            Policy::OnDemand { idle, queue } => write!(f, "on-demand:{}:{queue}", humantime::format_duration(idle)),
            Policy::Inline => f.write_str("inline"),
        }
    }
}

impl FromStr for Policy {
    type Err = String;

    /// `per-object[:QUEUE]`, `per-invocation[:MAX]`, `pool[:THREADS[:QUEUE]]`,
    /// `on-demand[:IDLE[:QUEUE]]` (IDLE as `30s`, `15m`), `inline`.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut parts = text.split(':');
        let kind = parts.next().unwrap_or_default();
        let rest: Vec<&str> = parts.collect();
        let number = |at: usize, default: usize| -> Result<usize, String> {
            match rest.get(at) {
                None => Ok(default),
                Some(v) => match v.parse::<usize>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(format!("policy {text:?}: {v:?} is not a positive number")),
                },
            }
        };
        let most = |n: usize| if rest.len() > n { Err(format!("policy {text:?}: too many parts")) } else { Ok(()) };
        match kind {
            "per-object" => most(1).and(Ok(Policy::PerObject { queue: number(0, DEFAULT_QUEUE)? })),
            "per-invocation" => most(1).and(Ok(Policy::PerInvocation { max: number(0, DEFAULT_MAX_THREADS)? })),
            "pool" => most(2).and(Ok(Policy::Pool { threads: number(0, 4)?, queue: number(1, 64)? })),
            "on-demand" => {
                most(2)?;
                let idle = match rest.first() {
                    None => DEFAULT_IDLE,
                    Some(v) => humantime::parse_duration(v).map_err(|e| format!("policy {text:?}: {e}"))?,
                };
                if idle.is_zero() {
                    return Err(format!("policy {text:?}: the idle time must be above zero"));
                }
                Ok(Policy::OnDemand { idle, queue: number(1, DEFAULT_QUEUE)? })
            }
            "inline" => most(0).and(Ok(Policy::Inline)),
            _ => Err(format!(
                "unknown policy {text:?}: per-object[:QUEUE], per-invocation[:MAX], pool[:THREADS[:QUEUE]], on-demand[:IDLE[:QUEUE]] or inline"
            )),
        }
    }
}

/// A call to run, with its answer inside.
pub(crate) type Task = Box<dyn FnOnce() + Send>;

fn overloaded(what: &str) -> RpcError {
    RpcError::new(Code::Overloaded, format!("{what} is full: the call was shed, try again later"))
}

/// Runs an object's calls under its policy.
pub(crate) enum Executor {
    Mailbox(Mailbox),
    PerInvocation {
        name: String,
        running: Arc<AtomicUsize>,
        max: usize,
    },
    Pool {
        queue: SyncSender<Task>,
    },
    /// Runs the call at once, on the submitting thread.
    Inline,
}

impl Executor {
    /// An executor for the object `name`; `on_idle` runs on the mailbox's thread when an
    /// `on-demand` object goes idle (it drops the servant).
    pub(crate) fn new(name: &str, policy: Policy, on_idle: Arc<dyn Fn() + Send + Sync>) -> std::io::Result<Self> {
        Ok(match policy {
            Policy::PerObject { queue } => Executor::Mailbox(Mailbox::new(name, queue, None, on_idle)),
            Policy::OnDemand { idle, queue } => Executor::Mailbox(Mailbox::new(name, queue, Some(idle), on_idle)),
            Policy::PerInvocation { max } => {
                Executor::PerInvocation { name: format!("{name}-call"), running: Arc::default(), max }
            }
            Policy::Inline => Executor::Inline,
            Policy::Pool { threads, queue } => {
                let (sender, receiver) = sync_channel::<Task>(queue);
                let receiver = Arc::new(Mutex::new(receiver));
                for i in 0..threads {
                    let receiver = receiver.clone();
                    std::thread::Builder::new().name(format!("{name}-pool-{i}")).spawn(move || {
                        loop {
                            // The lock is held only while waiting for the next call.
                            let next = receiver.lock().unwrap_or_else(|e| e.into_inner()).recv();
                            match next {
                                Ok(task) => task(),
                                Err(_) => return,
                            }
                        }
                    })?;
                }
                Executor::Pool { queue: sender }
            }
        })
    }

    pub(crate) fn submit(&self, task: Task) -> Result<(), RpcError> {
        match self {
            Executor::Mailbox(mailbox) => mailbox.submit(task),
            Executor::PerInvocation { name, running, max } => {
                if running.fetch_add(1, Ordering::SeqCst) >= *max {
                    running.fetch_sub(1, Ordering::SeqCst);
                    return Err(overloaded(&format!("the object's {max} threads")));
                }
                let count = running.clone();
                let spawned = std::thread::Builder::new().name(name.clone()).spawn(move || {
                    task();
                    count.fetch_sub(1, Ordering::SeqCst);
                });
                spawned.map(drop).map_err(|e| {
                    running.fetch_sub(1, Ordering::SeqCst);
                    RpcError::new(Code::Overloaded, format!("no thread for the call: {e}"))
                })
            }
            Executor::Pool { queue } => match queue.try_send(task) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(_)) => Err(overloaded("the pool's queue")),
                Err(TrySendError::Disconnected(_)) => Err(RpcError::new(Code::Unavailable, "the object was removed")),
            },
            Executor::Inline => {
                task();
                Ok(())
            }
        }
    }
}

/// One thread per object draining a bounded mailbox; with an idle time, the thread (and the
/// servant, through `on_idle`) goes after that long without a call, and the next call starts
/// them again.
pub(crate) struct Mailbox {
    name: String,
    limit: usize,
    idle: Option<Duration>,
    on_idle: Arc<dyn Fn() + Send + Sync>,
    /// The running thread's mailbox; `None` while deactivated. Submitters hold the lock while
    /// they send, so a thread that found its mailbox empty under the lock may end.
    open: Arc<Mutex<Option<SyncSender<Task>>>>,
}

impl Mailbox {
    fn new(name: &str, limit: usize, idle: Option<Duration>, on_idle: Arc<dyn Fn() + Send + Sync>) -> Self {
        Self { name: format!("{name}-object"), limit, idle, on_idle, open: Arc::default() }
    }

    fn submit(&self, task: Task) -> Result<(), RpcError> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let task = match open.as_ref() {
            Some(sender) => match sender.try_send(task) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(_)) => return Err(overloaded("the object's mailbox")),
                // The thread ended (it went idle): start another.
                Err(TrySendError::Disconnected(task)) => task,
            },
            None => task,
        };
        let (sender, receiver) = sync_channel(self.limit);
        sender.try_send(task).map_err(|_| overloaded("the object's mailbox"))?;
        let (idle, on_idle, mine) = (self.idle, self.on_idle.clone(), self.open.clone());
        std::thread::Builder::new()
            .name(self.name.clone())
            .spawn(move || drain(receiver, idle, &mine, &*on_idle))
            .map_err(|e| RpcError::new(Code::Overloaded, format!("no thread for the object: {e}")))?;
        *open = Some(sender);
        Ok(())
    }
}

fn drain(receiver: Receiver<Task>, idle: Option<Duration>, open: &Mutex<Option<SyncSender<Task>>>, on_idle: &dyn Fn()) {
    loop {
        let next = match idle {
            None => receiver.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(idle) => receiver.recv_timeout(idle),
        };
        match next {
            Ok(task) => task(),
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {
                let mut guard = open.lock().unwrap_or_else(|e| e.into_inner());
                // A call may have arrived between the timeout and the lock.
                if let Ok(task) = receiver.try_recv() {
                    drop(guard);
                    task();
                    continue;
                }
                *guard = None;
                drop(guard);
                on_idle();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    #[test]
    fn policies_read_and_print() {
        assert_eq!("per-object".parse::<Policy>().unwrap(), Policy::PerObject { queue: DEFAULT_QUEUE });
        assert_eq!("pool:8:16".parse::<Policy>().unwrap(), Policy::Pool { threads: 8, queue: 16 });
        assert_eq!(
            "on-demand:30s".parse::<Policy>().unwrap(),
            Policy::OnDemand { idle: Duration::from_secs(30), queue: DEFAULT_QUEUE }
        );
        assert_eq!("inline".parse::<Policy>().unwrap(), Policy::Inline);
        for p in ["per-invocation:3", "pool:2:5", "on-demand:1m 30s:7", "inline"] {
            let policy: Policy = p.parse().unwrap();
            assert_eq!(policy.to_string().parse::<Policy>().unwrap(), policy);
        }
        for bad in ["threads", "pool:0", "pool:1:2:3", "on-demand:0s", "per-object:x", "inline:4"] {
            assert!(bad.parse::<Policy>().is_err(), "{bad}");
        }
    }

    /// A task that waits for `go`, so that a queue can be filled deterministically.
    fn blocked(go: &Arc<Mutex<mpsc::Receiver<()>>>, ran: &mpsc::Sender<()>) -> Task {
        let (go, ran) = (go.clone(), ran.clone());
        Box::new(move || {
            let _ = go.lock().unwrap().recv();
            let _ = ran.send(());
        })
    }

    #[test]
    fn a_full_pool_sheds_at_once_and_runs_what_it_took() {
        let executor = Executor::new("t", Policy::Pool { threads: 1, queue: 2 }, Arc::new(|| {})).unwrap();
        let (release, go) = mpsc::channel();
        let go = Arc::new(Mutex::new(go));
        let (ran, done) = mpsc::channel();
        let mut taken = 0;
        let mut shed = 0;
        // One running (blocked) and two queued fit; later ones are shed. The worker may not
        // have taken the first yet, so at most four are taken.
        for _ in 0..10 {
            match executor.submit(blocked(&go, &ran)) {
                Ok(()) => taken += 1,
                Err(e) => {
                    assert_eq!(e.code, Code::Overloaded);
                    shed += 1;
                }
            }
        }
        assert!((2..=3).contains(&taken) && shed == 10 - taken, "taken {taken}, shed {shed}");
        for _ in 0..taken {
            release.send(()).unwrap();
        }
        for _ in 0..taken {
            done.recv_timeout(Duration::from_secs(10)).unwrap();
        }
    }

    #[test]
    fn an_on_demand_mailbox_deactivates_when_idle_and_comes_back() {
        let idled = Arc::new(AtomicUsize::new(0));
        let counter = idled.clone();
        let policy = Policy::OnDemand { idle: Duration::from_millis(20), queue: 4 };
        let executor =
            Executor::new("t", policy, Arc::new(move || _ = counter.fetch_add(1, Ordering::SeqCst))).unwrap();
        let (ran, done) = mpsc::channel();
        for round in 1..=2 {
            let ran = ran.clone();
            executor
                .submit(Box::new(move || ran.send(std::thread::current().name().map(str::to_owned)).unwrap()))
                .unwrap();
            assert_eq!(done.recv_timeout(Duration::from_secs(10)).unwrap().as_deref(), Some("t-object"));
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while idled.load(Ordering::SeqCst) < round {
                assert!(std::time::Instant::now() < deadline, "never went idle");
                std::thread::yield_now();
            }
        }
    }
}
