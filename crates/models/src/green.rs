//! `green` and `hybrid`: a task per connection on an async runtime.
//!
//! `green` runs every task on one kernel thread (a current-thread runtime): the chapter's
//! user-space threads, where one blocking call stalls every connection. `hybrid` runs the same
//! tasks over a work-stealing pool of kernel threads (the light-weight-process model), so a
//! blocking call stalls one worker while the others take over its queued tasks. With
//! `offload_blocking` a blocking call goes to the runtime's blocking pool instead: the way around
//! the stall.

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::{Builder, Runtime};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout};
use warren_proto::{Action, ConnInfo, Output, Service, Session};

use crate::accept::{is_exhausted, is_transient, refuse};
use crate::activity::Activity;
use crate::conn::{conn_info, log_line};
use crate::local_hub::{LocalHub, Mailbox};
use crate::run::{Counters, Env, Model, ServeConfig, ServeReport};
use crate::shutdown::Shutdown;

/// How long connections get to say goodbye after shutdown before they are dropped.
const GRACE: Duration = Duration::from_secs(5);
/// How long a closing connection drains what the peer still sends, so that no reset races the
/// last bytes.
const LINGER: Duration = Duration::from_millis(500);
/// The back-off after `accept` runs out of descriptors, doubling from the first to the second.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

pub(crate) fn serve<S: Service>(
    model: Model,
    service: Arc<S>,
    listener: std::net::TcpListener,
    config: &ServeConfig,
    env: &Env,
) -> io::Result<ServeReport> {
    let runtime = runtime(model, config.threads)?;
    let hub = Arc::new(LocalHub::new(service.new_hub(std::time::Instant::now())));
    listener.set_nonblocking(true)?;
    let result = runtime.block_on(accept_loop(service, hub.clone(), listener, config, env));
    // Only offloaded blocking calls can still run here; they end on their own.
    runtime.shutdown_timeout(LINGER);
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
    activity: Arc<Activity>,
    counters: Arc<Counters>,
    write_timeout: Duration,
    offload_blocking: bool,
    mailbox: usize,
}

async fn accept_loop<S: Service>(
    service: Arc<S>,
    hub: Arc<LocalHub<S::Hub>>,
    listener: std::net::TcpListener,
    config: &ServeConfig,
    env: &Env,
) -> io::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    let ctx = Arc::new(Ctx {
        service,
        hub,
        activity: env.activity.clone(),
        counters: env.counters.clone(),
        write_timeout: config.write_timeout,
        offload_blocking: config.offload_blocking,
        mailbox: config.mailbox,
    });
    let mut stop = shutdown_signal(&env.shutdown);
    let mut tasks = JoinSet::new();
    // A descriptor to give up when `accept` hits EMFILE, so the waiting client can be refused.
    let mut reserve = File::open("/dev/null").ok();
    let mut backoff = BACKOFF.0;
    loop {
        let accepted = tokio::select! {
            () = stopped(&mut stop) => break,
            // Reap finished tasks so that the set holds only live connections.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = BACKOFF.0;
                let counters = &env.counters;
                env.activity.touch(Instant::now());
                if counters.active.load(Ordering::Relaxed) >= config.max_conns as u64 {
                    counters.refused.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut stream) = stream.into_std() {
                        refuse(&mut stream, ctx.service.refusal());
                    }
                    continue;
                }
                counters.accepted.fetch_add(1, Ordering::Relaxed);
                let conn = Conn::open(ctx.clone(), conn_info(Some(peer)));
                tasks.spawn(conn.serve(stream, stop.clone()));
            }
            Err(e) if is_transient(&e) => {}
            Err(e) if is_exhausted(&e) => {
                tracing::warn!("accept: {e}; refusing a connection and backing off {backoff:?}");
                env.counters.refused.fetch_add(1, Ordering::Relaxed);
                drop(reserve.take());
                if let Ok((socket, _)) = socket2::SockRef::from(&listener).accept() {
                    refuse(&mut socket.into(), ctx.service.refusal());
                }
                reserve = File::open("/dev/null").ok();
                tokio::select! {
                    () = stopped(&mut stop) => break,
                    () = sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF.1);
            }
            Err(e) => return Err(e),
        }
    }
    drop(listener);
    let drained = timeout(GRACE, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!("{} connections still open {GRACE:?} after shutdown; dropping them", tasks.len());
    }
    Ok(())
}

/// Send everything `out` holds, bytes and file slices in order, waiting for the socket as needed.
async fn send_all<R>(stream: &TcpStream, out: &mut Output<R>) -> io::Result<()> {
    // The same `write`/`sendfile` loop as the other drivers, run whenever tokio says writable.
    while !stream
        .try_io(tokio::io::Interest::WRITABLE, || {
            crate::transmit::send(&*socket2::SockRef::from(stream), out)
                .and_then(|flushed| if flushed { Ok(true) } else { Err(io::ErrorKind::WouldBlock.into()) })
        })
        .or_else(|e| if e.kind() == io::ErrorKind::WouldBlock { Ok(false) } else { Err(e) })?
    {
        stream.writable().await?;
    }
    Ok(())
}

thread_local! {
    /// The read buffer of every connection task on this runtime thread: a task reads into it
    /// and hands the bytes to its session before it yields, so one buffer per thread suffices.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 16 * 1024]);
}

/// Read what the socket holds now into this thread's [`READ_BUF`].
fn read_now(stream: &TcpStream) -> io::Result<usize> {
    READ_BUF.with_borrow_mut(|buf| stream.try_read(buf))
}

