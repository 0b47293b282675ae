//! The connection engine: the contract between a session and its connection, written once.
//!
//! Every model drives every session through an [`Engine`]. The engine is a sans-IO state
//! machine in the style of quinn-proto's `Connection`: it owns the session, its [`Output`] and
//! everything a driver used to remember per connection (whether it opened, the peer's
//! half-close, the write side's shutdown, the server's shutdown, the write deadline, the
//! lingering close, jobs in flight, streams the session opened and splices between them), and it
//! performs no I/O:
//!
//! - **events in**: `handle_*` (bytes read, a stream's end, hub messages, shutdown, a timeout,
//!   urgent data, a job's completion, a connection made, bytes sent);
//! - **outputs**: [`Engine::poll_transmit`] (what to write on a stream), [`Engine::poll_action`]
//!   (what to perform: hub requests, jobs, connects, a hand-off, log lines),
//!   [`Engine::poll_timeout`] (when to come back), [`Engine::wants_read`] (which streams to
//!   read), [`Engine::is_done`] (whether the connection is over, and how).
//!
//! The one I/O step every driver runs on it when readiness says so is [`drive`](self::drive):
//! it reads, writes and splices through non-blocking calls and feeds the results back in.
//! Drivers differ only in how they wait (poll, epoll, tokio) and where jobs run.
//!
//! Invariants:
//! - the session hears of events in the documented order (`warren_proto::session`): open
//!   first; hub messages already delivered before shutdown; nothing after a close or hand-off;
//! - nothing is read while more than [`BACKPRESSURE`] bytes wait for the peer, so a client
//!   that sends without reading cannot grow the server;
//! - a connection whose peer takes no bytes for `write_timeout` is given up;
//! - a closed connection lingers (write side shut, reading and dropping) for at most
//!   [`LINGER`], so that no reset races the last bytes; unless the peer closed already, or the
//!   session expects nothing more (`Session::lingers`) and the last read drained the socket:
//!   then it shuts the write side and closes at once.

pub(crate) mod drive;
pub(crate) mod io;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use warren_proto::{Action, Out, Session, StreamId, Token, Transmit, Urgent};

use crate::urgent::{Tracker, UrgentMode};

/// Stop reading a connection while this many bytes wait to be sent to it.
pub(crate) const BACKPRESSURE: u64 = 256 * 1024;
/// How long a closed connection drains the peer's last bytes, so that no reset races ours.
pub(crate) const LINGER: Duration = Duration::from_millis(500);
/// At most this many reads while lingering: a peer that keeps sending is cut off.
const LINGER_READS: u8 = 16;

pub(crate) type Req<S> = <S as Session>::Request;
pub(crate) type Msg<S> = <S as Session>::Message;
pub(crate) type Done<S> = <S as Session>::Done;

/// What the engine was told about one stream, and what it did to it.
#[derive(Debug)]
struct Stream {
    id: StreamId,
    /// The socket may hold unread bytes: set by readiness, cleared by a would-block or a short
    /// read (edge-triggered pollers raise a new edge for new input).
    readable: bool,
    /// The peer's FIN was reported: reading goes on to the end, since a short read before it
    /// would leave the end unread with no edge to come.
    fin: bool,
    read_closed: bool,
    write_shut: bool,
}

impl Stream {
    fn new(id: StreamId) -> Self {
        // A new stream is tried once: one would-block at worst.
        Self { id, readable: true, fin: false, read_closed: false, write_shut: false }
    }
}

/// A splice the session asked for, and how far it got.
#[derive(Debug)]
pub(crate) struct Splice {
    pub from: StreamId,
    pub to: StreamId,
    /// Bytes still to move, if limited.
    pub left: Option<u64>,
    /// Bytes moved so far.
    pub moved: u64,
    /// Taken at the first move through the kernel (see `bulk`).
    pub pipe: Option<io::Pipe>,
    /// Moving through the pipe from now on. A splice starts by copying through the driver's
    /// read buffer, as HAProxy's `splice-auto` does: for the small messages of a request and
    /// its answer that is a read and a write, where splicing is a splice in, a splice out and
    /// one more to learn that the source is empty (a short splice does not prove it: a pipe
    /// runs out of slots before bytes). The first read that fills the buffer turns to the pipe.
    pub bulk: bool,
    /// The destination took nothing at the last try: wait for it to be writable.
    pub dest_blocked: bool,
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Closed in order: everything sent, the peer drained or the linger over.
    Closed,
    /// Handed to another process; this one keeps nothing of it.
    HandedOff,
    /// Given up: the peer stopped reading, or the socket failed.
    Failed(String),
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    Open,
    /// The session closed and everything was sent: the write side is shut, the peer's last
    /// bytes are read and dropped until it closes, the deadline passes or it sends too much.
    Lingering {
        until: Instant,
        reads: u8,
    },
    Done(Ending),
}

