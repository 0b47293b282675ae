//! Per connection and per child: accepting, admission, starting the program, and reaping it
//! through its pidfd.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Token};
use warren_models::accept::Accepted;

use super::sockets::Socket;
use super::{ACCEPT_BATCH, CHILD_BASE, Child, Command, FIRST_LISTENER, Node, Watch};
use crate::config::Kind;
use crate::exec::{Refusal, environment, load_average, relay, send_banner};
use crate::sandbox;
use crate::spawn::{Handoff, spawn};

impl Node {
    pub(super) fn ready(&mut self, index: usize) {
        let Some(entry) = self.entries.get(index).and_then(Option::as_ref) else { return };
        if entry.watch != Watch::Watching {
            return;
        }
        match &entry.service.kind {
            Kind::Exec(exec) if exec.wait => self.hand_over(index),
            _ => self.accept(index),
        }
    }

    pub(super) fn accept(&mut self, index: usize) {
        for _ in 0..ACCEPT_BATCH {
            let Some(entry) = self.entries[index].as_ref() else { return };
            let Socket::Tcp(listener) = &entry.socket else { return };
            match self.acceptor.accept(listener, b"") {
                Ok(Accepted::Conn(incoming)) => self.connection(index, incoming.stream, incoming.peer),
                Ok(Accepted::Nothing) => return,
                Ok(Accepted::Exhausted(wait)) => return self.pause(index, Instant::now() + wait),
                Err(e) => {
                    tracing::error!(service = %entry.service.name, "accept: {e}");
                    return;
                }
            }
            if self.entries[index].as_ref().is_none_or(|e| e.watch != Watch::Watching) {
                return;
            }
        }
        // mio is edge-triggered: a listener left with connections waiting must be re-armed, or
        // they would wait for the next arrival. Re-arming reports the readiness again.
        if let Some(entry) = self.entries[index].as_ref() {
            let fd = entry.socket.raw();
            let _ =
                self.poll.registry().reregister(&mut SourceFd(&fd), Token(FIRST_LISTENER + index), Interest::READABLE);
        }
    }

    pub(super) fn connection(&mut self, index: usize, stream: TcpStream, peer: SocketAddr) {
        let Some(entry) = self.entries[index].as_mut() else { return };
        let service = entry.service.clone();
        let now = Instant::now();
        if let Some(banner) = &service.banners.always {
            send_banner(&stream, banner);
        }
        if let Err(refusal) = entry.counters.admit(&service, peer.ip(), now, load_average) {
            entry.counters.refused += 1;
            if service.log.failure {
                tracing::warn!(target: "warren::node", service = %service.name, from = %peer.ip(), reason = refusal.name(), "FAIL");
            }
            if let Some(banner) = &service.banners.fail {
                send_banner(&stream, banner);
            }
            if let (Refusal::Cps, Some(cps)) = (refusal, service.limits.cps) {
                tracing::warn!(target: "warren::node", service = %service.name, wait = ?cps.wait, "over {} connections/s: pausing", cps.rate);
                self.pause(index, now + cps.wait);
            }
            return;
        }
        if let Some(banner) = &service.banners.success {
            send_banner(&stream, banner);
        }
        if service.socket.nodelay {
            let _ = stream.set_nodelay(true);
        }
        if service.socket.keepalive {
            let _ = socket2::SockRef::from(&stream).set_keepalive(true);
        }
        let same_source = entry.counters.from(peer.ip());
        match &service.kind {
            Kind::Redirect(target) => {
                let (tx, waker, target, name) = (self.tx.clone(), self.waker.clone(), *target, service.name.clone());
                let spawned = std::thread::Builder::new().name("warren-redirect".into()).spawn(move || {
                    // Accepted non-blocking; the relay's blocking copies would otherwise end at
                    // the first read that finds nothing yet (WouldBlock), closing the connection.
                    let bytes =
                        stream.set_nonblocking(false).and_then(|()| relay(stream, target)).unwrap_or_else(|e| {
                            tracing::warn!(target: "warren::node", service = %name, "redirect to {target}: {e}");
                            (0, 0)
                        });
                    let _ = tx.send(Command::RelayDone { service: name, peer: peer.ip(), bytes, started: now });
                    let _ = waker.wake();
                });
                if spawned.is_err() {
                    entry.counters.release(Some(peer.ip()));
                }
            }
            Kind::Exec(exec) => {
                // A listener bound to one address accepts only on it: no getsockname needed.
                let local = if entry.addr.ip().is_unspecified() {
                    stream.local_addr().unwrap_or(entry.addr)
                } else {
                    entry.addr
                };
                let env = environment(exec, Some((local, peer, same_source)), &service.name);
                self.start_child(index, Handoff::Conn(stream.as_fd()), env, Some(peer.ip()));
            }
            Kind::Builtin(_) => {}
        }
    }