/// One connection's place in the server: its hub mailbox and its slot in the active count, both
/// given back on drop, even when the task is aborted.
struct Conn<S: Service> {
    ctx: Arc<Ctx<S>>,
    info: ConnInfo,
    mailbox: Arc<Mailbox<<S::Hub as warren_proto::Hub>::Message>>,
    wake: Arc<Notify>,
}

/// What woke a connection task.
enum Event {
    Read(io::Result<usize>),
    Mail,
    Timeout,
    Shutdown,
}

impl<S: Service> Conn<S> {
    fn open(ctx: Arc<Ctx<S>>, info: ConnInfo) -> Self {
        ctx.counters.active.fetch_add(1, Ordering::Relaxed);
        let wake = Arc::new(Notify::new());
        let waker = wake.clone();
        // `notify_one` stores a permit when the task is not waiting, so no delivery is missed.
        let mailbox = Arc::new(Mailbox::new(ctx.mailbox, move || waker.notify_one()));
        ctx.hub.open(info.id, mailbox.clone());
        Self { ctx, info, mailbox, wake }
    }

    /// Serve the connection to the end; see `blocking::serve_connection` for the same loop
    /// with blocking calls.
    async fn serve(self, mut stream: TcpStream, mut stop: watch::Receiver<bool>) {
        let _ = stream.set_nodelay(true);
        let now = Instant::now();
        let mut session = self.ctx.service.new_session(&self.info, now);
        let mut out = Output::new();
        session.handle_open(now, &mut out);

        let (mut actions, mut messages) = (Vec::new(), Vec::new());
        let (mut read_closed, mut write_shut, mut shutdown_seen) = (false, false, false);
        loop {
            if self.perform(&mut session, &mut out, &mut stream, &mut actions, &mut messages).await.is_err() {
                return;
            }
            if out.is_closed() || self.mailbox.overflowed() {
                linger_close(stream).await;
                return;
            }
            if out.is_write_closed() && !write_shut {
                write_shut = true;
                let _ = stream.shutdown().await;
            }

            let deadline = session.poll_timeout();
            let wake_at = tokio::time::Instant::from_std(deadline.unwrap_or_else(Instant::now));
            let event = tokio::select! {
                // Wait for readiness rather than in `read`, so that an idle connection holds no
                // buffer: 10,000 idle connections would otherwise pin 160 MiB of them.
                ready = stream.readable(), if !read_closed && session.wants_input() => {
                    Event::Read(ready.and_then(|()| read_now(&stream)))
                }
                () = self.wake.notified() => Event::Mail,
                () = sleep_until(wake_at), if deadline.is_some() => Event::Timeout,
                () = stopped(&mut stop), if !shutdown_seen => Event::Shutdown,
            };

            let now = Instant::now();
            match event {
                Event::Read(Ok(0)) => {
                    read_closed = true;
                    session.handle_read_closed(now, &mut out);
                }
                Event::Read(Ok(n)) => {
                    self.ctx.activity.touch(now);
                    READ_BUF.with_borrow(|buf| session.handle_input(now, &buf[..n], &mut out));
                }
                Event::Read(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Event::Read(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Event::Read(Err(_)) => return,
                Event::Mail => {
                    self.mailbox.drain(&mut messages);
                    for msg in messages.drain(..) {
                        session.handle_message(now, msg, &mut out);
                    }
                }
                Event::Shutdown => {
                    shutdown_seen = true;
                    // Messages already delivered were acknowledged to their senders: hand them
                    // to the session before it says goodbye.
                    self.mailbox.drain(&mut messages);
                    for msg in messages.drain(..) {
                        session.handle_message(now, msg, &mut out);
                    }
                    session.handle_shutdown(now, &mut out);
                }
                Event::Timeout => {}
            }
            if deadline.is_some_and(|at| now >= at) {
                session.handle_timeout(now, &mut out);
            }
        }
    }

    /// Send what the session produced and carry out its actions, until it has nothing more to say.
    async fn perform(
        &self,
        session: &mut S::Session,
        out: &mut Output<<S::Session as Session>::Request>,
        stream: &mut TcpStream,
        actions: &mut Vec<Action<<S::Session as Session>::Request>>,
        messages: &mut Vec<<S::Session as Session>::Message>,
    ) -> io::Result<()> {
        loop {
            if !out.is_flushed() {
                timeout(self.ctx.write_timeout, send_all(stream, out))
                    .await
                    .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
            }
            out.take_actions(actions);
            if actions.is_empty() {
                return Ok(());
            }
            let mut asked_hub = false;
            for action in actions.drain(..) {
                match action {
                    Action::Hub(request) => {
                        self.ctx.hub.request(Instant::now(), self.info.id, request);
                        asked_hub = true;
                    }
                    Action::Block(d) if self.ctx.offload_blocking => {
                        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(d)).await;
                    }
                    // Deliberately on the task: it blocks the runtime thread it runs on, which is
                    // what this model does with a blocking call.
                    Action::Block(d) => std::thread::sleep(d),
                    Action::Log(level, line) => log_line(level, &line),
                }
            }
            if asked_hub {
                // The hub answered under its lock: handle the answer without another wake-up.
                self.mailbox.drain(messages);
                let now = Instant::now();
                for msg in messages.drain(..) {
                    session.handle_message(now, msg, out);
                }
            }
        }
    }
}

impl<S: Service> Drop for Conn<S> {
    fn drop(&mut self) {
        self.ctx.hub.leave(Instant::now(), self.info.id);
        self.ctx.counters.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Close without a reset racing the last bytes: shut the write side, then drop what the peer
/// still sends, for a short while, before closing.
async fn linger_close(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let drain = async {
        for _ in 0..16 {
            if !matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {
                break;
            }
        }
    };
    let _ = timeout(LINGER, drain).await;
}

#[cfg(test)]
mod tests;