/// Settings of every engine of one server.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EngineConfig {
    /// Give up on a peer that takes no bytes for this long.
    pub write_timeout: Duration,
    /// Whether the accepted connection is armed for TCP urgent data.
    pub urgent: UrgentMode,
}

/// One connection's session and everything its driver must remember for it. See the module docs.
///
/// What every connection needs is inline; what only some use (hub messages, jobs, streams,
/// splices, a preamble) is in [`More`], made the first time: an idle keep-alive connection is a
/// few hundred bytes.
pub(crate) struct Engine<S: Session> {
    session: S,
    out: Out<S>,
    phase: Phase,
    opened: bool,
    shutdown_seen: bool,
    /// The server is stopping: the session hears it on the next turn.
    shutdown_due: bool,
    /// The client's queue was emptied by a send since the session last heard so.
    drained: bool,
    /// The accepted connection.
    client: Stream,
    write_deadline: Option<Instant>,
    write_timeout_ms: u32,
    /// Urgent-data state, only for connections armed for it.
    urgent: Option<Box<Tracker>>,
    more: Option<Box<More<S>>>,
}

/// The engine's state that only some connections use.
struct More<S: Session> {
    /// Streams the session opened.
    streams: Vec<Stream>,
    splices: Vec<Splice>,
    /// Messages from the hub not handled yet, oldest first.
    inbox: VecDeque<Msg<S>>,
    /// Jobs started and neither completed nor aborted.
    jobs: Vec<Token>,
    /// Completions and connections handed in, waiting for their turn.
    finished: VecDeque<Finished<S>>,
    /// Bytes read before the engine existed (a handed-off connection's), fed first.
    preamble: Vec<u8>,
    next_stream: u32,
}

impl<S: Session> Default for More<S> {
    fn default() -> Self {
        Self {
            streams: Vec::new(),
            splices: Vec::new(),
            inbox: VecDeque::new(),
            jobs: Vec::new(),
            finished: VecDeque::new(),
            preamble: Vec::new(),
            next_stream: 1,
        }
    }
}

/// A result that came back from the driver, to hand to the session in order.
enum Finished<S: Session> {
    Job(Token, Done<S>),
    Connected(Token, Result<StreamId, std::io::ErrorKind>),
}

impl<S: Session> Engine<S> {
    /// An engine for `session`, whose connection was accepted at `now`; `preamble` is what was
    /// read from it before (empty unless it was handed off).
    pub(crate) fn new(session: S, config: &EngineConfig, preamble: Vec<u8>) -> Self {
        let more = (!preamble.is_empty()).then(|| Box::new(More { preamble, ..More::default() }));
        Self {
            session,
            out: Out::<S>::new(),
            phase: Phase::Open,
            opened: false,
            shutdown_seen: false,
            shutdown_due: false,
            drained: false,
            client: Stream::new(StreamId::CLIENT),
            write_deadline: None,
            write_timeout_ms: u32::try_from(config.write_timeout.as_millis()).unwrap_or(u32::MAX),
            urgent: (config.urgent != UrgentMode::Off).then(|| Box::new(Tracker::new(config.urgent))),
            more,
        }
    }

    fn more(&mut self) -> &mut More<S> {
        self.more.get_or_insert_with(Box::default)
    }

    fn splices(&self) -> &[Splice] {
        self.more.as_ref().map_or(&[], |m| &m.splices)
    }

    // --- events in -------------------------------------------------------------------------