    /// A `wait` service's listener is readable: hand it to a new child and stop watching.
    pub(super) fn hand_over(&mut self, index: usize) {
        let Some(entry) = self.entries[index].as_mut() else { return };
        let Kind::Exec(exec) = &entry.service.kind else { return };
        if entry.service.limits.instances.is_some_and(|max| entry.counters.running >= max) {
            // Only `instances = 0` gets here (one child holds the socket at a time): without a
            // pause the still-readable listener would be reported again at once.
            return self.pause(index, Instant::now() + Duration::from_secs(1));
        }
        let service = entry.service.clone();
        if let (Err(_), Some(cps)) = (entry.counters.rate(&service, Instant::now()), service.limits.cps) {
            tracing::warn!(target: "warren::node", service = %service.name, wait = ?cps.wait, "over {} starts/s: pausing", cps.rate);
            return self.pause(index, Instant::now() + cps.wait);
        }
        let env = environment(exec, None, &entry.service.name);
        let socket = match &entry.socket {
            Socket::Tcp(l) => l.as_fd().try_clone_to_owned(),
            Socket::Udp(u) => u.as_fd().try_clone_to_owned(),
        };
        let _ = self.poll.registry().deregister(&mut SourceFd(&entry.socket.raw()));
        entry.counters.running += 1;
        entry.counters.spawned += 1;
        match socket {
            Ok(fd) => self.start_child(index, Handoff::Listener(fd.as_fd()), env, None),
            Err(e) => tracing::error!("dup: {e}"),
        }
    }

    pub(super) fn start_child(
        &mut self,
        index: usize,
        handoff: Handoff<'_>,
        env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
        peer: Option<IpAddr>,
    ) {
        let Some(entry) = self.entries[index].as_mut() else { return };
        let service = entry.service.clone();
        let Kind::Exec(exec) = &service.kind else { return };
        let sandbox = exec.sandbox.as_ref().map(|s| sandbox::prepare(self.cgroups, &service.name, s)).transpose();
        let started = sandbox.and_then(|sandbox| {
            let (pid, pidfd) = spawn(exec, handoff, env, sandbox.as_ref())?;
            Ok((pid, pidfd, sandbox))
        });
        let (pid, fd, sandbox) = match started {
            Ok(started) => started,
            Err(e) => {
                tracing::error!(target: "warren::node", service = %service.name, "FAIL: cannot start {}: {e}", exec.program.display());
                entry.counters.release(peer);
                entry.counters.refused += 1;
                if exec.wait {
                    entry.watch = Watch::Paused(Instant::now() + Duration::from_secs(1));
                }
                return;
            }
        };
        if let Err(e) = self.poll.registry().register(
            &mut SourceFd(&fd.as_raw_fd()),
            Token(CHILD_BASE + pid as usize),
            Interest::READABLE,
        ) {
            // Unwatched, its exit would go unseen and its slot never freed: stop it now.
            tracing::error!(target: "warren::node", service = %service.name, "FAIL: cannot watch child {pid}: {e}");
            crate::spawn::kill_and_reap(pid);
            entry.counters.release(peer);
            entry.counters.refused += 1;
            return;
        }
        if exec.wait {
            entry.watch = Watch::Handed(pid);
        }
        if service.log.pid || service.log.host {
            tracing::info!(target: "warren::node", service = %service.name, pid, from = ?peer, "START");
        }
        self.children
            .insert(pid, Child { service: service.name.clone(), pidfd: fd, peer, started: Instant::now(), sandbox });
    }

    pub(super) fn reap(&mut self, pid: u32) {
        use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
        let status = match waitpid(nix::unistd::Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return,
            Ok(status) => status,
            Err(_) => WaitStatus::StillAlive,
        };
        let Some(child) = self.children.remove(&pid) else { return };
        // Closing the pidfd also takes it out of the poller (it is never duplicated): no
        // separate deregister call, one system call less per child.
        drop(child.pidfd);
        // The child's cgroups go with it.
        drop(child.sandbox);
        let exit = match status {
            WaitStatus::Exited(_, code) => format!("status={code}"),
            WaitStatus::Signaled(_, signal, _) => format!("signal={signal}"),
            _ => "status=unknown".into(),
        };
        let position = self.entries.iter().position(|e| e.as_ref().is_some_and(|e| e.service.name == child.service));
        let Some(index) = position else {
            tracing::info!(target: "warren::node", service = %child.service, pid, exit, duration = ?child.started.elapsed(), "EXIT");
            return;
        };
        let entry = self.entries[index].as_mut().expect("found above");
        entry.counters.release(child.peer);
        if entry.service.log.exit || entry.service.log.duration {
            tracing::info!(target: "warren::node", service = %child.service, pid, exit, duration = ?child.started.elapsed(), "EXIT");
        }
        if entry.watch == Watch::Handed(pid) {
            entry.watch = Watch::Watching;
            let fd = entry.socket.raw();
            let _ =
                self.poll.registry().register(&mut SourceFd(&fd), Token(FIRST_LISTENER + index), Interest::READABLE);
        }
    }
}
