//! One connection served by one thread (or process): the connection loop of the `iterative`,
//! `thread`, `fork` and `prefork` models.
//!
//! The thread waits in `poll` on what the connection's engine wants (its sockets, for reading
//! or writing), the hub link (pushes from other connections) and the shutdown trigger, with the
//! engine's deadline as the timeout, then lets the engine make its progress. Blocking jobs run on
//! this thread, so a slow disk stalls this connection only; future jobs (an async store's
//! answer) run on the futures runtime and wake this thread when done, so a connection can wait
//! for several at once; an outbound connection is made here, waiting up to its timeout. While
//! the peer does not read, the thread does not read either.

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use tokio::task::AbortHandle;
use warren_proto::{ConnInfo, Hub, Job, Service, Session, StreamId, Token};

use crate::accept::Incoming;
use crate::activity::Activity;
use crate::engine::drive::{Link, Turn, drive};
use crate::engine::{Done, Engine, EngineConfig, Req};
use crate::helpers::{futures_runtime, run_here, spawn_future};
use crate::shutdown::Shutdown;
use crate::urgent::{UrgentMode, Watch};

/// How a blocking connection reaches the hub.
pub(crate) trait HubLink<H: Hub> {
    /// Send a request; its answers arrive through `drain`.
    fn request(&mut self, now: Instant, request: H::Request) -> io::Result<()>;
    /// Move every message that has arrived into `into`, without blocking.
    fn drain(&mut self, into: &mut Vec<H::Message>) -> io::Result<()>;
    /// A descriptor that is readable when messages may be waiting.
    fn wake_fd(&self) -> Option<BorrowedFd<'_>>;
    /// Whether messages were lost because this connection fell behind.
    fn overflowed(&self) -> bool;
}

/// What every blocking connection shares.
pub(crate) struct ConnEnv<'a> {
    pub shutdown: &'a Shutdown,
    pub activity: &'a Activity,
    pub engine: EngineConfig,
}

/// The sockets and hub link of one blocking connection.
struct Blocking<'a, H: Hub, D, L> {
    client: TcpStream,
    streams: Vec<(StreamId, TcpStream)>,
    link: &'a mut L,
    messages: Vec<H::Message>,
    env: &'a ConnEnv<'a>,
    /// Future jobs in progress; made at the first.
    futures: Option<Futures<D>>,
    /// Whether a turn has told the engine of the shutdown. Until then the trigger stays in the
    /// `poll` set: a trigger that fires during a turn, after the turn looked, must still wake
    /// the wait that follows it.
    shutdown_heard: std::cell::Cell<bool>,
}

/// Where future jobs' results come back to a blocking connection: a channel, and an eventfd
/// its thread polls.
struct Futures<D> {
    done: mpsc::Receiver<(Token, D)>,
    sender: mpsc::Sender<(Token, D)>,
    wake: Arc<EventFd>,
    aborts: Vec<(Token, AbortHandle)>,
}

impl<D: Send + 'static> Futures<D> {
    fn new() -> io::Result<Self> {
        let (sender, done) = mpsc::channel();
        let wake = Arc::new(EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?);
        Ok(Self { done, sender, wake, aborts: Vec::new() })
    }

    fn start(&mut self, token: Token, future: std::pin::Pin<Box<dyn std::future::Future<Output = D> + Send>>) {
        let (sender, wake) = (self.sender.clone(), self.wake.clone());
        let handle = spawn_future(futures_runtime().handle(), future, move |done| {
            let _ = sender.send((token, done));
            let _ = wake.write(1);
        });
        self.aborts.retain(|(_, h)| !h.is_finished());
        self.aborts.push((token, handle));
    }

    /// Hand the results that came back to `engine`.
    fn collect<S: Session<Done = D>>(&self, engine: &mut Engine<S>) {
        let _ = self.wake.read();
        while let Ok((token, done)) = self.done.try_recv() {
            engine.handle_completion(token, done);
        }
    }
}

impl<D> Drop for Futures<D> {
    fn drop(&mut self) {
        for (_, handle) in self.aborts.drain(..) {
            handle.abort();
        }
    }
}

