//! What the two mio-based models share: `event` drives connections from its one loop, `pool`
//! from its workers. A [`Conn`] is one connection's [`Engine`] and the sockets behind it; [`step`]
//! lets the engine make all the progress it can, waiting for the peer only where the [`Ctx`]
//! says that writes block (a pool worker). The loops' common parts are here too: deadlines
//! ([`Timers`]), wake-ups from other threads ([`Inbox`]) and accepting ([`Listening`]).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token, Waker};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use tokio::task::AbortHandle;
use warren_proto::{Job, Service, SessionId, StreamId};

use crate::accept::{Accepted, Acceptor, Gate, Incoming, Listener};
use crate::blocking::connect_here;
use crate::conn::conn_info;
use crate::engine::drive::{Link, Turn, drive};
use crate::engine::{Done, Engine, EngineConfig, Msg, Req};
use crate::helpers::{Helpers, futures_runtime, run_here, spawn_future};
use crate::idle::IdleConns;
use crate::local_hub::{LocalHub, Mailbox, lock};
use crate::run::{Env, ServeConfig};
use crate::urgent::UrgentMode;

pub(crate) const LISTENER: Token = Token(usize::MAX);
pub(crate) const WAKER: Token = Token(usize::MAX - 1);
/// Connections accepted per turn, so that a flood cannot starve the open ones.
const ACCEPT_BUDGET: usize = 64;
pub(crate) const READ_BUF: usize = 16 * 1024;
/// A socket's poll token holds its connection's slot in the low half and its stream in the high.
const SLOT_BITS: u32 = 32;

/// The poll token of `stream` of the connection in `slot`.
pub(crate) fn token_of(slot: usize, stream: StreamId) -> Token {
    Token(slot | (stream.0 as usize) << SLOT_BITS)
}

/// The slot and stream a poll token names.
pub(crate) fn of_token(token: Token) -> (usize, StreamId) {
    (token.0 & ((1 << SLOT_BITS) - 1), StreamId((token.0 >> SLOT_BITS) as u32))
}

type SessionOf<S> = <S as Service>::Session;

/// What wakes a mio loop besides sockets.
pub(crate) enum Wake<S: Service> {
    /// A session's mailbox has messages.
    Mail(usize),
    /// A helper finished a job of the connection in this slot and generation.
    Done { slot: usize, generation: u64, token: warren_proto::Token, done: Done<SessionOf<S>> },
    /// SIGURG: some connection has urgent data; each one checks its own socket.
    Urgent,
    /// `pool`: a worker is done with a connection for now.
    Back(Box<Conn<S>>, Turn),
    /// `pool`: a worker took a connection from a queue the poller had found full.
    Room,
}

/// What every connection of one server shares.
pub(crate) struct Ctx<S: Service> {
    pub hub: Arc<LocalHub<S::Hub>>,
    pub env: Env,
    pub engine: EngineConfig,
    mailbox: usize,
    /// A pool worker: it runs jobs and connects itself, and waits for the peer to take its
    /// writes (up to the write timeout), as a thread-per-connection server would. The event
    /// loop does neither: writes wait for the next writable edge, jobs go to `helpers`.
    blocking: bool,
    /// Where the event loop's jobs run; `None`: on the loop (or the pool worker) itself.
    helpers: Option<Arc<Helpers>>,
    pub inbox: Arc<Inbox<Wake<S>>>,
    /// To watch sockets the event loop connects.
    registry: Registry,
    /// Outbound connections kept idle for any session (`event` only, when configured).
    idle: Option<Mutex<IdleConns<TcpStream>>>,
}

impl<S: Service> Ctx<S> {
    pub(crate) fn new(
        service: &S,
        env: &Env,
        config: &ServeConfig,
        blocking: bool,
        inbox: Arc<Inbox<Wake<S>>>,
        registry: &Registry,
    ) -> io::Result<Self> {
        let helpers =
            if blocking || config.helpers == 0 { None } else { Some(Arc::new(Helpers::new(config.helpers)?)) };
        Ok(Self {
            hub: LocalHub::new(service.new_hub(Instant::now()), helpers.clone()),
            env: env.clone(),
            engine: config.engine(),
            mailbox: config.mailbox,
            blocking,
            helpers,
            inbox,
            registry: registry.try_clone()?,
            idle: (!blocking && config.idle.per_addr > 0).then(|| Mutex::new(IdleConns::new(config.idle))),
        })
    }

