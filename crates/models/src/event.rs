//! `event`: one thread, non-blocking sockets and epoll (mio, edge-triggered); each connection a
//! finite-state machine in a slot table. The chapter's finite-state-machine server: many
//! connections at once without threads, at the price that nothing may block.
//!
//! The loop sleeps in `epoll_wait` until a socket is ready, a mailbox is woken (a push from
//! another connection), a worker finishes or the earliest deadline comes, then drives every
//! connection that can progress ([`machine::step`]): handle its messages, read until the socket
//! would block, run the session, write without blocking. Unsent bytes stay in the connection's
//! `Output` and leave on the next WRITABLE edge; while more than 256 KiB wait, the connection is
//! not read, so a client that sends without reading cannot grow the server.
//!
//! A blocking call is the model's weak spot. A session's jobs (a file opened, an fsync, the
//! TimeServer's delay) go to `helpers` threads, and only the sessions waiting for them wait:
//! that is how nginx offloads blocking file reads (`aio threads`), the loop keeping all socket
//! I/O while the helpers only wait. With `helpers = 0` the loop makes the call itself and every
//! connection stalls: the lesson. LargerHttpd's pool is the other design, where workers do the
//! reads and writes themselves; that is the `pool` model, which drives the same connections
//! ([`machine`]) from its workers, with blocking writes.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll};
use warren_proto::{Service, StreamId};

use self::machine::{
    Conn, Ctx, Inbox, LISTENER, Listening, READ_BUF, Timers, WAKER, Wake, of_token, step, timeout_until, token_of,
};
use crate::accept::{Incoming, Listener, refuse};
use crate::engine::drive::Turn;
use crate::run::{Env, GRACE, ServeConfig, ServeReport};

pub(crate) mod machine;
#[cfg(test)]
pub(crate) mod tests;

struct Loop<S: Service> {
    service: Arc<S>,
    ctx: Ctx<S>,
    poll: Poll,
    /// Boxed, so that a slot costs a pointer and the table's slack stays small.
    conns: Vec<Option<Box<Conn<S>>>>,
    free: Vec<usize>,
    live: usize,
    next_generation: u64,
    timers: Timers,
    buf: Vec<u8>,
    /// Connections that stopped on their read budget, to drive again after the next poll.
    again: Vec<usize>,
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
    let ctx = Ctx::new(&*service, env, config, false, inbox, poll.registry())?;
    let mut lp = Loop {
        service,
        ctx,
        poll,
        conns: Vec::new(),
        free: Vec::new(),
        live: 0,
        next_generation: 0,
        timers: Timers::default(),
        buf: vec![0; READ_BUF],
        again: Vec::new(),
    };
    let _urgent = subscribe_urgent(config, &lp.ctx.inbox, || Wake::Urgent)?;
    let (mut events, mut ready, mut wakes) = (Events::with_capacity(1024), Vec::new(), Vec::new());
    let mut grace_end = None;
    loop {
        if grace_end.is_none() && env.shutdown.is_triggered() {
            grace_end = Some(Instant::now() + GRACE);
            // Stop accepting (the kernel refuses newcomers) and let every session say goodbye.
            listening = None;
            ready.extend((0..lp.conns.len()).filter(|&t| lp.conns[t].is_some()));
        }
        ready.sort_unstable();
        ready.dedup();
        for t in ready.drain(..) {
            lp.drive(t);
        }
        if let Some(l) = listening.as_mut() {
            l.accept(lp.service.refusal(), env, |incoming| lp.admit(incoming, config.max_conns))?;
        }
        if grace_end.is_some_and(|end| lp.live == 0 || Instant::now() >= end) {
            break;
        }
        let now = Instant::now();
        let timeout = if lp.again.is_empty() {
            timeout_until([lp.timers.next(), listening.as_ref().and_then(|l| l.wake_at(now)), grace_end])
        } else {
            Some(Duration::ZERO)
        };
        match lp.poll.poll(&mut events, timeout) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => return Err(e),
            _ => {}
        }
        for event in &events {
            match event.token() {
                LISTENER => listening.iter_mut().for_each(|l| l.ready = true),
                WAKER => {}
                token => {
                    let (t, stream) = of_token(token);
                    if let Some(Some(conn)) = lp.conns.get_mut(t) {
                        let readable = event.is_readable() || event.is_error() || event.is_priority();
                        conn.ready(stream, readable, event.is_read_closed());
                    }
                    ready.push(t);
                }
            }
        }
        lp.ctx.inbox.take(&mut wakes);
        for wake in wakes.drain(..) {
            match wake {
                Wake::Mail(t) => ready.push(t),
                Wake::Urgent => ready.extend((0..lp.conns.len()).filter(|&t| lp.conns[t].is_some())),
                Wake::Done { slot, generation, token, done } => {
                    if let Some(Some(conn)) = lp.conns.get_mut(slot)
                        && conn.io.generation == generation
                    {
                        conn.engine.handle_completion(token, done);
                        ready.push(slot);
                    }
                }
                Wake::Back(..) | Wake::Room => unreachable!("the pool's wake-ups"),
            }
        }
        ready.append(&mut lp.again);
        let conns = &lp.conns;
        lp.timers.compact(
            lp.live,
            |at, t, generation| matches!(conns.get(t), Some(Some(conn)) if conn.holds_timer(at, generation)),
        );
        let now = Instant::now();
        while let Some((at, t, generation)) = lp.timers.pop_due(now) {
            if let Some(Some(conn)) = lp.conns.get_mut(t)
                && conn.fire(at, generation)
            {
                conn.expire_connects(now);
                ready.push(t);
            }
        }
    }
    // Past the grace period: whatever is left is closed as it stands.
    for conn in lp.conns.drain(..).flatten() {
        conn.close(&lp.ctx);
    }
    Ok(env.counters.report(lp.ctx.hub.report(Instant::now())))
}

