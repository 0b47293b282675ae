//! One connection served by one thread (or process) with blocking calls: the connection loop of
//! the `iterative`, `thread`, `fork` and `prefork` models.
//!
//! The thread waits in `poll` on three things: the socket, the hub link (pushes from other
//! connections) and the shutdown trigger, with the session's deadline as the timeout. Writes
//! block (bounded by `SO_SNDTIMEO`), which is also the backpressure: while the peer does not
//! read, the thread does not read either.

use std::io::{self, Read};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use warren_proto::{Action, ConnInfo, Hub, Output, Service, Session};

use crate::activity::Activity;
use crate::conn::log_line;
use crate::shutdown::Shutdown;
use crate::urgent::{Tracker, UrgentMode, Watch};

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
    pub write_timeout: Duration,
    pub urgent: UrgentMode,
}

/// Serve one connection to the end.
pub(crate) fn serve_connection<S: Service>(
    service: &S,
    mut stream: TcpStream,
    info: ConnInfo,
    link: &mut impl HubLink<S::Hub>,
    env: &ConnEnv<'_>,
) {
    let _ = stream.set_write_timeout(Some(env.write_timeout));
    let _ = stream.set_nodelay(true);
    let now = Instant::now();
    env.activity.touch(now);
    let mut session = service.new_session(&info, now);
    let mut out = Output::new();
    session.handle_open(now, &mut out);

    // Urgent data: SIGURG wakes this thread through an eventfd, and the thread asks its socket.
    let mut tracker = Tracker::new(env.urgent);
    let urgent_wake = match urgent_wake(&stream, env.urgent) {
        Ok(wake) => wake,
        Err(e) => {
            tracing::warn!(target: "warren", "cannot arm urgent data: {e}");
            None
        }
    };

    let mut buf = vec![0u8; 16 * 1024];
    let mut actions = Vec::new();
    let mut messages = Vec::new();
    let mut read_closed = false;
    let mut write_shut = false;
    let mut shutdown_seen = false;
    loop {
        if perform(&mut session, &mut out, &mut stream, link, &mut actions, &mut messages).is_err() {
            return;
        }
        if out.is_closed() || link.overflowed() {
            linger_close(stream);
            return;
        }
        if out.is_write_closed() && !write_shut {
            write_shut = true;
            let _ = stream.shutdown(std::net::Shutdown::Write);
        }

        let deadline = session.poll_timeout();
        let timeout = match deadline {
            Some(at) => PollTimeout::try_from(
                at.saturating_duration_since(Instant::now()).as_millis().min(i32::MAX as u128) as i32 + 1,
            )
            .unwrap_or(PollTimeout::MAX),
            None => PollTimeout::NONE,
        };
        let (sock_ready, link_ready, shut_ready, urgent_ready) = {
            // Once the peer has closed, the socket stays out of the poll set: it would report
            // POLLHUP forever and turn the wait into a spin. So it does while the session
            // holds its input back (flow control).
            let mut fds = Vec::with_capacity(4);
            let sock_at = (!read_closed && session.wants_input()).then(|| {
                // POLLPRI: the urgent byte came in (out of line it is no POLLIN).
                let pri = if tracker.until_mark() { PollFlags::POLLPRI } else { PollFlags::empty() };
                fds.push(PollFd::new(stream.as_fd(), PollFlags::POLLIN | pri));
                fds.len() - 1
            });
            let urgent_at = urgent_wake.as_ref().map(|(efd, _)| {
                fds.push(PollFd::new(efd.as_fd(), PollFlags::POLLIN));
                fds.len() - 1
            });
            let link_at = link.wake_fd().map(|fd| {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
                fds.len() - 1
            });
            let shut_at = (!shutdown_seen).then(|| {
                fds.push(PollFd::new(env.shutdown.fd(), PollFlags::POLLIN));
                fds.len() - 1
            });
            if fds.is_empty() && deadline.is_none() {
                // Nothing can ever happen again: the session forgot to close.
                drop(fds);
                linger_close(stream);
                return;
            }
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            }
            let ready = |at: Option<usize>| at.is_some_and(|i| fds[i].revents().is_some_and(|r| !r.is_empty()));
            (ready(sock_at), ready(link_at), ready(shut_at), ready(urgent_at))
        };

        let now = Instant::now();
        if urgent_ready && let Some((efd, _)) = &urgent_wake {
            let _ = efd.read();
            if let Some(urgent) = tracker.check(stream.as_fd()) {
                session.handle_urgent(now, urgent, &mut out);
            }
        }
        if sock_ready && tracker.armed() {
            // Reads stop at the mark; there, the urgent byte is taken before anything else.
            match tracker.at_mark(stream.as_fd()) {
                Ok(Some(urgent)) => {
                    session.handle_urgent(now, urgent, &mut out);
                    continue;
                }
                Ok(None) if tracker.waiting_for_byte(stream.as_fd()) => continue,
                Ok(None) => {}
                Err(_) => return,
            }
        }
        if sock_ready && !read_closed {
            match stream.read(&mut buf) {
                Ok(0) => {
                    read_closed = true;
                    session.handle_read_closed(now, &mut out);
                }
                Ok(n) => {
                    tracker.taken(n);
                    env.activity.touch(now);
                    session.handle_input(now, &buf[..n], &mut out);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted || e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
        // Messages already delivered were acknowledged to their senders: hand them to the
        // session before a shutdown makes it say goodbye.
        if link_ready || shut_ready {
            if link.drain(&mut messages).is_err() {
                return;
            }
            for msg in messages.drain(..) {
                session.handle_message(now, msg, &mut out);
            }
        }
        if shut_ready {
            shutdown_seen = true;
            session.handle_shutdown(now, &mut out);
        }
        if deadline.is_some_and(|at| now >= at) {
            session.handle_timeout(now, &mut out);
        }
    }
}

/// Arm urgent data on `stream` and subscribe an eventfd to SIGURG; `None` when not armed.
fn urgent_wake(
    stream: &TcpStream,
    mode: UrgentMode,
) -> io::Result<Option<(std::sync::Arc<EventFd>, crate::urgent::Subscription)>> {
    if mode == UrgentMode::Off {
        return Ok(None);
    }
    let watch = Watch::get()?;
    crate::urgent::arm(stream.as_fd(), mode)?;
    let efd = std::sync::Arc::new(EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?);
    let waker = efd.clone();
    let subscription = watch.subscribe(move || {
        let _ = waker.write(1);
    });
    Ok(Some((efd, subscription)))
}

/// Send what the session produced and carry out its actions, until it has nothing more to say.
fn perform<S: Session, L: HubLink<H>, H: Hub<Request = S::Request, Message = S::Message>>(
    session: &mut S,
    out: &mut Output<S::Request>,
    stream: &mut TcpStream,
    link: &mut L,
    actions: &mut Vec<Action<S::Request>>,
    messages: &mut Vec<S::Message>,
) -> io::Result<()> {
    loop {
        // The socket blocks (bounded by SO_SNDTIMEO): "would block" means the peer stopped reading.
        if !crate::transmit::send(stream, out)? {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "peer stopped reading"));
        }
        out.take_actions(actions);
        if actions.is_empty() {
            return Ok(());
        }
        let mut asked_hub = false;
        for action in actions.drain(..) {
            match action {
                Action::Hub(request) => {
                    link.request(Instant::now(), request)?;
                    asked_hub = true;
                }
                Action::Block(d) => std::thread::sleep(d),
                Action::Log(level, line) => log_line(level, &line),
            }
        }
        if asked_hub {
            // An in-process hub answers at once: handle the answer without another poll.
            link.drain(messages)?;
            let now = Instant::now();
            for msg in messages.drain(..) {
                session.handle_message(now, msg, out);
            }
        }
    }
}

/// Close without a reset racing the last bytes: shut the write side, then read (and drop)
/// what the peer still sends, for a short while, before closing.
pub(crate) fn linger_close(mut stream: TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        match stream.read(&mut sink) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
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