    /// What the socket of every connection is watched for: urgent data needs `EPOLLPRI` too,
    /// since an out-of-line byte at the mark is no `EPOLLIN`.
    pub(crate) fn interest(&self, base: Interest) -> Interest {
        if self.engine.urgent == UrgentMode::Off { base } else { base | Interest::PRIORITY }
    }
}

/// A connection the event loop is still connecting.
struct Connecting {
    stream: StreamId,
    token: warren_proto::Token,
    deadline: Instant,
    socket: TcpStream,
}

/// Everything of one connection but its engine: sockets, mailbox, jobs elsewhere.
pub(crate) struct Sockets<S: Service> {
    pub client: TcpStream,
    pub slot: usize,
    /// Tells this connection from earlier ones in the same slot, for timers and helpers.
    pub generation: u64,
    id: SessionId,
    /// Made on the session's first hub request: most sessions never make one.
    mailbox: Option<Arc<Mailbox<Msg<SessionOf<S>>>>>,
    /// The deadline this connection's live timer entry is for.
    timer: Option<Instant>,
    /// Made the first time a session opens a stream or starts a future job.
    more: Option<Box<MoreSockets>>,
}

/// The sockets and handles only some connections have.
#[derive(Default)]
struct MoreSockets {
    /// Streams the session opened, by id.
    streams: Vec<(StreamId, TcpStream)>,
    connecting: Vec<Connecting>,
    /// Future jobs running on the futures runtime, to abort.
    aborts: Vec<(warren_proto::Token, AbortHandle)>,
    /// The gate's pass of a connection let in by one, given back when the connection goes.
    _pass: Option<crate::accept::Pass>,
}

impl<S: Service> Sockets<S> {
    fn more(&mut self) -> &mut MoreSockets {
        self.more.get_or_insert_with(Box::default)
    }

    fn streams_mut(&mut self) -> &mut [(StreamId, TcpStream)] {
        match self.more.as_deref_mut() {
            Some(more) => &mut more.streams,
            None => &mut [],
        }
    }

    fn connecting(&self) -> &[Connecting] {
        self.more.as_ref().map_or(&[], |m| &m.connecting)
    }
}

/// One connection: its engine and its sockets.
pub(crate) struct Conn<S: Service> {
    pub engine: Engine<SessionOf<S>>,
    pub io: Sockets<S>,
}

impl<S: Service> Conn<S> {
    pub(crate) fn new(service: &S, ctx: &Ctx<S>, incoming: Incoming, slot: usize, generation: u64) -> io::Result<Self> {
        let now = Instant::now();
        ctx.env.activity.touch(now);
        let info = conn_info(Some(incoming.peer));
        // Non-blocking and TCP_NODELAY already: see `accept`.
        if let Err(e) = crate::urgent::arm(incoming.stream.as_fd(), ctx.engine.urgent) {
            tracing::warn!(target: "warren", "cannot arm urgent data: {e}");
        }
        // Only connections let in by a gate carry a pass: the others stay as small as before.
        let more = incoming.pass.map(|pass| Box::new(MoreSockets { _pass: Some(pass), ..MoreSockets::default() }));
        Ok(Self {
            engine: Engine::new(service.new_session(&info, now), &ctx.engine, incoming.preamble),
            io: Sockets {
                client: TcpStream::from_std(incoming.stream),
                slot,
                generation,
                id: info.id,
                mailbox: None,
                timer: None,
                more,
            },
        })
    }

