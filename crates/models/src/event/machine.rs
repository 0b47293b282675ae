//! The connection machine of the two mio-based models: `event` drives it from its one loop,
//! `pool` from its workers. A [`Conn`] is one connection's socket, session and output plus what
//! its driver must remember; [`step`] makes all the progress it can without waiting for the
//! peer, except where the [`Ctx`] says that writes block. The loops' common parts are here too:
//! deadlines ([`Timers`]), wake-ups from other threads ([`Inbox`]) and accepting ([`Listening`]).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token, Waker};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use warren_proto::{Action, Hub, Output, Service, Session, SessionId};

use crate::accept::{Accepted, Acceptor};
use crate::conn::{conn_info, log_line};
use crate::local_hub::{LocalHub, Mailbox, lock};
use crate::run::{Env, ServeConfig};
use crate::urgent::{Tracker, UrgentMode};

pub(crate) const LISTENER: Token = Token(usize::MAX);
pub(crate) const WAKER: Token = Token(usize::MAX - 1);
/// Stop reading a connection while this many bytes wait to be sent to it.
const BACKPRESSURE: u64 = 256 * 1024;
/// Reads per connection per turn, so that one fast sender cannot starve the others.
const READ_BUDGET: usize = 16;
/// Connections accepted per turn, so that a flood cannot starve the open ones.
const ACCEPT_BUDGET: usize = 64;
/// How long a closed connection drains the peer's last bytes, so that no reset races ours.
const LINGER: Duration = Duration::from_millis(500);
/// How long shutdown waits for connections to say goodbye.
pub(crate) const GRACE: Duration = Duration::from_secs(5);
pub(crate) const READ_BUF: usize = 16 * 1024;

type Req<S> = <<S as Service>::Hub as Hub>::Request;
type Msg<S> = <<S as Service>::Hub as Hub>::Message;
/// A blocking call handed to a worker: slot, generation, duration.
pub(crate) type Job = (usize, u64, Duration);

/// What every connection machine of one server shares.
pub(crate) struct Ctx<S: Service> {
    pub hub: LocalHub<S::Hub>,
    pub env: Env,
    mailbox: usize,
    write_timeout: Duration,
    /// Whether a write waits (up to `write_timeout`) for the peer to read, as in a pool worker, or
    /// leaves the rest for the next WRITABLE edge, as in the event loop.
    blocking_writes: bool,
    /// Where blocking calls go; `None`: the calling thread makes them.
    pub offload: Option<mpsc::Sender<Job>>,
    /// Whether connections are armed for urgent data.
    pub urgent: UrgentMode,
}

impl<S: Service> Ctx<S> {
    pub(crate) fn new(service: &S, env: &Env, config: &ServeConfig, blocking_writes: bool) -> Self {
        let (mailbox, write_timeout) = (config.mailbox, config.write_timeout);
        Self {
            hub: LocalHub::new(service.new_hub(Instant::now())),
            env: env.clone(),
            mailbox,
            write_timeout,
            blocking_writes,
            offload: None,
            urgent: config.urgent,
        }
    }

    /// What the socket of every connection is watched for: urgent data needs `EPOLLPRI` too,
    /// since an out-of-line byte at the mark is no `EPOLLIN`.
    pub(crate) fn interest(&self, base: Interest) -> Interest {
        if self.urgent == UrgentMode::Off { base } else { base | Interest::PRIORITY }
    }
}

/// One connection: its socket, its session and everything the driver must remember for it.
pub(crate) struct Conn<S: Service> {
    pub stream: TcpStream,
    pub token: usize,
    /// Tells this connection from earlier ones in the same slot, for timers and workers.
    pub generation: u64,
    id: SessionId,
    session: S::Session,
    out: Output<Req<S>>,
    mailbox: Arc<Mailbox<Msg<S>>>,
    /// Messages taken from the mailbox and not yet handled, newest first so `pop` gives the oldest.
    messages: Vec<Msg<S>>,
    /// Actions not yet performed: the rest of a batch interrupted by an offloaded blocking call.
    actions: VecDeque<Action<Req<S>>>,
    opened: bool,
    /// The socket may hold unread bytes: set by readiness, cleared by WouldBlock or a short read
    /// (edge-triggered: new input raises a new edge).
    readable: bool,
    /// The peer's FIN was reported: reading must go on to EOF, since a short read before it
    /// would otherwise leave it unread with no edge to come.
    fin: bool,
    read_closed: bool,
    write_shut: bool,
    shutdown_seen: bool,
    /// A worker is making this connection's blocking call: handle nothing until it is done.
    suspended: bool,
    /// Give up on a peer that has not read anything for `write_timeout`.
    write_deadline: Option<Instant>,
    /// Closed: dropping the peer's last bytes until EOF or this instant.
    linger: Option<Instant>,
    /// The deadline the loop's [`Timers`] hold for this connection.
    timer: Option<Instant>,
    urgent: Tracker,
}

