//! `pool`: a fixed pool of `threads` kernel threads serving any number of connections (the
//! course's chat server serves unlimited clients with 4 threads; LargerHttpd hands requests to a
//! pool of handler threads).
//!
//! One poller thread (mio) owns the idle connections and accepts. When a connection becomes
//! ready (input, a push from another connection, a deadline, shutdown) the poller moves it whole
//! (socket, session, output) into a bounded queue. A worker takes it, reads what is there, runs
//! the session, writes the answer blocking as a thread-per-connection server would (a blocking
//! call stalls only that worker) and hands it back. The poller re-registers it, which re-arms
//! edge-triggered readiness, so input that arrived while a worker had it is reported.
//!
//! The queue is the defence against denial of service the chapter asks for: a new connection
//! that finds it full gets the protocol's refusal at once instead of an unbounded wait, as does
//! one beyond `max_conns`. Connections already admitted are never dropped for lack of room: they
//! wait in an overflow list on the poller until a worker frees a place.
//!
//! Unlike `event`, whose loop does all socket I/O and lends only blocking calls to threads, here
//! the workers do the I/O; both drive the same connection machine (`event::machine`).

use std::collections::VecDeque;
use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use mio::{Events, Interest, Poll};
use warren_proto::{Service, StreamId};

use crate::accept::{Incoming, Listener, refuse};
use crate::engine::Done;
use crate::engine::drive::Turn;
use crate::event::machine::{
    Conn, Ctx, Inbox, LISTENER, Listening, READ_BUF, Timers, WAKER, Wake, of_token, step, timeout_until, token_of,
};
use crate::local_hub::lock;
use crate::run::{Env, GRACE, ServeConfig, ServeReport};

/// Where a connection is, as the poller sees it.
enum Slot<S: Service> {
    /// With the poller: idle until readiness, or lingering.
    Here(Box<Conn<S>>),
    /// Queued, in the overflow list or at a worker; `wanted`: a message came meanwhile;
    /// `finished`: future jobs that finished meanwhile, handed over when it is back.
    Away { wanted: bool, finished: Vec<(warren_proto::Token, Done<S::Session>)> },
}

/// The bounded queue of ready connections between the poller and the workers.
struct Queue<S: Service> {
    state: Mutex<QueueState<S>>,
    filled: Condvar,
    capacity: usize,
}

struct QueueState<S: Service> {
    jobs: VecDeque<Box<Conn<S>>>,
    closed: bool,
    /// The poller found the queue full and holds connections until there is room.
    waiting: bool,
}

impl<S: Service> Queue<S> {
    fn new(capacity: usize) -> Self {
        let state = QueueState { jobs: VecDeque::new(), closed: false, waiting: false };
        Self { state: Mutex::new(state), filled: Condvar::new(), capacity }
    }

    fn is_full(&self) -> bool {
        lock(&self.state).jobs.len() >= self.capacity
    }

    /// Queue `conn`, or hand it back if the queue is full.
    fn try_push(&self, conn: Box<Conn<S>>) -> Result<(), Box<Conn<S>>> {
        let mut state = lock(&self.state);
        if state.jobs.len() >= self.capacity {
            state.waiting = true;
            return Err(conn);
        }
        state.jobs.push_back(conn);
        drop(state);
        self.filled.notify_one();
        Ok(())
    }