impl<S, H, L> Link<S> for Blocking<'_, H, S::Done, L>
where
    S: Session<Request = H::Request, Message = H::Message>,
    H: Hub,
    L: HubLink<H>,
{
    type Sock = TcpStream;

    fn sock(&self, stream: StreamId) -> Option<&TcpStream> {
        if stream == StreamId::CLIENT {
            return Some(&self.client);
        }
        self.streams.iter().find(|(id, _)| *id == stream).map(|(_, s)| s)
    }

    fn hub(&mut self, now: Instant, request: Req<S>) -> io::Result<()> {
        self.link.request(now, request)
    }

    fn mail(&mut self, engine: &mut Engine<S>) -> io::Result<()> {
        self.link.drain(&mut self.messages)?;
        for msg in self.messages.drain(..) {
            engine.handle_message(msg);
        }
        Ok(())
    }

    fn overflowed(&self) -> bool {
        self.link.overflowed()
    }

    fn job(&mut self, token: Token, job: Job<Done<S>>) -> Option<Done<S>> {
        match job {
            Job::Future(future) => {
                match &mut self.futures {
                    Some(futures) => futures.start(token, future),
                    None => match Futures::new() {
                        Ok(mut futures) => {
                            futures.start(token, future);
                            self.futures = Some(futures);
                        }
                        // Out of descriptors for the wake-up: wait for the answer here instead.
                        Err(_) => return Some(run_here(Job::Future(future))),
                    },
                }
                None
            }
            job => Some(run_here(job)),
        }
    }

    fn abort(&mut self, token: Token) {
        if let Some(futures) = &mut self.futures {
            futures.aborts.retain(|(t, handle)| {
                if *t == token {
                    handle.abort();
                }
                *t != token
            });
        }
    }

    fn connect(
        &mut self,
        stream: StreamId,
        addr: std::net::SocketAddr,
        timeout: Duration,
        _: Token,
    ) -> Option<Result<StreamId, io::ErrorKind>> {
        Some(connect_here(addr, timeout).map(|socket| {
            self.streams.push((stream, socket));
            stream
        }))
    }

    fn leave(&mut self, _: Instant) {}

    fn drop_stream(&mut self, stream: StreamId) {
        self.streams.retain(|(id, _)| *id != stream);
    }

    fn shutting_down(&self) -> bool {
        let triggered = self.env.shutdown.is_triggered();
        self.shutdown_heard.set(triggered);
        triggered
    }

    fn touch(&self, now: Instant) {
        self.env.activity.touch(now);
    }
}

/// Connect to `addr` on this thread, waiting up to `timeout`; the socket comes back
/// non-blocking, as the engine's I/O step wants it.
pub(crate) fn connect_here(addr: std::net::SocketAddr, timeout: Duration) -> Result<TcpStream, io::ErrorKind> {
    let socket = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.kind())?;
    socket.set_nonblocking(true).map_err(|e| e.kind())?;
    let _ = socket.set_nodelay(true);
    Ok(socket)
}

/// Serve one connection to the end.
pub(crate) fn serve_connection<S: Service, L: HubLink<S::Hub>>(
    service: &S,
    incoming: Incoming,
    info: ConnInfo,
    link: &mut L,
    env: &ConnEnv<'_>,
) {
    // Non-blocking and TCP_NODELAY already: see `accept`.
    // The gate's pass, if any, is held until the connection ends, with this function.
    let Incoming { stream, preamble, pass: _pass, .. } = incoming;
    let now = Instant::now();
    env.activity.touch(now);
    let mut engine = Engine::new(service.new_session(&info, now), &env.engine, preamble);

    // Urgent data: SIGURG wakes this thread through an eventfd, and the engine asks the socket.
    let urgent_wake = match urgent_wake(&stream, env.engine.urgent) {
        Ok(wake) => wake,
        Err(e) => {
            tracing::warn!(target: "warren", "cannot arm urgent data: {e}");
            None
        }
    };

    let mut conn: Blocking<'_, S::Hub, _, L> = Blocking {
        client: stream,
        streams: Vec::new(),
        link,
        messages: Vec::new(),
        env,
        futures: None,
        shutdown_heard: std::cell::Cell::new(false),
    };
    let mut buf = vec![0u8; 16 * 1024];
    while let Turn::Open { again } = drive(&mut engine, &mut conn, &mut buf) {
        if !again && !wait(&mut engine, &conn, urgent_wake.as_ref().map(|(efd, _)| &**efd)) {
            return;
        }
        if let Some(futures) = &conn.futures {
            futures.collect(&mut engine);
        }
    }
}

