//! The hub of the in-process models: one `Hub` behind a mutex, and a mailbox per session.
//!
//! A request runs the hub under the lock and delivers its messages, still under the lock, so
//! every mailbox sees messages in hub order. Delivery wakes the owning driver through the
//! mailbox's waker (an eventfd, a mio waker, a tokio notify).
//!
//! The hub's jobs (a journal append and its `fdatasync`) run outside the lock: on the thread
//! that caused them in the thread-based models, on the helper threads in the loop-based ones,
//! so no session waits on a hub's disk unless it waits for that very answer. The hub's own
//! deadlines are kept by a timer thread, started the first time the hub asks for one.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Instant;

use warren_proto::{Hub, HubOutput, Job, SessionId, Token};

use crate::helpers::{Helpers, run_here};

/// A session's queue of messages from the hub; the driver drains it when woken.
pub(crate) struct Mailbox<M> {
    queue: Mutex<VecDeque<M>>,
    wake: Box<dyn Fn() + Send + Sync>,
    /// Beyond this many undelivered messages the session is too slow: it is marked overflowed
    /// and its driver closes it, so one stuck reader cannot grow the server without bound.
    capacity: usize,
    overflowed: std::sync::atomic::AtomicBool,
}

impl<M> Mailbox<M> {
    pub(crate) fn new(capacity: usize, wake: impl Fn() + Send + Sync + 'static) -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
            wake: Box::new(wake),
            capacity,
            overflowed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn deliver(&self, msg: M) {
        let mut queue = lock(&self.queue);
        if queue.len() >= self.capacity {
            self.overflowed.store(true, std::sync::atomic::Ordering::Relaxed);
        } else {
            queue.push_back(msg);
        }
        drop(queue);
        (self.wake)();
    }

    /// Move every waiting message into `into`, oldest first.
    pub(crate) fn drain(&self, into: &mut impl Extend<M>) {
        into.extend(lock(&self.queue).drain(..));
    }

    /// Whether messages were dropped because the session fell too far behind.
    pub(crate) fn overflowed(&self) -> bool {
        self.overflowed.load(std::sync::atomic::Ordering::Relaxed)
    }
}

struct State<H: Hub> {
    hub: H,
    boxes: HashMap<SessionId, Arc<Mailbox<H::Message>>>,
    /// Sessions that made a request, so that `handle_leave` is called only for them.
    joined: HashSet<SessionId>,
    out: HubOutput<H>,
}

/// The hub's timer: the deadline it asked for, and whether the thread keeping it runs. Shared
/// with that thread, which holds the hub itself only while it works.
#[derive(Default)]
struct Timer {
    state: Mutex<TimerState>,
    moved: Condvar,
}

#[derive(Default)]
struct TimerState {
    deadline: Option<Instant>,
    running: bool,
    /// The hub is gone.
    stop: bool,
}

/// A hub shared by the threads (or tasks) of one process.
pub(crate) struct LocalHub<H: Hub> {
    state: Mutex<State<H>>,
    /// Where the hub's jobs run: `None`, on the thread that caused them.
    helpers: Option<Arc<Helpers>>,
    timer: Arc<Timer>,
}

impl<H: Hub> LocalHub<H> {
    pub(crate) fn new(hub: H, helpers: Option<Arc<Helpers>>) -> Arc<Self> {
        let state = State { hub, boxes: HashMap::new(), joined: HashSet::new(), out: HubOutput::new() };
        Arc::new(Self { state: Mutex::new(state), helpers, timer: Arc::default() })
    }

    /// Register the mailbox of a new session.
    pub(crate) fn open(&self, id: SessionId, mailbox: Arc<Mailbox<H::Message>>) {
        lock(&self.state).boxes.insert(id, mailbox);
    }

    /// Run a request from `from` and deliver what it causes.
    pub(crate) fn request(self: &Arc<Self>, now: Instant, from: SessionId, request: H::Request) {
        self.with_hub(|state| {
            state.joined.insert(from);
            state.hub.handle_request(now, from, request, &mut state.out);
        });
    }

    /// Session `id` is gone.
    pub(crate) fn leave(self: &Arc<Self>, now: Instant, id: SessionId) {
        self.with_hub(|state| {
            state.boxes.remove(&id);
            if state.joined.remove(&id) {
                state.hub.handle_leave(now, id, &mut state.out);
            }
        });
    }

    /// The hub's closing summary.
    pub(crate) fn report(&self, now: Instant) -> Option<String> {
        lock(&self.state).hub.report(now)
    }

    /// Call the hub under the lock, deliver its messages, then start its jobs outside the lock.
    fn with_hub(self: &Arc<Self>, call: impl FnOnce(&mut State<H>)) {
        let mut guard = lock(&self.state);
        call(&mut guard);
        let state = &mut *guard;
        for (to, msg) in state.out.drain_messages() {
            if let Some(mailbox) = state.boxes.get(&to) {
                mailbox.deliver(msg);
            }
        }
        let jobs: Vec<_> = state.out.drain_jobs().collect();
        let deadline = state.hub.poll_timeout();
        drop(guard);
        self.arm_timer(deadline);
        for (token, job) in jobs {
            self.start(token, job);
        }
    }

