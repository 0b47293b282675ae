//! The floor under one call in flight: a round trip over loopback TCP with nothing on top,
//! 42 bytes out and 25 back (the size of `sayHello`'s call and reply frames), the echoing
//! side on CPU 1 and the caller on CPU 0, as `warren bench rpc` pins its server and load
//! generator. `block`: both sides sleep in a blocking `read` between messages, as every server
//! and client in the bench sleeps in `epoll_wait`; `spin`: both poll a non-blocking socket and
//! never sleep (each burns a CPU), which shows what the sleeps and wake-ups cost;
//! `client-spin`: the caller polls and the echoing side sleeps, as a busy-polling `Connection`
//! calls a server that waits in `epoll_wait`.
//!
//! ```sh
//! cargo build --release -p warren-bench --example loopback_floor
//! target/release/examples/loopback_floor [block|spin|client-spin] [round trips]   # defaults: block, 20000
//! ```

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;

const CALL: usize = 42;
const REPLY: usize = 25;

fn pin(cpu: usize) {
    let mut set = CpuSet::new();
    if set.set(cpu).is_ok() && sched_setaffinity(Pid::from_raw(0), &set).is_err() {
        eprintln!("cannot pin to CPU {cpu}: the figures are unpinned");
    }
}

/// Read exactly `buf.len()` bytes, spinning on a non-blocking socket or blocking.
fn read_all(stream: &mut TcpStream, buf: &mut [u8], spin: bool) -> std::io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match stream.read(&mut buf[got..]) {
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if spin && e.kind() == ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    // Whether the caller, and the echoing side, poll.
    let (mode, spin, server_spins) = match args.next().as_deref() {
        None | Some("block") => ("block", false, false),
        Some("spin") => ("spin", true, true),
        Some("client-spin") => ("client-spin", true, false),
        Some(other) => return Err(format!("mode {other:?}: block, spin or client-spin").into()),
    };
    let round_trips: usize = args.next().map_or(Ok(20_000), |s| s.parse())?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        pin(1);
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(server_spins)?;
        let (mut call, reply) = ([0u8; CALL], [1u8; REPLY]);
        while read_all(&mut stream, &mut call, server_spins).is_ok() {
            stream.write_all(&reply)?;
        }
        Ok(())
    });
    pin(0);
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_nonblocking(spin)?;
    let (call, mut reply) = ([2u8; CALL], [0u8; REPLY]);
    let warm_up = round_trips / 10;
    let mut took = Vec::with_capacity(round_trips);
    let started = Instant::now();
    for i in 0..warm_up + round_trips {
        let sent = Instant::now();
        stream.write_all(&call)?;
        read_all(&mut stream, &mut reply, spin)?;
        if i >= warm_up {
            took.push(sent.elapsed());
        }
    }
    let rate = (warm_up + round_trips) as f64 / started.elapsed().as_secs_f64();
    drop(stream);
    server.join().map_err(|_| "the echoing thread panicked")??;
    took.sort();
    let at = |p: f64| took[((took.len() as f64 * p) as usize).min(took.len() - 1)].as_secs_f64() * 1e6;
    println!("{mode}: {round_trips} round trips, {rate:.0}/s, p50 {:.1} µs, p99 {:.1} µs", at(0.50), at(0.99));
    Ok(())
}