impl<S: Service> Loop<S> {
    fn admit(&mut self, mut incoming: Incoming, max_conns: usize) {
        let counters = &self.ctx.env.counters;
        if self.live >= max_conns {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            refuse(&mut incoming.stream, self.service.refusal());
            return;
        }
        let slot = self.free.pop().unwrap_or(self.conns.len());
        self.next_generation += 1;
        let conn = match Conn::new(&*self.service, &self.ctx, incoming, slot, self.next_generation) {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(target: "warren", "event: cannot take a new connection: {e}");
                counters.refused.fetch_add(1, Ordering::Relaxed);
                self.free.extend((slot < self.conns.len()).then_some(slot));
                return;
            }
        };
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        if slot == self.conns.len() {
            self.conns.push(Some(Box::new(conn)));
        } else {
            self.conns[slot] = Some(Box::new(conn));
        }
        self.live += 1;
        // The first turn before the socket is watched: a request that came with the connection
        // is often answered and closed in it, and then epoll never hears of the socket (one
        // `epoll_ctl` fewer per such connection). Registering later loses nothing: epoll
        // reports a socket that is ready when it is added.
        self.drive(slot);
        // Still open (nothing else takes a slot during the turn, so it is this connection).
        let Some(Some(conn)) = self.conns.get_mut(slot) else { return };
        let interest = self.ctx.interest(Interest::READABLE | Interest::WRITABLE);
        if let Err(e) = self.poll.registry().register(&mut conn.io.client, token_of(slot, StreamId::CLIENT), interest) {
            tracing::warn!(target: "warren", "event: cannot watch a new connection: {e}");
            self.forget(slot);
        }
    }

    fn drive(&mut self, t: usize) {
        let Some(Some(conn)) = self.conns.get_mut(t) else { return };
        match step(conn, &self.ctx, &mut self.buf) {
            Turn::Open { again } => {
                if again {
                    self.again.push(t);
                }
                self.timers.arm(conn);
            }
            Turn::Closed => self.forget(t),
        }
    }

    /// Close the connection in slot `t` and free the slot.
    fn forget(&mut self, t: usize) {
        if let Some(conn) = self.conns[t].take() {
            conn.close(&self.ctx);
        }
        self.free.push(t);
        self.live -= 1;
    }
}

/// With urgent data armed, push `wake()` into the loop's inbox after every SIGURG.
pub(crate) fn subscribe_urgent<T: Send + 'static>(
    config: &ServeConfig,
    inbox: &Arc<Inbox<T>>,
    wake: impl Fn() -> T + Send + Sync + 'static,
) -> io::Result<Option<crate::urgent::Subscription>> {
    if config.urgent == crate::UrgentMode::Off {
        return Ok(None);
    }
    let inbox = inbox.clone();
    Ok(Some(crate::urgent::Watch::get()?.subscribe(move || inbox.push(wake()))))
}
