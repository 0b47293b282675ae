//! A server under test: `warren serve ...` as a child process, started, waited for and always
//! stopped.
//!
//! The child gets a process group of its own so that stopping it also reaches what it forked
//! (`fork` children, `prefork` workers, hub processes), and a parent-death signal so that a bench
//! killed by Ctrl-C does not leave servers behind. [`Server`]'s `Drop` stops it on every path,
//! errors and panics included.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::host::CpuSet;

/// How long a server may take to print its readiness line.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server gets to stop after SIGTERM before SIGKILL. Longer than the models' own
/// goodbye grace would be wasted: the bench has closed every connection by then.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// Lines of the child's output kept for error messages.
const TAIL: usize = 12;

/// A running `warren serve` (or any command that announces itself as it does).
#[derive(Debug)]
pub struct Server {
    child: Child,
    pid: i32,
    addr: SocketAddr,
    ready_line: String,
    tail: Arc<Mutex<VecDeque<String>>>,
    stopped: bool,
}

impl Server {
    /// Start `exe serve <args>` on `cpus` (inheriting this process's CPUs if `None`) and wait
    /// for its readiness line.
    pub fn start(exe: &Path, args: &[String], cpus: Option<CpuSet>) -> anyhow::Result<Server> {
        let argv: Vec<String> = std::iter::once("serve".to_owned()).chain(args.iter().cloned()).collect();
        Server::spawn(exe, &argv, cpus)
    }

    /// Start `exe <argv>` (`objects serve ...`, a bench's own server) on `cpus` and wait for its
    /// readiness line, `warren: serving ... on ADDR`.
    pub fn spawn(exe: &Path, argv: &[String], cpus: Option<CpuSet>) -> anyhow::Result<Server> {
        let mut command = Command::new(exe);
        command.args(argv).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        command.process_group(0);
        // SAFETY: the closure runs between fork and exec and makes only async-signal-safe system
        // calls (prctl, sched_setaffinity); it allocates nothing and takes no lock.
        unsafe {
            command.pre_exec(move || {
                let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
                if let Some(cpus) = &cpus {
                    // Best effort: the report shows what the kernel actually applied.
                    let _ = cpus.apply();
                }
                Ok(())
            });
        }
        let mut child = command.spawn().with_context(|| format!("cannot start {}", exe.display()))?;
        let pid = child.id() as i32;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        // From here on the guard owns the child, so every early return below stops it.
        let mut server = Server {
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ready_line: String::new(),
            tail,
            stopped: false,
        };
        let (ready_tx, ready_rx) = mpsc::channel();
        // Both pipes are drained for the child's whole life: a server blocked on a full pipe
        // would measure the pipe, not the model.
        if let Some(out) = stdout {
            drain(out, server.tail.clone(), Some(ready_tx))?;
        }
        if let Some(err) = stderr {
            drain(err, server.tail.clone(), None)?;
        }
        match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok((addr, line)) => (server.addr, server.ready_line) = (addr, line),
            Err(_) => bail!("`warren {}` did not get ready: {}", argv.join(" "), server.output()),
        }
        if !server.addr.ip().is_loopback() {
            bail!("server listens on {}, not loopback; the bench only loads 127.0.0.0/8", server.addr);
        }
        Ok(server)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The line it announced itself with (`warren objects serve` names its HTTP address there).
    pub fn ready_line(&self) -> &str {
        &self.ready_line
    }

