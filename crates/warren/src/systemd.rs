//! Speaking to a service manager, as systemd defines it: readiness and state changes to
//! `$NOTIFY_SOCKET` (sd_notify(3)), and the listeners it opened for the node (sd_listen_fds(3)).
//! Without a manager both are no-ops, so `warren up` behaves the same from a shell.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use sd_notify::NotifyState;

/// The manager's notification socket, if the node was started with one.
pub struct Manager {
    socket: Option<UnixDatagram>,
}

/// What the manager handed over at start.
pub struct Handover {
    pub manager: Manager,
    /// Listening sockets with their names (`FileDescriptorName=`), for the node.
    pub listeners: Vec<(OwnedFd, String)>,
}

impl Manager {
    /// Reads `NOTIFY_SOCKET` and `LISTEN_PID` / `LISTEN_FDS` / `LISTEN_FDNAMES`, then removes
    /// them from the environment, so that the programs the node starts neither notify in its
    /// name nor take its listeners.
    ///
    /// # Safety
    /// Changes the environment: call it before the process starts any thread.
    pub unsafe fn take_from_env() -> io::Result<Handover> {
        let path = std::env::var_os("NOTIFY_SOCKET");
        // SAFETY: the caller guarantees that no other thread runs (the same precondition).
        let fds = unsafe { sd_notify::listen_fds_with_names_and_unset_env() }
            .map_err(|e| io::Error::new(e.kind(), format!("socket activation: {e}")))?;
        // SAFETY: as above.
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        let listeners = fds
            // SAFETY: sd_listen_fds(3): descriptors 3 to 3 + LISTEN_FDS - 1 were passed to this
            // process (LISTEN_PID is checked) for it to own; nothing else in it has taken them.
            .map(|(fd, name)| (unsafe { OwnedFd::from_raw_fd(fd) }, name))
            .collect();
        let socket = match path {
            Some(path) => Some(
                connect(path.as_encoded_bytes())
                    .map_err(|e| io::Error::new(e.kind(), format!("NOTIFY_SOCKET {}: {e}", path.to_string_lossy())))?,
            ),
            None => None,
        };
        Ok(Handover { manager: Manager { socket }, listeners })
    }

    /// Startup (or a reload) is finished.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A reload starts; systemd 253 and later (`Type=notify-reload`) want the monotonic time
    /// with it, to match the reload to its request.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// The node is draining and will exit.
    pub fn stopping(&self, status: &str) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    /// A notification is advice to the manager: failing to deliver one must not stop the node,
    /// so it is logged and dropped.
    fn send(&self, states: &[NotifyState]) {
        let Some(socket) = &self.socket else { return };
        let message: String = states.iter().map(|s| format!("{s}\n")).collect();
        if let Err(e) = socket.send(message.as_bytes()) {
            tracing::warn!(target: "warren", "service manager notification not delivered: {e}");
        }
    }
}

/// A datagram socket connected to the manager's: a path, or `@name` in the abstract namespace.
fn connect(path: &[u8]) -> io::Result<UnixDatagram> {
    let socket = UnixDatagram::unbound()?;
    match path.strip_prefix(b"@") {
        Some(name) => socket.connect_addr(&SocketAddr::from_abstract_name(name)?)?,
        None => socket.connect(std::ffi::OsStr::from_bytes(path))?,
    }
    Ok(socket)
}