    /// Readiness from the driver: `stream` may be read (or has failed), and `fin` if its peer
    /// closed.
    pub(crate) fn handle_readable(&mut self, stream: StreamId, fin: bool) {
        if let Some(s) = self.stream_mut(stream) {
            s.readable = true;
            s.fin |= fin;
        }
    }

    /// Whether the session has heard of the server's shutdown.
    pub(crate) fn shutdown_seen(&self) -> bool {
        self.shutdown_seen
    }

    /// The server is stopping.
    pub(crate) fn handle_shutdown(&mut self) {
        self.shutdown_due = !self.shutdown_seen;
    }

    /// A hub message for this session; handled in order on the next turn.
    pub(crate) fn handle_message(&mut self, msg: Msg<S>) {
        self.more().inbox.push_back(msg);
    }

    /// Where hub messages wait for their turn, for drivers that move them in batches.
    pub(crate) fn inbox(&mut self) -> &mut VecDeque<Msg<S>> {
        &mut self.more().inbox
    }

    /// The job `token` finished; dropped if it was aborted (or never started).
    pub(crate) fn handle_completion(&mut self, token: Token, done: Done<S>) {
        let Some(more) = self.more.as_deref_mut() else { return };
        if let Some(at) = more.jobs.iter().position(|&t| t == token) {
            more.jobs.swap_remove(at);
            more.finished.push_back(Finished::Job(token, done));
        }
    }

    /// The connection `token` asked for is open (the driver holds its socket as `stream`, from
    /// [`Engine::new_stream`]) or failed.
    pub(crate) fn handle_connected(&mut self, token: Token, result: Result<StreamId, std::io::ErrorKind>) {
        if let Ok(stream) = result {
            self.more().streams.push(Stream::new(stream));
            self.out.add_stream(stream);
        }
        self.more().finished.push_back(Finished::Connected(token, result));
    }

    /// The session gave `stream` up to be kept idle (`Action::Park`): true, and the stream is
    /// forgotten here, when it can be kept (all its queue sent, open both ways, no splice on
    /// it); otherwise false, and it closes as any stream the session closed.
    pub(crate) fn park_stream(&mut self, stream: StreamId) -> bool {
        let open = self.stream(stream).is_some_and(|s| !s.fin && !s.read_closed && !s.write_shut);
        let sent = self.out.outbox(stream).is_some_and(|o| o.is_flushed() && !o.is_write_closed());
        let spliced = self.splices().iter().any(|sp| sp.from == stream || sp.to == stream);
        if !(open && sent && !spliced) {
            if let Some(o) = self.out.outbox_mut(stream) {
                o.close();
            }
            return false;
        }
        self.more().streams.retain(|s| s.id != stream);
        self.out.remove_stream(stream);
        true
    }

    /// An id for a stream the driver is about to connect.
    pub(crate) fn new_stream(&mut self) -> StreamId {
        let more = self.more();
        let id = StreamId(more.next_stream);
        more.next_stream += 1;
        id
    }

    /// `n` bytes of `stream`'s queue went out at `now`; `flushed` if it is empty now.
    pub(crate) fn handle_sent(&mut self, now: Instant, stream: StreamId, n: usize) {
        let Some(outbox) = self.out.outbox_mut(stream) else { return };
        outbox.consume(n);
        if stream == StreamId::CLIENT {
            let flushed = outbox.is_flushed();
            let timeout = Duration::from_millis(u64::from(self.write_timeout_ms));
            self.write_deadline = if flushed { None } else { Some(now + timeout) };
            self.drained |= flushed;
        }
    }

    /// A write to `stream` at `now` found the socket full and sent nothing: the peer's time to
    /// take bytes runs from here, unless it already runs. (A queue flushed to the byte and then
    /// refilled would otherwise meet a full socket with no deadline set, and a peer that never
    /// reads would hold the connection for ever.)
    pub(crate) fn handle_blocked(&mut self, now: Instant, stream: StreamId) {
        if stream == StreamId::CLIENT && self.write_deadline.is_none() {
            let timeout = Duration::from_millis(u64::from(self.write_timeout_ms));
            self.write_deadline = Some(now + timeout);
        }
    }

    /// Whether `stream`'s write side has been shut down.
    pub(crate) fn is_write_shut(&self, stream: StreamId) -> bool {
        self.stream(stream).is_some_and(|s| s.write_shut)
    }