    /// Its process id (the root of its process tree).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether it is still running. Reads /proc instead of waiting, so the process stays
    /// unreaped and its id (and so its process group's id) cannot be reused before `stop`.
    pub fn running(&self) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok();
        stat.as_deref().and_then(crate::probe::parse_stat).is_some_and(|(state, _)| state != 'Z' && state != 'X')
    }

    /// The last lines it printed, for error messages.
    pub fn output(&self) -> String {
        let tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        if tail.is_empty() { "(no output)".into() } else { tail.iter().cloned().collect::<Vec<_>>().join(" | ") }
    }

    /// SIGTERM, up to [`STOP_GRACE`] to finish, then SIGKILL to the whole process group.
    /// Returns its final report line (`warren: stopped: ...`) if it printed one.
    pub fn stop(&mut self) -> Option<String> {
        if self.stopped {
            return None;
        }
        self.stopped = true;
        let pid = Pid::from_raw(self.pid);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while self.running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // The leader is unreaped here, so this group id is still ours: anything left in it
        // (a stuck worker, an orphaned fork child) is the server's and goes now.
        let _ = killpg(pid, Signal::SIGKILL);
        let _ = self.child.wait();
        // The pipes close once every process in the group has gone; give the readers a moment.
        let until = Instant::now() + Duration::from_millis(200);
        loop {
            let line = self
                .tail
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .rev()
                .find(|l| l.starts_with("warren: stopped"))
                .cloned();
            if line.is_some() || Instant::now() >= until {
                return line;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Server {
    /// SIGKILL to the whole process group, at once: a server that dies without a goodbye, as a
    /// crashed replica does.
    pub fn kill(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Read `pipe` line by line until it closes, keeping the last lines; the first readiness line's
/// address goes to `ready`.
fn drain(
    pipe: impl Read + Send + 'static,
    tail: Arc<Mutex<VecDeque<String>>>,
    mut ready: Option<mpsc::Sender<(SocketAddr, String)>>,
) -> std::io::Result<()> {
    // Detached: it ends when the pipe closes, which `Server::stop` guarantees.
    std::thread::Builder::new().name("bench-server-out".into()).spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if ready.is_some() && announces_itself(&line) {
                // A server that listens only for hand-offs (`on @name`) has no TCP address:
                // it is ready all the same, and the bench reaches it through its switch.
                let addr = parse_ready(&line).unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
                let _ = ready.take().map(|tx| tx.send((addr, line.clone())));
            }
            let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
            if tail.len() == TAIL {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    })?;
    Ok(())
}

/// Whether `line` is a readiness line, `warren: serving ... on ENDPOINT`.
fn announces_itself(line: &str) -> bool {
    line.strip_prefix("warren: serving ").is_some_and(|rest| rest.contains(" on "))
}

/// The address in `warren: serving echo (tcp) under thread on 127.0.0.1:PORT`.
pub fn parse_ready(line: &str) -> Option<SocketAddr> {
    let rest = line.strip_prefix("warren: serving ")?;
    rest.rsplit_once(" on ")?.1.trim().parse().ok()
}

/// A reference server the bench runs (nginx, HAProxy): on `cpu` through `taskset` if given, in
/// a process group of its own, with stdin closed and a parent-death signal so that a bench
/// killed by Ctrl-C does not leave it behind. The caller adds the arguments and the output.
pub fn peer_command(program: &Path, cpu: Option<usize>) -> Command {
    let mut command = match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpu.to_string()]).arg(program);
            c
        }
        None => Command::new(program),
    };
    command.stdin(Stdio::null()).process_group(0);
    // SAFETY: only prctl, async-signal-safe, between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
            Ok(())
        });
    }
    command
}

/// Why a started peer is not listening.
pub enum NotListening {
    Exited(std::process::ExitStatus),
    Late,
}

/// Wait until `addr` takes a connection, up to `within`, or until `child` exits.
pub fn wait_listening(child: &mut Child, addr: SocketAddr, within: Duration) -> Result<(), NotListening> {
    let deadline = Instant::now() + within;
    loop {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(NotListening::Exited(status));
        }
        if Instant::now() >= deadline {
            return Err(NotListening::Late);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stop `child`, the leader of a process group of its own: each signal in turn, with up to its
/// grace to exit; then SIGKILL to the whole group (the group id stays the child's until it is
/// reaped, so nothing else is hit), and reap it.
pub fn stop_group(child: &mut Child, steps: &[(Signal, Duration)]) {
    let pid = Pid::from_raw(child.id() as i32);
    for &(signal, grace) in steps {
        let _ = kill(pid, signal);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let _ = killpg(pid, Signal::SIGKILL);
    let _ = child.wait();
}

/// SIGTERM to `child`, then wait for it: for servers that stop promptly on their own and
/// fork nothing (the superservers under `bench superd`, `warren files serve` under `bench oob`).
pub fn terminate(child: &mut Child) {
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_line_gives_the_address() {
        let line = "warren: serving echo (tcp) under thread on 127.0.0.1:40123";
        assert_eq!(parse_ready(line), Some(SocketAddr::from(([127, 0, 0, 1], 40123))));
        assert_eq!(parse_ready("warren: stopped: 3 connections served, 0 refused"), None);
        assert_eq!(parse_ready("warren: serving echo on nowhere"), None);
    }

    #[test]
    fn a_child_that_never_gets_ready_is_an_error() {
        let err = Server::start(Path::new("/bin/echo"), &["hello".into()], None).unwrap_err();
        assert!(format!("{err:#}").contains("serve hello"), "{err:#}");
    }

    /// A stand-in server that announces itself and then ignores SIGTERM, so stopping it needs
    /// the SIGKILL that follows the grace period.
    #[test]
    fn a_stubborn_child_is_killed_with_its_group() {
        let script = std::env::temp_dir().join(format!("warren-bench-stub-{}", std::process::id()));
        let ready = "warren: serving echo (tcp) under thread on 127.0.0.1:9";
        let body = format!("#!/bin/sh\ntrap '' TERM\necho '{ready}'\nsleep 30 &\nwait\n");
        std::fs::write(&script, body).unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        let mut server = Server::start(&script, &[], None).unwrap();
        std::fs::remove_file(&script).unwrap();
        assert_eq!(server.addr(), SocketAddr::from(([127, 0, 0, 1], 9)));
        assert!(server.running());
        let sleeper = crate::probe::tree(server.pid());
        let started = Instant::now();
        server.stop();
        assert!(started.elapsed() >= STOP_GRACE && !server.running());
        // The group went with it: no orphaned `sleep` is left behind.
        std::thread::sleep(Duration::from_millis(50));
        for pid in sleeper {
            assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists() || !is_running(pid), "{pid} survived");
        }
    }

    fn is_running(pid: i32) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        crate::probe::parse_stat(&stat).is_some_and(|(state, _)| state != 'Z')
    }
}
