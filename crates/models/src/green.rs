//! `green` and `hybrid`: a task per connection on an async runtime.
//!
//! `green` runs every task on one kernel thread (a current-thread runtime): the chapter's
//! user-space threads. `hybrid` runs the same tasks over a work-stealing pool of kernel threads
//! (the light-weight-process model). A task waits for what its connection's engine wants (its
//! sockets' readiness, the hub, a job's completion, a deadline, shutdown), then lets the engine
//! make its progress.
//!
//! A blocking job goes to the helper threads, so it stalls only the session waiting for it;
//! with no helpers it runs on the task's own thread, and under `green` that stalls every
//! connection: the chapter's lesson. Future jobs and outbound connections are tasks of their own
//! on the runtime.

use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::runtime::{Builder, Runtime};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::{sleep_until, timeout};
use warren_proto::{Hub, Job, Service, SessionId, StreamId, Token};

use crate::accept::{AsyncAcceptor, Incoming, Listener, refuse};
use crate::activity::Activity;
use crate::conn::conn_info;
use crate::engine::drive::{Link, Turn, drive};
use crate::engine::{Done, Engine, EngineConfig, Req};
use crate::helpers::{Helpers, run_here};
use crate::local_hub::{LocalHub, Mailbox};
use crate::run::{Counters, Env, GRACE, Model, ServeConfig, ServeReport};
use crate::shutdown::Shutdown;
use crate::urgent::UrgentMode;

pub(crate) fn serve<S: Service>(
    model: Model,
    service: Arc<S>,
    listener: Listener,
    config: &ServeConfig,
    env: &Env,
) -> io::Result<ServeReport> {
    let runtime = runtime(model, config.threads)?;
    let helpers = if config.helpers == 0 { None } else { Some(Arc::new(Helpers::new(config.helpers)?)) };
    let hub = LocalHub::new(service.new_hub(Instant::now()), helpers.clone());
    let ctx = Arc::new(Ctx {
        service,
        hub: hub.clone(),
        helpers,
        activity: env.activity.clone(),
        counters: env.counters.clone(),
        // Urgent data needs a look at the socket before every read: the readiness-based drivers
        // do that; a task that sleeps in the runtime's reactor does not.
        engine: EngineConfig { urgent: UrgentMode::Off, ..config.engine() },
        mailbox: config.mailbox,
        max_conns: config.max_conns,
        gate: config.gate.clone(),
        multi_thread: model == Model::Hybrid,
    });
    // The accept loop is a task of the runtime too, not the caller's thread: under `hybrid` a
    // thread blocked in a job must not leave the listener's wake-ups to a thread that only
    // sleeps.
    let env_owned = env.clone();
    let accepting = runtime.spawn(async move { accept_loop(ctx, listener, &env_owned).await });
    let result = runtime.block_on(accepting).unwrap_or_else(|e| Err(io::Error::other(e)));
    // Only tasks that outlived the grace period can still run here; they end on their own.
    runtime.shutdown_timeout(Duration::from_millis(500));
    result?;
    Ok(env.counters.report(hub.report(Instant::now())))
}

/// The runtime of `green` (one thread) or `hybrid` (`threads` workers); the UDP drivers use it too.
pub(crate) fn runtime(model: Model, threads: usize) -> io::Result<Runtime> {
    let mut builder = if model == Model::Hybrid {
        let mut builder = Builder::new_multi_thread();
        builder.worker_threads(threads.max(1));
        builder
    } else {
        Builder::new_current_thread()
    };
    builder.enable_all().thread_name(format!("warren-{model}")).build()
}

/// A receiver that turns `true` once `shutdown` is triggered.
pub(crate) fn shutdown_signal(shutdown: &Shutdown) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    shutdown.on_trigger(move || {
        tx.send_replace(true);
    });
    rx
}

/// Resolves once shutdown was triggered (at once if it already was).
pub(crate) async fn stopped(signal: &mut watch::Receiver<bool>) {
    // The sender lives as long as the `Shutdown`, so an error cannot happen while we wait.
    let _ = signal.wait_for(|&stop| stop).await;
}