    /// When the driver must next look at this connection if nothing else happens.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let connecting = self.io.connecting().iter().map(|c| c.deadline).min();
        self.engine.poll_timeout().into_iter().chain(connecting).min()
    }

    /// Whether the connection needs a turn at `now` even without readiness.
    pub(crate) fn is_due(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|at| at <= now) || self.engine.has_events()
    }

    /// Socket readiness for `stream`: finishes a connect in progress, or marks it readable.
    pub(crate) fn ready(&mut self, stream: StreamId, readable: bool, fin: bool) {
        if let Some(at) = self.io.connecting().iter().position(|c| c.stream == stream) {
            let c = self.io.more().connecting.swap_remove(at);
            match c.socket.take_error() {
                Ok(None) if c.socket.peer_addr().is_ok() => {
                    let _ = c.socket.set_nodelay(true);
                    self.io.more().streams.push((stream, c.socket));
                    self.engine.handle_connected(c.token, Ok(stream));
                }
                // Not yet: spurious readiness before the handshake ended.
                Ok(None) if !fin => self.io.more().connecting.push(c),
                Ok(Some(e)) | Err(e) => self.engine.handle_connected(c.token, Err(e.kind())),
                Ok(None) => self.engine.handle_connected(c.token, Err(io::ErrorKind::ConnectionRefused)),
            }
            return;
        }
        if readable || fin {
            self.engine.handle_readable(stream, fin);
        }
    }

    /// Connects past their deadline fail.
    pub(crate) fn expire_connects(&mut self, now: Instant) {
        while let Some(at) = self.io.connecting().iter().position(|c| now >= c.deadline) {
            let c = self.io.more().connecting.swap_remove(at);
            self.engine.handle_connected(c.token, Err(io::ErrorKind::TimedOut));
        }
    }

    /// Whether the timer entry `(at, generation)` is this connection's live one; it is used up if so.
    pub(crate) fn fire(&mut self, at: Instant, generation: u64) -> bool {
        let live = self.io.generation == generation && self.io.timer == Some(at);
        if live {
            self.io.timer = None;
        }
        live
    }

    /// Whether the timer entry `(at, generation)` is this connection's live one (see
    /// [`Conn::fire`], which also uses it up).
    pub(crate) fn holds_timer(&self, at: Instant, generation: u64) -> bool {
        self.io.generation == generation && self.io.timer == Some(at)
    }

    /// The connection goes to a worker: its timer entry no longer counts, and it is armed afresh
    /// when it comes back.
    pub(crate) fn disarm(&mut self) {
        self.io.timer = None;
    }

    /// Re-arm readiness on every socket (the pool's poller, when a worker hands it back).
    pub(crate) fn reregister(&mut self, ctx: &Ctx<S>) -> io::Result<()> {
        let slot = self.io.slot;
        if self.engine.wants_readiness(StreamId::CLIENT) {
            let interest = ctx.interest(Interest::READABLE);
            ctx.registry.reregister(&mut self.io.client, token_of(slot, StreamId::CLIENT), interest)?;
        }
        for (stream, socket) in self.io.streams_mut() {
            // Streams a worker connected are new to the poller; the others are re-armed.
            let token = token_of(slot, *stream);
            if self.engine.wants_readiness(*stream)
                && ctx.registry.reregister(socket, token, Interest::READABLE).is_err()
            {
                ctx.registry.register(socket, token, Interest::READABLE)?;
            }
        }
        Ok(())
    }

    /// The connection is gone: the hub hears it, unless it did at the linger.
    pub(crate) fn close(mut self, ctx: &Ctx<S>) {
        MioLink { io: &mut self.io, ctx }.leave_hub(Instant::now());
        for (_, handle) in self.io.more.take().into_iter().flat_map(|m| m.aborts) {
            handle.abort();
        }
    }
}

/// The engine's view of a mio connection.
struct MioLink<'a, S: Service> {
    io: &'a mut Sockets<S>,
    ctx: &'a Ctx<S>,
}

impl<S: Service> MioLink<'_, S> {
    fn leave_hub(&mut self, now: Instant) {
        if self.io.mailbox.take().is_some() {
            self.ctx.hub.leave(now, self.io.id);
        }
    }
}

