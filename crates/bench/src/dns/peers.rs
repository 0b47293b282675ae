//! The reference DNS servers of `warren bench dns`, from Debian's packages, each serving the
//! zone `warren.` with the bench's name and its addresses, on one CPU with one UDP thread:
//!
//! - **Knot DNS** (`knot`, 3.2 on bookworm): `udp-workers: 1`, `tcp-workers: 1`,
//!   `background-workers: 1`;
//! - **BIND 9** (`bind9`, 9.18 on bookworm): `named -n 1 -U 1` (one worker thread, one UDP
//!   listener), `minimal-responses yes` (no NS records in the authority section, so that its
//!   answers are the size of the others'), `rrset-order cyclic` (it rotates, as warren does).
//!
//! Neither rotates unless told: Knot has no rotation at all, so its answers always come in zone
//! order. Both run in the foreground from a scratch directory and are always stopped.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::Signal;

use crate::scratch::Scratch;
use crate::server::{NotListening, peer_command, stop_group};

/// How long a peer may take to load its zone and listen.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Which reference server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Knot,
    Bind,
}

/// The zone file: SOA and NS at the apex, then `label` with every address, TTL 5 as warren's.
pub fn zone_file(label: &str, addrs: &[Ipv4Addr]) -> String {
    let mut zone = String::from(
        "$ORIGIN warren.\n$TTL 5\n@ SOA warren. hostmaster.warren. 1 3600 600 86400 5\n@ NS ns.warren.\nns A 127.0.0.1\n",
    );
    for addr in addrs {
        zone.push_str(&format!("{label} A {addr}\n"));
    }
    zone
}

/// knotd's configuration: one worker per kind, the zone from `dir`.
pub fn knot_config(dir: &Path, port: u16) -> String {
    let dir = dir.display();
    format!(
        "server:\n    listen: 127.0.0.1@{port}\n    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\n    \
         rundir: {dir}\ndatabase:\n    storage: {dir}\nlog:\n  - target: stderr\n    any: warning\n\
         zone:\n  - domain: warren.\n    file: {dir}/warren.zone\n"
    )
}

/// named's configuration: authoritative only, on loopback, no control channel.
pub fn bind_config(dir: &Path, port: u16) -> String {
    let dir = dir.display();
    format!(
        "options {{\n    directory \"{dir}\";\n    pid-file \"{dir}/named.pid\";\n    listen-on port {port} {{ 127.0.0.1; }};\n    \
         listen-on-v6 {{ none; }};\n    recursion no;\n    minimal-responses yes;\n    rrset-order {{ order cyclic; }};\n}};\n\
         controls {{ }};\nzone \"warren.\" {{ type primary; file \"{dir}/warren.zone\"; }};\n"
    )
}

/// A running reference server, stopped on drop.
#[derive(Debug)]
pub struct Peer {
    child: Child,
    pid: i32,
    addr: SocketAddr,
    _dir: Scratch,
    stopped: bool,
}

impl Peer {
    /// Writes the zone and configuration, starts `program` on `cpu` (with `taskset`) and waits
    /// until it takes TCP connections (it loads the zone before listening).
    pub fn start(kind: Kind, program: &Path, zone: &str, cpu: Option<usize>) -> anyhow::Result<Peer> {
        let port = warren_testkit::free_port()?;
        let dir = Scratch::new(&format!("dns-{kind:?}").to_lowercase(), 0o755)?;
        std::fs::write(dir.dir.join("warren.zone"), zone)?;
        let mut command = peer_command(program, cpu);
        match kind {
            Kind::Knot => {
                let conf = dir.dir.join("knot.conf");
                std::fs::write(&conf, knot_config(&dir.dir, port))?;
                command.arg("-c").arg(conf);
            }
            Kind::Bind => {
                let conf = dir.dir.join("named.conf");
                std::fs::write(&conf, bind_config(&dir.dir, port))?;
                command.args(["-g", "-n", "1", "-U", "1", "-c"]).arg(conf);
            }
        }
        command.stdout(Stdio::null()).stderr(Stdio::null());
        let child = command.spawn().with_context(|| format!("cannot start {}", program.display()))?;
        let pid = child.id() as i32;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut peer = Peer { child, pid, addr, _dir: dir, stopped: false };
        match crate::server::wait_listening(&mut peer.child, addr, READY_TIMEOUT) {
            Ok(()) => Ok(peer),
            Err(NotListening::Exited(status)) => {
                peer.stopped = true;
                bail!("{} exited at start ({status}); check its configuration", program.display())
            }
            Err(NotListening::Late) => bail!("{} did not listen on {addr} within {READY_TIMEOUT:?}", program.display()),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// SIGTERM (both stop cleanly on it), then SIGKILL to the group.
    pub fn stop(&mut self) {
        if !self.stopped {
            self.stopped = true;
            stop_group(&mut self.child, &[(Signal::SIGTERM, Duration::from_secs(3))]);
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The first line of `program`'s version, for the report.
pub fn version(kind: Kind, program: &Path) -> String {
    let flag = match kind {
        Kind::Knot => "--version",
        Kind::Bind => "-v",
    };
    std::process::Command::new(program)
        .arg(flag)
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(str::to_owned))
        .map(|line| line.replace("knotd (Knot DNS), version", "Knot DNS"))
        .map(|line| line.split(" (").next().unwrap_or_default().trim().to_owned())
        .unwrap_or_else(|| program.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_name_one_worker_and_the_zone() {
        let dir = Path::new("/tmp/x");
        let knot = knot_config(dir, 5300);
        assert!(knot.contains("listen: 127.0.0.1@5300\n") && knot.contains("udp-workers: 1\n"));
        assert!(knot.contains("file: /tmp/x/warren.zone"));
        let bind = bind_config(dir, 5300);
        assert!(bind.contains("listen-on port 5300 { 127.0.0.1; };") && bind.contains("minimal-responses yes;"));
        assert!(bind.contains("zone \"warren.\" { type primary; file \"/tmp/x/warren.zone\"; };"));
        let zone = zone_file("bench", &[Ipv4Addr::new(127, 0, 1, 1), Ipv4Addr::new(127, 0, 1, 2)]);
        assert!(zone.ends_with("bench A 127.0.1.1\nbench A 127.0.1.2\n"), "{zone}");
    }
}
