//! The hub of the thread-based models: one `Hub` behind a mutex, and a mailbox per session.
//!
//! A request runs the hub under the lock and delivers its messages, still under the lock, so
//! every mailbox sees messages in hub order. Delivery wakes the owning driver through the
//! mailbox's waker (an eventfd, a mio waker, a tokio notify).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use warren_proto::{Hub, SessionId};

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

    /// Move every waiting message into `into`.
    pub(crate) fn drain(&self, into: &mut Vec<M>) {
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
    joined: std::collections::HashSet<SessionId>,
    scratch: Vec<(SessionId, H::Message)>,
}

/// A hub shared by the threads (or tasks) of one process.
pub(crate) struct LocalHub<H: Hub> {
    state: Mutex<State<H>>,
}

impl<H: Hub> LocalHub<H> {
    pub(crate) fn new(hub: H) -> Self {
        Self {
            state: Mutex::new(State { hub, boxes: HashMap::new(), joined: Default::default(), scratch: Vec::new() }),
        }
    }

    /// Register the mailbox of a new session.
    pub(crate) fn open(&self, id: SessionId, mailbox: Arc<Mailbox<H::Message>>) {
        lock(&self.state).boxes.insert(id, mailbox);
    }

    /// Run a request from `from` and deliver what it causes.
    pub(crate) fn request(&self, now: Instant, from: SessionId, request: H::Request) {
        let mut state = lock(&self.state);
        let state = &mut *state;
        state.joined.insert(from);
        state.hub.handle_request(now, from, request, &mut state.scratch);
        Self::deliver(state);
    }

    /// Session `id` is gone.
    pub(crate) fn leave(&self, now: Instant, id: SessionId) {
        let mut state = lock(&self.state);
        let state = &mut *state;
        state.boxes.remove(&id);
        if state.joined.remove(&id) {
            state.hub.handle_leave(now, id, &mut state.scratch);
            Self::deliver(state);
        }
    }

    /// The hub's closing summary.
    pub(crate) fn report(&self, now: Instant) -> Option<String> {
        lock(&self.state).hub.report(now)
    }

    fn deliver(state: &mut State<H>) {
        for (to, msg) in state.scratch.drain(..) {
            if let Some(mailbox) = state.boxes.get(&to) {
                mailbox.deliver(msg);
            }
        }
    }
}

/// Lock, ignoring poisoning: a panicking connection thread must not take the server down.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