    fn start(self: &Arc<Self>, token: Token, job: Job<H::Done>) {
        match &self.helpers {
            Some(helpers) => {
                // Weak: a job still queued at shutdown must not keep the hub alive.
                let hub = Arc::downgrade(self);
                helpers.run(job, move |done| {
                    if let Some(hub) = hub.upgrade() {
                        hub.complete(token, done);
                    }
                });
            }
            None => {
                let done = run_here(job);
                self.complete(token, done);
            }
        }
    }

    fn complete(self: &Arc<Self>, token: Token, done: H::Done) {
        self.with_hub(|state| state.hub.handle_completion(Instant::now(), token, done, &mut state.out));
    }

    /// Keep the hub's deadline: start the timer thread the first time there is one.
    fn arm_timer(self: &Arc<Self>, deadline: Option<Instant>) {
        let mut timer = lock(&self.timer.state);
        if timer.deadline == deadline {
            return;
        }
        timer.deadline = deadline;
        if deadline.is_some() && !timer.running {
            timer.running = true;
            let (hub, shared) = (Arc::downgrade(self), self.timer.clone());
            let started =
                std::thread::Builder::new().name("warren-hub-timer".into()).spawn(move || keep_time(&hub, &shared));
            if let Err(e) = started {
                tracing::error!(target: "warren", "hub timer not started: {e}; its deadlines wait for the next request");
                timer.running = false;
            }
        }
        drop(timer);
        self.timer.moved.notify_all();
    }
}

/// The timer thread: sleeps until the hub's deadline (or until it moves), then lets the hub
/// handle its timeout; ends with the hub.
fn keep_time<H: Hub>(hub: &Weak<LocalHub<H>>, timer: &Timer) {
    let mut state = lock(&timer.state);
    while !state.stop {
        let now = Instant::now();
        match state.deadline {
            Some(at) if at <= now => {
                state.deadline = None;
                drop(state);
                let Some(hub) = hub.upgrade() else { return };
                hub.with_hub(|s| s.hub.handle_timeout(now, &mut s.out));
                drop(hub);
                state = lock(&timer.state);
            }
            Some(at) => state = timer.moved.wait_timeout(state, at - now).unwrap_or_else(|e| e.into_inner()).0,
            None => state = timer.moved.wait(state).unwrap_or_else(|e| e.into_inner()),
        }
    }
}

impl<H: Hub> Drop for LocalHub<H> {
    fn drop(&mut self) {
        lock(&self.timer.state).stop = true;
        self.timer.moved.notify_all();
    }
}

/// Lock, ignoring poisoning: a panicking connection thread must not take the server down.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use warren_proto::{HubOutput, Job, Token};

    use super::*;

    /// Answers each request once its job (a stand-in for a journal append) is done, and pushes
    /// a tick at a deadline.
    struct Journaled {
        waiting: Vec<SessionId>,
        tick_at: Option<Instant>,
    }

    impl Hub for Journaled {
        type Request = u8;
        type Message = u8;
        type Done = std::thread::ThreadId;

        fn handle_request(&mut self, _: Instant, from: SessionId, _: u8, out: &mut HubOutput<Self>) {
            self.waiting.push(from);
            out.job(Token(1), Job::blocking(|| std::thread::current().id()));
        }

        fn handle_leave(&mut self, _: Instant, _: SessionId, _: &mut HubOutput<Self>) {}

        fn handle_completion(&mut self, now: Instant, _: Token, _: Self::Done, out: &mut HubOutput<Self>) {
            for id in self.waiting.drain(..) {
                out.push(id, 1);
            }
            self.tick_at = Some(now + Duration::from_millis(20));
        }

        fn poll_timeout(&self) -> Option<Instant> {
            self.tick_at
        }

        fn handle_timeout(&mut self, now: Instant, out: &mut HubOutput<Self>) {
            if self.tick_at.is_some_and(|at| now >= at) {
                self.tick_at = None;
                out.push(SessionId(7), 2);
            }
        }
    }

    #[test]
    fn jobs_run_outside_the_lock_and_deadlines_fire() {
        let helpers = Arc::new(Helpers::new(1).unwrap());
        let hub = LocalHub::new(Journaled { waiting: Vec::new(), tick_at: None }, Some(helpers));
        let (tx, rx) = mpsc::channel();
        let mailbox = Arc::new(Mailbox::new(16, move || tx.send(()).unwrap()));
        hub.open(SessionId(7), mailbox.clone());
        hub.request(Instant::now(), SessionId(7), 0);
        let mut got = Vec::new();
        // Bounded: the answer, then the tick 20 ms later.
        while got.len() < 2 {
            rx.recv_timeout(Duration::from_secs(10)).expect("woken");
            mailbox.drain(&mut got);
        }
        assert_eq!(got, [1, 2], "the answer after its job, then the hub's own deadline");
    }
}