/// What every connection task shares.
struct Ctx<S: Service> {
    service: Arc<S>,
    hub: Arc<LocalHub<S::Hub>>,
    helpers: Option<Arc<Helpers>>,
    activity: Arc<Activity>,
    counters: Arc<Counters>,
    engine: EngineConfig,
    mailbox: usize,
    max_conns: usize,
    /// Who may connect.
    gate: Option<Arc<dyn crate::accept::Gate>>,
    /// `hybrid`: blocking calls made on a runtime thread first hand its work to another.
    multi_thread: bool,
}

async fn accept_loop<S: Service>(ctx: Arc<Ctx<S>>, listener: Listener, env: &Env) -> io::Result<()> {
    let mut acceptor = AsyncAcceptor::new(listener, ctx.service.refusal())?.gated(ctx.gate.clone());
    let mut stop = shutdown_signal(&env.shutdown);
    let mut tasks = JoinSet::new();
    loop {
        let incoming = tokio::select! {
            () = stopped(&mut stop) => break,
            // Reap finished tasks so that the set holds only live connections.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            incoming = acceptor.accept() => incoming?,
        };
        let mut incoming = incoming;
        env.activity.touch(Instant::now());
        if ctx.counters.active.load(Ordering::Relaxed) >= ctx.max_conns as u64 {
            ctx.counters.refused.fetch_add(1, Ordering::Relaxed);
            refuse(&mut incoming.stream, ctx.service.refusal());
            continue;
        }
        ctx.counters.accepted.fetch_add(1, Ordering::Relaxed);
        tasks.spawn(serve_connection(ctx.clone(), incoming, stop.clone()));
    }
    drop(acceptor);
    let drained = timeout(GRACE, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!("{} connections still open {GRACE:?} after shutdown; dropping them", tasks.len());
    }
    Ok(())
}

thread_local! {
    /// The read buffer of every connection task on this runtime thread: a task reads into it
    /// and hands the bytes to its session before it yields, so one buffer per thread suffices,
    /// and an idle connection holds none.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 16 * 1024]);
}

/// What comes back to a connection task from work it started elsewhere.
enum Back<D> {
    Done(Token, D),
    Connected(Token, StreamId, io::Result<TcpStream>),
}

/// A session's mailbox and the notification its deliveries raise.
type Joined<M> = (Arc<Mailbox<M>>, Arc<Notify>);
/// Where work started elsewhere comes back to a connection task.
type BackChannel<D> = (mpsc::UnboundedSender<Back<D>>, mpsc::UnboundedReceiver<Back<D>>);

/// One connection task's side of its engine: sockets, mailbox, work elsewhere.
struct Task<S: Service> {
    ctx: Arc<Ctx<S>>,
    id: SessionId,
    client: TcpStream,
    streams: Vec<(StreamId, TcpStream)>,
    /// Made on the session's first hub request: most sessions never make one.
    mailbox: Option<Joined<<S::Hub as Hub>::Message>>,
    /// Made at the first job or connect: where their results come back.
    back: Option<BackChannel<Done<S::Session>>>,
    aborts: Vec<(Token, AbortHandle)>,
    stopping: bool,
}

impl<S: Service> Task<S> {
    fn back(&mut self) -> mpsc::UnboundedSender<Back<Done<S::Session>>> {
        self.back.get_or_insert_with(mpsc::unbounded_channel).0.clone()
    }

    fn leave_hub(&mut self, now: Instant) {
        if self.mailbox.take().is_some() {
            self.ctx.hub.leave(now, self.id);
        }
    }
}

impl<S: Service> Link<S::Session> for Task<S> {
    type Sock = TcpStream;

    fn sock(&self, stream: StreamId) -> Option<&TcpStream> {
        if stream == StreamId::CLIENT {
            return Some(&self.client);
        }
        self.streams.iter().find(|(id, _)| *id == stream).map(|(_, s)| s)
    }