    /// The next connection, and whether taking it made room the poller is waiting for. `None`
    /// once closed.
    fn pop(&self) -> Option<(Box<Conn<S>>, bool)> {
        let mut state = lock(&self.state);
        loop {
            if let Some(conn) = state.jobs.pop_front() {
                let room = std::mem::take(&mut state.waiting);
                return Some((conn, room));
            }
            if state.closed {
                return None;
            }
            state = self.filled.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Let the workers go; what none of them took is handed back.
    fn close(&self) -> Vec<Box<Conn<S>>> {
        let mut state = lock(&self.state);
        state.closed = true;
        let jobs = state.jobs.drain(..).collect();
        drop(state);
        self.filled.notify_all();
        jobs
    }
}

struct Poller<S: Service> {
    service: Arc<S>,
    ctx: Arc<Ctx<S>>,
    poll: Poll,
    queue: Arc<Queue<S>>,
    /// Ready connections the full queue could not take yet, oldest first.
    overflow: VecDeque<Box<Conn<S>>>,
    slots: Vec<Option<Slot<S>>>,
    free: Vec<usize>,
    live: usize,
    next_generation: u64,
    timers: Timers,
    /// For lingering connections, which the poller drains itself.
    buf: Vec<u8>,
}

pub(crate) fn serve<S: Service>(
    service: Arc<S>,
    listener: Listener,
    config: &ServeConfig,
    env: &Env,
) -> io::Result<ServeReport> {
    let poll = Poll::new()?;
    let inbox = Inbox::new(poll.registry(), env)?;
    let mut listening = Some(Listening::new(listener, poll.registry(), config.gate.clone())?);
    let ctx = Arc::new(Ctx::new(&*service, env, config, true, inbox, poll.registry())?);
    let queue = Arc::new(Queue::new(config.queue.max(1)));
    let spawned: io::Result<Vec<_>> = (0..config.threads.max(1))
        .map(|_| {
            let (ctx, queue) = (ctx.clone(), queue.clone());
            std::thread::Builder::new().name("warren-pool".into()).spawn(move || work(&ctx, &queue))
        })
        .collect();
    let workers = spawned.inspect_err(|_| {
        queue.close();
    })?;
    let mut p = Poller {
        service,
        ctx,
        poll,
        queue,
        overflow: VecDeque::new(),
        slots: Vec::new(),
        free: Vec::new(),
        live: 0,
        next_generation: 0,
        timers: Timers::default(),
        buf: vec![0; READ_BUF],
    };
    let _urgent = crate::event::subscribe_urgent(config, &p.ctx.inbox, || Wake::Urgent)?;
    let (mut events, mut wakes) = (Events::with_capacity(1024), Vec::new());
    let mut grace_end = None;
    loop {
        if grace_end.is_none() && env.shutdown.is_triggered() {
            grace_end = Some(Instant::now() + GRACE);
            listening = None;
            // Connections at a worker see the trigger there, or are sent again on return.
            (0..p.slots.len()).for_each(|t| p.on_ready(t));
        }
        // Room goes to connections already admitted before any new one.
        p.pump();
        if let Some(l) = listening.as_mut() {
            l.accept(p.service.refusal(), env, |incoming| p.admit(incoming, config.max_conns))?;
        }
        if grace_end.is_some_and(|end| p.live == 0 || Instant::now() >= end) {
            break;
        }
        let now = Instant::now();
        let timeout = timeout_until([p.timers.next(), listening.as_ref().and_then(|l| l.wake_at(now)), grace_end]);
        match p.poll.poll(&mut events, timeout) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => return Err(e),
            _ => {}
        }
        for event in &events {
            match event.token() {
                LISTENER => listening.iter_mut().for_each(|l| l.ready = true),
                WAKER => {}
                token => {
                    let (t, stream) = of_token(token);
                    if let Some(Some(Slot::Here(conn))) = p.slots.get_mut(t) {
                        conn.ready(stream, true, event.is_read_closed());
                    }
                    p.on_ready(t);
                }
            }
        }
        p.ctx.inbox.take(&mut wakes);
        for wake in wakes.drain(..) {
            match wake {
                Wake::Mail(t) => p.on_mail(t),
                Wake::Back(conn, turn) => p.on_back(conn, turn),
                Wake::Room => {}
                Wake::Urgent => (0..p.slots.len()).for_each(|t| p.on_mail(t)),
                Wake::Done { slot, generation, token, done } => p.on_done(slot, generation, token, done),
            }
        }
        let now = Instant::now();
        while let Some((at, t, generation)) = p.timers.pop_due(now) {
            if let Some(Some(Slot::Here(conn))) = p.slots.get_mut(t)
                && conn.fire(at, generation)
            {
                p.on_ready(t);
            }
        }
    }
    // Past the grace period: close what is left; workers finish what they hold and hand it back.
    drop(listening);
    let mut left = p.queue.close();
    left.extend(p.overflow.drain(..));
    left.extend(p.slots.drain(..).flatten().filter_map(|slot| match slot {
        Slot::Here(conn) => Some(conn),
        Slot::Away { .. } => None,
    }));
    for worker in workers {
        let _ = worker.join();
    }
    p.ctx.inbox.take(&mut wakes);
    left.extend(wakes.drain(..).filter_map(|wake| match wake {
        Wake::Back(conn, _) => Some(conn),
        _ => None,
    }));
    for conn in left {
        conn.close(&p.ctx);
    }
    Ok(env.counters.report(p.ctx.hub.report(Instant::now())))
}

/// A worker: serve whatever connection is ready, then hand it back to the poller.
fn work<S: Service>(ctx: &Ctx<S>, queue: &Queue<S>) {
    let mut buf = vec![0; READ_BUF];
    let inbox = &ctx.inbox;
    while let Some((mut conn, room)) = queue.pop() {
        if room {
            inbox.push(Wake::Room);
        }
        // A panicking session costs its connection, not one of the pool's workers.
        let turn =
            std::panic::catch_unwind(AssertUnwindSafe(|| step(&mut conn, ctx, &mut buf))).unwrap_or(Turn::Closed);
        inbox.push(Wake::Back(conn, turn));
    }
}

impl<S: Service> Drop for Poller<S> {
    /// However serving ends, the workers go too.
    fn drop(&mut self) {
        self.queue.close();
    }
}

impl<S: Service> Poller<S> {
    fn admit(&mut self, mut incoming: Incoming, max_conns: usize) {
        let counters = &self.ctx.env.counters;
        // The clear refusal: beyond the limit, or while admitted connections wait for a worker.
        if self.live >= max_conns || !self.overflow.is_empty() || self.queue.is_full() {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            refuse(&mut incoming.stream, self.service.refusal());
            return;
        }
        let slot = self.free.pop().unwrap_or(self.slots.len());
        self.next_generation += 1;
        let conn = Conn::new(&*self.service, &self.ctx, incoming, slot, self.next_generation).and_then(|mut conn| {
            let interest = self.ctx.interest(Interest::READABLE);
            self.poll.registry().register(&mut conn.io.client, token_of(slot, StreamId::CLIENT), interest)?;
            Ok(conn)
        });
        let conn = match conn {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(target: "warren", "pool: cannot watch a new connection: {e}");
                counters.refused.fetch_add(1, Ordering::Relaxed);
                self.free.extend((slot < self.slots.len()).then_some(slot));
                return;
            }
        };
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        if slot == self.slots.len() {
            self.slots.push(None);
        }
        self.live += 1;
        self.dispatch(Box::new(conn));
    }

