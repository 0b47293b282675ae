//! Sending a session's output: bytes with `write`, file slices with `sendfile(2)` (zero-copy),
//! in the order the session queued them. One function for every driver that owns a raw socket.

use std::io::{self, Write};
use std::os::fd::AsFd;

use warren_proto::{FileSlice, Output, Transmit};

/// The most one `sendfile` call is asked to move, so that one big file cannot hold a loop.
const SENDFILE_CHUNK: u64 = 1 << 20;

/// Send as much of `out` as the socket takes now: `Ok(true)` once everything is sent,
/// `Ok(false)` when the socket would block (or, for a blocking socket with `SO_SNDTIMEO`, timed
/// out).
pub(crate) fn send<S, R>(socket: &S, out: &mut Output<R>) -> io::Result<bool>
where
    S: AsFd,
    for<'a> &'a S: Write,
{
    loop {
        let sent = match out.poll_transmit() {
            None => return Ok(true),
            // A head with its file behind it: hold the packet for the body (MSG_MORE).
            Some(Transmit::Bytes(bytes)) if out.more_queued() => send_more(socket, bytes),
            Some(Transmit::Bytes(bytes)) => (&mut &*socket).write(bytes),
            Some(Transmit::File(slice)) => send_file(socket, slice),
        };
        match sent {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => out.consume(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Send `bytes` telling the kernel more follows at once, so that it waits for it before it
/// sends a short segment.
fn send_more(socket: &impl AsFd, bytes: &[u8]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // nix names no MSG_MORE; the bit is libc's.
    let flags =
        nix::sys::socket::MsgFlags::from_bits_retain(nix::libc::MSG_MORE) | nix::sys::socket::MsgFlags::MSG_NOSIGNAL;
    nix::sys::socket::send(socket.as_fd().as_raw_fd(), bytes, flags).map_err(io::Error::from)
}

/// One `sendfile` call for the front of `slice`.
pub(crate) fn send_file(socket: &impl AsFd, slice: &FileSlice) -> io::Result<usize> {
    let mut offset = i64::try_from(slice.offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let count = slice.len.min(SENDFILE_CHUNK) as usize;
    match nix::sys::sendfile::sendfile64(socket, &*slice.file, Some(&mut offset), count) {
        // The file shrank under us: say so rather than spin on a slice that cannot finish.
        Ok(0) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file ended before its announced length")),
        Ok(n) => Ok(n),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;

    use super::*;

    #[test]
    fn bytes_and_file_slices_arrive_in_order() {
        let path = std::env::temp_dir().join(format!("warren-transmit-{}", std::process::id()));
        std::fs::write(&path, b"0123456789").unwrap();
        let file = Arc::new(std::fs::File::open(&path).unwrap());
        std::fs::remove_file(&path).unwrap();

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut out: Output<()> = Output::new();
        out.send(b"<");
        out.send_file(file.clone(), 2, 5);
        out.send(b">");
        out.send_file(file, 0, 1);
        assert!(send(&server, &mut out).unwrap());
        assert!(out.is_flushed());
        drop(server);
        let mut got = String::new();
        (&client).read_to_string(&mut got).unwrap();
        assert_eq!(got, "<23456>0");
    }
}