    fn hub(&mut self, now: Instant, request: Req<S::Session>) -> io::Result<()> {
        if self.mailbox.is_none() {
            let wake = Arc::new(Notify::new());
            let waker = wake.clone();
            // `notify_one` stores a permit when the task is not waiting, so no delivery is missed.
            let mailbox = Arc::new(Mailbox::new(self.ctx.mailbox, move || waker.notify_one()));
            self.ctx.hub.open(self.id, mailbox.clone());
            self.mailbox = Some((mailbox, wake));
        }
        self.ctx.hub.request(now, self.id, request);
        Ok(())
    }

    fn mail(&mut self, engine: &mut Engine<S::Session>) -> io::Result<()> {
        if let Some((mailbox, _)) = &self.mailbox {
            mailbox.drain(engine.inbox());
        }
        Ok(())
    }

    fn overflowed(&self) -> bool {
        self.mailbox.as_ref().is_some_and(|(m, _)| m.overflowed())
    }

    fn job(&mut self, token: Token, job: Job<Done<S::Session>>) -> Option<Done<S::Session>> {
        let back = match (&job, &self.ctx.helpers) {
            // Deliberately on the task: it blocks the runtime thread it runs on, which is what
            // this model does with a blocking call when nothing takes it elsewhere. Under
            // `hybrid` the thread first hands its other tasks (and the reactor) to a new one, as
            // a light-weight process blocking in the kernel leaves the others to run.
            (Job::Blocking(_), None) if self.ctx.multi_thread => {
                return Some(tokio::task::block_in_place(|| run_here(job)));
            }
            (Job::Blocking(_), None) => return Some(run_here(job)),
            _ => self.back(),
        };
        let handle = match (job, &self.ctx.helpers) {
            (Job::Future(future), _) => {
                Some(tokio::spawn(async move { back.send(Back::Done(token, future.await)) }).abort_handle())
            }
            (job, Some(helpers)) => helpers.run(job, move |done| {
                let _ = back.send(Back::Done(token, done));
            }),
            (Job::Blocking(_), None) => unreachable!("run above"),
        };
        if let Some(handle) = handle {
            self.aborts.retain(|(_, h)| !h.is_finished());
            self.aborts.push((token, handle));
        }
        None
    }

    fn abort(&mut self, token: Token) {
        self.aborts.retain(|(t, handle)| {
            if *t == token {
                handle.abort();
            }
            *t != token
        });
    }

    fn connect(
        &mut self,
        stream: StreamId,
        addr: std::net::SocketAddr,
        limit: Duration,
        token: Token,
    ) -> Option<Result<StreamId, io::ErrorKind>> {
        let back = self.back();
        tokio::spawn(async move {
            let result = match timeout(limit, TcpStream::connect(addr)).await {
                Ok(result) => result,
                Err(_) => Err(io::ErrorKind::TimedOut.into()),
            };
            let _ = back.send(Back::Connected(token, stream, result));
        });
        None
    }

    fn leave(&mut self, now: Instant) {
        self.leave_hub(now);
    }

    fn drop_stream(&mut self, stream: StreamId) {
        self.streams.retain(|(id, _)| *id != stream);
    }

    fn shutting_down(&self) -> bool {
        self.stopping
    }

    fn touch(&self, now: Instant) {
        self.ctx.activity.touch(now);
    }
}

