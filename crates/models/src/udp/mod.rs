//! Datagram serving (echo, daytime and time over UDP) under every server model.
//!
//! A datagram service keeps nothing between datagrams, so a model only decides who receives and
//! who answers: `iterative` one loop; `thread` a thread per datagram; `pool` several threads
//! receiving on the shared socket; `event` a mio loop; `green` and `hybrid` tokio tasks;
//! `fork` and `prefork` processes (in `fork.rs`). Each reply goes to its datagram's source address;
//! one that cannot be sent is dropped, as UDP may drop any datagram.
//!
//! Before a datagram reaches its service, the socket's [`guard`] drops those from reflection
//! sources and those beyond the per-source rate ([`ServeConfig::datagram_rate`]). In the report,
//! `accepted` counts datagrams answered and `refused` those dropped by the guard or because
//! `max_conns` were in flight.

mod fork;
mod guard;
pub mod rate;

pub use guard::{Refusal, SourceRate, reflection_source};

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Instant, SystemTime};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use warren_proto::DatagramService;

use crate::green::{runtime, shutdown_signal, stopped};
use crate::run::{Counters, Model, ServeConfig, ServeReport};
use crate::shutdown::{Shutdown, trigger_on_signals};
use guard::Guard;

/// Large enough for any UDP payload over IPv4 or IPv6 (without jumbograms).
const MAX_DATAGRAM: usize = 65_536;

/// Serve `service` on `socket` under `model` until SIGINT or SIGTERM; `ready` runs once the
/// server handles those signals gracefully.
///
/// `fork` and `prefork` fork: call them before this process starts any thread.
pub fn serve_udp<D: DatagramService>(
    model: Model,
    service: D,
    socket: UdpSocket,
    config: &ServeConfig,
    ready: impl FnOnce(),
) -> io::Result<ServeReport> {
    match model {
        Model::Fork => fork::serve_fork(&service, &socket, config, ready),
        Model::Prefork => fork::serve_prefork(&service, &socket, config, ready),
        _ => {
            let shutdown = Arc::new(Shutdown::new()?);
            trigger_on_signals(shutdown.clone())?;
            ready();
            serve_udp_until(model, service, socket, config, shutdown)
        }
    }
}

/// Serve under an in-process model until `shutdown` is triggered. For embedding and tests;
/// `fork` and `prefork` are refused here, since they need a process of their own.
pub fn serve_udp_until<D: DatagramService>(
    model: Model,
    service: D,
    socket: UdpSocket,
    config: &ServeConfig,
    shutdown: Arc<Shutdown>,
) -> io::Result<ServeReport> {
    // Non-blocking, so that threads sharing the socket wait in `poll` together with the
    // shutdown trigger and a receive that lost the race returns at once.
    socket.set_nonblocking(true)?;
    let counters = Arc::new(Counters::default());
    let service = Arc::new(service);
    let guard = Arc::new(Guard::new(socket.local_addr()?, config.datagram_rate, config.gate.clone()));
    let served = Served { guard: &guard, counters: &counters };
    match model {
        Model::Iterative => serve_blocking(&*service, &socket, &shutdown, served),
        Model::Thread => serve_threads(&*service, &socket, config.max_conns, &shutdown, served),
        Model::Pool => serve_pool(&*service, &socket, config.threads, &shutdown, served),
        Model::Event => serve_event(&*service, socket, &shutdown, served),
        Model::Green | Model::Hybrid => {
            serve_tasks(model, service, socket, config.threads, &shutdown, guard.clone(), &counters)
        }
        Model::Fork | Model::Prefork => {
            return Err(io::Error::other("fork and prefork cannot run inside another server"));
        }
    }?;
    Ok(counters.report(None))
}

/// What every receiver of a socket shares: its guard and the report's counters.
#[derive(Clone, Copy)]
struct Served<'a> {
    guard: &'a Guard,
    counters: &'a Counters,
}

/// Whether the guard lets a datagram from `from` through; a refusal is counted in `refused`.
fn admitted(guard: &Guard, from: SocketAddr, refused: &AtomicU64) -> bool {
    match guard.admit(from, Instant::now()) {
        Ok(()) => true,
        Err(why) => {
            refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(target: "warren", "udp: datagram from {from} dropped: {why:?}");
            false
        }
    }
}

/// Answer one datagram through `send_to`, counting it in `answered`.
fn answer<D: DatagramService>(
    service: &D,
    input: &[u8],
    from: SocketAddr,
    reply: &mut Vec<u8>,
    answered: &AtomicU64,
    send_to: impl FnOnce(&[u8], SocketAddr) -> io::Result<usize>,
) {
    answered.fetch_add(1, Ordering::Relaxed);
    reply.clear();
    if service.handle_datagram(SystemTime::now(), input, reply)
        && let Err(e) = send_to(reply, from)
    {
        tracing::debug!(target: "warren", "udp: reply to {from} dropped: {e}");
    }
}

