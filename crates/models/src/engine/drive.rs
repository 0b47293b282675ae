//! The one I/O step of every model: [`drive`] makes all the progress a connection can make now
//! without waiting (events for the session in their order, its actions, writes, reads within a
//! budget, splices), then says what to wait for. A driver calls it whenever readiness, a
//! message, a completion or a deadline says the connection may progress.
//!
//! What differs between models is behind [`Link`]: where the sockets are, how the hub is
//! reached, where jobs run (on this thread, or on helper threads whose completions come back
//! later through [`Engine::handle_completion`]) and how an outbound connection is made.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use warren_proto::{Action, HandOffTarget, Job, Session, StreamId, Token, Transmit};

use super::io::{self as sys, Pipe, Sock};
use super::{Done, Ending, Engine, Req};

/// Reads per connection per turn, so that one fast sender cannot starve the others.
pub(crate) const READ_BUDGET: usize = 16;

/// A driver's side of one connection.
pub(crate) trait Link<S: Session> {
    type Sock: Sock;

    /// The socket of `stream`, if it is still open.
    fn sock(&self, stream: StreamId) -> Option<&Self::Sock>;

    /// Send a request to the hub; its answers come back through [`Link::mail`].
    fn hub(&mut self, now: Instant, request: Req<S>) -> io::Result<()>;

    /// Hand every message that arrived for the session to `engine`.
    fn mail(&mut self, engine: &mut Engine<S>) -> io::Result<()>;

    /// Whether messages were lost because the session fell too far behind.
    fn overflowed(&self) -> bool {
        false
    }

    /// Start `job`. A model that runs it here returns its result; others hand it to
    /// [`Engine::handle_completion`] later.
    fn job(&mut self, token: Token, job: Job<Done<S>>) -> Option<Done<S>>;

    /// Give up on the job `token`, if it still runs somewhere.
    fn abort(&mut self, token: Token) {
        let _ = token;
    }

    /// Connect to `addr` as `stream`. A model that connects here returns the outcome (and holds
    /// the socket as `stream` on success); others hand it to [`Engine::handle_connected`] later.
    fn connect(
        &mut self,
        stream: StreamId,
        addr: SocketAddr,
        timeout: Duration,
        token: Token,
    ) -> Option<Result<StreamId, io::ErrorKind>>;

    /// Keep `stream`, a connection to `addr` the session gave up, for any session to reuse;
    /// a model that keeps none closes it.
    fn park(&mut self, stream: StreamId, addr: SocketAddr) {
        let _ = addr;
        self.drop_stream(stream);
    }

    /// Take an idle connection to `addr` as `stream`; false if none is kept.
    fn reuse(&mut self, stream: StreamId, addr: SocketAddr) -> bool {
        let _ = (stream, addr);
        false
    }

    /// Hand the accepted connection and `preamble` to the process at `to`.
    fn hand_off(&mut self, to: &HandOffTarget, preamble: &[u8]) -> io::Result<()> {
        let sock = self.sock(StreamId::CLIENT).ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))?;
        crate::handoff::send(to, sock.as_fd(), preamble)
    }

    /// The session is done with the hub (its connection is closing or gone).
    fn leave(&mut self, now: Instant);

    /// The session closed `stream` and everything was sent: drop its socket.
    fn drop_stream(&mut self, stream: StreamId);

    /// Whether the server is stopping.
    fn shutting_down(&self) -> bool;

    /// Input arrived at `now` (the server's idle clock).
    fn touch(&self, now: Instant) {
        let _ = now;
    }
}

/// What a turn left.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Turn {
    /// The connection lives on; `again`: it stopped on its read budget with input waiting.
    Open { again: bool },
    /// Over: drop the socket (and the session) now.
    Closed,
}

/// Make all the progress the connection can make now. See the module docs.
pub(crate) fn drive<S: Session, L: Link<S>>(engine: &mut Engine<S>, link: &mut L, buf: &mut [u8]) -> Turn {
    match turn(engine, link, buf) {
        Ok(turn) => turn,
        Err(e) => {
            engine.handle_failed(Instant::now(), StreamId::CLIENT, e.to_string());
            finish(engine, link)
        }
    }
}

