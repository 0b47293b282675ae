//! `iterative`: one connection at a time. The next client waits in the listen backlog until the
//! current one is done: the chapter's single-threaded server.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use warren_proto::Service;

use crate::accept::{Accepted, Acceptor, Listener};
use crate::blocking::{ConnEnv, local::LocalLink, serve_connection};
use crate::conn::conn_info;
use crate::local_hub::LocalHub;
use crate::run::{Env, ServeConfig, ServeReport};

pub(crate) fn serve<S: Service>(
    service: Arc<S>,
    listener: Listener,
    config: &ServeConfig,
    env: &Env,
) -> std::io::Result<ServeReport> {
    let hub = LocalHub::new(service.new_hub(std::time::Instant::now()), None);
    let conn_env = ConnEnv { shutdown: &env.shutdown, activity: &env.activity, engine: config.engine() };
    let mut acceptor = Acceptor::with_gate(config.gate.clone());
    while wait_readable(&listener, env)? {
        match acceptor.accept(&listener, service.refusal())? {
            Accepted::Conn(incoming) => {
                env.counters.accepted.fetch_add(1, Ordering::Relaxed);
                let info = conn_info(Some(incoming.peer));
                let mut link = LocalLink::new(hub.clone(), info.id, config.mailbox);
                serve_connection(&*service, incoming, info, &mut link, &conn_env);
            }
            Accepted::Nothing => {}
            Accepted::Exhausted(wait) => {
                env.counters.refused.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(wait);
            }
        }
    }
    Ok(env.counters.report(hub.report(Instant::now())))
}

/// Wait until the listener has a connection (true) or shutdown was triggered (false).
pub(crate) fn wait_readable(listener: &Listener, env: &Env) -> std::io::Result<bool> {
    loop {
        if env.shutdown.is_triggered() {
            return Ok(false);
        }
        let mut fds =
            [PollFd::new(listener.as_fd(), PollFlags::POLLIN), PollFd::new(env.shutdown.fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            return Ok(false);
        }
        if fds[0].revents().is_some_and(|r| !r.is_empty()) {
            return Ok(true);
        }
    }
}