impl<S: Service> Conn<S> {
    /// Register a new connection's session with the hub; `wake` tells its driver about messages.
    pub(crate) fn new(
        service: &S,
        ctx: &Ctx<S>,
        stream: TcpStream,
        peer: SocketAddr,
        token: usize,
        generation: u64,
        wake: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        let now = Instant::now();
        ctx.env.activity.touch(now);
        let info = conn_info(Some(peer));
        let mailbox = Arc::new(Mailbox::new(ctx.mailbox, wake));
        ctx.hub.open(info.id, mailbox.clone());
        if let Err(e) = crate::urgent::arm(stream.as_fd(), ctx.urgent) {
            tracing::warn!(target: "warren", "cannot arm urgent data: {e}");
        }
        Self {
            stream,
            token,
            generation,
            id: info.id,
            session: service.new_session(&info, now),
            out: Output::new(),
            mailbox,
            messages: Vec::new(),
            actions: VecDeque::new(),
            opened: false,
            readable: true,
            fin: false,
            read_closed: false,
            write_shut: false,
            shutdown_seen: false,
            suspended: false,
            write_deadline: None,
            linger: None,
            timer: None,
            urgent: Tracker::new(ctx.urgent),
        }
    }

    /// When the driver must next look at this connection if nothing else happens.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        if self.linger.is_some() {
            return self.linger;
        }
        let session = if self.suspended { None } else { self.session.poll_timeout() };
        session.into_iter().chain(self.write_deadline).min()
    }

    /// Whether the connection needs a turn at `now` even without readiness.
    pub(crate) fn is_due(&self, now: Instant, shutting: bool) -> bool {
        self.deadline().is_some_and(|at| at <= now) || (shutting && self.linger.is_none() && !self.shutdown_seen)
    }

    pub(crate) fn is_lingering(&self) -> bool {
        self.linger.is_some()
    }

    /// The socket reported readiness: `readable` (or an error), and `fin` if the peer closed.
    pub(crate) fn ready(&mut self, readable: bool, fin: bool) {
        self.readable |= readable || fin;
        self.fin |= fin;
    }

    /// Whether the peer may still send, and the session takes it: after EOF (or while the
    /// session holds input back) the socket stays readable, so a level-style re-registration
    /// would report it forever.
    pub(crate) fn wants_input(&self) -> bool {
        !self.read_closed && self.session.wants_input()
    }

    /// A worker made this connection's blocking call: it may go on.
    pub(crate) fn resume(&mut self) {
        self.suspended = false;
    }

    /// Whether the timer entry `(at, generation)` is this connection's live one; it is used up if so.
    pub(crate) fn fire(&mut self, at: Instant, generation: u64) -> bool {
        let live = self.generation == generation && self.timer == Some(at);
        if live {
            self.timer = None;
        }
        live
    }

    /// The connection goes to a worker: its timer entry no longer counts, and it is armed afresh
    /// when it comes back.
    pub(crate) fn disarm(&mut self) {
        self.timer = None;
    }

    /// The connection is gone: leave the hub, unless that was done when it began to linger.
    pub(crate) fn close(self, ctx: &Ctx<S>) {
        if self.linger.is_none() {
            ctx.hub.leave(Instant::now(), self.id);
        }
    }
}

/// What a [`step`] left.
pub(crate) enum Turn {
    /// The connection lives on; `again`: it stopped on its read budget with input waiting.
    Open { again: bool },
    /// Done: close it.
    Closed,
}

/// Let one connection make all the progress it can: open, messages, shutdown, a due deadline,
/// then input, performing the actions after each call. Blocks only where the context says so.
pub(crate) fn step<S: Service>(conn: &mut Conn<S>, ctx: &Ctx<S>, buf: &mut [u8]) -> Turn {
    let turn = if conn.linger.is_some() { drain_linger(conn, buf) } else { run(conn, ctx, buf) };
    turn.unwrap_or_else(|e| {
        tracing::debug!(target: "warren", "connection {}: {e}", conn.id.0);
        Turn::Closed
    })
}