/// Wait in `poll` for what the engine wants, the hub, the urgent-data wake-up and shutdown.
/// Returns `false` if nothing can ever happen again (the session forgot to close).
fn wait<S: Session, H: Hub, L: HubLink<H>>(
    engine: &mut Engine<S>,
    conn: &Blocking<'_, H, S::Done, L>,
    urgent: Option<&EventFd>,
) -> bool {
    let mut fds = Vec::with_capacity(4);
    let mut streams = Vec::with_capacity(1);
    let mut at = 0;
    while let Some(stream) = engine.stream_at(at) {
        at += 1;
        let (read, write) = engine.interest(stream);
        if !read && !write {
            continue;
        }
        let sock = if stream == StreamId::CLIENT {
            &conn.client
        } else {
            match conn.streams.iter().find(|(id, _)| *id == stream) {
                Some((_, s)) => s,
                None => continue,
            }
        };
        let mut flags = PollFlags::empty();
        if read {
            flags |= PollFlags::POLLIN;
            // POLLPRI: the urgent byte came in (out of line it is no POLLIN).
            if stream == StreamId::CLIENT && engine.urgent().is_some_and(|t| t.until_mark()) {
                flags |= PollFlags::POLLPRI;
            }
        }
        if write {
            flags |= PollFlags::POLLOUT;
        }
        fds.push(PollFd::new(sock.as_fd(), flags));
        streams.push(stream);
    }
    let extra = fds.len();
    if let Some(efd) = urgent {
        fds.push(PollFd::new(efd.as_fd(), PollFlags::POLLIN));
    }
    if let Some(fd) = conn.link.wake_fd() {
        fds.push(PollFd::new(fd, PollFlags::POLLIN));
    }
    if let Some(futures) = &conn.futures {
        fds.push(PollFd::new(futures.wake.as_fd(), PollFlags::POLLIN));
    }
    if !conn.shutdown_heard.get() {
        fds.push(PollFd::new(conn.env.shutdown.fd(), PollFlags::POLLIN));
    }
    let deadline = engine.poll_timeout();
    let waiting = urgent.is_some() || conn.link.wake_fd().is_some() || conn.futures.is_some();
    if extra == 0 && !waiting && deadline.is_none() {
        return false;
    }
    let timeout = deadline.map_or(PollTimeout::NONE, |at| {
        let ms = at.saturating_duration_since(Instant::now()).as_millis().min(i32::MAX as u128 - 1) as i32 + 1;
        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
    });
    match poll(&mut fds, timeout) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
        Err(_) => return false,
    }
    for (fd, stream) in fds.iter().zip(&streams) {
        let Some(revents) = fd.revents() else { continue };
        if !revents.is_empty() {
            engine.handle_readable(*stream, revents.intersects(PollFlags::POLLHUP));
        }
    }
    if let Some(efd) = urgent
        && fds[extra].revents().is_some_and(|r| !r.is_empty())
    {
        let _ = efd.read();
    }
    true
}

/// Arm urgent data on `stream` and subscribe an eventfd to SIGURG; `None` when not armed.
fn urgent_wake(
    stream: &TcpStream,
    mode: UrgentMode,
) -> io::Result<Option<(Arc<EventFd>, crate::urgent::Subscription)>> {
    if mode == UrgentMode::Off {
        return Ok(None);
    }
    let watch = Watch::get()?;
    crate::urgent::arm(stream.as_fd(), mode)?;
    let efd = Arc::new(EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?);
    let waker = efd.clone();
    let subscription = watch.subscribe(move || {
        let _ = waker.write(1);
    });
    Ok(Some((efd, subscription)))
}

/// The hub link of the thread-based blocking models: a hub in this process.
pub(crate) mod local {
    use std::io;
    use std::os::fd::{AsFd, BorrowedFd};
    use std::sync::Arc;
    use std::time::Instant;

    use nix::sys::eventfd::{EfdFlags, EventFd};
    use warren_proto::{Hub, SessionId};

    use super::HubLink;
    use crate::local_hub::{LocalHub, Mailbox};

    /// A link to a hub in this process; wakes the connection's thread through an eventfd.
    ///
    /// The mailbox and its eventfd are made on the first request: the hub cannot address a
    /// session before it has heard from it, and echo-like protocols never ask, so they spend no
    /// descriptor on it.
    pub(crate) struct LocalLink<H: Hub> {
        hub: Arc<LocalHub<H>>,
        id: SessionId,
        capacity: usize,
        joined: Option<Joined<H::Message>>,
    }