fn turn<S: Session, L: Link<S>>(engine: &mut Engine<S>, link: &mut L, buf: &mut [u8]) -> io::Result<Turn> {
    let now = Instant::now();
    engine.check_deadlines(now);
    let mut timeout_due = engine.session_deadline().is_some_and(|at| now >= at);
    if link.shutting_down() {
        engine.handle_shutdown();
    }
    let (mut reads, mut again) = (0, false);
    while engine.is_done().is_none() {
        flush(engine, link, now, buf)?;
        if perform(engine, link, now)? {
            continue;
        }
        link.mail(engine)?;
        if link.overflowed() {
            // Messages were lost: the session cannot go on, but what it said still goes out.
            engine.close();
        }
        if engine.step(now, &mut timeout_due) {
            continue;
        }
        if urgent(engine, link, now)? {
            continue;
        }
        match read(engine, link, buf, now, &mut reads)? {
            Read::Progress => continue,
            Read::Budget => {
                again = true;
                break;
            }
            Read::Nothing => {}
        }
        match splice(engine, link, buf, now, &mut reads)? {
            Read::Progress => continue,
            Read::Budget => {
                again = true;
                break;
            }
            Read::Nothing => break,
        }
    }
    if engine.is_done().is_none() && engine.begin_linger(now) {
        link.leave(now);
        // The flush before shut it already when the session closed after its last bytes.
        if !engine.is_write_shut(StreamId::CLIENT) {
            if let Some(sock) = link.sock(StreamId::CLIENT) {
                // The peer may be gone already; lingering then ends at the first read.
                let _ = sys::shutdown_write(sock);
            }
            engine.handle_write_shut(StreamId::CLIENT);
        }
        return turn(engine, link, buf);
    }
    Ok(match engine.is_done() {
        None => Turn::Open { again },
        Some(_) => finish(engine, link),
    })
}

/// The connection is over: the hub hears the session left, unless it did at the linger.
fn finish<S: Session, L: Link<S>>(engine: &mut Engine<S>, link: &mut L) -> Turn {
    if let Some(Ending::Failed(why)) = engine.is_done() {
        tracing::debug!(target: "warren", "connection closed: {why}");
    }
    link.leave(Instant::now());
    Turn::Closed
}

/// Write every stream's queue until it is sent or the socket is full; half-close streams whose
/// session asked for it; tell the session when the client's queue drained.
fn flush<S: Session, L: Link<S>>(engine: &mut Engine<S>, link: &mut L, now: Instant, buf: &mut [u8]) -> io::Result<()> {
    // What the session queues on hearing its output drained (chargen's next batch) goes out in
    // this same flush: left queued behind a socket that took everything, it would wait for a
    // writable edge that a peer which never reads never gives, with no write deadline running.
    loop {
        write_streams(engine, link, now, buf)?;
        if !engine.take_drained() {
            return Ok(());
        }
        engine.handle_drained(now);
    }
}

