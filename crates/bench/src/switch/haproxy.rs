//! The reference switch for `warren bench switch`: HAProxy from Debian's package (2.6 on
//! bookworm), installed when missing, configured to do the same work as `warren switch`: one
//! thread, round-robin over the same backends with the same health checks (`inter 2s`, rise 2,
//! fall 3, its defaults), splicing in TCP mode (`option splice-auto`, as the relay splices), and in
//! HTTP mode keep-alive to clients, reused connections to the servers (`http-reuse safe`, its
//! default) and `X-Forwarded-For` (`option forwardfor`, as warren adds it). It runs in the
//! foreground (`-db`) from a scratch directory and is always stopped.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::Signal;

use crate::scratch::Scratch;
use crate::server::{NotListening, peer_command, wait_listening};

/// How long HAProxy may take to accept connections after starting.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// HAProxy's proxy mode: layer 4 or layer 7.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Tcp,
    Http,
}

/// The configuration for `mode` in front of `backends`, listening on `port`. `maxconn` is far
/// above the bench's connections but low enough that the two descriptors HAProxy reserves per
/// connection and its splice pipes fit under a 20,000-descriptor limit: above it HAProxy refuses
/// to start.
pub fn config(mode: Mode, port: u16, backends: &[SocketAddr]) -> String {
    let (name, options) = match mode {
        Mode::Tcp => ("tcp", "    option splice-auto\n"),
        Mode::Http => ("http", "    option forwardfor\n    http-reuse safe\n"),
    };
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, addr)| format!("    server s{i} {addr} check inter 2s rise 2 fall 3\n"))
        .collect();
    format!(
        "global\n    nbthread 1\n    maxconn 4000\n\ndefaults\n    mode {name}\n    timeout connect 5s\n    \
         timeout client 30s\n    timeout server 30s\n{options}\nfrontend front\n    bind 127.0.0.1:{port}\n    \
         default_backend servers\n\nbackend servers\n    balance roundrobin\n{servers}"
    )
}

/// A running HAProxy, stopped on drop.
#[derive(Debug)]
pub struct Haproxy {
    child: Child,
    pid: i32,
    addr: SocketAddr,
    _dir: Scratch,
    stopped: bool,
}

impl Haproxy {
    /// Write the configuration and start HAProxy on `cpu` (with `taskset`).
    pub fn start(haproxy: &Path, mode: Mode, backends: &[SocketAddr], cpu: Option<usize>) -> anyhow::Result<Haproxy> {
        let port = warren_testkit::free_port()?;
        let dir = Scratch::new(&format!("haproxy-{mode:?}"), 0o755)?;
        let conf = dir.dir.join("haproxy.cfg");
        std::fs::write(&conf, config(mode, port, backends))?;
        let mut command = peer_command(haproxy, cpu);
        command.arg("-db").arg("-f").arg(&conf).stdout(Stdio::null()).stderr(Stdio::null());
        let child = command.spawn().with_context(|| format!("cannot start {}", haproxy.display()))?;
        let pid = child.id() as i32;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut guard = Haproxy { child, pid, addr, _dir: dir, stopped: false };
        match wait_listening(&mut guard.child, addr, READY_TIMEOUT) {
            Ok(()) => Ok(guard),
            Err(NotListening::Exited(status)) => {
                guard.stopped = true;
                bail!("haproxy exited at start ({status}); check its configuration with `haproxy -c -f`")
            }
            Err(NotListening::Late) => bail!("haproxy did not listen on {addr} within {READY_TIMEOUT:?}"),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The version line, for the report.
    pub fn version(haproxy: &Path) -> String {
        let out = Command::new(haproxy).arg("-v").output();
        out.ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(str::to_owned))
            .map(|l| l.replace("HAProxy version ", "").split(" - ").next().unwrap_or_default().to_owned())
            .unwrap_or_default()
    }

    /// SIGTERM (HAProxy's hard stop: the bench has closed its connections), then SIGKILL.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        crate::server::stop_group(&mut self.child, &[(Signal::SIGTERM, Duration::from_secs(2))]);
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_names_every_backend_with_haproxys_default_checks() {
        let backends: Vec<SocketAddr> = vec!["127.0.0.1:81".parse().unwrap(), "127.0.0.1:82".parse().unwrap()];
        let tcp = config(Mode::Tcp, 9000, &backends);
        assert!(tcp.contains("mode tcp\n") && tcp.contains("option splice-auto"));
        assert!(tcp.contains("bind 127.0.0.1:9000\n"));
        assert!(tcp.contains("server s0 127.0.0.1:81 check inter 2s rise 2 fall 3\n"));
        assert!(tcp.contains("server s1 127.0.0.1:82 check"));
        let http = config(Mode::Http, 9000, &backends);
        assert!(http.contains("mode http\n") && http.contains("option forwardfor") && !http.contains("splice"));
    }
}