impl<S: Service> Link<SessionOf<S>> for MioLink<'_, S> {
    type Sock = TcpStream;

    fn sock(&self, stream: StreamId) -> Option<&TcpStream> {
        if stream == StreamId::CLIENT {
            return Some(&self.io.client);
        }
        self.io.more.as_ref()?.streams.iter().find(|(id, _)| *id == stream).map(|(_, s)| s)
    }

    fn hub(&mut self, now: Instant, request: Req<SessionOf<S>>) -> io::Result<()> {
        if self.io.mailbox.is_none() {
            let (inbox, slot) = (self.ctx.inbox.clone(), self.io.slot);
            let mailbox = Arc::new(Mailbox::new(self.ctx.mailbox, move || inbox.push(Wake::Mail(slot))));
            self.ctx.hub.open(self.io.id, mailbox.clone());
            self.io.mailbox = Some(mailbox);
        }
        self.ctx.hub.request(now, self.io.id, request);
        Ok(())
    }

    fn mail(&mut self, engine: &mut Engine<SessionOf<S>>) -> io::Result<()> {
        if let Some(mailbox) = &self.io.mailbox {
            mailbox.drain(engine.inbox());
        }
        Ok(())
    }

    fn overflowed(&self) -> bool {
        self.io.mailbox.as_ref().is_some_and(|m| m.overflowed())
    }

    fn job(&mut self, token: warren_proto::Token, job: Job<Done<SessionOf<S>>>) -> Option<Done<SessionOf<S>>> {
        let (inbox, slot, generation) = (self.ctx.inbox.clone(), self.io.slot, self.io.generation);
        let done = move |done| inbox.push(Wake::Done { slot, generation, token, done });
        match (job, &self.ctx.helpers) {
            // An async store's answer is awaited on the futures runtime under both loops: a pool
            // worker has nothing to block on for it.
            (Job::Future(future), _) => {
                let handle = spawn_future(futures_runtime().handle(), future, done);
                let aborts = &mut self.io.more().aborts;
                aborts.retain(|(_, h)| !h.is_finished());
                aborts.push((token, handle));
                None
            }
            (job, Some(helpers)) => {
                helpers.run(job, done);
                None
            }
            (job, None) => Some(run_here(job)),
        }
    }

    fn abort(&mut self, token: warren_proto::Token) {
        self.io.more().aborts.retain(|(t, handle)| {
            if *t == token {
                handle.abort();
            }
            *t != token
        });
    }

    fn connect(
        &mut self,
        stream: StreamId,
        addr: SocketAddr,
        timeout: Duration,
        token: warren_proto::Token,
    ) -> Option<Result<StreamId, io::ErrorKind>> {
        if self.ctx.blocking {
            // A pool worker connects as a thread-per-connection server would; the poller
            // watches the socket once the worker hands the connection back.
            return Some(connect_here(addr, timeout).map(|socket| {
                self.io.more().streams.push((stream, TcpStream::from_std(socket)));
                stream
            }));
        }
        let mut socket = match TcpStream::connect(addr) {
            Ok(socket) => socket,
            Err(e) => return Some(Err(e.kind())),
        };
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self.ctx.registry.register(&mut socket, token_of(self.io.slot, stream), interest) {
            return Some(Err(e.kind()));
        }
        self.io.more().connecting.push(Connecting { stream, token, deadline: Instant::now() + timeout, socket });
        None
    }

    fn leave(&mut self, now: Instant) {
        self.leave_hub(now);
    }

    fn hand_off(&mut self, to: &warren_proto::HandOffTarget, preamble: &[u8]) -> io::Result<()> {
        crate::handoff::send(to, self.io.client.as_fd(), preamble)?;
        // epoll watches the open file description, not the descriptor, and the receiving
        // process now holds that description: epoll(7) keeps a registration until every
        // descriptor of it is closed, so ours is removed here rather than left to the close.
        let _ = self.ctx.registry.deregister(&mut self.io.client);
        Ok(())
    }

    fn drop_stream(&mut self, stream: StreamId) {
        self.io.more().streams.retain(|(id, _)| *id != stream);
    }

    fn park(&mut self, stream: StreamId, addr: SocketAddr) {
        let more = self.io.more();
        let Some(at) = more.streams.iter().position(|(id, _)| *id == stream) else { return };
        let (_, mut socket) = more.streams.remove(at);
        if let Some(idle) = &self.ctx.idle
            && self.ctx.registry.deregister(&mut socket).is_ok()
        {
            lock(idle).park(addr, socket, Instant::now());
        }
    }

    fn reuse(&mut self, stream: StreamId, addr: SocketAddr) -> bool {
        let Some(idle) = &self.ctx.idle else { return false };
        let Some(mut socket) = lock(idle).take(addr, Instant::now()) else { return false };
        // Registered afresh under this connection's token: a socket the peer closed while it
        // was idle is reported readable at once, and its session reads the end.
        let interest = Interest::READABLE | Interest::WRITABLE;
        if self.ctx.registry.register(&mut socket, token_of(self.io.slot, stream), interest).is_err() {
            return false;
        }
        self.io.more().streams.push((stream, socket));
        true
    }

    fn shutting_down(&self) -> bool {
        self.ctx.env.shutdown.is_triggered()
    }

    fn touch(&self, now: Instant) {
        self.ctx.env.activity.touch(now);
    }
}