    /// Socket readiness, a passed deadline or shutdown. A connection at a worker needs nothing
    /// now: re-registration on its return reports new input, and its deadline is checked then.
    fn on_ready(&mut self, t: usize) {
        match self.slots.get_mut(t) {
            Some(Some(Slot::Here(conn))) if conn.engine.is_lingering() => {
                // Lingering is a few non-blocking reads: not worth a trip to a worker.
                match step(conn, &self.ctx, &mut self.buf) {
                    Turn::Open { .. } => self.timers.arm(conn),
                    Turn::Closed => {
                        if let Some(Slot::Here(conn)) = self.slots[t].take() {
                            self.forget(*conn);
                        }
                    }
                }
            }
            Some(slot @ Some(Slot::Here(_))) => {
                if let Some(Slot::Here(conn)) = slot.take() {
                    self.dispatch(conn);
                }
            }
            _ => {}
        }
    }

    /// A message, which unlike input cannot be re-reported later: remember it if a worker has
    /// the connection.
    fn on_mail(&mut self, t: usize) {
        match self.slots.get_mut(t) {
            Some(Some(Slot::Away { wanted, .. })) => *wanted = true,
            _ => self.on_ready(t),
        }
    }

    /// A worker is done with a connection for now: close it, send it again if something happened
    /// meanwhile, or watch it.
    fn on_back(&mut self, mut conn: Box<Conn<S>>, turn: Turn) {
        let t = conn.io.slot;
        let (wanted, finished) = match self.slots[t].take() {
            Some(Slot::Away { wanted, finished }) => (wanted || !finished.is_empty(), finished),
            _ => (false, Vec::new()),
        };
        for (token, done) in finished {
            conn.engine.handle_completion(token, done);
        }
        let Turn::Open { again } = turn else { return self.forget(*conn) };
        // Re-arm readiness, so that input which came while a worker had it is reported.
        if let Err(e) = conn.reregister(&self.ctx) {
            tracing::debug!(target: "warren", "pool: {e}");
            return self.forget(*conn);
        }
        let shutting = self.ctx.env.shutdown.is_triggered() && !conn.engine.shutdown_seen();
        let due = conn.is_due(Instant::now()) || shutting;
        if !conn.engine.is_lingering() && (again || wanted || due) {
            return self.dispatch(conn);
        }
        self.timers.arm(&mut conn);
        self.slots[t] = Some(Slot::Here(conn));
    }

    /// Hand a connection to the workers, through the overflow list while the queue is full.
    fn dispatch(&mut self, mut conn: Box<Conn<S>>) {
        conn.disarm();
        // Whatever woke it, the worker tries the socket: one WouldBlock at worst.
        conn.ready(StreamId::CLIENT, true, false);
        self.slots[conn.io.slot] = Some(Slot::Away { wanted: false, finished: Vec::new() });
        self.overflow.push_back(conn);
        self.pump();
    }

    /// Move waiting connections into the queue while it has room.
    fn pump(&mut self) {
        while let Some(conn) = self.overflow.pop_front() {
            if let Err(conn) = self.queue.try_push(conn) {
                self.overflow.push_front(conn);
                return;
            }
        }
    }

    /// A future job of the connection in `slot` finished: hand it over now, or when a worker
    /// gives the connection back.
    fn on_done(&mut self, slot: usize, generation: u64, token: warren_proto::Token, done: Done<S::Session>) {
        match self.slots.get_mut(slot) {
            Some(Some(Slot::Here(conn))) if conn.io.generation == generation => {
                conn.engine.handle_completion(token, done);
                self.on_ready(slot);
            }
            Some(Some(Slot::Away { finished, .. })) => finished.push((token, done)),
            _ => {}
        }
    }

    fn forget(&mut self, conn: Conn<S>) {
        self.slots[conn.io.slot] = None;
        self.free.push(conn.io.slot);
        self.live -= 1;
        conn.close(&self.ctx);
    }
}

#[cfg(test)]
mod tests;