/// One pass of [`flush`] over every stream.
fn write_streams<S: Session, L: Link<S>>(
    engine: &mut Engine<S>,
    link: &mut L,
    now: Instant,
    buf: &mut [u8],
) -> io::Result<()> {
    let mut at = 0;
    while let Some(stream) = engine.stream_at(at) {
        at += 1;
        let Some(sock) = link.sock(stream) else { continue };
        while let Some((transmit, more)) = engine.poll_transmit(stream) {
            match write_front(engine, stream, sock, transmit, more, buf) {
                Ok((n, front)) => {
                    engine.handle_sent(now, stream, n.min(front));
                    if n > front {
                        engine.handle_sent(now, stream, n - front);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    engine.handle_blocked(now, stream);
                    break;
                }
                Err(e) if stream == StreamId::CLIENT => return Err(e),
                Err(e) => {
                    engine.handle_failed(now, stream, e.to_string());
                    break;
                }
            }
        }
        if engine.needs_write_shutdown(stream) {
            // A peer already gone makes this fail; the stream's end is read as usual.
            let _ = sys::shutdown_write(sock);
            engine.handle_write_shut(stream);
        }
    }
    while let Some(stream) = engine.poll_closed_stream() {
        link.drop_stream(stream);
    }
    Ok(())
}

/// Write the front of `stream`'s queue, and with it a small file slice that follows bytes (a
/// response head and its body) in the same call. Returns the bytes written and the length of
/// the front segment, so that the caller consumes the front before what follows it.
fn write_front<S: Session>(
    engine: &Engine<S>,
    stream: StreamId,
    sock: &impl Sock,
    transmit: Transmit<'_>,
    more: bool,
    scratch: &mut [u8],
) -> io::Result<(usize, usize)> {
    if let Transmit::Bytes(head) = transmit
        && let Some((Transmit::File(body), after)) = engine.poll_transmit_second(stream)
        && body.len <= sys::SMALL_BODY.min(scratch.len() as u64)
        && let Some(n) = sys::write_with_body(sock, head, body, scratch, after)?
    {
        return Ok((n, head.len()));
    }
    sys::write(sock, transmit, more).map(|n| (n, n))
}

/// Carry out the session's actions in order. Returns whether there were any.
fn perform<S: Session, L: Link<S>>(engine: &mut Engine<S>, link: &mut L, now: Instant) -> io::Result<bool> {
    let mut any = false;
    while let Some(action) = engine.poll_action() {
        any = true;
        match action {
            Action::Hub(request) => link.hub(now, request)?,
            Action::Job(token, job) => {
                if let Some(done) = link.job(token, job) {
                    engine.handle_completion(token, done);
                }
            }
            Action::Abort(token) => link.abort(token),
            Action::Connect { token, addr, timeout } => {
                let stream = engine.new_stream();
                if let Some(result) = link.connect(stream, addr, timeout, token) {
                    engine.handle_connected(token, result);
                }
            }
            Action::Park { stream, addr } => {
                if engine.park_stream(stream) {
                    link.park(stream, addr);
                }
            }
            Action::Reuse { token, addr } => {
                let stream = engine.new_stream();
                let result = if link.reuse(stream, addr) { Ok(stream) } else { Err(io::ErrorKind::NotFound) };
                engine.handle_connected(token, result);
            }
            Action::HandOff { to, preamble } => {
                match link.hand_off(&to, &preamble) {
                    Ok(()) => engine.handed_off(),
                    Err(e) => engine.handle_failed(now, StreamId::CLIENT, format!("hand-off to {to}: {e}")),
                }
                return Ok(true);
            }
            // The engine keeps splices and logs itself.
            Action::Splice { .. } | Action::Log(..) => {}
        }
    }
    Ok(any)
}

/// One read of `from` into `buf` and one write of it to `to`; what `to` does not take is
/// queued on it, to go before anything moved later. `Some(n)`: `n` bytes read (0: `from`
/// ended); `None`: nothing to read.
fn copy_once<S: Session>(
    engine: &mut Engine<S>,
    src: &impl Sock,
    dst: &impl Sock,
    buf: &mut [u8],
    from: StreamId,
    to: StreamId,
) -> io::Result<Option<usize>> {
    let n = match sys::read(src, buf) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            engine.read_blocked(from);
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    if n == 0 {
        return Ok(Some(0));
    }
    // A short read emptied the socket: no further read to learn it would block.
    engine.read_done(from, n, buf.len());
    let sent = match sys::write(dst, Transmit::Bytes(&buf[..n]), false) {
        Ok(sent) => sent,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e),
    };
    if sent < n {
        engine.queue(to, &buf[sent..n]);
    }
    Ok(Some(n))
}

/// Urgent data on the client: after a SIGURG, and at the mark before each read.
fn urgent<S: Session, L: Link<S>>(engine: &mut Engine<S>, link: &mut L, now: Instant) -> io::Result<bool> {
    let Some(sock) = link.sock(StreamId::CLIENT) else { return Ok(false) };
    let Some(tracker) = engine.urgent() else { return Ok(false) };
    let fd = sock.as_fd();
    let found = match tracker.check(fd) {
        Some(urgent) => Some(urgent),
        None if engine.is_readable(StreamId::CLIENT) && engine.wants_read(StreamId::CLIENT) => {
            let tracker = engine.urgent().expect("armed");
            // Reads stop at the mark; there, the urgent byte is taken before anything else.
            match tracker.at_mark(fd)? {
                Some(urgent) => Some(urgent),
                None if tracker.waiting_for_byte(fd) => {
                    // Its arrival raises POLLPRI (out of line) or POLLIN (inline).
                    engine.read_blocked(StreamId::CLIENT);
                    None
                }
                None => None,
            }
        }
        None => None,
    };
    Ok(match found {
        Some(urgent) => {
            engine.handle_urgent(now, urgent);
            true
        }
        None => false,
    })
}

