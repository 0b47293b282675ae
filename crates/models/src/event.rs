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
//! A blocking call (`Action::Block`) is the model's weak spot. With `threads = 0` the loop makes
//! it itself and every connection stalls: the lesson. With `threads > 0` it goes to a pool of that
//! many threads and only its connection is suspended until a worker reports back. That is how
//! nginx offloads blocking file reads (`aio threads`): the loop keeps all socket I/O and the
//! workers only wait. LargerHttpd's pool is the other design, where workers do the reads and
//! writes themselves; that is the `pool` model, which drives the same connection machine
//! ([`machine`]) from its workers, with blocking writes.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use warren_proto::Service;

use self::machine::{
    Conn, Ctx, GRACE, Inbox, Job, LISTENER, Listening, READ_BUF, Timers, Turn, WAKER, step, timeout_until,
};
use crate::accept::refuse;
use crate::local_hub::lock;
use crate::run::{Env, ServeConfig, ServeReport};

pub(crate) mod machine;
#[cfg(test)]
pub(crate) mod tests;

/// What wakes the event loop besides sockets.
enum Wake {
    /// A session's mailbox has messages.
    Mail(usize),
    /// A worker finished the blocking call of the connection in this slot and generation.
    Done(usize, u64),
    /// SIGURG: some connection has urgent data; each one checks its own socket.
    Urgent,
}

struct Loop<S: Service> {
    service: Arc<S>,
    ctx: Ctx<S>,
    poll: Poll,
    inbox: Arc<Inbox<Wake>>,
    conns: Vec<Option<Conn<S>>>,
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
    listener: TcpListener,
    config: &ServeConfig,
    env: &Env,
) -> io::Result<ServeReport> {
    let poll = Poll::new()?;
    let inbox = Inbox::new(poll.registry(), env)?;
    let mut listening = Some(Listening::new(listener, poll.registry())?);
    let mut ctx = Ctx::new(&*service, env, config, false);
    let stop = Arc::new(AtomicBool::new(false));
    let workers = if config.threads == 0 {
        Vec::new()
    } else {
        let (tx, rx) = mpsc::channel();
        ctx.offload = Some(tx);
        spawn_blockers(config.threads, rx, &inbox, &stop)?
    };
    let mut lp = Loop {
        service,
        ctx,
        poll,
        inbox,
        conns: Vec::new(),
        free: Vec::new(),
        live: 0,
        next_generation: 0,
        timers: Timers::default(),
        buf: vec![0; READ_BUF],
        again: Vec::new(),
    };
    let _urgent = subscribe_urgent(config, &lp.inbox, || Wake::Urgent)?;
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
            l.accept(lp.service.refusal(), env, |stream, peer| lp.admit(stream, peer, config.max_conns))?;
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
                Token(t) => {
                    if let Some(Some(conn)) = lp.conns.get_mut(t) {
                        let readable = event.is_readable() || event.is_error() || event.is_priority();
                        conn.ready(readable, event.is_read_closed());
                    }
                    ready.push(t);
                }
            }
        }
        lp.inbox.take(&mut wakes);
        for wake in wakes.drain(..) {
            match wake {
                Wake::Mail(t) => ready.push(t),
                Wake::Urgent => ready.extend((0..lp.conns.len()).filter(|&t| lp.conns[t].is_some())),
                Wake::Done(t, generation) => {
                    if let Some(Some(conn)) = lp.conns.get_mut(t)
                        && conn.generation == generation
                    {
                        conn.resume();
                        ready.push(t);
                    }
                }
            }
        }
        ready.append(&mut lp.again);
        let now = Instant::now();
        while let Some((at, t, generation)) = lp.timers.pop_due(now) {
            if let Some(Some(conn)) = lp.conns.get_mut(t)
                && conn.fire(at, generation)
            {
                ready.push(t);
            }
        }
    }
    // Past the grace period: whatever is left is closed as it stands.
    for conn in lp.conns.drain(..).flatten() {
        conn.close(&lp.ctx);
    }
    let report = env.counters.report(lp.ctx.hub.report(Instant::now()));
    stop.store(true, Ordering::SeqCst);
    drop(lp);
    for worker in workers {
        let _ = worker.join();
    }
    Ok(report)
}

impl<S: Service> Loop<S> {
    fn admit(&mut self, mut stream: std::net::TcpStream, peer: SocketAddr, max_conns: usize) {
        let counters = &self.ctx.env.counters;
        if self.live >= max_conns {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            refuse(&mut stream, self.service.refusal());
            return;
        }
        let mut stream = TcpStream::from_std(stream);
        let token = self.free.pop().unwrap_or(self.conns.len());
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(token),
            self.ctx.interest(Interest::READABLE | Interest::WRITABLE),
        ) {
            tracing::warn!(target: "warren", "event: cannot watch a new connection: {e}");
            counters.refused.fetch_add(1, Ordering::Relaxed);
            self.free.extend((token < self.conns.len()).then_some(token));
            return;
        }
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        self.next_generation += 1;
        let inbox = self.inbox.clone();
        let conn = Conn::new(&*self.service, &self.ctx, stream, peer, token, self.next_generation, move || {
            inbox.push(Wake::Mail(token))
        });
        if token == self.conns.len() {
            self.conns.push(Some(conn));
        } else {
            self.conns[token] = Some(conn);
        }
        self.live += 1;
        self.drive(token);
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
            Turn::Closed => {
                if let Some(conn) = self.conns[t].take() {
                    conn.close(&self.ctx);
                }
                self.free.push(t);
                self.live -= 1;
            }
        }
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

/// The threads that make suspended connections' blocking calls (nginx's thread pool). After
/// `stop` they skip what is still queued: the connections waiting for it are gone.
fn spawn_blockers(
    n: usize,
    jobs: mpsc::Receiver<Job>,
    inbox: &Arc<Inbox<Wake>>,
    stop: &Arc<AtomicBool>,
) -> io::Result<Vec<JoinHandle<()>>> {
    let jobs = Arc::new(Mutex::new(jobs));
    (0..n)
        .map(|_| {
            let (jobs, inbox, stop) = (jobs.clone(), inbox.clone(), stop.clone());
            std::thread::Builder::new().name("warren-block".into()).spawn(move || {
                loop {
                    // One statement, so that the lock is not held while sleeping.
                    let job = lock(&jobs).recv();
                    let Ok((token, generation, d)) = job else { return };
                    if !stop.load(Ordering::SeqCst) {
                        std::thread::sleep(d);
                    }
                    inbox.push(Wake::Done(token, generation));
                }
            })
        })
        .collect()
}