impl<S: Service> Drop for Task<S> {
    /// However the task ends (even aborted), the hub hears the session left and the count drops.
    fn drop(&mut self) {
        self.leave_hub(Instant::now());
        for (_, handle) in self.aborts.drain(..) {
            handle.abort();
        }
        self.ctx.counters.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What woke a connection task.
enum Event<D> {
    Ready(Vec<(StreamId, bool)>),
    Mail,
    Back(Back<D>),
    Timeout,
    Shutdown,
}

/// Serve one connection to the end.
async fn serve_connection<S: Service>(ctx: Arc<Ctx<S>>, incoming: Incoming, mut stop: watch::Receiver<bool>) {
    ctx.counters.active.fetch_add(1, Ordering::Relaxed);
    // The gate's pass, if any, is held until the connection ends, with this task.
    let Incoming { stream, peer, preamble, pass: _pass } = incoming;
    let info = conn_info(Some(peer));
    let now = Instant::now();
    let mut engine = Engine::new(ctx.service.new_session(&info, now), &ctx.engine, preamble);
    // Non-blocking and TCP_NODELAY already: see `accept`.
    let client = match TcpStream::from_std(stream) {
        Ok(client) => client,
        Err(e) => {
            tracing::warn!(target: "warren", "cannot serve a connection: {e}");
            ctx.counters.active.fetch_sub(1, Ordering::Relaxed);
            return;
        }
    };
    let mut task = Task {
        ctx,
        id: info.id,
        client,
        streams: Vec::new(),
        mailbox: None,
        back: None,
        aborts: Vec::new(),
        stopping: *stop.borrow(),
    };
    loop {
        match READ_BUF.with_borrow_mut(|buf| drive(&mut engine, &mut task, buf)) {
            Turn::Closed => return,
            Turn::Open { again: true } => {
                tokio::task::yield_now().await;
                continue;
            }
            Turn::Open { again: false } => {}
        }
        let deadline = engine.poll_timeout();
        let interest = interest(&engine);
        let wake_at = tokio::time::Instant::from_std(deadline.unwrap_or_else(Instant::now));
        let event = tokio::select! {
            ready = readiness(&interest, &task.client, &task.streams) => Event::Ready(ready),
            () = async { task.mailbox.as_ref().expect("guarded").1.notified().await }, if task.mailbox.is_some() => Event::Mail,
            Some(back) = async { task.back.as_mut().expect("guarded").1.recv().await }, if task.back.is_some() => Event::Back(back),
            () = sleep_until(wake_at), if deadline.is_some() => Event::Timeout,
            () = stopped(&mut stop), if !task.stopping => Event::Shutdown,
        };
        match event {
            Event::Ready(ready) => {
                for (stream, fin) in ready {
                    engine.handle_readable(stream, fin);
                }
            }
            Event::Back(Back::Done(token, done)) => engine.handle_completion(token, done),
            Event::Back(Back::Connected(token, stream, result)) => {
                let result = result.map(|socket| {
                    let _ = socket.set_nodelay(true);
                    task.streams.push((stream, socket));
                    stream
                });
                engine.handle_connected(token, result.map_err(|e| e.kind()));
            }
            Event::Shutdown => task.stopping = true,
            Event::Mail | Event::Timeout => {}
        }
    }
}

/// What the engine waits for on each stream: `(stream, readable, writable)`.
fn interest<S: warren_proto::Session>(engine: &Engine<S>) -> Vec<(StreamId, bool, bool)> {
    let mut wanted = Vec::new();
    let mut at = 0;
    while let Some(stream) = engine.stream_at(at) {
        at += 1;
        let (read, write) = engine.interest(stream);
        if read || write {
            wanted.push((stream, read, write));
        }
    }
    wanted
}

/// Wait until a socket the engine waits for is ready; which ones, and whether each one's peer
/// closed. Waiting for readiness rather than in `read` means an idle connection holds no buffer.
async fn readiness(
    interest: &[(StreamId, bool, bool)],
    client: &TcpStream,
    streams: &[(StreamId, TcpStream)],
) -> Vec<(StreamId, bool)> {
    poll_fn(|cx| {
        let mut ready = Vec::new();
        for &(stream, read, write) in interest {
            let sock = if stream == StreamId::CLIENT {
                client
            } else {
                match streams.iter().find(|(id, _)| *id == stream) {
                    Some((_, sock)) => sock,
                    None => continue,
                }
            };
            let mut fin = false;
            let mut any = false;
            if read && let Poll::Ready(r) = sock.poll_read_ready(cx) {
                any = true;
                // An error shows on the next read.
                fin = r.is_err();
            }
            if write && let Poll::Ready(_) = sock.poll_write_ready(cx) {
                any = true;
            }
            if any {
                ready.push((stream, fin));
            }
        }
        if ready.is_empty() { Poll::Pending } else { Poll::Ready(ready) }
    })
    .await
}

#[cfg(test)]
mod tests;