enum Read {
    Progress,
    Budget,
    Nothing,
}

/// One read of the first stream that wants one: the client first, then the others.
fn read<S: Session, L: Link<S>>(
    engine: &mut Engine<S>,
    link: &mut L,
    buf: &mut [u8],
    now: Instant,
    reads: &mut usize,
) -> io::Result<Read> {
    let mut at = 0;
    while let Some(stream) = engine.stream_at(at) {
        at += 1;
        if !engine.is_readable(stream) || !engine.wants_read(stream) {
            continue;
        }
        if *reads == READ_BUDGET {
            return Ok(Read::Budget);
        }
        let Some(sock) = link.sock(stream) else { continue };
        if engine.is_lingering() && !engine.linger_read() {
            return Ok(Read::Progress);
        }
        *reads += 1;
        match sys::read(sock, buf) {
            Ok(0) => engine.handle_read_closed(now, stream),
            Ok(n) => {
                engine.read_done(stream, n, buf.len());
                if stream == StreamId::CLIENT {
                    if let Some(tracker) = engine.urgent() {
                        tracker.taken(n);
                    }
                    link.touch(now);
                }
                engine.handle_input(now, stream, &buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                engine.read_blocked(stream);
                continue;
            }
            Err(e) if stream == StreamId::CLIENT => return Err(e),
            Err(e) => engine.handle_failed(now, stream, e.to_string()),
        }
        return Ok(Read::Progress);
    }
    Ok(Read::Nothing)
}

/// Move bytes for every splice that can, within the turn's read budget (a round of a splice
/// counts as a read). Returns whether any moved or ended (the session heard).
fn splice<S: Session, L: Link<S>>(
    engine: &mut Engine<S>,
    link: &mut L,
    buf: &mut [u8],
    now: Instant,
    reads: &mut usize,
) -> io::Result<Read> {
    let mut at = 0;
    while at < engine.splices_mut().len() {
        let (from, to) = {
            let sp = &engine.splices_mut()[at];
            (sp.from, sp.to)
        };
        let source_ready = engine.is_readable(from);
        // Bytes the session queued on `to` before the splice go first.
        let queued = engine.poll_transmit(to).is_some();
        let sp = &mut engine.splices_mut()[at];
        if queued || !source_ready && !sp.pipe.as_ref().is_some_and(Pipe::holds) {
            at += 1;
            continue;
        }
        if *reads == READ_BUDGET {
            return Ok(Read::Budget);
        }
        *reads += 1;
        let (Some(src), Some(dst)) = (link.sock(from), link.sock(to)) else {
            // A side is gone: the splice ends with what it moved, as at an end.
            engine.handle_spliced(now, at, 0, true);
            return Ok(Read::Progress);
        };
        if !sp.bulk {
            let (left, to) = (sp.left, sp.to);
            let want = left.map_or(buf.len(), |l| l.min(buf.len() as u64) as usize);
            match copy_once(engine, src, dst, &mut buf[..want], from, to) {
                Ok(Some(n)) => {
                    if n == buf.len() {
                        engine.splices_mut()[at].bulk = true;
                    }
                    engine.handle_spliced(now, at, n as u64, n == 0);
                    return Ok(Read::Progress);
                }
                Ok(None) => {
                    at += 1;
                    continue;
                }
                Err(e) => {
                    tracing::debug!(target: "warren", "splice {from:?} → {to:?}: {e}");
                    engine.handle_spliced(now, at, 0, true);
                    return Ok(Read::Progress);
                }
            }
        }
        if sp.pipe.is_none() {
            sp.pipe = Some(Pipe::new()?);
        }
        let pipe = sp.pipe.as_mut().expect("just made");
        let done = match sys::splice(src, dst, pipe, sp.left) {
            Ok(done) => done,
            Err(e) => {
                tracing::debug!(target: "warren", "splice {from:?} → {to:?}: {e}");
                engine.handle_spliced(now, at, 0, true);
                return Ok(Read::Progress);
            }
        };
        sp.dest_blocked = done.dest_blocked;
        if done.source_blocked {
            engine.read_blocked(from);
        }
        let moved = done.moved > 0;
        if engine.handle_spliced(now, at, done.moved, done.eof) || moved {
            return Ok(Read::Progress);
        }
        at += 1;
    }
    Ok(Read::Nothing)
}