    /// `stream`'s write side has been shut down.
    pub(crate) fn handle_write_shut(&mut self, stream: StreamId) {
        if let Some(s) = self.stream_mut(stream) {
            s.write_shut = true;
        }
    }

    /// `stream` failed (reset, or an error on a write): it is finished both ways. For the
    /// client the connection is over.
    pub(crate) fn handle_failed(&mut self, now: Instant, stream: StreamId, why: String) {
        if stream == StreamId::CLIENT {
            self.phase = Phase::Done(Ending::Failed(why));
            return;
        }
        if let Some(s) = self.stream_mut(stream) {
            s.write_shut = true;
        }
        self.end_stream(now, stream);
        if let Some(outbox) = self.out.outbox_mut(stream) {
            outbox.close();
        }
    }

    /// Bytes read from `stream` at `now`.
    pub(crate) fn handle_input(&mut self, now: Instant, stream: StreamId, data: &[u8]) {
        if let Phase::Lingering { .. } = self.phase {
            return;
        }
        if stream == StreamId::CLIENT {
            self.session.handle_input(now, data, &mut self.out);
        } else {
            self.session.handle_stream_input(now, stream, data, &mut self.out);
        }
    }

    /// `stream` reached its end at `now` (the peer half-closed or closed).
    pub(crate) fn handle_read_closed(&mut self, now: Instant, stream: StreamId) {
        if let Phase::Lingering { .. } = self.phase {
            // The peer closed: the linger is over.
            self.phase = Phase::Done(Ending::Closed);
            return;
        }
        self.end_stream(now, stream);
    }

    fn end_stream(&mut self, now: Instant, stream: StreamId) {
        let Some(s) = self.stream_mut(stream) else { return };
        if std::mem::replace(&mut s.read_closed, true) {
            return;
        }
        if stream == StreamId::CLIENT {
            self.session.handle_read_closed(now, &mut self.out);
        } else {
            self.session.handle_stream_closed(now, stream, &mut self.out);
        }
    }

    /// A splice moved `n` bytes; `ended` if its source ended (or a side failed). Returns
    /// whether it is over. The session hears of every move and of the end.
    pub(crate) fn handle_spliced(&mut self, now: Instant, at: usize, n: u64, ended: bool) -> bool {
        let splices = &mut self.more().splices;
        let splice = &mut splices[at];
        splice.moved += n;
        if let Some(left) = &mut splice.left {
            *left -= n.min(*left);
        }
        let (from, to) = (splice.from, splice.to);
        let over = ended || splice.left == Some(0);
        if over {
            splices.swap_remove(at);
            if ended && let Some(s) = self.stream_mut(from) {
                s.read_closed = true;
            }
        }
        if n > 0 || over {
            self.session.handle_spliced(now, from, to, n, over, &mut self.out);
        }
        over
    }

    /// Take the next event in the session's call order and hand it to the session. Returns
    /// `false` once nothing is due (the driver then reads, or waits).
    pub(crate) fn step(&mut self, now: Instant, timeout_due: &mut bool) -> bool {
        if self.phase != Phase::Open || self.out.is_closed() && self.opened {
            return false;
        }
        if !self.opened {
            self.opened = true;
            self.session.handle_open(now, &mut self.out);
            let preamble = self.more.as_mut().map(|m| std::mem::take(&mut m.preamble)).unwrap_or_default();
            if !preamble.is_empty() {
                self.session.handle_input(now, &preamble, &mut self.out);
            }
        } else if let Some(msg) = self.more.as_mut().and_then(|m| m.inbox.pop_front()) {
            self.session.handle_message(now, msg, &mut self.out);
        } else if let Some(finished) = self.more.as_mut().and_then(|m| m.finished.pop_front()) {
            match finished {
                Finished::Job(token, done) => self.session.handle_completion(now, token, done, &mut self.out),
                Finished::Connected(token, result) => self.session.handle_connected(now, token, result, &mut self.out),
            }
        } else if std::mem::take(&mut self.shutdown_due) {
            self.shutdown_seen = true;
            self.session.handle_shutdown(now, &mut self.out);
        } else if std::mem::take(timeout_due) {
            self.session.handle_timeout(now, &mut self.out);
        } else {
            return false;
        }
        true
    }

