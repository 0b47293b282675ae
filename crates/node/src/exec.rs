//! Admission of each new connection (access lists, times, load, cps, instances, per-source),
//! the child's environment, banners and the redirect relay.
//!
//! Counts are exact: a child is counted from its spawn until its pidfd reports its exit, and a
//! cps trip pauses accepting without touching the counts (cf. xinetd#21, where a deactivation
//! reset the instance count to zero while servers still ran).

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::access::{Denied, local_minute};
use crate::config::{Exec, Service};

/// Why a connection was turned away: xinetd's `FAIL` reasons, plus the load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `only_from` / `no_access`.
    Address,
    /// `access_times`.
    Time,
    /// `instances`.
    ServiceLimit,
    /// `per_source`.
    PerSource,
    /// `cps`: the connection that tripped it; accepting then pauses.
    Cps,
    /// `max_load`.
    Load,
}

impl Refusal {
    /// The reason as xinetd's log writes it.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Address => "address",
            Refusal::Time => "time",
            Refusal::ServiceLimit => "service_limit",
            Refusal::PerSource => "per_source_limit",
            Refusal::Cps => "cps",
            Refusal::Load => "load",
        }
    }
}

/// A service's live counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// Children (or relays) running now.
    pub running: u32,
    per_source: HashMap<IpAddr, u32>,
    window: Option<Instant>,
    in_window: u32,
    /// Children started since the node started.
    pub spawned: u64,
    /// Connections refused.
    pub refused: u64,
    /// Spawns in the last whole second, for `warren status`.
    pub last_rate: u32,
}

impl Counters {
    /// Decide on a connection from `peer` at `now`; on success it is counted as running.
    pub fn admit(
        &mut self,
        service: &Service,
        peer: IpAddr,
        now: Instant,
        load: impl FnOnce() -> f64,
    ) -> Result<(), Refusal> {
        let minute = if service.access.has_times() { local_minute() } else { 0 };
        service.access.check(peer, minute).map_err(|d| match d {
            Denied::Address => Refusal::Address,
            Denied::Time => Refusal::Time,
        })?;
        if let Some(max) = service.limits.max_load
            && load() >= max
        {
            return Err(Refusal::Load);
        }
        self.rate(service, now)?;
        if service.limits.instances.is_some_and(|max| self.running >= max) {
            return Err(Refusal::ServiceLimit);
        }
        let from_peer = self.per_source.get(&peer).copied().unwrap_or(0);
        if service.limits.per_source.is_some_and(|max| from_peer >= max) {
            return Err(Refusal::PerSource);
        }
        self.running += 1;
        self.spawned += 1;
        *self.per_source.entry(peer).or_default() += 1;
        Ok(())
    }

    /// Count one start against `cps` (for `wait` services too: a child that exits at once
    /// would otherwise be restarted in a tight loop).
    pub fn rate(&mut self, service: &Service, now: Instant) -> Result<(), Refusal> {
        match self.window {
            Some(start) if now.duration_since(start) < Duration::from_secs(1) => self.in_window += 1,
            _ => {
                self.last_rate = self.in_window;
                self.window = Some(now);
                self.in_window = 1;
            }
        }
        match service.limits.cps {
            Some(cps) if self.in_window > cps.rate => Err(Refusal::Cps),
            _ => Ok(()),
        }
    }

    /// Connections from `peer` running now (tcpserver's `TCPCONNNUM`, this one included).
    pub fn from(&self, peer: IpAddr) -> u32 {
        self.per_source.get(&peer).copied().unwrap_or(0)
    }

    /// A child (or relay) admitted for `peer` has finished.
    pub fn release(&mut self, peer: Option<IpAddr>) {
        self.running = self.running.saturating_sub(1);
        if let Some(peer) = peer
            && let Some(n) = self.per_source.get_mut(&peer)
        {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&peer);
            }
        }
    }

    /// Start a new rate window after a cps pause.
    pub fn reset_window(&mut self) {
        self.window = None;
        self.in_window = 0;
    }
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| s.split_whitespace().next()?.parse().ok()).unwrap_or(0.0)
}

/// The environment of a child: xinetd's (`passenv`, `env`, `REMOTE_HOST`) and, for `nowait`
/// connections, tcpserver's (`PROTO`, `TCPLOCALIP` …) and s6's `TCPCONNNUM`.
pub fn environment(
    exec: &Exec,
    conn: Option<(SocketAddr, SocketAddr, u32)>,
    service: &str,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = Vec::with_capacity(12);
    for name in &exec.passenv {
        if let Some(value) = std::env::var_os(name) {
            env.push((name.into(), value));
        }
    }
    match conn {
        Some((local, remote, same_source)) => {
            let pairs = [
                ("PROTO", "TCP".to_string()),
                ("TCPLOCALIP", local.ip().to_string()),
                ("TCPLOCALPORT", local.port().to_string()),
                ("TCPREMOTEIP", remote.ip().to_string()),
                ("TCPREMOTEPORT", remote.port().to_string()),
                ("TCPCONNNUM", same_source.to_string()),
                ("REMOTE_HOST", remote.ip().to_string()),
            ];
            env.extend(pairs.into_iter().map(|(k, v)| (k.into(), v.into())));
        }
        None => {
            env.push(("LISTEN_FDS".into(), "1".into()));
            env.push(("LISTEN_FDNAMES".into(), service.into()));
        }
    }
    env.extend(exec.env.iter().map(|(k, v)| (k.into(), v.into())));
    env
}

/// Send `banner` on a fresh connection without letting a client that does not read stall the
/// node: the socket's send buffer takes any sensible banner at once.
pub fn send_banner(stream: &TcpStream, banner: &[u8]) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let _ = (&*stream).write_all(banner);
    let _ = stream.set_write_timeout(None);
}

/// Relay `client` to `target` both ways on two threads, like xinetd's redirect process; returns
/// the bytes moved each way once both directions are done.
pub fn relay(client: TcpStream, target: SocketAddr) -> io::Result<(u64, u64)> {
    let server = TcpStream::connect_timeout(&target, Duration::from_secs(10))?;
    let (mut client_in, mut server_out) = (client.try_clone()?, server.try_clone()?);
    let upstream = std::thread::Builder::new().name("warren-relay".into()).spawn(move || {
        let n = io::copy(&mut client_in, &mut server_out).unwrap_or(0);
        let _ = server_out.shutdown(std::net::Shutdown::Write);
        n
    })?;
    let (mut server_in, mut client_out) = (server, client);
    let down = io::copy(&mut server_in, &mut client_out).unwrap_or(0);
    let _ = client_out.shutdown(std::net::Shutdown::Write);
    let up = upstream.join().unwrap_or(0);
    Ok((up, down))
}
