//! A network namespace of a test's own: its servers and clients meet on a loopback that no other
//! program on the machine shares, so no port, flood or reset of the test reaches anything else.

use std::io;
use std::os::fd::AsRawFd;

use nix::libc;
use nix::sched::CloneFlags;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

/// Move the calling thread into a new network namespace whose loopback is up. Threads and
/// processes this thread starts afterwards are in it too; the process's other threads stay where
/// they were. Needs CAP_SYS_ADMIN; on failure the thread is where it was.
pub fn isolate_thread() -> io::Result<()> {
    nix::sched::unshare(CloneFlags::CLONE_NEWNET)?;
    loopback_up()
}

/// [`isolate_thread`] for a test: `true` once isolated; `false`, with a line on stderr, where
/// namespaces are not allowed (not root), and the test runs on the host's loopback instead.
pub fn isolate_test() -> bool {
    match isolate_thread() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("no network namespace of the test's own ({e}); running on the host's loopback");
            false
        }
    }
}

/// `ip link set lo up`, without needing `ip`: SIOCGIFFLAGS, then SIOCSIFFLAGS with IFF_UP.
fn loopback_up() -> io::Result<()> {
    let sock = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    // SAFETY: ifreq is plain old data; all zeroes is a valid (empty) request.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (to, from) in request.ifr_name.iter_mut().zip(b"lo") {
        *to = *from as libc::c_char;
    }
    // SAFETY: `request` is a valid ifreq naming an interface, as SIOCGIFFLAGS expects.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the union's flags member.
    unsafe { request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above; the kernel only reads the request.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    use super::*;

    /// A thread in a namespace of its own reaches its own loopback, not the host's: a listener
    /// bound outside is refused inside, and one bound inside is reached.
    #[test]
    fn an_isolated_thread_has_a_loopback_of_its_own() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: network namespaces need root");
            return;
        }
        let outside = TcpListener::bind("127.0.0.1:0").unwrap();
        let outside_port = outside.local_addr().unwrap().port();
        std::thread::spawn(move || {
            isolate_thread().unwrap();
            let refused = TcpStream::connect(("127.0.0.1", outside_port)).unwrap_err();
            assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
            let inside = TcpListener::bind("127.0.0.1:0").unwrap();
            let mut client = TcpStream::connect(inside.local_addr().unwrap()).unwrap();
            client.write_all(b"ping").unwrap();
            let mut got = [0; 4];
            inside.accept().unwrap().0.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"ping");
        })
        .join()
        .unwrap();
    }
}