    /// The session, for tests that script it.
    #[cfg(test)]
    pub(crate) fn session_mut(&mut self) -> &mut S {
        &mut self.session
    }

    /// The urgent-data tracker, for connections armed for it.
    pub(crate) fn urgent(&mut self) -> Option<&mut Tracker> {
        self.urgent.as_deref_mut()
    }

    /// Urgent data on the accepted connection.
    pub(crate) fn handle_urgent(&mut self, now: Instant, urgent: Urgent) {
        if self.phase == Phase::Open {
            self.session.handle_urgent(now, urgent, &mut self.out);
        }
    }

    /// After a send that emptied the client's queue: the session hears it has drained.
    pub(crate) fn handle_drained(&mut self, now: Instant) {
        if self.phase == Phase::Open && !self.out.is_closed() {
            self.session.handle_drained(now, &mut self.out);
        }
    }

    /// The session's deadline, the write deadline or the linger's end passed: checked here and
    /// in the next [`Engine::step`].
    pub(crate) fn check_deadlines(&mut self, now: Instant) {
        if self.write_deadline.is_some_and(|at| now >= at) {
            self.phase = Phase::Done(Ending::Failed("peer stopped reading".into()));
        }
        if let Phase::Lingering { until, .. } = self.phase
            && now >= until
        {
            self.phase = Phase::Done(Ending::Closed);
        }
    }

    /// The session finished and its bytes are out: shut the write side and linger. Returns
    /// `true` when it begins (the driver then tells the hub the session left).
    pub(crate) fn begin_linger(&mut self, now: Instant) -> bool {
        if self.phase != Phase::Open || !self.out.is_closed() || !self.out.is_flushed() || !self.splices().is_empty() {
            return false;
        }
        self.phase = if self.closes_at_once() {
            Phase::Done(Ending::Closed)
        } else {
            Phase::Lingering { until: now + LINGER, reads: LINGER_READS }
        };
        true
    }

    /// One read while lingering: whether another may follow.
    pub(crate) fn linger_read(&mut self) -> bool {
        match &mut self.phase {
            Phase::Lingering { reads, .. } if *reads > 0 => {
                *reads -= 1;
                true
            }
            Phase::Lingering { .. } => {
                self.phase = Phase::Done(Ending::Closed);
                false
            }
            _ => false,
        }
    }

    /// The connection was handed to another process.
    pub(crate) fn handed_off(&mut self) {
        self.phase = Phase::Done(Ending::HandedOff);
    }

    // --- outputs --------------------------------------------------------------------------

    /// The next thing to write on `stream`, and whether more follows it (`MSG_MORE`): more
    /// bytes, or the FIN of a stream the session has closed. The kernel then holds a short last
    /// segment until the shutdown that follows the flush, which sends it with the FIN on it (as
    /// nginx's corked sends do): one packet fewer per closed connection, and the peer reads the
    /// answer and its end at once.
    pub(crate) fn poll_transmit(&self, stream: StreamId) -> Option<(Transmit<'_>, bool)> {
        let outbox = self.out.outbox(stream)?;
        outbox.poll_transmit().map(|t| (t, outbox.more_queued() || outbox.is_write_closed()))
    }

    /// What follows the front of `stream`'s queue (see [`Engine::poll_transmit`]), and whether
    /// more (or the FIN) follows that.
    pub(crate) fn poll_transmit_second(&self, stream: StreamId) -> Option<(Transmit<'_>, bool)> {
        let outbox = self.out.outbox(stream)?;
        outbox.poll_transmit_second().map(|(t, more)| (t, more || outbox.is_write_closed()))
    }

    /// Streams with bytes to write, or a half-close to make.
    pub(crate) fn wants_write(&self, stream: StreamId) -> bool {
        let Some(outbox) = self.out.outbox(stream) else { return false };
        !outbox.is_flushed() || self.needs_write_shutdown(stream)
    }