fn run<S: Service>(conn: &mut Conn<S>, ctx: &Ctx<S>, buf: &mut [u8]) -> io::Result<Turn> {
    let mut timeout_due = conn.session.poll_timeout().is_some_and(|at| Instant::now() >= at);
    let (mut reads, mut again) = (0, false);
    loop {
        perform(conn, ctx)?;
        if conn.suspended {
            break;
        }
        let (now, out) = (Instant::now(), &mut conn.out);
        if conn.messages.is_empty() {
            conn.mailbox.drain(&mut conn.messages);
            conn.messages.reverse();
        }
        if !conn.opened {
            conn.opened = true;
            conn.session.handle_open(now, out);
        } else if let Some(msg) = conn.messages.pop() {
            conn.session.handle_message(now, msg, out);
        } else if !conn.shutdown_seen && ctx.env.shutdown.is_triggered() {
            conn.shutdown_seen = true;
            conn.session.handle_shutdown(now, out);
        } else if std::mem::take(&mut timeout_due) {
            conn.session.handle_timeout(now, out);
        } else if let Some(urgent) = conn.urgent.check(conn.stream.as_fd()) {
            conn.session.handle_urgent(now, urgent, out);
        } else if !conn.readable
            || conn.read_closed
            || out.is_closed()
            || out.pending_len() >= BACKPRESSURE
            || !conn.session.wants_input()
        {
            break;
        } else if reads == READ_BUDGET {
            again = true;
            break;
        } else {
            if conn.urgent.armed() {
                // Reads stop at the mark; there, the urgent byte is taken before anything else.
                match conn.urgent.at_mark(conn.stream.as_fd())? {
                    Some(urgent) => {
                        conn.session.handle_urgent(now, urgent, out);
                        continue;
                    }
                    None if conn.urgent.waiting_for_byte(conn.stream.as_fd()) => {
                        // Its arrival raises EPOLLPRI (out of line) or EPOLLIN (inline).
                        conn.readable = false;
                        break;
                    }
                    None => {}
                }
            }
            reads += 1;
            match conn.stream.read(buf) {
                Ok(0) => {
                    conn.read_closed = true;
                    conn.session.handle_read_closed(now, out);
                }
                Ok(n) => {
                    conn.urgent.taken(n);
                    // A short read emptied the socket and later input raises a new edge: this
                    // saves the read that would only say WouldBlock. Not so at an urgent mark,
                    // where reads stop short with more queued behind it.
                    conn.readable = n == buf.len() || conn.fin || conn.urgent.until_mark();
                    ctx.env.activity.touch(now);
                    conn.session.handle_input(now, &buf[..n], out);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    if conn.mailbox.overflowed() {
        // Messages were lost: the session cannot go on, but what it said still goes out.
        conn.out.close();
    }
    if conn.write_deadline.is_some_and(|at| Instant::now() >= at) {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "peer stopped reading"));
    }
    if conn.suspended || !conn.out.is_flushed() {
        return Ok(Turn::Open { again });
    }
    if conn.out.is_closed() {
        let _ = conn.stream.shutdown(std::net::Shutdown::Write);
        conn.linger = Some(Instant::now() + LINGER);
        ctx.hub.leave(Instant::now(), conn.id);
        return drain_linger(conn, buf);
    }
    if conn.out.is_write_closed() && !conn.write_shut {
        conn.write_shut = true;
        conn.stream.shutdown(std::net::Shutdown::Write)?;
    }
    Ok(Turn::Open { again })
}

/// Send what the session produced and carry out its actions in order, until it has nothing more
/// to do or a worker took its blocking call.
fn perform<S: Service>(conn: &mut Conn<S>, ctx: &Ctx<S>) -> io::Result<()> {
    loop {
        flush(conn, ctx)?;
        if conn.suspended {
            return Ok(());
        }
        if conn.out.has_actions() {
            let mut batch = Vec::new();
            conn.out.take_actions(&mut batch);
            conn.actions.extend(batch);
        }
        let Some(action) = conn.actions.pop_front() else { return Ok(()) };
        match action {
            // The answers arrive in this session's mailbox; `run` handles them next.
            Action::Hub(request) => ctx.hub.request(Instant::now(), conn.id, request),
            Action::Block(d) => match &ctx.offload {
                Some(workers) => {
                    conn.suspended = true;
                    workers
                        .send((conn.token, conn.generation, d))
                        .map_err(|_| io::Error::other("blocking workers gone"))?;
                }
                None => std::thread::sleep(d),
            },
            Action::Log(level, line) => log_line(level, &line),
        }
    }
}

/// Write pending bytes until done or the socket is full (then wait, if writes block here).
fn flush<S: Service>(conn: &mut Conn<S>, ctx: &Ctx<S>) -> io::Result<()> {
    let before = conn.out.pending_len();
    loop {
        if crate::transmit::send(&conn.stream, &mut conn.out)? {
            break;
        }
        if !ctx.blocking_writes {
            break;
        }
        wait_writable(&conn.stream, ctx.write_timeout)?;
    }
    let progressed = conn.out.pending_len() < before;
    conn.write_deadline = match conn.write_deadline {
        _ if conn.out.is_flushed() => None,
        Some(at) if !progressed => Some(at),
        _ => Some(Instant::now() + ctx.write_timeout),
    };
    Ok(())
}

/// Wait until the peer has room for more bytes, like a blocking socket with `SO_SNDTIMEO`.
fn wait_writable(stream: &TcpStream, timeout: Duration) -> io::Result<()> {
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLOUT)];
    match poll(&mut fds, PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX)) {
        Ok(0) => Err(io::Error::new(io::ErrorKind::TimedOut, "peer stopped reading")),
        Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Drop what the peer still sends until it closes, `LINGER` passes, or it sends too much.
fn drain_linger<S: Service>(conn: &mut Conn<S>, buf: &mut [u8]) -> io::Result<Turn> {
    if conn.linger.is_some_and(|at| Instant::now() >= at) {
        return Ok(Turn::Closed);
    }
    for _ in 0..READ_BUDGET {
        match conn.stream.read(buf) {
            Ok(0) => return Ok(Turn::Closed),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Turn::Open { again: false }),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Turn::Closed)
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
            && conn.timer.is_none_or(|t| at < t)
        {
            conn.timer = Some(at);
            self.heap.push(Reverse((at, conn.token, conn.generation)));
        }
    }

    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, ..))| *at)
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
    listener: TcpListener,
    acceptor: Acceptor,
    /// Connections may be waiting: set by readiness, cleared once the backlog is drained.
    pub ready: bool,
    /// Out of descriptors: no accepting before this instant.
    resume_at: Option<Instant>,
}

