//! `warren oob send HOST PORT` and `warren oob recv PORT`: Stevens' `tcpsend01`/`tcprecv01`
//! (the course's `oobsend`/`oobrecv`), the TCP urgent-data demonstration. The same writes,
//! pauses, urgent bytes and console lines, so each side works with the C original.
//!
//! On Linux an urgent send makes only its last byte urgent, and a receiver without
//! `SO_OOBINLINE` reads that byte apart from the stream (`recv(MSG_OOB)`), once `SIGURG` (sent
//! to the socket's owner, `F_SETOWN`) says it came.
//!
//! `recv` prints the lines of `warren_proto::oob`, which `warren serve oob` logs for each of
//! its connections.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{MsgFlags, recv};
use warren_proto::oob;

use crate::serve::{listen, resolve};

#[derive(Debug, Args)]
pub struct OobArgs {
    #[command(subcommand)]
    pub side: OobSide,
}

#[derive(Debug, Subcommand)]
pub enum OobSide {
    /// `oobsend`: connect, then send "123", urgent "4", "56", urgent "7", "89", a pause after each.
    Send {
        /// Receiver host.
        host: String,
        /// Receiver port.
        port: u16,
        /// The pause after each write [default: 1s, as the course's program].
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
        pause: Duration,
    },
    /// `oobrecv`: accept one connection; print normal bytes as read, urgent bytes on SIGURG.
    Recv {
        /// Port to listen on (0 picks a free one; the readiness line names it).
        port: u16,
        /// Address to listen on: loopback by default; 0.0.0.0 (or ::) for every interface.
        #[arg(long, default_value = "127.0.0.1")]
        listen: IpAddr,
    },
}

/// `warren oob ...`.
pub fn run(args: &OobArgs) -> anyhow::Result<()> {
    match &args.side {
        OobSide::Send { host, port, pause } => send(host, *port, *pause),
        OobSide::Recv { port, listen } => recv_one(SocketAddr::new(*listen, *port)),
    }
}

/// What `oobsend` sends: each piece, and whether it goes as urgent data.
const SCRIPT: [(&[u8], bool); 5] = [(b"123", false), (b"4", true), (b"56", false), (b"7", true), (b"89", false)];

fn send(host: &str, port: u16, pause: Duration) -> anyhow::Result<()> {
    let addr = resolve(host, port)?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("cannot connect to {addr}"))?;
    for (bytes, urgent) in SCRIPT {
        let sent = if urgent {
            socket2::SockRef::from(&stream).send_out_of_band(bytes)
        } else {
            stream.write_all(bytes).map(|()| bytes.len())
        };
        let n = sent.with_context(|| format!("{addr} closed the connection"))?;
        if urgent {
            println!("wrote {n} byte of OOB data");
        } else {
            println!("wrote {n} bytes of normal data");
        }
        std::thread::sleep(pause);
    }
    Ok(())
}

fn recv_one(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = listen(addr).with_context(|| format!("cannot listen on {addr}"))?;
    // The SIGURG handler only writes to a pipe; the loop below reports it, as the C handler does.
    let (mut urgent_pipe, pipe_end) = std::os::unix::net::UnixStream::pair()?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGURG, pipe_end)?;
    println!("warren: serving oob recv (tcp) on {}", listener.local_addr()?);
    let (mut conn, _) = listener.accept()?;
    drop(listener);
    // SAFETY: F_SETOWN takes an integer argument; the descriptor is open for the call.
    let rc = unsafe { nix::libc::fcntl(conn.as_raw_fd(), nix::libc::F_SETOWN, nix::libc::getpid()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).context("cannot own the connection's SIGURG");
    }
    let mut buf = [0u8; 100];
    loop {
        let mut fds =
            [PollFd::new(urgent_pipe.as_fd(), PollFlags::POLLIN), PollFd::new(conn.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => other.context("poll")?,
        };
        let signalled = fds[0].any().unwrap_or(false);
        let readable = fds[1].any().unwrap_or(false);
        if signalled {
            let _ = urgent_pipe.read(&mut [0u8; 64]);
            println!("{}", oob::SIGNAL_LINE);
            match recv(conn.as_raw_fd(), &mut buf, MsgFlags::MSG_OOB) {
                Ok(n) => println!("{}", oob::urgent_line(&buf[..n])),
                // Already taken, or not here yet: the C program dies here; say so and go on.
                Err(e) => eprintln!("warren: recv(MSG_OOB): {e}"),
            }
        }
        if readable {
            match conn.read(&mut buf) {
                Ok(0) => {
                    println!("{}", oob::EOF_LINE);
                    return Ok(());
                }
                Ok(n) => println!("{}", oob::normal_line(&buf[..n])),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => bail!("reading the connection: {e}"),
            }
        }
    }
}