    /// Whether `stream`'s write side is to be shut now: its session closed it (or half-closed
    /// it) and everything is sent. Extra streams the session closed shut both ways.
    pub(crate) fn needs_write_shutdown(&self, stream: StreamId) -> bool {
        let (Some(outbox), Some(s)) = (self.out.outbox(stream), self.stream(stream)) else { return false };
        outbox.is_write_closed() && outbox.is_flushed() && !s.write_shut
    }

    /// Once closed, the connection closes at once, without waiting for the peer: the peer has
    /// closed, or the last read found the socket drained and the session expects nothing more
    /// ([`Session::lingers`]). The write side is still shut first: under `fork` another process
    /// may hold the descriptor, and only a shutdown sends the FIN then.
    fn closes_at_once(&self) -> bool {
        self.phase == Phase::Open && (self.client.read_closed || !self.client.readable && !self.session.lingers())
    }

    /// Streams the session closed whose bytes are all out: the driver drops their sockets.
    pub(crate) fn poll_closed_stream(&mut self) -> Option<StreamId> {
        let more = self.more.as_deref_mut()?;
        let out = &self.out;
        let at = more
            .streams
            .iter()
            .position(|s| s.write_shut && out.outbox(s.id).is_some_and(|o| o.is_closed() && o.is_flushed()))?;
        let stream = more.streams.remove(at);
        more.splices.retain(|sp| sp.from != stream.id && sp.to != stream.id);
        self.out.remove_stream(stream.id);
        Some(stream.id)
    }

    /// Whether `stream` is to be read now: open for reading, readable as far as the driver
    /// knows, the session takes input, and (for the client) not too much waits to be sent.
    pub(crate) fn wants_read(&self, stream: StreamId) -> bool {
        let Some(s) = self.stream(stream) else { return false };
        if s.read_closed || self.splices().iter().any(|sp| sp.from == stream) {
            return false;
        }
        match self.phase {
            Phase::Lingering { .. } => stream == StreamId::CLIENT,
            Phase::Done(_) => false,
            Phase::Open if stream == StreamId::CLIENT => {
                self.opened
                    && !self.out.is_closed()
                    && self.out.pending_len() < BACKPRESSURE
                    && self.session.wants_input()
            }
            Phase::Open => !self.out.is_closed(),
        }
    }

    /// Whether `stream` may hold unread bytes.
    pub(crate) fn is_readable(&self, stream: StreamId) -> bool {
        self.stream(stream).is_some_and(|s| s.readable)
    }

    /// A read of `stream` returned `n` bytes into a buffer of `capacity`: whether it may hold
    /// more (a short read emptied it, unless its FIN or an urgent mark is ahead).
    pub(crate) fn read_done(&mut self, stream: StreamId, n: usize, capacity: usize) {
        let until_mark = stream == StreamId::CLIENT && self.urgent.as_ref().is_some_and(|t| t.until_mark());
        if let Some(s) = self.stream_mut(stream) {
            s.readable = n == capacity || s.fin || until_mark;
        }
    }

    /// Queue `bytes` on `stream`, before anything a splice moves to it later: what a copying
    /// splice read but the destination did not take.
    pub(crate) fn queue(&mut self, stream: StreamId, bytes: &[u8]) {
        if let Some(outbox) = self.out.outbox_mut(stream) {
            outbox.send(bytes);
        }
    }

    /// `stream` would block: wait for readiness before reading it again.
    pub(crate) fn read_blocked(&mut self, stream: StreamId) {
        if let Some(s) = self.stream_mut(stream) {
            s.readable = false;
        }
    }

    /// The next action for the driver, in the order the session queued them. Splices and log
    /// lines are the engine's own business and never come out here.
    pub(crate) fn poll_action(&mut self) -> Option<Action<Req<S>, Done<S>>> {
        loop {
            match self.out.poll_action()? {
                Action::Splice { from, to, limit } => {
                    let known = self.stream(from).is_some() && self.stream(to).is_some() && from != to;
                    if known && self.phase == Phase::Open {
                        let splice =
                            Splice { from, to, left: limit, moved: 0, pipe: None, bulk: false, dest_blocked: false };
                        self.more().splices.push(splice);
                    } else {
                        tracing::error!(target: "warren", "a splice between unknown streams {from:?} and {to:?}");
                    }
                }
                Action::Log(level, line) => crate::conn::log_line(level, &line),
                Action::Job(token, job) => {
                    self.more().jobs.push(token);
                    return Some(Action::Job(token, job));
                }
                Action::Abort(token) => {
                    self.more().jobs.retain(|&t| t != token);
                    return Some(Action::Abort(token));
                }
                action => return Some(action),
            }
        }
    }