impl Listening {
    pub(crate) fn new(listener: TcpListener, registry: &Registry) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        registry.register(&mut SourceFd(&listener.as_raw_fd()), LISTENER, Interest::READABLE)?;
        Ok(Self { listener, acceptor: Acceptor::new(), ready: true, resume_at: None })
    }

    /// Accept a burst of connections, each made non-blocking and handed to `admit`.
    pub(crate) fn accept(
        &mut self,
        refusal: &[u8],
        env: &Env,
        mut admit: impl FnMut(std::net::TcpStream, SocketAddr),
    ) -> io::Result<()> {
        let now = Instant::now();
        if !self.ready || self.resume_at.is_some_and(|at| now < at) {
            return Ok(());
        }
        self.resume_at = None;
        for _ in 0..ACCEPT_BUDGET {
            match self.acceptor.accept(&self.listener, refusal)? {
                Accepted::Conn(stream, peer) => match stream.set_nonblocking(true) {
                    Ok(()) => {
                        let _ = stream.set_nodelay(true);
                        admit(stream, peer);
                    }
                    Err(e) => tracing::warn!(target: "warren", "accept: {e}"),
                },
                // `Nothing` is either "drained" or an aborted connection; only the backlog can tell.
                Accepted::Nothing if !is_readable(&self.listener) => {
                    self.ready = false;
                    return Ok(());
                }
                Accepted::Nothing => {}
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

fn is_readable(listener: &TcpListener) -> bool {
    let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
}

/// How long to sleep in `epoll_wait` until the earliest of `at`.
pub(crate) fn timeout_until(at: impl IntoIterator<Item = Option<Instant>>) -> Option<Duration> {
    at.into_iter().flatten().min().map(|at| at.saturating_duration_since(Instant::now()))
}