/// Let one connection make all the progress it can. Blocks only where the context says so.
pub(crate) fn step<S: Service>(conn: &mut Conn<S>, ctx: &Ctx<S>, buf: &mut [u8]) -> Turn {
    loop {
        let turn = drive(&mut conn.engine, &mut MioLink { io: &mut conn.io, ctx }, buf);
        if turn != (Turn::Open { again: false }) || !ctx.blocking || !conn.engine.wants_write(StreamId::CLIENT) {
            return turn;
        }
        // A pool worker waits for the peer to take its bytes, up to the write deadline (after
        // which the engine gives the connection up).
        let wait = conn
            .engine
            .poll_timeout()
            .map_or(ctx.engine.write_timeout, |at| at.saturating_duration_since(Instant::now()));
        wait_writable(&conn.io.client, wait);
    }
}

/// Wait until the peer has room for more bytes, or `timeout` passes.
fn wait_writable(stream: &TcpStream, timeout: Duration) {
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLOUT)];
    let _ = poll(&mut fds, PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX));
}

/// Connection deadlines: a min-heap with lazy deletion. A connection keeps one live entry, for
/// the earliest deadline it asked for; entries for deadlines that moved and connections that
/// closed are skipped when they come up, so that a deadline moving later (each input moves the
/// idle deadline) costs nothing.
#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize, u64)>>,
}

impl Timers {
    /// Make sure `conn` is looked at by its deadline.
    pub(crate) fn arm<S: Service>(&mut self, conn: &mut Conn<S>) {
        if let Some(at) = conn.deadline()
            && conn.io.timer.is_none_or(|t| at < t)
        {
            conn.io.timer = Some(at);
            self.heap.push(Reverse((at, conn.io.slot, conn.io.generation)));
        }
    }

    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, ..))| *at)
    }

    /// Drop the entries of connections that closed or moved their deadline, once they
    /// outnumber those of `live` connections: a connection that closes long before its idle
    /// deadline would otherwise leave its entry behind until then (75 s of short connections).
    /// `holds(at, slot, generation)` says whether an entry is still its connection's.
    pub(crate) fn compact(&mut self, live: usize, holds: impl Fn(Instant, usize, u64) -> bool) {
        if self.heap.len() > 2 * live + 1024 {
            self.heap.retain(|Reverse((at, slot, generation))| holds(*at, *slot, *generation));
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// An entry due at `now`: `(at, slot, generation)`, to check with [`Conn::fire`].
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, usize, u64)> {
        self.heap.peek().is_some_and(|Reverse((at, ..))| *at <= now).then(|| self.heap.pop().expect("peeked").0)
    }
}

/// Wake-ups for a mio loop from other threads: a list, and a waker written only when the list
/// becomes non-empty, so that a burst of pushes costs one system call.
pub(crate) struct Inbox<T> {
    items: Mutex<Vec<T>>,
    waker: Waker,
}