    /// The mailbox of a session that has spoken to the hub, and the eventfd its delivery writes.
    type Joined<M> = (Arc<Mailbox<M>>, Arc<EventFd>);

    impl<H: Hub> LocalLink<H> {
        pub(crate) fn new(hub: Arc<LocalHub<H>>, id: SessionId, capacity: usize) -> Self {
            Self { hub, id, capacity, joined: None }
        }

        fn join(&mut self) -> io::Result<()> {
            if self.joined.is_none() {
                let efd = Arc::new(EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?);
                let waker = efd.clone();
                let mailbox = Arc::new(Mailbox::new(self.capacity, move || {
                    let _ = waker.write(1);
                }));
                self.hub.open(self.id, mailbox.clone());
                self.joined = Some((mailbox, efd));
            }
            Ok(())
        }
    }

    impl<H: Hub> HubLink<H> for LocalLink<H> {
        fn request(&mut self, now: Instant, request: H::Request) -> io::Result<()> {
            self.join()?;
            self.hub.request(now, self.id, request);
            Ok(())
        }

        fn drain(&mut self, into: &mut Vec<H::Message>) -> io::Result<()> {
            if let Some((mailbox, efd)) = &self.joined {
                let _ = efd.read();
                mailbox.drain(into);
            }
            Ok(())
        }

        fn wake_fd(&self) -> Option<BorrowedFd<'_>> {
            self.joined.as_ref().map(|(_, efd)| efd.as_fd())
        }

        fn overflowed(&self) -> bool {
            self.joined.as_ref().is_some_and(|(mailbox, _)| mailbox.overflowed())
        }
    }

    impl<H: Hub> Drop for LocalLink<H> {
        fn drop(&mut self) {
            if self.joined.is_some() {
                self.hub.leave(Instant::now(), self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use warren_proto::{ConnInfo, NoHub, Nothing, Output, Service, Session};

    use crate::run::{Model, ServeConfig, serve_until};
    use crate::shutdown::Shutdown;

    /// Triggers the server's shutdown from inside a turn (as a signal that lands while the
    /// connection's thread is busy), then says goodbye when told of it.
    struct StopsItself(Arc<Shutdown>);

    struct StopsItselfSession(Arc<Shutdown>);

    impl Service for StopsItself {
        type Hub = NoHub;
        type Session = StopsItselfSession;

        fn name(&self) -> &'static str {
            "stops-itself"
        }

        fn new_session(&self, _: &ConnInfo, _: Instant) -> StopsItselfSession {
            StopsItselfSession(self.0.clone())
        }

        fn new_hub(&self, _: Instant) -> NoHub {
            NoHub
        }
    }

    impl Session for StopsItselfSession {
        type Request = Nothing;
        type Message = Nothing;
        type Done = Nothing;

        fn handle_open(&mut self, _: Instant, _: &mut Output<Nothing>) {}

        fn handle_input(&mut self, _: Instant, _: &[u8], _: &mut Output<Nothing>) {
            self.0.trigger();
        }

        fn handle_read_closed(&mut self, _: Instant, out: &mut Output<Nothing>) {
            out.close();
        }

        fn handle_message(&mut self, _: Instant, msg: Nothing, _: &mut Output<Nothing>) {
            match msg {}
        }

        fn handle_timeout(&mut self, _: Instant, _: &mut Output<Nothing>) {}

        fn poll_timeout(&self) -> Option<Instant> {
            None
        }

        fn handle_shutdown(&mut self, _: Instant, out: &mut Output<Nothing>) {
            out.send(b"bye\n");
            out.close();
        }
    }

    /// A shutdown triggered after a turn looked for it, but before the thread waits, still
    /// reaches the session: the wait must not leave the trigger out of its `poll` set.
    #[test]
    fn a_shutdown_during_a_turn_is_heard() {
        for model in [Model::Thread, Model::Iterative] {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let shutdown = Arc::new(Shutdown::new().unwrap());
            let (service, trigger) = (StopsItself(shutdown.clone()), shutdown.clone());
            let config = ServeConfig::for_model(model);
            let server = std::thread::spawn(move || serve_until(model, service, listener, &config, trigger));
            let mut client = TcpStream::connect(addr).unwrap();
            client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            client.write_all(b"stop").unwrap();
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).unwrap_or_else(|e| panic!("{model:?}: no goodbye: {e}"));
            assert_eq!(answer, b"bye\n", "{model:?}");
            server.join().unwrap().unwrap();
        }
    }
}