    /// Whether the session has something due without any readiness: an event queued for it.
    pub(crate) fn has_events(&self) -> bool {
        self.phase == Phase::Open
            && (!self.opened
                || self.shutdown_due
                || self.more.as_ref().is_some_and(|m| !m.inbox.is_empty() || !m.finished.is_empty()))
    }

    /// The splices in progress.
    pub(crate) fn splices_mut(&mut self) -> &mut [Splice] {
        match self.more.as_deref_mut() {
            Some(more) => &mut more.splices,
            None => &mut [],
        }
    }

    /// What the driver waits for on `stream`: `(readable, writable)`. Readable when the session
    /// (or a splice from it) wants input and the socket was read dry; writable when bytes wait
    /// for it (or a splice into it is blocked).
    pub(crate) fn interest(&self, stream: StreamId) -> (bool, bool) {
        let Some(s) = self.stream(stream) else { return (false, false) };
        let splices = self.splices();
        let splice_from = splices.iter().any(|sp| sp.from == stream && !sp.pipe.as_ref().is_some_and(io::Pipe::holds));
        let read = !s.readable && (self.wants_read(stream) || splice_from && !s.read_closed);
        let write = self.wants_write(stream) || splices.iter().any(|sp| sp.to == stream && sp.dest_blocked);
        (read, write)
    }

    /// Whether readiness for reading `stream` is of any use now (the session, or a splice from
    /// it, wants its bytes): a level-style re-registration of a stream at its end would report
    /// it forever.
    pub(crate) fn wants_readiness(&self, stream: StreamId) -> bool {
        self.wants_read(stream) || self.splices().iter().any(|sp| sp.from == stream)
    }

    /// The `at`-th stream (the client first), while there is one.
    pub(crate) fn stream_at(&self, at: usize) -> Option<StreamId> {
        match at {
            0 => Some(StreamId::CLIENT),
            _ => self.more.as_ref()?.streams.get(at - 1).map(|s| s.id),
        }
    }

    /// The session cannot go on (its messages were lost): what it said still goes out, then
    /// the connection closes.
    pub(crate) fn close(&mut self) {
        self.out.close();
    }

    /// When the driver must come back if nothing else happens.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Open => self.session.poll_timeout().into_iter().chain(self.write_deadline).min(),
            Phase::Lingering { until, .. } => Some(until),
            Phase::Done(_) => None,
        }
    }

    /// The session's own deadline, to tell whether `handle_timeout` is due.
    pub(crate) fn session_deadline(&self) -> Option<Instant> {
        if self.phase == Phase::Open { self.session.poll_timeout() } else { None }
    }

    /// How the connection ended, once it has.
    pub(crate) fn is_done(&self) -> Option<&Ending> {
        match &self.phase {
            Phase::Done(ending) => Some(ending),
            _ => None,
        }
    }

    /// Whether the session has finished and only the linger is left.
    pub(crate) fn is_lingering(&self) -> bool {
        matches!(self.phase, Phase::Lingering { .. })
    }

    /// Whether a send emptied the client's queue since the last call: the session is to hear
    /// it drained.
    pub(crate) fn take_drained(&mut self) -> bool {
        std::mem::take(&mut self.drained) && self.out.is_flushed()
    }

    fn stream(&self, id: StreamId) -> Option<&Stream> {
        if id == StreamId::CLIENT {
            return Some(&self.client);
        }
        self.more.as_ref()?.streams.iter().find(|s| s.id == id)
    }

    fn stream_mut(&mut self, id: StreamId) -> Option<&mut Stream> {
        if id == StreamId::CLIENT {
            return Some(&mut self.client);
        }
        self.more.as_mut()?.streams.iter_mut().find(|s| s.id == id)
    }
}

impl<S: Session> std::fmt::Debug for Engine<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("phase", &self.phase).field("client", &self.client).finish()
    }
}

#[cfg(test)]
mod tests;