impl<T: Send + 'static> Inbox<T> {
    /// An inbox waking `registry`'s loop, which must also learn of shutdown.
    pub(crate) fn new(registry: &Registry, env: &Env) -> io::Result<Arc<Self>> {
        let inbox = Arc::new(Self { items: Mutex::new(Vec::new()), waker: Waker::new(registry, WAKER)? });
        // Weak: the trigger outlives this server.
        let weak = Arc::downgrade(&inbox);
        env.shutdown.on_trigger(move || {
            if let Some(inbox) = weak.upgrade() {
                let _ = inbox.waker.wake();
            }
        });
        Ok(inbox)
    }

    pub(crate) fn push(&self, item: T) {
        let mut items = lock(&self.items);
        let first = items.is_empty();
        items.push(item);
        drop(items);
        if first {
            let _ = self.waker.wake();
        }
    }

    pub(crate) fn take(&self, into: &mut Vec<T>) {
        into.append(&mut lock(&self.items));
    }
}

/// The listening socket of a mio loop: accepts in bounded bursts, without spinning when
/// descriptors run out.
pub(crate) struct Listening {
    listener: Listener,
    acceptor: Acceptor,
    /// Connections may be waiting: set by readiness, cleared once the backlog is drained.
    pub ready: bool,
    /// Out of descriptors: no accepting before this instant.
    resume_at: Option<Instant>,
}

impl Listening {
    pub(crate) fn new(listener: Listener, registry: &Registry, gate: Option<Arc<dyn Gate>>) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        registry.register(&mut SourceFd(&listener.as_fd().as_raw_fd()), LISTENER, Interest::READABLE)?;
        Ok(Self { listener, acceptor: Acceptor::with_gate(gate), ready: true, resume_at: None })
    }

    /// Accept a burst of connections, each handed to `admit`.
    pub(crate) fn accept(&mut self, refusal: &[u8], env: &Env, mut admit: impl FnMut(Incoming)) -> io::Result<()> {
        let now = Instant::now();
        if !self.ready || self.resume_at.is_some_and(|at| now < at) {
            return Ok(());
        }
        self.resume_at = None;
        for _ in 0..ACCEPT_BUDGET {
            match self.acceptor.accept(&self.listener, refusal)? {
                Accepted::Conn(incoming) => admit(incoming),
                Accepted::Nothing => {
                    self.ready = false;
                    return Ok(());
                }
                Accepted::Exhausted(wait) => {
                    env.counters.refused.fetch_add(1, Ordering::Relaxed);
                    self.resume_at = Some(now + wait);
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// When the loop must come back to accept though no readiness will say so: at once after a
    /// burst cut short, or when the back-off ends.
    pub(crate) fn wake_at(&self, now: Instant) -> Option<Instant> {
        self.ready.then(|| self.resume_at.unwrap_or(now))
    }
}

/// How long to sleep in `epoll_wait` until the earliest of `at`.
pub(crate) fn timeout_until(at: impl IntoIterator<Item = Option<Instant>>) -> Option<Duration> {
    at.into_iter().flatten().min().map(|at| at.saturating_duration_since(Instant::now()))
}

#[cfg(test)]
mod timer_tests {
    use super::*;

    #[test]
    fn entries_of_gone_connections_are_dropped_once_they_dominate() {
        let mut timers = Timers::default();
        let at = Instant::now() + Duration::from_secs(75);
        for slot in 0..3000 {
            timers.heap.push(Reverse((at, slot, 1)));
        }
        // As many live connections as entries: nothing to do, whatever they hold.
        timers.compact(3000, |_, _, _| false);
        assert_eq!(timers.len(), 3000);
        timers.compact(10, |_, slot, generation| slot % 2 == 0 && generation == 1);
        assert_eq!(timers.len(), 1500);
        let mut due = Vec::new();
        while let Some((_, slot, _)) = timers.pop_due(at) {
            due.push(slot);
        }
        assert_eq!(due.len(), 1500);
        assert!(due.iter().all(|slot| slot % 2 == 0));
    }
}