/// Receive errors about an earlier datagram (an ICMP error), not about the socket: carry on.
fn is_transient(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(e.kind(), Interrupted | ConnectionRefused | ConnectionReset | HostUnreachable | NetworkUnreachable)
}

/// Receive every waiting datagram, handing each to `handle`, until the socket would block or
/// `stopping` holds.
fn drain(
    mut recv_from: impl FnMut(&mut [u8]) -> io::Result<(usize, SocketAddr)>,
    stopping: impl Fn() -> bool,
    buf: &mut [u8],
    mut handle: impl FnMut(&[u8], SocketAddr),
) -> io::Result<()> {
    while !stopping() {
        match recv_from(buf) {
            Ok((n, from)) => handle(&buf[..n], from),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if is_transient(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Wait for datagrams in `poll` (with the shutdown trigger) and hand each to `handle`, until
/// shutdown.
fn recv_loop(socket: &UdpSocket, shutdown: &Shutdown, mut handle: impl FnMut(&[u8], SocketAddr)) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while !shutdown.is_triggered() {
        let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN), PollFd::new(shutdown.fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        drain(|buf| socket.recv_from(buf), || shutdown.is_triggered(), &mut buf, &mut handle)?;
    }
    Ok(())
}

/// `iterative`, and each worker of `pool`: receive, answer, repeat.
fn serve_blocking<D: DatagramService>(
    service: &D,
    socket: &UdpSocket,
    shutdown: &Shutdown,
    served: Served<'_>,
) -> io::Result<()> {
    let Served { guard, counters } = served;
    let mut reply = Vec::new();
    recv_loop(socket, shutdown, |input, from| {
        if admitted(guard, from, &counters.refused) {
            answer(service, input, from, &mut reply, &counters.accepted, |r, to| socket.send_to(r, to));
        }
    })
}

/// `thread`: a thread per datagram, at most `max_conns` at once; the rest are dropped.
fn serve_threads<D: DatagramService>(
    service: &D,
    socket: &UdpSocket,
    max_conns: usize,
    shutdown: &Shutdown,
    served: Served<'_>,
) -> io::Result<()> {
    let Served { guard, counters } = served;
    let in_flight = &AtomicUsize::new(0);
    // Scoped, so that shutdown waits for every thread still answering.
    std::thread::scope(|scope| {
        recv_loop(socket, shutdown, |input, from| {
            if !admitted(guard, from, &counters.refused) {
                return;
            }
            if in_flight.load(Ordering::Relaxed) >= max_conns {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                return;
            }
            in_flight.fetch_add(1, Ordering::Relaxed);
            let input = input.to_vec();
            let spawned = std::thread::Builder::new().name("warren-udp".into()).spawn_scoped(scope, move || {
                answer(service, &input, from, &mut Vec::new(), &counters.accepted, |r, to| socket.send_to(r, to));
                in_flight.fetch_sub(1, Ordering::Relaxed);
            });
            if spawned.is_err() {
                in_flight.fetch_sub(1, Ordering::Relaxed);
                counters.refused.fetch_add(1, Ordering::Relaxed);
            }
        })
    })
}

/// `pool`: `threads` threads receiving on the one socket; whichever wakes first takes a datagram.
fn serve_pool<D: DatagramService>(
    service: &D,
    socket: &UdpSocket,
    threads: usize,
    shutdown: &Shutdown,
    served: Served<'_>,
) -> io::Result<()> {
    std::thread::scope(|scope| {
        let mut workers = Vec::new();
        for i in 0..threads.max(1) {
            let worker = std::thread::Builder::new()
                .name(format!("warren-udp-{i}"))
                .spawn_scoped(scope, || serve_blocking(service, socket, shutdown, served));
            match worker {
                Ok(worker) => workers.push(worker),
                // Serve with the workers that did start rather than not at all.
                Err(e) if !workers.is_empty() => {
                    tracing::error!(target: "warren", "udp pool: worker {i} not started: {e}")
                }
                Err(e) => return Err(e),
            }
        }
        workers
            .into_iter()
            .try_for_each(|worker| worker.join().unwrap_or_else(|_| Err(io::Error::other("udp worker panicked"))))
    })
}

/// `event`: one thread, a mio loop over the socket and the shutdown trigger.
fn serve_event<D: DatagramService>(
    service: &D,
    socket: UdpSocket,
    shutdown: &Shutdown,
    served: Served<'_>,
) -> io::Result<()> {
    use mio::{Events, Interest, Poll, Token, unix::SourceFd};

    let mut poll = Poll::new()?;
    let mut socket = mio::net::UdpSocket::from_std(socket);
    poll.registry().register(&mut socket, Token(0), Interest::READABLE)?;
    poll.registry().register(&mut SourceFd(&shutdown.fd().as_raw_fd()), Token(1), Interest::READABLE)?;
    let mut events = Events::with_capacity(8);
    let (mut buf, mut reply) = (vec![0u8; MAX_DATAGRAM], Vec::new());
    while !shutdown.is_triggered() {
        match poll.poll(&mut events, None) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => return Err(e),
            _ => {}
        }
        // Edge-triggered: take every waiting datagram before polling again.
        drain(
            |buf| socket.recv_from(buf),
            || shutdown.is_triggered(),
            &mut buf,
            |input, from| {
                if admitted(served.guard, from, &served.counters.refused) {
                    let accepted = &served.counters.accepted;
                    answer(service, input, from, &mut reply, accepted, |r, to| socket.send_to(r, to));
                }
            },
        )?;
    }
    Ok(())
}

/// `green` (one task on one thread) and `hybrid` (a task per worker thread, work-stealing).
fn serve_tasks<D: DatagramService>(
    model: Model,
    service: Arc<D>,
    socket: UdpSocket,
    threads: usize,
    shutdown: &Shutdown,
    guard: Arc<Guard>,
    counters: &Arc<Counters>,
) -> io::Result<()> {
    let tasks = if model == Model::Hybrid { threads.max(1) } else { 1 };
    runtime(model, threads)?.block_on(async {
        let socket = Arc::new(tokio::net::UdpSocket::from_std(socket)?);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..tasks {
            let (service, socket, guard, counters) = (service.clone(), socket.clone(), guard.clone(), counters.clone());
            let mut stop = shutdown_signal(shutdown);
            set.spawn(async move {
                let (mut buf, mut reply) = (vec![0u8; MAX_DATAGRAM], Vec::new());
                loop {
                    let (n, from) = tokio::select! {
                        () = stopped(&mut stop) => return Ok(()),
                        received = socket.recv_from(&mut buf) => match received {
                            Ok(received) => received,
                            Err(e) if is_transient(&e) => continue,
                            Err(e) => return Err(e),
                        },
                    };
                    if !admitted(&guard, from, &counters.refused) {
                        continue;
                    }
                    answer(&*service, &buf[..n], from, &mut reply, &counters.accepted, |r, to| {
                        socket.try_send_to(r, to)
                    });
                }
            });
        }
        while let Some(joined) = set.join_next().await {
            joined.map_err(io::Error::other)??;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use warren_proto::daytime::Daytime;
    use warren_proto::echo::Echo;
    use warren_proto::time::{Time, decode_time};

    use super::*;

    const MODELS: [Model; 6] =
        [Model::Iterative, Model::Thread, Model::Pool, Model::Event, Model::Green, Model::Hybrid];

    /// Serve `service` under `model` on a fresh loopback port, ask `ask` with a client socket,
    /// then stop the server and return its report.
    fn with_server<D: DatagramService>(model: Model, service: D, ask: impl FnOnce(&UdpSocket)) -> ServeReport {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let shutdown = Arc::new(Shutdown::new().unwrap());
        let (tx, done) = mpsc::channel();
        let stop = shutdown.clone();
        let config = ServeConfig { threads: 2, ..ServeConfig::for_model(model) };
        std::thread::spawn(move || tx.send(serve_udp_until(model, service, socket, &config, stop)));
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        client.connect(addr).unwrap();
        ask(&client);
        shutdown.trigger();
        done.recv_timeout(Duration::from_secs(10)).expect("the server stops").expect("serving succeeded")
    }

    fn receive(client: &UdpSocket) -> Vec<u8> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let n = client.recv(&mut buf).expect("a reply");
        buf.truncate(n);
        buf
    }

    #[test]
    fn echo_answers_every_datagram() {
        for model in MODELS {
            let report = with_server(model, Echo::default(), |client| {
                let sent: Vec<Vec<u8>> = (0..4).map(|i| format!("{model} datagram {i}").into_bytes()).collect();
                for datagram in &sent {
                    client.send(datagram).unwrap();
                }
                // The thread and pool models may answer out of order.
                let mut got: Vec<_> = (0..sent.len()).map(|_| receive(client)).collect();
                got.sort();
                assert_eq!(got, sent, "{model}");
            });
            assert_eq!(report.accepted, 4, "{model}");
        }
    }

    #[test]
    fn daytime_answers_with_a_line() {
        for model in MODELS {
            with_server(model, Daytime, |client| {
                client.send(b"").unwrap();
                let line = String::from_utf8(receive(client)).unwrap();
                assert!(line.ends_with("-UTC\r\n"), "{model}: {line:?}");
            });
        }
    }

    #[test]
    fn time_answers_with_four_bytes() {
        for model in MODELS {
            with_server(model, Time, |client| {
                client.send(b"").unwrap();
                let reply: [u8; 4] = receive(client).try_into().expect("four bytes");
                let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
                assert!((decode_time(reply) - now).abs() <= 5, "{model}");
            });
        }
    }
}
