//! `thread`: a kernel thread per connection. With `max_active` the acceptor waits before
//! `accept` while that many connections are being served (the course's TimeServerImproved);
//! beyond `max_conns` a connection is refused.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use warren_proto::Service;

use crate::accept::{Accepted, Acceptor, Listener, refuse};
use crate::blocking::{ConnEnv, local::LocalLink, serve_connection};
use crate::conn::conn_info;
use crate::iterative::wait_readable;
use crate::local_hub::{LocalHub, lock};
use crate::run::{Env, ServeConfig, ServeReport};

pub(crate) fn serve<S: Service>(
    service: Arc<S>,
    listener: Listener,
    config: &ServeConfig,
    env: &Env,
) -> std::io::Result<ServeReport> {
    let hub = LocalHub::new(service.new_hub(std::time::Instant::now()), None);
    // The number of live connection threads, and a condition signalled when one ends.
    let live = Arc::new((Mutex::new(0usize), Condvar::new()));
    let mut acceptor = Acceptor::with_gate(config.gate.clone());
    loop {
        if let Some(max) = config.max_active {
            let (count, ended) = &*live;
            let mut n = lock(count);
            while *n >= max && !env.shutdown.is_triggered() {
                // Woken by a finishing connection; the timeout only re-checks shutdown.
                n = ended.wait_timeout(n, std::time::Duration::from_millis(200)).unwrap_or_else(|e| e.into_inner()).0;
            }
        }
        if !wait_readable(&listener, env)? {
            break;
        }
        let mut incoming = match acceptor.accept(&listener, service.refusal())? {
            Accepted::Conn(incoming) => incoming,
            Accepted::Nothing => continue,
            Accepted::Exhausted(wait) => {
                env.counters.refused.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(wait);
                continue;
            }
        };
        if *lock(&live.0) >= config.max_conns {
            env.counters.refused.fetch_add(1, Ordering::Relaxed);
            refuse(&mut incoming.stream, service.refusal());
            continue;
        }
        env.counters.accepted.fetch_add(1, Ordering::Relaxed);
        *lock(&live.0) += 1;
        let info = conn_info(Some(incoming.peer));
        let (service, hub, conn_live, env, config) =
            (service.clone(), hub.clone(), live.clone(), env.clone(), config.clone());
        let spawned = std::thread::Builder::new().name("warren-conn".into()).spawn(move || {
            let mut link = LocalLink::new(hub, info.id, config.mailbox);
            let conn_env = ConnEnv { shutdown: &env.shutdown, activity: &env.activity, engine: config.engine() };
            serve_connection(&*service, incoming, info, &mut link, &conn_env);
            // Leave the hub before counting the connection as ended, so that the report a
            // shutdown waits for never counts a user who is gone.
            drop(link);
            let (count, ended) = &*conn_live;
            *lock(count) -= 1;
            ended.notify_all();
        });
        if spawned.is_err() {
            // Out of threads: the connection was dropped with the closure.
            env.counters.refused.fetch_add(1, Ordering::Relaxed);
            *lock(&live.0) -= 1;
        }
    }
    // Graceful shutdown: every connection thread saw the trigger; wait for them to finish.
    let (count, ended) = &*live;
    let mut n = lock(count);
    while *n > 0 {
        n = ended.wait(n).unwrap_or_else(|e| e.into_inner());
    }
    drop(n);
    Ok(env.counters.report(hub.report(Instant::now())))
}
