//! The socket options that let a cancel by urgent data through promptly.
//!
//! The urgent pointer reaches the server only on a segment, and only once the client has
//! queued its urgent byte. Measured with `warren bench oob` (docs/files.md), two socket
//! settings decide how long that takes:
//!
//! - **The client's queue** ([`limit_unsent`]). `send(MSG_OOB)` is an ordinary send: on a
//!   socket whose send buffer is full it blocks until the buffer has drained far enough to wake
//!   a writer (a third of it free, `sk_stream_write_space`). Behind the bench's 4 MiB send
//!   buffer (8 MiB as the kernel counts it) and a server taking 32 MiB/s that was 83 ms, the
//!   whole of the old "urgent, window full" latency. With
//!   `TCP_NOTSENT_LOWAT` a writer waits while more than [`UPLOAD_UNSENT`] bytes are unsent, so
//!   the buffer never fills, the urgent byte is queued at once ([`send_urgent`] lifts the limit
//!   first, which would otherwise hold it back too) and the server drops at most that much,
//!   plus its window, before the mark. The pointer itself does not wait for the queue: Linux
//!   puts it, capped 64 KiB ahead, on every new segment.
//! - **The server's receive buffer** ([`set_recv_buffer`]). A receiver whose buffer is full
//!   advertises a zero window and reopens it only once it has freed `max(MSS, space / 16)`
//!   (`__tcp_select_window`, silly-window avoidance); until then no segment, so no pointer,
//!   comes. Autotuning grows the buffer (up to `tcp_rmem` max, 32 MiB here) while a reader
//!   keeps up; if that reader then slows down, reopening waits for megabytes (2 MiB of 32 MiB).
//!   A reader that grew its buffer to 7-32 MiB and then slowed to about 32 MiB/s heard SIGURG
//!   up to 26 ms after the send; with 256 KiB, within 10 ms. A fixed [`DEFAULT_RECV_BUFFER`]
//!   reopens after one loopback MSS (64 KiB, 2 ms at that rate). It also turns autotuning off,
//!   so the window stays bounded: that limits throughput on a long fat path (window / RTT:
//!   10-20 MiB/s at 10 ms), not over loopback or a LAN; raise it, or 0, for such paths.
//!
//! The receive buffer is set on the listener: accepted sockets inherit it, and the window
//! scale offered in the SYN-ACK is chosen from it.

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd};

use nix::libc;
use nix::sys::socket::{getsockopt, setsockopt, sockopt};

/// The default receive buffer of file-service data connections, in bytes (`SO_RCVBUF`; the
/// kernel doubles it for its bookkeeping). 64 KiB to 1 MiB measured alike for throughput over
/// loopback; above 128 KiB the stalled case's urgent latency grew (p50 8 ms at 256 KiB).
pub const DEFAULT_RECV_BUFFER: usize = 128 * 1024;

/// The bytes an uploading client lets sit unsent in its socket (`TCP_NOTSENT_LOWAT`). 16 KiB
/// cost `warren files put` about a fifth of its loopback throughput; 64 KiB measured like no
/// limit.
pub const UPLOAD_UNSENT: u32 = 64 * 1024;

/// Set `SO_RCVBUF` to `bytes` on a listener (before it accepts: connections inherit it) or a
/// connection. 0 leaves the kernel's autotuning in charge.
pub fn set_recv_buffer(socket: &impl AsFd, bytes: usize) -> io::Result<()> {
    if bytes == 0 {
        return Ok(());
    }
    setsockopt(socket, sockopt::RcvBuf, &bytes).map_err(io::Error::from)
}

/// `SO_RCVBUF` as the kernel reports it (twice what was set).
pub fn recv_buffer(socket: &impl AsFd) -> io::Result<usize> {
    getsockopt(socket, sockopt::RcvBuf).map_err(io::Error::from)
}

/// Let at most about `bytes` sit unsent in `stream` (`TCP_NOTSENT_LOWAT`): a blocking write
/// waits, a non-blocking one says `WouldBlock`, beyond it. `u32::MAX` lifts the limit.
pub fn limit_unsent(stream: &TcpStream, bytes: u32) -> io::Result<()> {
    // SAFETY: TCP_NOTSENT_LOWAT takes an int-sized value; we pass a pointer to ours and its size.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&raw const bytes).cast(),
            size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Send one urgent byte (`MSG_OOB`): the server stops the upload when the pointer arrives.
/// The unsent limit is lifted first: a socket at its limit would make the byte wait (or, non
/// blocking, refuse it) until the server's window reopens.
pub fn send_urgent(stream: &TcpStream) -> io::Result<()> {
    limit_unsent(stream, u32::MAX)?;
    let byte = [0xffu8];
    // SAFETY: a one-byte buffer we own.
    let n = unsafe { libc::send(stream.as_raw_fd(), byte.as_ptr().cast(), 1, libc::MSG_OOB) };
    match n {
        1 => Ok(()),
        0 => Err(io::Error::from(io::ErrorKind::WriteZero)),
        _ => Err(io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use super::*;

    /// Connections accepted from a listener with a receive buffer have it (doubled by the
    /// kernel), and autotuning is off for them.
    #[test]
    fn accepted_connections_inherit_the_receive_buffer() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        set_recv_buffer(&listener, 96 * 1024).unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        assert_eq!(recv_buffer(&server).unwrap(), 2 * 96 * 1024);
    }

    #[test]
    fn zero_leaves_the_default() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let before = recv_buffer(&listener).unwrap();
        set_recv_buffer(&listener, 0).unwrap();
        assert_eq!(recv_buffer(&listener).unwrap(), before);
    }

    #[test]
    fn unsent_limit_is_set_and_lifted() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let get = || {
            let mut v: u32 = 0;
            let mut len = size_of::<u32>() as libc::socklen_t;
            // SAFETY: an int-sized option read into ours.
            let rc = unsafe {
                libc::getsockopt(
                    stream.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_NOTSENT_LOWAT,
                    (&raw mut v).cast(),
                    &mut len,
                )
            };
            assert_eq!(rc, 0);
            v
        };
        limit_unsent(&stream, UPLOAD_UNSENT).unwrap();
        assert_eq!(get(), UPLOAD_UNSENT);
        send_urgent(&stream).unwrap();
        assert_eq!(get(), u32::MAX);
    }
}
