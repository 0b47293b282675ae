//! A virtual network of a test's own: named network namespaces ("hosts") joined by bridges, each
//! host reaching a bridge through a veth pair, made with iproute2's `ip`. Where [`crate::netns`]
//! gives a thread a loopback of its own, this gives a test several machines and the wires
//! between them, so that traffic between tiers crosses real interfaces, ARP and routing.
//!
//! The bridges live in a hub namespace of their own, so nothing of the machine's own network is
//! touched; every namespace is deleted on drop, which also removes its interfaces.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::process::{Command, Stdio};

use nix::sched::CloneFlags;

/// Named namespaces joined by bridges; all deleted on drop.
#[derive(Debug)]
pub struct VirtualNet {
    /// Every namespace's name starts with it: `warren-TAG-PID-`.
    prefix: String,
    /// The namespaces made, the hub first.
    made: Vec<String>,
    /// Veth ends in the hub are numbered, so host and bridge names never meet the 15-byte limit
    /// of an interface name there.
    veths: usize,
}

impl VirtualNet {
    /// An empty network: the hub namespace that will hold the bridges. Fails with
    /// [`io::ErrorKind::Unsupported`] where namespaces cannot be made (not root, no `ip`); the
    /// error says which.
    pub fn new(tag: &str) -> io::Result<VirtualNet> {
        if !nix::unistd::geteuid().is_root() {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "network namespaces need root"));
        }
        let probe = Command::new("ip").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status();
        if !probe.is_ok_and(|status| status.success()) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "no `ip` program: install Debian's iproute2 (apt-get install iproute2)",
            ));
        }
        let mut net =
            VirtualNet { prefix: format!("warren-{tag}-{}-", std::process::id()), made: Vec::new(), veths: 0 };
        net.add_namespace("hub")?;
        Ok(net)
    }

    /// A bridge named `name` in the hub: one network segment that hosts attach to.
    pub fn bridge(&self, name: &str) -> io::Result<()> {
        let hub = self.namespace("hub");
        ip(&["-n", &hub, "link", "add", name, "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", name, "up"])
    }

    /// A host: a namespace with its loopback up and, for each `(bridge, address/prefix)`, an
    /// interface named after the bridge with that address (`10.77.1.2/24`), up and plugged into
    /// the bridge. A host on two bridges is on two networks, as a router or a switch is; nothing
    /// forwards between them unless the test turns it on.
    pub fn host(&mut self, name: &str, links: &[(&str, &str)]) -> io::Result<()> {
        let ns = self.add_namespace(name)?;
        for (bridge, addr) in links {
            let (hub, outer) = (self.namespace("hub"), format!("v{}", self.veths));
            self.veths += 1;
            ip(&["-n", &hub, "link", "add", &outer, "type", "veth", "peer", "name", bridge, "netns", &ns])?;
            ip(&["-n", &hub, "link", "set", &outer, "master", bridge, "up"])?;
            ip(&["-n", &ns, "addr", "add", addr, "dev", bridge])?;
            ip(&["-n", &ns, "link", "set", bridge, "up"])?;
        }
        Ok(())
    }

    /// The full name of host `name`'s namespace (for `ip netns exec`).
    pub fn namespace(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// `program` to be run in host `name` (`ip netns exec`, which then executes it, so the child's
    /// pid is the program's own).
    pub fn command(&self, name: &str, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec"]).arg(self.namespace(name)).arg(program);
        cmd
    }

    /// Move the calling thread into host `name`; what it starts afterwards runs there too (for
    /// code that starts servers itself, such as [`crate::LocalPostgres`]).
    pub fn enter_thread(&self, name: &str) -> io::Result<()> {
        let ns = File::open(format!("/run/netns/{}", self.namespace(name)))?;
        nix::sched::setns(ns, CloneFlags::CLONE_NEWNET)?;
        Ok(())
    }

    fn add_namespace(&mut self, name: &str) -> io::Result<String> {
        let ns = self.namespace(name);
        // One left by a run of the same pid that was killed before its drop.
        let _ = ip(&["netns", "del", &ns]);
        ip(&["netns", "add", &ns])?;
        self.made.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }
}

impl Drop for VirtualNet {
    /// Deleting a namespace removes its interfaces, and a veth's peer with it.
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// `ip ARGS`, its standard error the error when it fails.
fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).stdin(Stdio::null()).output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())))
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    use super::*;

    /// Two hosts on one bridge reach each other over it, and a host on another bridge is not
    /// reached from them: the segments are separate networks.
    #[test]
    fn hosts_on_one_bridge_meet_and_other_segments_stay_apart() {
        let mut net = match VirtualNet::new("vnet-unit") {
            Ok(net) => net,
            Err(e) if e.kind() == io::ErrorKind::Unsupported => return eprintln!("skipped: {e}"),
            Err(e) => panic!("{e}"),
        };
        net.bridge("front").unwrap();
        net.bridge("back").unwrap();
        net.host("a", &[("front", "10.99.1.1/24")]).unwrap();
        net.host("b", &[("front", "10.99.1.2/24")]).unwrap();
        net.host("c", &[("back", "10.99.2.3/24")]).unwrap();
        let net = std::sync::Arc::new(net);
        let listen = |host: &'static str, addr: &'static str| {
            let net = net.clone();
            std::thread::spawn(move || {
                net.enter_thread(host).unwrap();
                TcpListener::bind(addr).unwrap()
            })
            .join()
            .unwrap()
        };
        let (b, c) = (listen("b", "10.99.1.2:0"), listen("c", "10.99.2.3:0"));
        let (to_b, to_c) = (b.local_addr().unwrap(), c.local_addr().unwrap());
        let from_a = net.clone();
        let (reached_b, reached_c) = std::thread::spawn(move || {
            from_a.enter_thread("a").unwrap();
            let timeout = Duration::from_secs(5);
            (TcpStream::connect_timeout(&to_b, timeout), TcpStream::connect_timeout(&to_c, timeout))
        })
        .join()
        .unwrap();
        reached_b.expect("a reaches b across the bridge");
        assert_eq!(reached_c.unwrap_err().kind(), io::ErrorKind::NetworkUnreachable, "a has no route to c");
        let hub = net.namespace("hub");
        drop((b, c));
        drop(std::sync::Arc::into_inner(net));
        assert!(!std::path::Path::new("/run/netns").join(hub).exists(), "namespaces removed on drop");
    }
}
